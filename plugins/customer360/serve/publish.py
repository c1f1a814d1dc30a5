"""Atomic publication of the marts and ML tables for BI tools and analysts.

The published DuckDB file and each Parquet file are written under a temporary name in
the same folder and renamed over the old one: a reader that has the old file open keeps
reading the old version (same inode), a new reader sees the new one, nobody sees half a
publication, and a run that fails before the rename leaves the last publication as it was.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from customer360.core import duck
from customer360.core.files import DUCKDB_SIDECARS, staged_files, write_text
from customer360.core.settings import Settings
from customer360.warehouse.published import PUBLISHED_SCHEMAS, list_publishable_tables

log = logging.getLogger(__name__)


@dataclass
class PublishedTable:
    schema: str
    name: str
    rows: int
    checksum: str


@dataclass
class Publication:
    logical_date: str
    published_at: str
    database: str
    parquet_dir: str
    tables: list[PublishedTable] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def table_checksum(con: duckdb.DuckDBPyConnection, qualified: str) -> tuple[int, str]:
    """Order-independent content checksum: row count and the sum of per-row hashes. The row is
    hashed as a struct (every column): casting it to text first cost 6x as much (every value
    formatted), most of the checksum's time at 100k people."""
    n, h = con.execute(
        f"SELECT count(*), coalesce(sum(hash(t))::VARCHAR, '0') FROM {qualified} t"
    ).fetchone()
    return int(n), hashlib.sha256(f"{n}:{h}".encode()).hexdigest()[:16]


def publish(settings: Settings, logical_date: dt.date) -> Publication:
    warehouse = settings.warehouse_path
    if not warehouse.exists():
        raise FileNotFoundError(f"no warehouse at {warehouse}: build it before publishing")
    marts_dir = settings.published_marts_dir
    marts_dir.mkdir(parents=True, exist_ok=True)
    db_path = settings.published_db
    pub = Publication(logical_date=logical_date.isoformat(),
                      published_at=dt.datetime.now(dt.timezone.utc).isoformat(),
                      database=str(db_path), parquet_dir=str(marts_dir))
    # Everything is written under temporary names, then renamed into place together (the
    # database first, then the Parquet copies); a failure leaves the last publication.
    with staged_files(sidecars=DUCKDB_SIDECARS) as stage:
        con = duck.connect(settings, stage(db_path, create=False))
        try:
            _write_publication(con, warehouse, marts_dir, pub, stage)
        finally:
            con.close()
    write_text(settings.publication_path, json.dumps(pub.as_dict(), indent=2))
    log.info("published %d tables to %s", len(pub.tables), db_path)
    return pub


def _write_publication(con: duckdb.DuckDBPyConnection, warehouse: Path, marts_dir: Path,
                       pub: Publication, stage) -> None:
    """Copy the published tables into the new database ``con`` and stage their Parquet copies."""
    con.execute(f"ATTACH '{warehouse}' AS wh (READ_ONLY)")
    tables = list_publishable_tables(con, "wh")
    if not tables:
        raise RuntimeError(f"the warehouse {warehouse} has no tables in schemas "
                           f"{PUBLISHED_SCHEMAS}: nothing to publish")
    for schema in sorted({s for s, _ in tables}):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for schema, name in tables:
        con.execute(f"CREATE TABLE {schema}.{name} AS SELECT * FROM wh.{schema}.{name}")
        rows, checksum = table_checksum(con, f"{schema}.{name}")
        pub.tables.append(PublishedTable(schema, name, rows, checksum))
        tmp = stage(marts_dir / f"{name}.parquet")
        con.execute(f"COPY {schema}.{name} TO {duck.sql_str(str(tmp))} (FORMAT parquet, COMPRESSION zstd)")
    con.execute("CREATE SCHEMA IF NOT EXISTS meta")
    con.execute("CREATE TABLE meta.publication AS SELECT ? AS logical_date, "
                "CAST(? AS TIMESTAMPTZ) AS published_at, ? AS tables_json",
                [pub.logical_date, pub.published_at, json.dumps([asdict(t) for t in pub.tables])])
    con.execute("DETACH wh")
    con.execute("CHECKPOINT")
