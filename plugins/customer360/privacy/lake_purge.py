"""A person's rows removed from the raw zone, the quarantine and the landing folder.

Raw and quarantine Parquet files holding any of the person's rows are rewritten without
them: written in full under a temporary name beside the original, synced, and renamed over
it (a reader sees the old file or the new one, never half of one). A file keeps its name,
so batch ids, the extract state store (:mod:`customer360.ingest.state`) and the gates'
watermarks stay valid.

Which rows are the person's (:func:`entity_predicate`): their CRM contacts (every
version, the archived one included), tickets and survey answers filed by them or whose free
text mentions them, web events of their contact id, their devices, or with their email or
phone as traits, every line of their POS transactions, and any row of any entity whose text
mentions them (:class:`~customer360.privacy.person.Needles`: quarantined lines keep the raw
text that was rejected).

Landing files (web part files, POS CSVs) under ``C360_LANDING`` are the sources' drop zone;
the copies there are ours once delivered, so they are scrubbed too: the physical lines the
removed rows came from (``_source_file``/``_source_line``) and any line that mentions the
person are blanked. Blanking rather than deleting keeps every other line's number, which
raw rows and quarantine records point to, and both loaders skip blank lines. The state
store's row of a rewritten file gets the new size, mtime and SHA-256, so the loaders do not take the
scrubbed file for a new version and load it again.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from customer360.core.files import atomic_path, write_bytes
from customer360.ingest.landing.layout import scan_landing
from customer360.ingest.raw_zone import unreadable_parquet
from customer360.ingest.state import StateStore, source_lock
from customer360.privacy.person import (Needles, crm_contact_predicate, crm_owner_predicate,
                                        json_association_predicate, json_id_predicate,
                                        pos_transaction_predicate, web_event_predicate)
from customer360.core.settings import Settings

log = logging.getLogger(__name__)

_LINE_SOURCES = {("web", "events"), ("pos", "transactions")}


@dataclass
class LakePurge:
    """What was removed; counts and paths only (paths hold no personal data)."""

    raw_rows: dict[str, int] = field(default_factory=dict)          # "crm/contacts" -> rows
    raw_files: int = 0
    quarantine_rows: dict[str, int] = field(default_factory=dict)
    quarantine_files: int = 0
    landing_lines: int = 0
    landing_files: int = 0
    manifest_rows: int = 0
    # (landing-relative file, physical line) of every removed row that came from a file
    lines: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set), repr=False)
    # (zone, source/entity, batch id) -> rows removed: what reconciliation counts must allow for
    batches: dict[tuple[str, str, str], int] = field(default_factory=dict, repr=False)
    # files that could not be read (truncated, corrupt): path -> why; purged around, not through
    unreadable: dict[str, str] = field(default_factory=dict)
    set_aside_removed: list[str] = field(default_factory=list)  # repairs' copies, removed whole

    def as_dict(self) -> dict:
        return {"raw_rows": dict(sorted(self.raw_rows.items())), "raw_files": self.raw_files,
                "quarantine_rows": dict(sorted(self.quarantine_rows.items())),
                "quarantine_files": self.quarantine_files, "landing_lines": self.landing_lines,
                "landing_files": self.landing_files, "manifest_rows": self.manifest_rows,
                "unreadable": dict(sorted(self.unreadable.items())),
                "set_aside_removed": len(self.set_aside_removed)}

    @property
    def rows(self) -> int:
        return sum(self.raw_rows.values()) + sum(self.quarantine_rows.values())


# --------------------------------------------------------------------------- predicates

def _quoted(col: str) -> str:
    return '"' + col.replace('"', '""') + '"'


def entity_predicate(source: str, entity: str, columns: dict[str, str], needles: Needles) -> str:
    """SQL condition, true for a row of ``source/entity`` (raw or quarantine, told apart by
    its columns) that belongs to the person or mentions them."""
    cols = set(columns)
    parts = []
    if (source, entity) == ("crm", "contacts"):
        if {"id", "properties"} <= cols:
            parts.append(crm_contact_predicate())
        if "record_key" in cols:
            parts.append("trim(record_key) IN (SELECT v FROM p_contacts)")
        if "raw_text" in cols:
            parts.append(json_id_predicate("raw_text", ("id",)))
        # A contact record names its own person: other contacts are never matched by name.
        needles = needles.without_names()
    elif source == "crm":
        owner = crm_owner_predicate(cols)
        if owner:
            parts.append(owner)
        if "raw_text" in cols:
            parts.append(json_id_predicate("raw_text", ("contact_id",)))
            parts.append(json_association_predicate("raw_text"))
    elif (source, entity) == ("web", "events"):
        if {"userId", "anonymousId", "traits", "context"} <= cols:
            parts.append(web_event_predicate())
        if "previousId" in cols:  # an alias handing the person's device or old id over
            parts.append('"previousId" IN (SELECT v FROM p_anon) '
                         'OR trim("previousId") IN (SELECT v FROM p_contacts)')
        if "raw_text" in cols:
            parts.append(json_id_predicate("raw_text", ("userId", "previousId")))
            parts.append(json_id_predicate("raw_text", ("anonymousId", "previousId"), "p_anon"))
    elif (source, entity) == ("pos", "transactions"):
        if {"store_id", "transaction_id", "loyalty_id", "customer_phone", "customer_email",
                "_store_country"} <= cols:
            parts.append(pos_transaction_predicate())
        if "record_key" in cols:
            parts.append("split_part(record_key, ':', 1) IN (SELECT transaction_id FROM p_txns)")
    text_cols = [c for c, t in columns.items() if t.upper().startswith("VARCHAR") or t.upper() == "JSON"]
    if text_cols and needles:
        joined = "concat_ws(' ', " + ", ".join(_quoted(c) for c in text_cols) + ")"
        parts.append(needles.sql(joined))
    return " OR ".join(f"({p})" for p in parts) if parts else "false"


# --------------------------------------------------------------------------- parquet files

def _one_file(path: Path) -> str:
    return f"read_parquet('{_sql_path(path)}', hive_partitioning = false)"


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def rewrite_parquet(con: duckdb.DuckDBPyConnection, path: Path, predicate: str,
                    removed: int | None = None) -> int:
    """Rewrite ``path`` without the rows matching ``predicate``; returns rows removed.
    ``removed``: the count, when the caller has it already (one read of the file fewer)."""
    if removed is None:
        removed = con.execute(f"SELECT count(*) FROM {_one_file(path)} WHERE {predicate}").fetchone()[0]
    if not removed:
        return 0
    with atomic_path(path, suffix=".erasing") as tmp:
        con.execute(f"COPY (SELECT * FROM {_one_file(path)} WHERE NOT coalesce(({predicate}), false)) "
                    f"TO '{_sql_path(tmp)}' (FORMAT parquet, COMPRESSION zstd)")
    return int(removed)


def _columns(con: duckdb.DuckDBPyConnection, files: list[Path]) -> dict[str, str]:
    listed = ", ".join(f"'{_sql_path(p)}'" for p in files)
    rows = con.execute(f"DESCRIBE SELECT * FROM read_parquet([{listed}], union_by_name = true, "
                       "hive_partitioning = false)").fetchall()
    return {r[0]: r[1] for r in rows}


def _entities(root: Path) -> dict[tuple[str, str], list[Path]]:
    """Parquet files under ``root`` by (source, entity): ``<source>/<entity>/load_date=*/``,
    and flat folders like ``_gate_rejects/`` as (name, "")."""
    found: dict[tuple[str, str], list[Path]] = defaultdict(list)
    if not root.exists():
        return found
    for path in sorted(root.rglob("*.parquet")):
        if path.name.startswith("."):
            continue
        parts = path.relative_to(root).parts
        if len(parts) >= 4 and parts[2].startswith("load_date="):
            found[(parts[0], parts[1])].append(path)
        else:
            found[(parts[0], "")].append(path)
    return found


def _purge_zone(con: duckdb.DuckDBPyConnection, root: Path, needles: Needles, report: LakePurge,
                zone: str, entities=None) -> None:
    """``entities``: a test of (source, entity), which of the zone's entities to purge."""
    counts = report.raw_rows if zone == "raw" else report.quarantine_rows
    for (source, entity), found in _entities(root).items():
        if entities is not None and not entities((source, entity)):
            continue
        files = []
        for path in found:
            why = unreadable_parquet(path)
            if why:  # one bad batch must not stop the erasure of the rest
                report.unreadable[str(path)] = why
                log.warning("erasure: %s %s is unreadable (%s): not purged; `c360 doctor "
                            "--repair raw` sets it aside", zone, path, why)
            else:
                files.append(path)
        if not files:
            continue
        columns = _columns(con, files)
        predicate = entity_predicate(source, entity, columns, needles)
        if predicate == "false":
            continue
        listed = ", ".join(f"'{_sql_path(p)}'" for p in files)
        union = (f"read_parquet([{listed}], union_by_name = true, hive_partitioning = false, "
                 "filename = true)")
        # Where the removed rows came from, to blank them in the landing copies too: found by
        # the same read that finds the files (one pass of the predicate over the zone, not two).
        line_cols = (("_source_file", "_source_line") if zone == "raw" and (source, entity) in _LINE_SOURCES
                     else ("source_file", "source_line") if {"source_file", "source_line"} <= set(columns)
                     else None)
        lines = "list(DISTINCT CASE WHEN {0} IS NOT NULL AND {1} IS NOT NULL THEN {0} || ':' || {1} END)".format(
            *line_cols) if line_cols else "[]"
        found_rows = con.execute(f"SELECT filename, count(*), {lines} FROM {union} WHERE {predicate} "
                                 "GROUP BY filename").fetchall()
        hits = [(filename, n) for filename, n, _ in found_rows]
        if not hits:
            continue
        for _, _, where in found_rows:
            for item in where or ():
                if item is not None:
                    rel, _, line = item.rpartition(":")
                    report.lines[rel].add(int(line))
        name = f"{source}/{entity}" if entity else source
        for filename, matching in hits:
            removed = rewrite_parquet(con, Path(filename), predicate, matching)
            counts[name] = counts.get(name, 0) + removed
            report.batches[(zone, name, Path(filename).stem)] = removed
            if zone == "raw":
                report.raw_files += 1
            else:
                report.quarantine_files += 1
        log.info("erasure: %s %s: %d row(s) removed from %d file(s)", zone, name, counts[name], len(hits))


# The raw CRM contacts are where the DAG's erasure requests come from (an archived contact):
# purged last of everything, so that a purge which dies midway is asked for again by the next
# run's archived contact and resumed, instead of leaving the person's other records behind.
REQUEST_SOURCE = ("crm", "contacts")


def purge_lake(settings: Settings, con: duckdb.DuckDBPyConnection, needles: Needles,
               report: LakePurge | None = None) -> LakePurge:
    """Remove the person (the ``p_*`` tables on ``con`` and ``needles``) from raw and
    quarantine Parquet, all but the raw REQUEST_SOURCE (:func:`purge_request_source`).
    ``con`` needs :func:`customer360.privacy.pii.register`."""
    report = report or LakePurge()
    _purge_zone(con, settings.lake_raw, needles, report, "raw", lambda e: e != REQUEST_SOURCE)
    _purge_zone(con, settings.quarantine, needles, report, "quarantine")
    return report


def purge_request_source(settings: Settings, con: duckdb.DuckDBPyConnection, needles: Needles,
                         report: LakePurge) -> LakePurge:
    """The last step of a purge: the person's raw CRM contact records (REQUEST_SOURCE)."""
    _purge_zone(con, settings.lake_raw, needles, report, "raw", lambda e: e == REQUEST_SOURCE)
    return report


def remove_set_aside(settings: Settings) -> list[str]:
    """Remove the copies a repair set aside (``lake/broken/``, ``warehouse/*.broken-*``): kept as
    evidence of what broke, they hold personal data that cannot be purged row by row (an
    unreadable file cannot be rewritten), and a person's erasure outranks that evidence.
    Returns the paths removed (paths hold no personal data)."""
    found = [p for p in settings.lake_broken.rglob("*") if p.is_file()] if settings.lake_broken.exists() else []
    found += [p for p in settings.warehouse_path.parent.glob(f"{settings.warehouse_path.name}.broken-*")]
    for path in found:
        path.unlink(missing_ok=True)
    if found:
        log.warning("erasure: removed %d set-aside copies a repair kept (they cannot be purged in place)",
                    len(found))
    return sorted(str(p) for p in found)


# --------------------------------------------------------------------------- landing files

def _decompressed(raw: bytes, gzipped: bool) -> tuple[bytes, bool]:
    """The content, and whether it was a whole gzip stream. A truncated gzip (quarantined
    whole by the loader) gives what can be decompressed of it."""
    if not gzipped:
        return raw, True
    try:
        return gzip.decompress(raw), True
    except (EOFError, OSError, zlib.error):
        inflater = zlib.decompressobj(wbits=31)
        try:
            return inflater.decompress(raw), False
        except zlib.error:
            return b"", False


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:  # POS files of mainland stores are GB18030
        return data.decode("gb18030", errors="replace")


def mention_mask(lines: pa.Array, needles: Needles) -> pa.Array:
    """Per line: does it mention the person (the same patterns as :meth:`Needles.sql`)."""
    mask = pa.array([False] * len(lines))
    pats = needles.patterns()
    searched = {}
    if "text" in pats:
        searched["text"] = pc.utf8_lower(lines)
    if "digits" in pats:
        searched["digits"] = pc.replace_substring_regex(lines, r"([0-9])[ ().\-]+", r"\1")
    if "alnum" in pats:
        searched["alnum"] = pc.utf8_upper(pc.replace_substring_regex(lines, r"[^0-9A-Za-z]", ""))
    for kind, text in searched.items():
        for pattern in pats[kind]:
            mask = pc.or_(mask, pc.match_substring_regex(text, pattern))
    return mask


def scrub_landing_file(path: Path, drop_lines: set[int], needles: Needles) -> tuple[int, str]:
    """Blank ``drop_lines`` (1-based) and every line mentioning the person; returns the lines
    blanked (0: the file is left untouched) and the SHA-256 the file had before."""
    raw = path.read_bytes()
    before = hashlib.sha256(raw).hexdigest()
    data, whole = _decompressed(raw, path.name.endswith(".gz"))
    byte_lines = data.split(b"\n")
    text_lines = _decode(data).split("\n")
    if len(text_lines) != len(byte_lines):  # a decoder that merged lines: match on bytes only
        text_lines = [b.decode("latin-1") for b in byte_lines]
    blank = mention_mask(pa.array(text_lines, pa.string()), needles).to_pylist() if needles \
        else [False] * len(byte_lines)
    for line in drop_lines:
        if 1 <= line <= len(blank):
            blank[line - 1] = True
    if path.suffix == ".csv" and blank:  # a CSV header is never the person's
        blank[0] = False
    count = sum(1 for b, line in zip(blank, byte_lines) if b and line.strip())
    if not count:
        return 0, before
    out = b"\n".join(b"" if b else line for b, line in zip(blank, byte_lines))
    if path.name.endswith(".gz"):
        out = gzip.compress(out, mtime=0)
    write_bytes(path, out, suffix=".erasing")
    if not whole:
        log.warning("erasure: scrubbed a landing file that was not a whole gzip stream; what "
                    "could be read of it was kept")
    return count, before


def _update_manifest(state: StateStore, rel: str, old_sha: str, path: Path) -> int:
    """Record the scrubbed file as the version already loaded, if that is the version the
    state store holds (a file changed since, or never loaded, is left to the loader)."""
    return state.record_rewritten_file(rel, old_sha, path)


def purge_landing(settings: Settings, needles: Needles, report: LakePurge) -> LakePurge:
    """Blank the person's lines in every landing file (web part files, POS store files)."""
    if not settings.landing.exists():
        return report
    scan = scan_landing(settings.landing)
    files = [*scan.web, *scan.pos]
    by_source: dict[str, list] = defaultdict(list)
    for f in files:
        by_source[f.rel.split("/", 1)[0]].append(f)
    for source, group in by_source.items():
        # the loader of this source must not read a file while it is being replaced
        with source_lock(settings.state_dir, source), StateStore(settings, source) as state:
            for f in group:
                blanked, old_sha = scrub_landing_file(f.path, report.lines.get(f.rel, set()), needles)
                if blanked:
                    report.landing_lines += blanked
                    report.landing_files += 1
                    report.manifest_rows += _update_manifest(state, f.rel, old_sha, f.path)
    if report.landing_files:
        log.info("erasure: landing: %d line(s) blanked in %d file(s)", report.landing_lines,
                 report.landing_files)
    return report

