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


def publish(settings: Settings, logical_date: dt.date) -> Publication:
    warehouse = settings.warehouse_path
    if not warehouse.exists():
        raise FileNotFoundError(f"no warehouse at {warehouse}: build it before publishing")
    db_path = settings.published_db
    pub = Publication(logical_date=logical_date.isoformat(),
                      published_at=dt.datetime.now(dt.timezone.utc).isoformat(),
                      database=str(db_path), parquet_dir=str(settings.published_marts_dir))
    # The chain's head when this publication was made: anchors the audit log (c360 audit verify).
    pub.audit_head = audit.head(settings)
    with new_version(settings) as folder:
        pub.version = folder.name.split(".")[1]
        con = duck.connect(settings, folder / db_path.name)
        try:
            _write_publication(con, warehouse, folder / "marts", pub)
        finally:
            con.close()
        write_text(folder / "publication.json", json.dumps(pub.as_dict(), indent=2))
    log.info("published %d tables to %s (version %s)", len(pub.tables), db_path, pub.version)
    return pub


def _write_publication(con: duckdb.DuckDBPyConnection, warehouse: Path, marts_dir: Path,
                       pub: Publication) -> None:
    """Copy the published tables into the new database ``con`` and their Parquet copies into
    ``marts_dir`` (both in the version's staging folder)."""
    marts_dir.mkdir(parents=True, exist_ok=True)
    con.execute(f"ATTACH {duck.sql_str(str(warehouse))} AS wh (READ_ONLY)")
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
        target = marts_dir / f"{name}.parquet"
        con.execute(f"COPY {schema}.{name} TO {duck.sql_str(str(target))} (FORMAT parquet, COMPRESSION zstd)")
    con.execute("CREATE SCHEMA IF NOT EXISTS meta")
    con.execute("CREATE TABLE meta.publication AS SELECT ? AS logical_date, "
                "CAST(? AS TIMESTAMPTZ) AS published_at, ? AS version, ? AS tables_json",
                [pub.logical_date, pub.published_at, pub.version,
                 json.dumps([asdict(t) for t in pub.tables])])
    con.execute("DETACH wh")
    con.execute("CHECKPOINT")


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
