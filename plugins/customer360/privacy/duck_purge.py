"""A person removed from the DuckDB files: the warehouse, the publication, and what is
derived from them; and DuckDB files compacted so that a deleted value does not survive.

Deleting rows (or replacing a table, as every dbt build does) frees DuckDB blocks without
overwriting them: the old bytes stay in the file until the space is reused. So after an
erasure every DuckDB file the person was in is *compacted*: copied table by table into a
new file (``COPY FROM DATABASE``), which is synced and renamed over the old one.

:func:`purge_tables` deletes, in every table of the given schemas, the rows whose key
columns name the person (customer ids, contact ids, devices, orders, identity keys,
normalized emails and phones). The warehouse gets it before its rebuild so that nothing
waits on the rebuild (the SCD2 snapshot and the identity memory are never rebuilt from raw:
they *must* be purged here), the publication so that the person leaves what BI reads at
once, whatever happens to the next run.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import duckdb

from customer360.core import duck
from customer360.core.files import DUCKDB_SIDECARS, atomic_path, remove_temps, write_text
from customer360.core.settings import Settings
from customer360.privacy.person import Needles, PersonKeys, load_key_tables

log = logging.getLogger(__name__)

# column name -> the p_* table its values are compared with (person.load_key_tables)
KEY_COLUMNS = {
    "customer_id": "p_customers",
    "contact_id": "p_contacts", "primary_contact_id": "p_contacts", "user_id": "p_contacts",
    "anonymous_id": "p_anon",
    "order_id": "p_orders",
    "identity_key": "p_identity", "left_key": "p_identity", "right_key": "p_identity",
    "email": "p_emails", "trait_email": "p_emails", "customer_email": "p_emails",
    "phone": "p_phones", "trait_phone": "p_phones", "customer_phone": "p_phones",
    "loyalty_id": "p_loyalty",
}
LIST_KEY_COLUMNS = {"crm_contact_ids": "p_contacts"}
_TEXT_TYPES = ("VARCHAR", "JSON")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def row_predicate(columns: dict[str, str], needles: Needles | None = None) -> str | None:
    """SQL condition over a table's ``columns`` (name -> type), true for the person's rows;
    None when the table has no column that could name them."""
    parts = []
    for col, typ in columns.items():
        table = KEY_COLUMNS.get(col.lower())
        if table and typ.upper().startswith(_TEXT_TYPES):
            parts.append(f"{_q(col)} IN (SELECT v FROM {table})")
        table = LIST_KEY_COLUMNS.get(col.lower())
        if table and typ.upper().endswith("[]"):
            parts.append(f"list_has_any({_q(col)}, (SELECT coalesce(list(v), []) FROM {table}))")
    if needles:
        text_cols = [c for c, t in columns.items() if t.upper().startswith(_TEXT_TYPES)]
        if text_cols:
            parts.append(needles.sql("concat_ws(' ', " + ", ".join(_q(c) for c in text_cols) + ")"))
    return " OR ".join(f"({p})" for p in parts) if parts else None


def _tables(con: duckdb.DuckDBPyConnection, catalog: str,
            schemas: tuple[str, ...] | None) -> list[tuple[str, str]]:
    rows = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ? "
        "AND NOT internal ORDER BY 1, 2", [catalog]).fetchall()
    return [(s, t) for s, t in rows if schemas is None or s in schemas]


def _columns(con: duckdb.DuckDBPyConnection, catalog: str, schema: str, table: str) -> dict[str, str]:
    rows = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = ? "
        "AND schema_name = ? AND table_name = ? ORDER BY column_index", [catalog, schema, table]).fetchall()
    return {c: t for c, t in rows}


def purge_tables(con: duckdb.DuckDBPyConnection, catalog: str, keys: PersonKeys,
                 needles: Needles | None = None,
                 schemas: tuple[str, ...] | None = None) -> dict[str, int]:
    """DELETE the person's rows from every table of ``catalog`` (in ``schemas``, default
    all) on a writable connection; returns rows deleted per ``schema.table``."""
    load_key_tables(con, keys)
    removed = {}
    for schema, table in _tables(con, catalog, schemas):
        predicate = row_predicate(_columns(con, catalog, schema, table), needles)
        if predicate is None:
            continue
        n = con.execute(f"DELETE FROM {_q(catalog)}.{_q(schema)}.{_q(table)} WHERE {predicate}").fetchone()[0]
        if n:
            removed[f"{schema}.{table}"] = int(n)
    return removed


def compact(path: Path, settings: Settings | None = None) -> dict:
    """Rewrite a DuckDB file into a fresh one (no free blocks, so no deleted value left in
    it) and rename it into place. Needs the file to have no other open connection.
    ``settings``: DuckDB's memory limit, threads and spill folder (DuckDB's defaults without)."""
    if not path.exists():
        return {"compacted": False}
    # A compaction killed mid-copy left its half-written copy (a warehouse-sized file) beside
    # the warehouse; the caller holds the warehouse slot, so no live compaction owns one.
    for leftover in remove_temps(path.parent, suffixes=(".compacting",)):
        log.warning("removed %s, left by a compaction that did not finish", leftover.name)
    before = path.stat().st_size
    con = duck.connect(settings, path)
    try:
        con.execute("CHECKPOINT")  # fold a leftover WAL in before reading the file
    finally:
        con.close()
    with atomic_path(path, suffix=".compacting", create=False, sidecars=DUCKDB_SIDECARS) as tmp:
        con = duck.connect(settings)
        try:
            con.execute(f"ATTACH '{_sql_path(path)}' AS src (READ_ONLY)")
            con.execute(f"ATTACH '{_sql_path(tmp)}' AS dst")
            con.execute("COPY FROM DATABASE src TO dst")
            con.execute("DETACH dst")
            con.execute("DETACH src")
        finally:
            con.close()
        # The old file was checkpointed: a WAL left beside it must not be replayed on the new one.
        Path(f"{path}.wal").unlink(missing_ok=True)
    return {"compacted": True, "bytes_before": before, "bytes_after": path.stat().st_size}


def free_blocks(path: Path, settings: Settings | None = None) -> int:
    """Free blocks of a DuckDB file (0 right after :func:`compact`)."""
    con = duck.connect(settings, path, read_only=True)
    try:
        return int(con.execute("SELECT free_blocks FROM pragma_database_size()").fetchone()[0])
    finally:
        con.close()


# --------------------------------------------------------------------------- warehouse

def purge_warehouse(settings: Settings, keys: PersonKeys, needles: Needles) -> dict[str, int]:
    """Delete the person's rows from every warehouse table, in place. Names are not matched:
    a namesake's contact row is someone else's (the rebuild from the purged raw zone removes
    the person's free text wherever it went)."""
    path = settings.warehouse_path
    if not path.exists():
        return {}
    con = duck.connect(settings, path)
    try:
        catalog = con.execute("SELECT current_database()").fetchone()[0]
        con.execute("BEGIN TRANSACTION")
        removed = purge_tables(con, catalog, keys, needles.without_names())
        con.execute("COMMIT")
    finally:
        con.close()
    return removed


# --------------------------------------------------------------------------- publication

def purge_publication(settings: Settings, keys: PersonKeys) -> dict:
    """Remove the person from the publication: a new version (as publish makes one) with the
    current one's DuckDB file and Parquet copies less the person's rows, made current in one
    swap; every older version is removed, since each still holds the person."""
    from customer360.serve.publish import current_version_dir, new_version, table_checksum
    from customer360.warehouse.published import PUBLISHED_SCHEMAS

    current = current_version_dir(settings)
    if current is None and settings.published_db.exists():
        current = settings.published_db.parent  # a home an older version published into
    if current is None or not (current / settings.published_db.name).exists():
        return {"tables": {}}
    db_path = current / settings.published_db.name
    removed: dict[str, int] = {}
    sums: dict[str, tuple[int, str]] = {}  # the purged tables' new rows and checksums
    parquet_files = 0
    with new_version(settings, keep=1) as folder:
        (folder / "marts").mkdir()
        con = duck.connect(settings, folder / db_path.name)
        try:
            con.execute(f"ATTACH '{_sql_path(db_path)}' AS pub (READ_ONLY)")
            load_key_tables(con, keys)
            for schema, table in _tables(con, "pub", None):
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(schema)}")
                predicate = row_predicate(_columns(con, "pub", schema, table))
                keep = f"WHERE NOT coalesce(({predicate}), false)" if predicate else ""
                con.execute(f"CREATE TABLE {_q(schema)}.{_q(table)} AS "
                            f"SELECT * FROM pub.{_q(schema)}.{_q(table)} {keep}")
                before = con.execute(f"SELECT count(*) FROM pub.{_q(schema)}.{_q(table)}").fetchone()[0]
                after = con.execute(f"SELECT count(*) FROM {_q(schema)}.{_q(table)}").fetchone()[0]
                old_parquet = current / "marts" / f"{table}.parquet"
                if before != after:
                    removed[f"{schema}.{table}"] = int(before - after)
                    sums[f"{schema}.{table}"] = table_checksum(con, f"{_q(schema)}.{_q(table)}")
                if schema in PUBLISHED_SCHEMAS and old_parquet.exists():
                    # every copy is rewritten from the purged table, so nothing of the old
                    # version is carried over unexamined
                    con.execute(f"COPY {_q(schema)}.{_q(table)} TO "
                                f"'{_sql_path(folder / 'marts' / old_parquet.name)}' "
                                "(FORMAT parquet, COMPRESSION zstd)")
                    parquet_files += int(before != after)
            con.execute("DETACH pub")
            con.execute("CHECKPOINT")
        finally:
            con.close()
        if (current / "publication.json").exists():
            pub = json.loads((current / "publication.json").read_text())
            pub.update(version=folder.name.split(".")[1], purged_at=dt.datetime.now(dt.timezone.utc).isoformat())
            for t in pub.get("tables", []):  # what it says it holds is what it holds
                t["rows"], t["checksum"] = sums.get(f"{t['schema']}.{t['name']}", (t["rows"], t["checksum"]))
            write_text(folder / "publication.json", json.dumps(pub, indent=2))
    return {"tables": removed, "parquet_files": parquet_files}
