"""The raw zone: immutable Parquet batches, quarantine files and reconciliation counts.

Layout under ``$C360_HOME/lake``::

    raw/<source>/<entity>/load_date=YYYY-MM-DD/<batch_id>.parquet
    quarantine/<source>/<entity>/load_date=YYYY-MM-DD/<batch_id>.parquet
    _state/state.sqlite          what the extract tasks have landed (customer360.ingest.state)

Every write goes to a temporary file in the destination folder and is renamed into
place, so a crash never leaves a half file under a name that readers count. Extract
tasks only ever write here, never the warehouse DuckDB file, so they run in parallel.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from customer360.core import duck
from customer360.core.duck import sql_str
from customer360.core.files import append_jsonl, atomic_path, read_jsonl_lines
from customer360.core.settings import Settings

META_COLUMNS = ("_batch_id", "_source_file", "_source_line", "_loaded_at", "_record_hash")
QUARANTINE_SCHEMA = pa.schema([
    ("source_file", pa.string()),
    ("source_line", pa.int64()),
    ("record_key", pa.string()),
    ("reason", pa.string()),
    ("raw_text", pa.string()),
])


def unreadable_parquet(path: Path) -> str | None:
    """Why ``path`` is not a readable Parquet file (None when its footer and schema read):
    a truncated file loses its footer, the one thing every reader needs first."""
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def new_batch_id(source: str, entity: str, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{source}-{entity}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def batch_path(root: Path, source: str, entity: str, load_date: dt.date, batch_id: str) -> Path:
    return root / source / entity / f"load_date={load_date.isoformat()}" / f"{batch_id}.parquet"


def _copy_atomically(con: duckdb.DuckDBPyConnection, select_sql: str, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        con.execute(f"COPY ({select_sql}) TO {sql_str(str(tmp))} (FORMAT parquet, COMPRESSION zstd)")


def write_raw_batch(
    settings: Settings,
    table: pa.Table,
    *,
    source: str,
    entity: str,
    load_date: dt.date,
    batch_id: str,
    loaded_at: dt.datetime | None = None,
) -> Path | None:
    """Write ``table`` as one immutable raw batch and return its path (None when empty).

    ``table`` carries the source's columns plus ``_source_file`` and ``_source_line``
    (null where it does not apply); ``_batch_id``, ``_loaded_at`` and ``_record_hash``
    (md5 of the record's source columns, for dedup and change detection) are added here.
    """
    if table.num_rows == 0:
        return None
    loaded_at = loaded_at or utcnow()
    for col, typ in (("_source_file", pa.string()), ("_source_line", pa.int64())):
        if col not in table.column_names:
            table = table.append_column(col, pa.nulls(table.num_rows, type=typ))
    data_cols = [c for c in table.column_names if not c.startswith("_")]
    # Loader-added context (e.g. _store_timezone, _folder_date) is kept but not hashed.
    context_cols = [c for c in table.column_names if c.startswith("_") and c not in META_COLUMNS]
    row = ", ".join(f'"{c}"' for c in data_cols)
    context = "".join(f', "{c}"' for c in context_cols)
    # Separator-joined text is about twice as fast to hash as the row cast to a struct
    # string; chr(0) keeps NULL distinct from ''.
    hashed = ", ".join(f'coalesce(CAST("{c}" AS VARCHAR), chr(0))' for c in data_cols)
    dest = batch_path(settings.lake_raw, source, entity, load_date, batch_id)
    con = duck.connect(settings)
    try:
        con.register("batch", table)
        select = (
            f"SELECT {row}{context}, '{batch_id}' AS _batch_id, _source_file, _source_line, "
            f"TIMESTAMPTZ '{loaded_at.isoformat()}' AS _loaded_at, "
            f"md5(concat_ws(chr(31), {hashed})) AS _record_hash FROM batch"
        )
        _copy_atomically(con, select, dest)
    finally:
        con.close()
    return dest


def write_quarantine(
    settings: Settings,
    rows: list[dict],
    *,
    source: str,
    entity: str,
    load_date: dt.date,
    batch_id: str,
) -> Path | None:
    """Write rejected records (source_file, source_line, record_key, reason, raw_text)."""
    if not rows:
        return None
    table = pa.Table.from_pylist(
        [{k: r.get(k) for k in QUARANTINE_SCHEMA.names} for r in rows], schema=QUARANTINE_SCHEMA)
    dest = batch_path(settings.quarantine, source, entity, load_date, batch_id)
    con = duck.connect(settings)
    try:
        con.register("q", table)
        _copy_atomically(
            con,
            f"SELECT *, '{batch_id}' AS _batch_id, TIMESTAMPTZ '{utcnow().isoformat()}' AS _quarantined_at FROM q",
            dest,
        )
    finally:
        con.close()
    return dest


@dataclass
class Reconciliation:
    """For one batch: records read = records landed + records quarantined."""

    source: str
    entity: str
    batch_id: str
    load_date: str
    source_file: str | None
    read: int
    landed: int
    quarantined: int
    duplicates_in_raw: int = 0
    note: str = ""

    @property
    def balanced(self) -> bool:
        return self.read == self.landed + self.quarantined


def record_reconciliation(settings: Settings, rec: Reconciliation) -> None:
    """Append one reconciliation row to ``$C360_HOME/audit/reconciliation.jsonl``.

    A JSON-lines file under a lock rather than a DuckDB table because extract tasks
    run in parallel and must not open the single-writer warehouse file.
    """
    if not rec.balanced:
        raise AssertionError(
            f"reconciliation broken for {rec.source}/{rec.entity} batch {rec.batch_id}: "
            f"read {rec.read} != landed {rec.landed} + quarantined {rec.quarantined}")
    row = asdict(rec) | {"recorded_at": utcnow().isoformat()}
    append_jsonl(settings.reconciliation_path, [json.dumps(row, ensure_ascii=False)])


def read_reconciliation(settings: Settings) -> list[dict]:
    return [json.loads(line) for line in read_jsonl_lines(settings.reconciliation_path)]
