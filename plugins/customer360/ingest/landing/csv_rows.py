"""CSV lines into named columns, in DuckDB, keeping each row's line number and text.

Lines come from :mod:`customer360.ingest.landing.lines` (one row a physical line), so a malformed
row is known by its exact line and text. Fields are split with the usual CSV rules (comma
separated, double-quoted fields may hold commas and doubled quotes). Columns are matched by
header name, so a file whose columns come in another order still loads, and columns the
contract does not know are kept as a JSON object in ``_extra``. A quoted field that spans
lines is not supported: both halves are reported as malformed quoting.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import duckdb

from customer360.ingest.landing.duck import insert_rows

# One field, preceded by its comma (the line is given a leading comma so that every field,
# empty ones included, has one): a quoted field or a run of anything but commas.
_FIELD = r',("(?:[^"]|"")*"|[^,]*)'
_WELL_QUOTED = r'(?:"(?:[^"]|"")*"|[^,"]*)(?:,(?:"(?:[^"]|"")*"|[^,"]*))*'


def fields_sql(line: str) -> str:
    """The list of a CSV line's unquoted fields; NULL when its quoting is malformed."""
    return f"""CASE
        WHEN {line} IS NULL THEN NULL
        WHEN NOT contains({line}, '"') THEN string_split({line}, ',')
        WHEN regexp_full_match({line}, '{_WELL_QUOTED}') THEN
            list_transform(regexp_extract_all(',' || {line}, '{_FIELD}', 1),
                           f -> CASE WHEN starts_with(f, '"') THEN replace(f[2:-2], '""', '"')
                                     ELSE f END)
    END"""


@dataclass
class CsvHeader:
    names: list[str]
    positions: dict[str, int]                 # known column -> 1-based position
    extra: list[tuple[str, int]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        parts = []
        if self.missing:
            parts.append("header lacks column(s) " + ", ".join(self.missing))
        if self.duplicated:
            parts.append("header repeats column(s) " + ", ".join(self.duplicated))
        return "; ".join(parts) or None


def read_header(names: Sequence[str] | None, columns: Sequence[str]) -> CsvHeader:
    names = [n.strip() for n in (names or [])]
    counts = Counter(names)
    positions = {c: names.index(c) + 1 for c in columns if c in counts}
    # An unknown column named twice is kept once (its first place): _extra is a JSON object.
    extra = [(n, i + 1) for i, n in enumerate(names)
             if n not in columns and n and names.index(n) == i]
    return CsvHeader(
        names=names,
        positions=positions,
        extra=extra,
        missing=[c for c in columns if c not in counts],
        duplicated=sorted(n for n, k in counts.items() if k > 1),
    )


@dataclass
class CsvRows:
    """``table``: one row a data line (header and blank lines excluded) with file_id, ln,
    raw_line, the known columns (as text, as sent), ``_extra`` and ``structural_reason``
    (NULL when the line is a well-formed row); ``headers`` by file_id; ``blank_lines``."""

    table: str
    headers: dict[int, CsvHeader]
    blank_lines: dict[int, list[int]]


def parse_csv_rows(con: duckdb.DuckDBPyConnection, lines_view: str, name: str,
                   columns: Sequence[str], encodings: dict[int, str],
                   file_errors: dict[int, str] | None = None) -> CsvRows:
    """Split the lines of ``lines_view`` (file_id, ln, line, bad_encoding, line_error) into
    ``columns``.
    ``file_errors`` quarantines every row of a file with that reason (its bytes are not in
    the declared encoding, say); a header that repeats a column does the same for its file."""
    file_errors = file_errors or {}
    split = f"{name}_fields"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {split} AS
        SELECT file_id, ln, line, bad_encoding, line_error,
               line_error IS NULL AND (line IS NULL OR NOT regexp_matches(line, '\\S')) AS blank,
               CASE WHEN line_error IS NULL THEN {fields_sql('line')} END AS fields
        FROM {lines_view}
    """)
    firsts, file_errors = {}, dict(file_errors)
    for fid, fields, line_error in con.execute(
            f"SELECT file_id, fields, line_error FROM {split} WHERE ln = 1").fetchall():
        firsts[fid] = fields
        if line_error is not None:  # no header to read the rows by
            file_errors.setdefault(fid, "header " + line_error)
    headers = {fid: read_header(firsts.get(fid), columns) for fid in encodings}
    blank_lines: dict[int, list[int]] = {}
    for fid, ln in con.execute(f"SELECT file_id, ln FROM {split} WHERE blank AND ln > 1 "
                               f"ORDER BY file_id, ln").fetchall():
        blank_lines.setdefault(fid, []).append(ln)

    hdr = f"{name}_headers"
    pos_cols = ", ".join(f"p{i} INTEGER" for i in range(len(columns)))
    con.execute(f"CREATE OR REPLACE TEMP TABLE {hdr} (file_id INTEGER, n_fields INTEGER, "
                f"{pos_cols}, extra_names VARCHAR[], extra_pos INTEGER[], header_error VARCHAR, "
                f"encoding VARCHAR, file_error VARCHAR)")
    insert_rows(
        con, hdr,
        [(fid, len(h.names), *[h.positions.get(c) for c in columns],
          [n for n, _ in h.extra], [p for _, p in h.extra], h.error, encodings[fid],
          file_errors.get(fid))
         for fid, h in headers.items()])

    picked = ", ".join(f'CASE WHEN h.p{i} IS NOT NULL THEN s.fields[h.p{i}] END AS "{c}"'
                       for i, c in enumerate(columns))
    table = f"{name}_rows"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT s.file_id, s.ln, s.line AS raw_line, {picked},
               CASE WHEN len(h.extra_pos) > 0 AND s.fields IS NOT NULL
                    THEN to_json(map(h.extra_names, list_select(s.fields, h.extra_pos)))::VARCHAR
               END AS _extra,
               CASE
                 WHEN h.file_error IS NOT NULL THEN h.file_error
                 WHEN s.line_error IS NOT NULL THEN s.line_error
                 WHEN s.bad_encoding THEN 'line is not valid ' || h.encoding
                 WHEN h.header_error IS NOT NULL THEN h.header_error
                 WHEN s.fields IS NULL THEN 'malformed CSV quoting'
                 WHEN len(s.fields) <> h.n_fields
                   THEN 'expected ' || h.n_fields || ' fields as in the header, found '
                        || len(s.fields)
               END AS structural_reason
        FROM {split} s JOIN {hdr} h USING (file_id)
        WHERE s.ln > 1 AND NOT s.blank
    """)
    con.execute(f"DROP TABLE {split}")
    return CsvRows(table, headers, blank_lines)
