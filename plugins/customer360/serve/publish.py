"""Atomic publication of the marts and ML tables for BI tools and analysts, as a set.

Each publication is a folder of its own, ``published/v<N>/`` (the DuckDB file, one Parquet
file a table, publication.json), written in full under a hidden staging name, synced, renamed
to ``v<N>``, and only then made current by one rename of the symlink ``published/current``.
A reader sees the whole old publication or the whole new one: never the new database with the
old Parquet files, never a table dropped in one and present in the other. A publish that dies
before the swap leaves the current one as it was; its staging folder, and a ``v<N>`` newer than
``current`` that never became current, are removed by the next publish.

The paths BI tools read do not change: ``published/c360.duckdb``, ``published/marts/`` and
``published/publication.json`` are symlinks into ``current/``. A reader that opens several
files and wants them from one version resolves ``published/current`` once
(:func:`current_version_dir`) and reads under that folder. ``C360_PUBLISH_KEEP_VERSIONS``
versions are kept (so that a reader still inside an older one finishes it); older ones are
removed.

Parquet copies are written only for what changed (issue 19: every day rewrote all of them).
Each table's fingerprint (its columns and :func:`table_checksum`, taken on the warehouse) is
kept in publication.json; a table whose fingerprint is the current publication's has its
Parquet file hard-linked from there (the same inode: nothing is written, and a version's files
are never written after it is made, so sharing them is safe). The new version is still a whole
folder made current by one swap. The DuckDB file is still made new each time: a copy of the
previous file with the changed tables replaced would be cheaper, but it keeps the replaced
tables' freed blocks, in which earlier rows survive (an erased person's among them; the
erasure tests check that published files hold no free block).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import duckdb

from customer360.core import audit, duck
from customer360.core.files import remove_temps, staged_folder, swap_symlink, write_text
from customer360.core.settings import Settings
from customer360.warehouse.published import PUBLISHED_SCHEMAS, list_publishable_tables

log = logging.getLogger(__name__)

CURRENT = "current"
_VERSION = re.compile(r"v(\d{6,})")
# The stable names readers use, each a symlink into the current version.
STABLE_LINKS = ("c360.duckdb", "marts", "publication.json")


@dataclass
class PublishedTable:
    schema: str
    name: str
    rows: int
    checksum: str
    fingerprint: str = ""   # columns and content: equal means the previous copy can be reused
    reused: bool = False    # carried over from the previous version instead of rewritten


@dataclass
class Publication:
    logical_date: str
    published_at: str
    database: str
    parquet_dir: str
    tables: list[PublishedTable] = field(default_factory=list)
    version: str = ""                   # the folder under published/ (v000001, ...)
    audit_head: dict | None = None      # the audit chain's {seq, hash} when it was made

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


def table_fingerprint(con: duckdb.DuckDBPyConnection, catalog: str, schema: str, name: str,
                      checksum: str) -> str:
    """``checksum`` with the table's column names and types: hashing rows as structs does not
    see a renamed column, and a reused copy must have the columns the warehouse has now."""
    columns = con.execute(
        "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) "
        "FROM information_schema.columns WHERE table_catalog = ? AND table_schema = ? "
        "AND table_name = ?", [catalog, schema, name]).fetchone()[0]
    return hashlib.sha256(f"{columns}|{checksum}".encode()).hexdigest()[:16]


def versions(settings: Settings) -> list[int]:
    """The numbers of the version folders ``published/v<N>`` there are, oldest first."""
    root = settings.published_dir
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir()
                  if p.is_dir() and not p.is_symlink() and (m := _VERSION.fullmatch(p.name)))


def current_version_dir(settings: Settings) -> Path | None:
    """The folder of the current publication (``published/current`` resolved once), or None."""
    link = settings.published_dir / CURRENT
    return link.resolve() if link.is_symlink() and link.exists() else None


def _current_number(settings: Settings) -> int | None:
    current = current_version_dir(settings)
    match = _VERSION.fullmatch(current.name) if current else None
    return int(match.group(1)) if match else None


def _ensure_stable_links(settings: Settings) -> None:
    """``published/<name>`` -> ``current/<name>`` for the names BI tools open. A home an older
    version published into has real files there: they are replaced by the links (the marts
    folder is briefly missing during that one swap, on the first publish)."""
    root = settings.published_dir
    for name in STABLE_LINKS:
        path, target = root / name, f"{CURRENT}/{name}"
        if not (path.is_symlink() and os.readlink(path) == target):
            swap_symlink(path, target)


def _clean(settings: Settings) -> list[str]:
    """Remove what a publish killed mid-way left: staging folders and temporary files, and
    version folders newer than ``current`` (written in full, never made current)."""
    root = settings.published_dir
    removed = [p.name for p in remove_temps(root)]
    current = _current_number(settings)
    for n in versions(settings):
        if current is None or n > current:
            shutil.rmtree(root / f"v{n:06d}")
            removed.append(f"v{n:06d}")
    if removed:
        log.warning("publication: removed what an unfinished publish left: %s", ", ".join(removed))
    return removed


def prune(settings: Settings, keep: int | None = None) -> list[str]:
    """Remove all but the newest ``keep`` versions (default ``C360_PUBLISH_KEEP_VERSIONS``);
    the current one is always kept."""
    keep = settings.publish_keep_versions if keep is None else keep
    current = _current_number(settings)
    old = [n for n in versions(settings) if n != current]
    kept_others = max(keep - (1 if current is not None else 0), 0)
    doomed = old[:len(old) - kept_others] if kept_others else old
    for n in doomed:
        shutil.rmtree(settings.published_dir / f"v{n:06d}", ignore_errors=True)
    return [f"v{n:06d}" for n in doomed]


@contextmanager
def new_version(settings: Settings, *, keep: int | None = None) -> Iterator[Path]:
    """Yield an empty staging folder for a whole publication; when the block ends without
    error it is synced, renamed to the next ``v<N>`` and made current with one symlink swap,
    then old versions are pruned. On error the staging folder is removed and ``current`` is
    untouched. Callers hold the run lock (one writer of ``published/`` at a time)."""
    root = settings.published_dir
    root.mkdir(parents=True, exist_ok=True)
    _clean(settings)
    name = f"v{max([*versions(settings), 0]) + 1:06d}"
    with staged_folder(root / name) as staging:
        yield staging
    _swap_current(settings, name)
    _ensure_stable_links(settings)
    prune(settings, keep)


def _swap_current(settings: Settings, name: str) -> None:
    """The one step that makes a version the publication (its own function so that a test can
    kill a publish right before it)."""
    swap_symlink(settings.published_dir / CURRENT, name)


@contextmanager
def _warehouse_file(settings: Settings) -> Iterator[Path]:
    """The DuckDB file a publication is copied from: the warehouse itself, or on Spark a
    DuckDB copy of the Spark warehouse's published tables, read through the session
    (warehouse.engine_io), so that fingerprints, checksums and copies are the same code on
    both engines. The copy is removed afterwards."""
    if settings.engine != "spark":
        if not settings.warehouse_path.exists():
            raise FileNotFoundError(f"no warehouse at {settings.warehouse_path}: build it before publishing")
        yield settings.warehouse_path
        return
    from customer360.warehouse.dbt_runner import contract_types
    from customer360.warehouse.engine_io import spark_duckdb_copy
    from customer360.warehouse.published import list_spark_publishable_tables
    from customer360.warehouse.spark_session import spark_session

    # The marts' contracts name the types the DuckDB publication has (Spark's TIMESTAMP stands
    # for both TIMESTAMP and TIMESTAMPTZ).
    with spark_duckdb_copy(settings, list_spark_publishable_tables(spark_session(settings)),
                           types=contract_types(settings), name="spark_publication") as path:
        yield path


def publish(settings: Settings, logical_date: dt.date) -> Publication:
    with _warehouse_file(settings) as warehouse:
        return _publish(settings, logical_date, warehouse)


def _publish(settings: Settings, logical_date: dt.date, warehouse: Path) -> Publication:
    db_path = settings.published_db
    pub = Publication(logical_date=logical_date.isoformat(),
                      published_at=dt.datetime.now(dt.timezone.utc).isoformat(),
                      database=str(db_path), parquet_dir=str(settings.published_marts_dir))
    # The chain's head when this publication was made: anchors the audit log (c360 audit verify).
    pub.audit_head = audit.head(settings)
    previous = _previous(settings)
    with new_version(settings) as folder:
        pub.version = folder.name.split(".")[1]
        _write_publication(settings, warehouse, folder, db_path.name, pub, previous)
        write_text(folder / "publication.json", json.dumps(pub.as_dict(), indent=2))
    reused = sum(t.reused for t in pub.tables)
    log.info("published %d tables to %s (version %s; Parquet of %d unchanged tables reused, %d written)",
             len(pub.tables), db_path, pub.version, reused, len(pub.tables) - reused)
    return pub


@dataclass
class _Previous:
    """The current publication, as the next one may reuse it."""

    folder: Path
    fingerprints: dict[str, str]  # "schema.name" -> fingerprint


def _previous(settings: Settings) -> _Previous | None:
    """The current version when its Parquet files can be reused: it has fingerprints, and no
    erasure rewrote it after it was made (a purged copy no longer has the content its recorded
    fingerprint describes)."""
    folder = current_version_dir(settings)
    if folder is None or not (folder / "publication.json").is_file():
        return None
    try:
        meta = json.loads((folder / "publication.json").read_text(encoding="utf-8"))
    except ValueError:
        return None
    if meta.get("purged_at"):
        return None
    prints = {f"{t['schema']}.{t['name']}": t.get("fingerprint") for t in meta.get("tables", [])}
    prints = {k: v for k, v in prints.items() if v}
    return _Previous(folder, prints) if prints else None


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(source, target)


def _write_publication(settings: Settings, warehouse: Path, folder: Path, db_name: str,
                       pub: Publication, previous: _Previous | None) -> None:
    """Write the new version's DuckDB file and Parquet copies into ``folder`` (the version's
    staging folder): the Parquet files of unchanged tables linked from ``previous``, the others
    written from the warehouse."""
    marts_dir = folder / "marts"
    marts_dir.mkdir(parents=True, exist_ok=True)
    con = duck.connect(settings)  # in memory: fingerprints first, to know what can be reused
    try:
        con.execute(f"ATTACH {duck.sql_str(str(warehouse))} AS wh (READ_ONLY)")
        tables = list_publishable_tables(con, "wh")
        if not tables:
            raise RuntimeError(f"the warehouse {warehouse} has no tables in schemas "
                               f"{PUBLISHED_SCHEMAS}: nothing to publish")
        for schema, name in tables:
            rows, checksum = table_checksum(con, f"wh.{schema}.{name}")
            pub.tables.append(PublishedTable(
                schema, name, rows, checksum,
                fingerprint=table_fingerprint(con, "wh", schema, name, checksum)))
    finally:
        con.close()
    old = previous.fingerprints if previous else {}
    for table in pub.tables:
        parquet = previous.folder / "marts" / f"{table.name}.parquet" if previous else None
        table.reused = bool(parquet and old.get(f"{table.schema}.{table.name}") == table.fingerprint
                            and parquet.is_file())
    con = duck.connect(settings, folder / db_name)
    try:
        con.execute(f"ATTACH {duck.sql_str(str(warehouse))} AS wh (READ_ONLY)")
        for schema in sorted({t.schema for t in pub.tables}):
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for table in pub.tables:
            qualified, target = f"{table.schema}.{table.name}", marts_dir / f"{table.name}.parquet"
            con.execute(f"CREATE TABLE {qualified} AS SELECT * FROM wh.{qualified}")
            if table.reused:
                _link_or_copy(previous.folder / "marts" / target.name, target)
            else:
                con.execute(f"COPY {qualified} TO {duck.sql_str(str(target))} "
                            "(FORMAT parquet, COMPRESSION zstd)")
        con.execute("CREATE SCHEMA IF NOT EXISTS meta")
        con.execute("CREATE TABLE meta.publication AS SELECT ? AS logical_date, "
                    "CAST(? AS TIMESTAMPTZ) AS published_at, ? AS version, ? AS tables_json",
                    [pub.logical_date, pub.published_at, pub.version,
                     json.dumps([asdict(t) for t in pub.tables])])
        con.execute("DETACH wh")
        con.execute("CHECKPOINT")
    finally:
        con.close()


def publication_anchors(settings: Settings) -> list[dict]:
    """The audit chain head the current publication recorded, as an anchor for
    :func:`customer360.core.audit.verify` (none when nothing is published)."""
    path = settings.publication_path
    try:
        head = json.loads(path.read_text()).get("audit_head") if path.exists() else None
    except ValueError:
        return [{"seq": None, "hash": None, "reason": "unreadable publication.json", "anchored_at": "?"}]
    if not head:
        return []
    return [{"seq": int(head["seq"]), "hash": head["hash"], "reason": "current publication",
             "anchored_at": json.loads(path.read_text()).get("published_at", "?")}]
