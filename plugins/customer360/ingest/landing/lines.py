"""Read landing files as numbered physical lines into a DuckDB table.

Both loaders and the validator start here, so "line 12 of file X" means the same thing
everywhere, and a malformed line can be quarantined with its exact text. The fast path is
DuckDB's CSV reader with one VARCHAR column and a delimiter that cannot occur in valid data
(a raw control character): it decompresses and decodes in C++, several files in parallel.
Whatever that path cannot vouch for goes through Python's own gzip and codecs, file by file:

* Text in an encoding DuckDB does not read natively (GB18030...) needs DuckDB's encodings
  extension, which takes seconds to load: it is loaded only for a lot of such text.
* DuckDB stops silently at the end of a truncated gzip stream, so every gzip file's trailer
  (ISIZE, the uncompressed length) is compared with the bytes DuckDB read; on a mismatch
  Python decompresses the file, which checks the CRC and the end-of-stream marker.
* A file that is not gzip, not in its encoding, or otherwise unreadable by DuckDB: Python
  decodes it, line by line if need be, so one bad line does not cost the whole file.

Lines are numbered without a window function (which would make DuckDB run the rest of the
query on one thread): with insertion order preserved (DuckDB's default), a file's lines get
consecutive ``rowid``s in file order, so a line's number is its rowid minus its file's first
rowid plus one (:func:`numbered_view`). Every line is stored, blank ones included, so the
numbers are physical line numbers. Files that cannot be read at all are returned with the
reason instead.
"""

from __future__ import annotations

import codecs
import gzip
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import duckdb
import pyarrow as pa

from customer360.ingest.landing.duck import (duckdb_encoding, duckdb_reads_natively, load_encodings,
                                      python_encoding, sql_str)

log = logging.getLogger(__name__)

# A raw control character never occurs in valid JSON and hardly in a CSV export; a line that
# holds one makes DuckDB see two columns and fail, which sends the file to the Python path.
_NO_DELIMITER = "\x01"
# Below this much text in an encoding DuckDB does not read natively, Python decodes it: the
# DuckDB encodings extension takes seconds to load.
EXTENSION_WORTH_BYTES = 64 * 2**20


def _read_csv_sql(paths: Sequence[Path], encoding: str, gzipped: bool) -> str:
    files = "[" + ", ".join(sql_str(str(p)) for p in paths) + "]"
    return (f"read_csv({files}, columns = {{'line': 'VARCHAR'}}, delim = '{_NO_DELIMITER}', "
            f"quote = '', escape = '', header = false, auto_detect = false, "
            f"compression = '{'gzip' if gzipped else 'none'}', "
            f"encoding = {sql_str(duckdb_encoding(encoding))})")


def gzip_isize(path: Path) -> int | None:
    """The uncompressed length (mod 2**32) a gzip file's trailer claims."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        if fh.tell() < 18:  # smaller than an empty gzip member: not a whole gzip file
            return None
        fh.seek(-4, 2)
        return int.from_bytes(fh.read(4), "little")


def _isize_candidates(n_lines: int, text_bytes: int) -> set[int]:
    # DuckDB drops the line breaks (LF or CRLF), the last line may lack one, and a UTF-8 BOM
    # is skipped: every way the lines can add up to the file's uncompressed length.
    return {(text_bytes + width * n_lines - width * unterminated + bom) % 2**32
            for width in (1, 2) for unterminated in (0, 1) for bom in (0, 3)}


ParseSql = Callable[[str], str]
_EMPTY_SOURCE = ("SELECT NULL::INTEGER AS file_id, NULL::VARCHAR AS line, "
                 "NULL::BOOLEAN AS bad_encoding LIMIT 0")


def _fast_source(paths: Sequence[Path], file_ids: Sequence[int], encoding: str,
                 gzipped: bool) -> str:
    ids = "[" + ", ".join(str(i) for i in file_ids) + "]"
    return (f"SELECT {ids}[file_index::BIGINT + 1] AS file_id, line, false AS bad_encoding "
            f"FROM {_read_csv_sql(paths, encoding, gzipped)}")


def _run(con, out_table: str, parse: ParseSql, source: str, create: bool) -> None:
    verb = f"CREATE OR REPLACE TEMP TABLE {out_table} AS" if create else f"INSERT INTO {out_table}"
    con.execute(f"{verb} SELECT * FROM ({parse(source)})")


def _fast_insert(con, out_table: str, parse: ParseSql, paths: Sequence[Path],
                 file_ids: Sequence[int], encoding: str, gzipped: bool) -> None:
    _run(con, out_table, parse, _fast_source(paths, file_ids, encoding, gzipped), create=False)


def _gzip_suspects(con, out_table: str, paths: Sequence[Path],
                   file_ids: Sequence[int]) -> list[int]:
    stats = {fid: (n, b) for fid, n, b in con.execute(
        f"SELECT file_id, count(*), sum(_nbytes) FROM {out_table} "
        f"WHERE list_contains({[int(i) for i in file_ids]}, file_id) GROUP BY file_id").fetchall()}
    return [fid for path, fid in zip(paths, file_ids)
            if gzip_isize(path) not in _isize_candidates(*stats.get(fid, (0, 0)))]


def _delete(con, out_table: str, file_ids: Sequence[int]) -> None:
    if file_ids:
        con.execute(f"DELETE FROM {out_table} WHERE list_contains({[int(i) for i in file_ids]}, "
                    f"file_id)")




def _python_lines(path: Path, encoding: str, gzipped: bool) -> pa.Table | str:
    """The file's lines decoded by Python, or the reason it cannot be read at all."""
    raw = path.read_bytes()
    if gzipped and raw:
        try:
            raw = gzip.decompress(raw)
        except EOFError as exc:
            return f"truncated gzip file: {exc}"
        except (OSError, zlib.error) as exc:
            return f"corrupt gzip file: {exc}"
    py_encoding = python_encoding(encoding)
    if py_encoding is None:
        return f"unknown encoding {encoding!r}"
    bad: list[bool] | None = None
    try:
        lines = raw.decode(py_encoding).split("\n")
    except UnicodeDecodeError:
        # Only files that fail to decode get here: find the lines at fault, keep the rest.
        lines, bad = [], []
        for chunk in raw.split(b"\n"):
            try:
                lines.append(chunk.decode(py_encoding))
                bad.append(False)
            except UnicodeDecodeError:
                lines.append(chunk.decode(py_encoding, errors="backslashreplace"))
                bad.append(True)
    if lines and lines[-1] == "":
        lines.pop()
        if bad:
            bad.pop()
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    return pa.table({"line": pa.array(lines, pa.string()),
                     "bad_encoding": pa.array(bad if bad is not None else [False] * len(lines),
                                              pa.bool_())})


def _duckdb_can_decode(con, encoding: str, paths: Sequence[Path]) -> bool:
    if duckdb_reads_natively(encoding):
        return True
    # Loading the encodings extension costs seconds: only worth it for a lot of text.
    return sum(p.stat().st_size for p in paths) >= EXTENSION_WORTH_BYTES and load_encodings(con)


def _fast_read(con, out_table: str, parse: ParseSql, safe_parse: ParseSql,
               paths: Sequence[Path], ids: list[int], encoding: str, gzipped: bool) -> list[int]:
    """DuckDB reads what it can; returns the file ids to read again with Python."""
    try:
        _fast_insert(con, out_table, parse, paths, ids, encoding, gzipped)
        return _gzip_suspects(con, out_table, paths, ids) if gzipped else []
    except duckdb.Error:
        pass
    # One bad file (or line) fails a multi-file read and inserts nothing: go file by file.
    retry = []
    for fid, path in zip(ids, paths):
        try:
            _fast_insert(con, out_table, safe_parse, [path], [fid], encoding, gzipped)
            if gzipped:
                retry += _gzip_suspects(con, out_table, [path], [fid])
        except duckdb.Error as exc:
            log.debug("DuckDB cannot read %s (%s); trying Python", path, exc)
            retry.append(fid)
    return retry


def read_parsed(con: duckdb.DuckDBPyConnection, out_table: str, paths: Sequence[Path],
                parse: ParseSql, *, encoding: str = "utf-8", gzipped: bool = False,
                file_ids: Sequence[int] | None = None, append: bool = False,
                safe_parse: ParseSql | None = None) -> dict[int, str]:
    """Read ``paths`` line by line into ``out_table`` = ``parse(source)``; return the files
    that cannot be read at all as {file_id: reason}.

    ``source`` is a SQL query with one row a physical line, in file order: ``file_id`` (from
    ``file_ids``, default 0..n-1), ``line`` (NULL when blank) and ``bad_encoding``.
    ``parse(source)`` must keep that order and return ``file_id`` and ``_nbytes`` (``strlen``
    of the line, 0 when NULL) first, then what it extracts, one row for every line (blank ones
    included) so that :func:`numbered_view` can number them. ``append`` adds to an existing
    ``out_table`` instead of replacing it. ``safe_parse``, when given, is used instead of
    ``parse`` once a multi-file read has failed (a parse that cannot fail on any line).
    """
    safe_parse = safe_parse or parse
    if not append:
        _run(con, out_table, parse, _EMPTY_SOURCE, create=True)
    ids = list(range(len(paths))) if file_ids is None else [int(i) for i in file_ids]
    if not paths:
        return {}
    by_id = dict(zip(ids, paths))
    if _duckdb_can_decode(con, encoding, paths):
        retry = _fast_read(con, out_table, parse, safe_parse, paths, ids, encoding, gzipped)
        _delete(con, out_table, retry)
    else:
        retry = ids
    failures = {}
    for fid in retry:
        result = _python_lines(by_id[fid], encoding, gzipped)
        if isinstance(result, str):
            failures[fid] = result
            continue
        con.register("_python_lines", result)
        try:
            _run(con, out_table, safe_parse,
                 f"SELECT {fid} AS file_id, nullif(rtrim(line, chr(13)), '') AS line, "
                 f"bad_encoding FROM _python_lines",
                 create=False)
        finally:
            con.unregister("_python_lines")
    return failures


def keep_lines(source: str) -> str:
    """The parse step that keeps the lines as they are (parse them later, numbered)."""
    return (f"SELECT file_id, coalesce(strlen(line), 0) AS _nbytes, line, bad_encoding "
            f"FROM ({source})")


def numbered_view(con: duckdb.DuckDBPyConnection, out_table: str) -> str:
    """A view of ``out_table`` with ``ln``, the 1-based physical line number in its file."""
    view = f"{out_table}_numbered"
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW {view} AS
        SELECT t.*, t.rowid - f.first_rowid + 1 AS ln
        FROM {out_table} t JOIN (SELECT file_id, min(rowid) AS first_rowid FROM {out_table}
                                 GROUP BY file_id) f USING (file_id)
    """)
    return view


# What a file may really be in when it is not in its declared encoding, most telling first:
# text that is valid UTF-8 is almost never meant as anything else; cp1252 decodes nearly any
# bytes, so it only counts when nothing else does.
LIKELY_ENCODINGS = ("utf-8", "gb18030", "big5", "shift_jis", "euc-kr", "cp1252")
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))
_DISPLAY = {"utf-8": "UTF-8", "gb18030": "GB18030", "big5": "Big5", "shift_jis": "Shift_JIS",
            "euc_kr": "EUC-KR", "cp1252": "cp1252", "utf-16": "UTF-16"}


def encoding_name(encoding: str) -> str:
    """The usual spelling of an encoding, for reasons and notes ("GB18030", not "gb18030")."""
    canonical = python_encoding(encoding) or encoding
    return _DISPLAY.get(canonical, encoding)


@dataclass(frozen=True)
class EncodingSniff:
    """How to decode one file: ``read_as``; ``note`` when that differs from the declaration but
    the file says so itself (a byte-order mark); ``mismatch`` when the bytes only fit another
    encoding than the declared one (the file is not to be trusted: quarantine it whole)."""

    read_as: str
    note: str | None = None
    mismatch: str | None = None


def _decodes(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(encoding)
        return True
    except (UnicodeDecodeError, LookupError):
        return False


def detect_encoding(raw: bytes, exclude: str | None = None) -> str | None:
    """The first of :data:`LIKELY_ENCODINGS` (other than ``exclude``) the whole of ``raw``
    decodes in, or None.

    The order is the answer to ambiguity: any EUC-KR or Big5 pair is also a valid GB18030
    pair, so those files are named GB18030. A statistical detector (charset-normalizer) was
    tried and named a few Chinese words in GB18030 "EUC-KR"; on till files, which hold only a
    few words of text, a fixed order is the more honest hint. The name only goes into a
    quarantine reason: nothing is ever loaded in a guessed encoding."""
    skip = python_encoding(exclude) if exclude else None
    return next((e for e in LIKELY_ENCODINGS if python_encoding(e) != skip and _decodes(raw, e)),
                None)


def sniff_encoding(raw: bytes, declared: str | None) -> EncodingSniff:
    """Decide how to decode a file whose owner declared ``declared`` (None: nobody did).

    A byte-order mark wins: the file names its own encoding, so it is read that way (with a
    note when the declaration says otherwise). Without one, the declared encoding is tried
    first; bytes that do not decode in it, or that are valid UTF-8 text declared as something
    else (which would decode as mojibake without any error), are a mismatch that names the
    encoding the bytes do decode in. Undeclared files take the first likely encoding that fits.
    """
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            if declared is not None and python_encoding(declared) != python_encoding(encoding):
                return EncodingSniff(encoding, note=(
                    f"declared {encoding_name(declared)} but the file starts with a "
                    f"{encoding_name(encoding)} byte-order mark: read as {encoding_name(encoding)}"))
            return EncodingSniff(declared or encoding)
    if declared is None:
        return EncodingSniff(detect_encoding(raw) or "utf-8")
    if python_encoding(declared) is None:
        return EncodingSniff(declared)  # the caller reports the unknown encoding
    if _decodes(raw, declared):
        if python_encoding(declared) != "utf-8" and not raw.isascii() and _decodes(raw, "utf-8"):
            return EncodingSniff("utf-8", mismatch=(
                f"declared {encoding_name(declared)} but the bytes decode as UTF-8"))
        return EncodingSniff(declared)
    found = detect_encoding(raw, exclude=declared)
    if found is None:
        return EncodingSniff(declared)  # damaged lines: each is reported on its own
    return EncodingSniff(found, mismatch=(
        f"declared {encoding_name(declared)} but the bytes decode as {encoding_name(found)}"))


T = TypeVar("T")


def byte_batches(items: Sequence[T], size_of: Callable[[T], int], limit: int) -> Iterator[list[T]]:
    """Consecutive groups of ``items`` of at most ``limit`` bytes (at least one item each)."""
    group: list[T] = []
    total = 0
    for item in items:
        size = size_of(item)
        if group and total + size > limit:
            yield group
            group, total = [], 0
        group.append(item)
        total += size
    if group:
        yield group


def uncompressed_size(path: Path) -> int:
    """About how many bytes a landing file holds once decompressed (for batching)."""
    size = path.stat().st_size
    if path.name.endswith(".gz"):
        # The gzip trailer says; a damaged file's trailer is garbage, hence the bound.
        return max(size, min(gzip_isize(path) or 0, 100 * size))
    return size
