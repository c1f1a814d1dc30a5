"""POS loader: per-store daily CSV files and the reference files into the raw zone
(pos/transactions, pos/files, pos/stores, pos/products).

For logical date D it reads every ``pos/date=<= D`` folder and lands the files that are new
or changed since the state store saw them. Each file is decoded in its store's
``file_encoding`` (GB18030 included) and keeps ``txn_ts`` as given, next to the store's time
zone, for staging to convert to UTC. A changed file is a correction: it lands as a new
version whose pos/files row names the batch it supersedes (the raw zone keeps both; staging
keeps the newest). Rows the contract calls malformed (:mod:`customer360.ingest.landing.pos_rows`) go
to quarantine with file, line, reason and the decoded line; the other rows of the file land.
Reference files land as a new batch whenever they change.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Sequence

import duckdb
import pyarrow as pa

from customer360.core.duck import connect
from customer360.ingest.errors import ExtractError
from customer360.ingest.raw_zone import Reconciliation
from customer360.ingest.landing.batches import ARROW_BATCH_ROWS, Batch, BatchContent, land, landing_run
from customer360.ingest.landing.layout import POS_DIR
from customer360.ingest.landing.lines import ReadLimits, byte_batches
from customer360.ingest.state import FileOutcome, FileVersion, StateStore
from customer360.ingest.landing.pos_rows import (ParsedCsv, Store, parse_pos_files, parse_products,
                                          parse_stores)
from customer360.core.settings import Settings

log = logging.getLogger(__name__)

SOURCE = "pos"
BATCH_BYTES = 128 * 2**20
_LOAD_COLUMNS = ("_store_timezone", "_store_country", "_file_encoding", "_folder_date")


def _quarantine_rows(con: duckdb.DuckDBPyConnection, parsed: ParsedCsv, key: str) -> list[dict]:
    cur = con.execute(f"""
        SELECT file_id, ln AS source_line,
               CASE WHEN structural_reason IS NULL THEN {key} END AS record_key,
               reason, raw_line AS raw_text
        FROM {parsed.table} WHERE reason IS NOT NULL ORDER BY file_id, ln""")
    names = [d[0] for d in cur.description]
    rows = []
    for r in cur.fetchall():
        row = dict(zip(names, r))
        row["source_file"] = parsed.files[row.pop("file_id")].rel
        rows.append(row)
    for fid, reason in parsed.unreadable.items():
        rows.append({"source_file": parsed.files[fid].rel, "source_line": None,
                     "record_key": None, "reason": reason, "raw_text": None})
    return rows


def file_reason(parsed: ParsedCsv, fid: int) -> str | None:
    """Why every row of a readable file is quarantined (its header, or bytes in another
    encoding than declared), or None when its rows are judged one by one."""
    header = parsed.headers.get(fid)
    if parsed.mismatches.get(fid):
        return parsed.mismatches[fid]
    return header.error if header is not None and header.names else None


def _outcomes(con: duckdb.DuckDBPyConnection, parsed: ParsedCsv,
              versions: Sequence[FileVersion]) -> list[FileOutcome]:
    counts = {fid: (n, bad) for fid, n, bad in con.execute(
        f"SELECT file_id, count(*), count(reason) FROM {parsed.table} GROUP BY file_id"
    ).fetchall()}
    out = []
    for fid, v in enumerate(versions):
        if fid in parsed.unreadable:
            # A file that cannot be read counts as one record quarantined: never lost silently.
            out.append(FileOutcome(v, "quarantined", 1, 0, 1, reason=parsed.unreadable[fid]))
            log.warning("POS file %s quarantined: %s", v.file.rel, parsed.unreadable[fid])
            continue
        n, bad = counts.get(fid, (0, 0))
        whole = file_reason(parsed, fid)
        if whole:
            # Every row is in quarantine with this reason; status 'quarantined' lets a fixed
            # stores.csv (the declared encoding, say) retry the file.
            out.append(FileOutcome(v, "quarantined", n, n - bad, bad, reason=whole))
            log.warning("POS file %s quarantined whole (%d rows): %s", v.file.rel, n, whole)
            continue
        note = parsed.notes.get(fid)
        if note:
            log.warning("POS file %s: %s", v.file.rel, note)
        out.append(FileOutcome(v, "loaded", n, n - bad, bad, reason=note))
    return out


def _rows(con: duckdb.DuckDBPyConnection, parsed: ParsedCsv,
          load_columns: Sequence[str] = ()) -> pa.Table:
    """The good rows, as sent, with their load columns."""
    con.register("_file_names", pa.table({"file_id": pa.array(range(len(parsed.files)),
                                                              pa.int32()),
                                          "rel": [f.rel for f in parsed.files]}))
    try:
        columns = ", ".join(f'r."{c}"' for c in parsed.columns)
        extra = "".join(f", r.{c}" for c in load_columns)
        return con.execute(f"""
            SELECT {columns}, r._extra{extra}, n.rel AS _source_file, r.ln AS _source_line
            FROM {parsed.table} r JOIN _file_names n USING (file_id)
            WHERE r.reason IS NULL
        """).to_arrow_table(batch_size=ARROW_BATCH_ROWS)
    finally:
        con.unregister("_file_names")


def _land_reference(settings: Settings, con: duckdb.DuckDBPyConnection, manifest: StateStore,
                    entity: str, parsed: ParsedCsv, version: FileVersion,
                    logical_date: dt.date) -> Reconciliation:
    batch = Batch.start(settings, manifest, SOURCE, entity, logical_date, with_files_entity=False)
    content = BatchContent(rows=_rows(con, parsed), quarantine=_quarantine_rows(
        con, parsed, f"trim({parsed.columns[0]})"), outcomes=_outcomes(con, parsed, [version]),
        note="reference file changed")
    return land(settings, manifest, batch, content)


def _reference_problem(parsed: ParsedCsv) -> str | None:
    """Why a reference file cannot be used at all (the run stops rather than guess)."""
    if parsed.unreadable:
        return next(iter(parsed.unreadable.values()))
    header = parsed.headers.get(0)
    if header is None or not header.names:
        return "empty file (no header)"
    return header.error


def _land_transactions(settings: Settings, con: duckdb.DuckDBPyConnection, manifest: StateStore,
                       group: list[FileVersion], stores: dict[str, Store],
                       logical_date: dt.date) -> Reconciliation:
    batch = Batch.start(settings, manifest, SOURCE, "transactions", logical_date)
    parsed = parse_pos_files(con, [v.file for v in group], stores, ReadLimits.of(settings))
    outcomes = _outcomes(con, parsed, group)
    corrections = sum(1 for v in group if v.previous_batch_id)
    notes = [f"{len(group)} files"]
    if corrections:
        notes.append(f"{corrections} corrected file(s) supersede an earlier batch")
    whole = sum(1 for o in outcomes if o.status == "quarantined")
    if whole:
        notes.append(f"{whole} file(s) quarantined whole")
    if parsed.notes:
        notes.append(f"{len(parsed.notes)} file(s) not in their declared encoding, read as "
                     f"their byte-order mark says")
    content = BatchContent(
        rows=_rows(con, parsed, _LOAD_COLUMNS),
        quarantine=_quarantine_rows(con, parsed, "transaction_id || ':' || line_no"),
        outcomes=outcomes,
        file_extra={"store_id": [v.file.store_id for v in group],
                    "business_date": [v.file.folder_date.isoformat() for v in group]},
        note="; ".join(notes))
    return land(settings, manifest, batch, content)


def _reference(settings: Settings, con: duckdb.DuckDBPyConnection, manifest: StateStore,
               entity: str, parsed: ParsedCsv, logical_date: dt.date,
               recs: list[Reconciliation]) -> bool:
    """Land a reference file when it changed (and say whether it did); stop the run when
    it cannot be used at all rather than guess encodings and time zones."""
    problem = _reference_problem(parsed)
    if problem:
        raise ExtractError(f"{parsed.files[0].rel} cannot be used: {problem}")
    changed = manifest.changed(parsed.files, entity)
    for version in changed:
        recs.append(_land_reference(settings, con, manifest, entity, parsed, version,
                                    logical_date))
    return bool(changed)


def load_pos(settings: Settings, logical_date: dt.date) -> list[Reconciliation]:
    """Land the reference files (when changed) and every POS file up to ``logical_date`` not
    landed yet; one reconciliation a batch (an empty list when there is nothing new)."""
    with landing_run(settings, SOURCE, POS_DIR, logical_date) as (manifest, scan):
        if scan.stores is None:
            if scan.pos:
                raise ExtractError("pos/reference/stores.csv is missing: the stores' time zones "
                                   "and file encodings are unknown")
            log.info("pos: no POS files up to %s", logical_date)
            return []
        recs: list[Reconciliation] = []
        con = connect(settings)
        limits = ReadLimits.of(settings)
        try:
            stores_parsed, stores = parse_stores(con, scan.stores, limits)
            stores_changed = _reference(settings, con, manifest, "stores", stores_parsed,
                                        logical_date, recs)
            if scan.products is not None:
                _reference(settings, con, manifest, "products",
                           parse_products(con, scan.products, limits), logical_date, recs)
            # A fixed stores.csv may make files quarantined for an unknown store readable.
            versions = manifest.changed(scan.pos, "transactions",
                                        retry_quarantined=stores_changed)
            for group in byte_batches(versions, lambda v: v.size, BATCH_BYTES):
                recs.append(_land_transactions(settings, con, manifest, group, stores,
                                               logical_date))
        finally:
            con.close()
        if not recs:
            log.info("pos: nothing new up to %s", logical_date)
        return recs
