"""What a rebuild of the warehouse cannot derive from the raw zone, kept outside the warehouse.

dbt rebuilds every table of ``warehouse/c360.duckdb`` from the raw Parquet zone except:

- ``intermediate.int_identity__clusters``: the id memory. The model reads its own previous
  version to keep customer ids stable across merges and splits; rebuilt from nothing, a
  cluster that ever merged or split could get another id.
- every table of the ``snapshots`` schema (dbt snapshots, SCD2): a version is stamped with the
  run that saw it; the raw zone holds the latest state, not when each one was seen.
- ``ml.ml_model_runs`` and ``ml.ml_drift``: one set of rows per logical date the ML stage ran.

:func:`export_kept` copies them to ``lake/_state/kept/<schema>.<table>.parquet`` (with
``kept.json``: rows and content checksum of each) after each successful publication and after
an erasure purged the warehouse (so the copies never hold an erased person longer than the
warehouse does). :func:`restore_kept` puts them into a new, empty warehouse before dbt builds
it, preferring the tables of the old warehouse where it still opens.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from pathlib import Path

import duckdb

from customer360.core import duck
from customer360.core.files import atomic_path, write_text
from customer360.core.settings import Settings

log = logging.getLogger(__name__)

KEPT_DIR = "kept"
SNAPSHOT_SCHEMA = "snapshots"
FIXED_TABLES = (("intermediate", "int_identity__clusters"), ("ml", "ml_model_runs"), ("ml", "ml_drift"))


def kept_dir(settings: Settings) -> Path:
    return settings.state_dir / KEPT_DIR


def kept_index_path(settings: Settings) -> Path:
    return kept_dir(settings) / "kept.json"


def kept_tables(con: duckdb.DuckDBPyConnection, catalog: str) -> list[tuple[str, str]]:
    """The tables of ``catalog`` that a rebuild cannot derive (those that exist)."""
    rows = con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_catalog = ? "
        "AND table_type = 'BASE TABLE' AND (table_schema = ? OR list_contains(?, "
        "table_schema || '.' || table_name)) ORDER BY 1, 2",
        [catalog, SNAPSHOT_SCHEMA, [f"{s}.{t}" for s, t in FIXED_TABLES]]).fetchall()
    return [(s, t) for s, t in rows]


def spark_kept_tables(settings: Settings) -> list[tuple[str, str]]:
    """The same tables of the Spark warehouse (its ``__c360_`` work tables left out)."""
    from customer360.warehouse.engine_io import SIDE_TABLE_MARKER, spark_tables
    from customer360.warehouse.spark_session import spark_session

    spark = spark_session(settings)
    listed = {s: set(spark_tables(spark, s)) for s in {SNAPSHOT_SCHEMA, *(s for s, _ in FIXED_TABLES)}}
    snapshots = [(SNAPSHOT_SCHEMA, n) for n in sorted(listed[SNAPSHOT_SCHEMA]) if SIDE_TABLE_MARKER not in n]
    return snapshots + [(s, t) for s, t in FIXED_TABLES if t in listed[s]]


def content_checksum(con: duckdb.DuckDBPyConnection, relation: str) -> tuple[int, str]:
    """Row count and an order-independent hash of the rows (every column)."""
    n, h = con.execute(f"SELECT count(*), coalesce(sum(hash(t))::VARCHAR, '0') FROM {relation} t").fetchone()
    return int(n), hashlib.sha256(f"{n}:{h}".encode()).hexdigest()[:16]


def read_index(settings: Settings) -> dict:
    """kept.json, or {} when nothing was kept yet. Raises ValueError when it does not parse."""
    path = kept_index_path(settings)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def export_kept(settings: Settings, warehouse: Path | None = None) -> dict:
    """Copy the kept tables of the warehouse to ``lake/_state/kept/``; returns kept.json.

    Each file is replaced atomically and kept.json, written last, names the set; a copy that
    died half-way leaves older files of some tables beside newer ones of others, each whole.
    """
    if warehouse is None and settings.engine == "spark":
        from customer360.warehouse.engine_io import spark_duckdb_copy

        with spark_duckdb_copy(settings, spark_kept_tables(settings), name="spark_kept") as copy:
            return export_kept(settings, copy)
    warehouse = warehouse or settings.warehouse_path
    if not warehouse.exists():
        return {}
    folder = kept_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    con = duck.connect(settings)
    try:
        con.execute(f"ATTACH {duck.sql_str(str(warehouse))} AS wh (READ_ONLY)")
        tables = {}
        for schema, name in kept_tables(con, "wh"):
            relation = f'wh."{schema}"."{name}"'
            rows, checksum = content_checksum(con, relation)
            dest = folder / f"{schema}.{name}.parquet"
            with atomic_path(dest) as tmp:
                con.execute(f"COPY (SELECT * FROM {relation}) TO {duck.sql_str(str(tmp))} "
                            "(FORMAT parquet, COMPRESSION zstd)")
            tables[f"{schema}.{name}"] = {"file": dest.name, "rows": rows, "checksum": checksum}
    finally:
        con.close()
    previous = {}
    try:
        previous = read_index(settings).get("tables", {})
    except ValueError:
        pass  # replaced below
    for gone in set(previous) - set(tables):
        (folder / previous[gone]["file"]).unlink(missing_ok=True)
    index = {"exported_at": dt.datetime.now(dt.timezone.utc).isoformat(), "tables": tables}
    write_text(kept_index_path(settings), json.dumps(index, indent=2, sort_keys=True))
    log.info("kept %d table(s) a rebuild cannot derive in %s", len(tables), folder)
    return index


def _attach_readable(con: duckdb.DuckDBPyConnection, path: Path | None) -> bool:
    if path is None or not path.exists():
        return False
    try:
        con.execute(f"ATTACH {duck.sql_str(str(path))} AS old (READ_ONLY)")
        con.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog = 'old'").fetchone()
        return True
    except duckdb.Error as exc:
        log.warning("restore: the old warehouse %s does not open (%s); using the kept copies",
                    path, str(exc).splitlines()[0])
        return False


def restore_kept(settings: Settings, target: Path, old_warehouse: Path | None = None) -> dict[str, str]:
    """Create the kept tables in the new warehouse ``target`` (which dbt then builds): from
    ``old_warehouse`` where it opens and its table reads, else from the kept copy. Returns
    {schema.table: where it came from}."""
    index = read_index(settings).get("tables", {})
    con = duck.connect(settings, target)
    restored: dict[str, str] = {}
    try:
        old = _attach_readable(con, old_warehouse)
        in_old = set(kept_tables(con, "old")) if old else set()
        names = sorted({tuple(k.split(".", 1)) for k in index} | in_old)
        for schema, name in names:
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            key = f"{schema}.{name}"
            if (schema, name) in in_old:
                try:
                    con.execute(f'CREATE TABLE "{schema}"."{name}" AS SELECT * FROM old."{schema}"."{name}"')
                    restored[key] = f"old warehouse {old_warehouse}"
                    continue
                except duckdb.Error as exc:
                    log.warning("restore: %s of the old warehouse does not read (%s)", key,
                                str(exc).splitlines()[0])
                    con.execute(f'DROP TABLE IF EXISTS "{schema}"."{name}"')
            if key in index:
                path = kept_dir(settings) / index[key]["file"]
                con.execute(f'CREATE TABLE "{schema}"."{name}" AS SELECT * FROM '
                            f"read_parquet({duck.sql_str(str(path))})")
                restored[key] = f"kept copy {path}"
        if old:
            con.execute("DETACH old")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return restored
