"""Which landing files were loaded, in which batch: one SQLite file a source under
``$C360_HOME/lake/_state``.

A file is known by its path relative to the landing root. A size and mtime equal to what the
manifest saw mean "unchanged" without reading the file; otherwise its SHA-256 decides (a file
touched but not changed is not loaded again). A changed file is loaded again as a new version.

Crash safety: before a batch writes anything, its output paths are recorded as *pending*
(committed). The batch files are written (each atomically), then one transaction records the
files and the batch and clears the pending row. A loader that starts and finds a pending row
knows that batch never committed: it deletes whatever of its outputs exist, so the files it
held are loaded again once, under a new batch, and nothing is counted twice.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from customer360.ingest.landing.layout import LandingFile

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (            -- the newest version of every file seen
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL, batch_id TEXT NOT NULL, entity TEXT NOT NULL, folder_date TEXT,
    status TEXT NOT NULL, reason TEXT, rows_read INTEGER, rows_landed INTEGER,
    rows_quarantined INTEGER, duplicates INTEGER, loaded_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS file_versions (    -- every version ever loaded
    path TEXT NOT NULL, sha256 TEXT NOT NULL, batch_id TEXT NOT NULL,
    supersedes_batch_id TEXT, loaded_at TEXT NOT NULL, PRIMARY KEY (path, batch_id));
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY, entity TEXT NOT NULL, load_date TEXT NOT NULL,
    outputs TEXT NOT NULL, min_folder_date TEXT, max_folder_date TEXT,
    rows_read INTEGER, rows_landed INTEGER, rows_quarantined INTEGER, committed_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    batch_id TEXT PRIMARY KEY, outputs TEXT NOT NULL, created_at TEXT NOT NULL);
"""


def sha256_of(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@dataclass(frozen=True)
class FileVersion:
    """A landing file that is new or changed since the manifest last saw it."""

    file: LandingFile
    size: int
    mtime_ns: int
    sha256: str
    previous_batch_id: str | None  # the batch that loaded the version this one replaces


@dataclass
class FileOutcome:
    """What loading one file version gave (one row of the web/files or pos/files entity)."""

    version: FileVersion
    status: str                    # 'loaded' or 'quarantined'
    rows_read: int = 0
    rows_landed: int = 0
    rows_quarantined: int = 0
    duplicates: int = 0
    reason: str | None = None


@contextmanager
def source_lock(state_dir: Path, source: str) -> Iterator[None]:
    """One loader run per source at a time (two runs of one source would share a manifest)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / f"{source}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Manifest:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)  # explicit transactions below
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- what to load -------------------------------------------------------------------
    def changed(self, files: Sequence[LandingFile], entity: str,
                retry_quarantined: bool = False) -> list[FileVersion]:
        """The files that are new or whose content changed, in the order given; with
        ``retry_quarantined`` also the unchanged files that were quarantined whole (their
        reference data may have been fixed since)."""
        known = {row[0]: row[1:] for row in self.db.execute(
            "SELECT path, size, mtime_ns, sha256, batch_id, status FROM files WHERE entity = ?",
            (entity,))}
        out = []
        for f in files:
            st = f.path.stat()
            seen = known.get(f.rel)
            if retry_quarantined and seen and seen[4] == "quarantined":
                out.append(FileVersion(f, st.st_size, st.st_mtime_ns, sha256_of(f.path), seen[3]))
                continue
            if seen and seen[0] == st.st_size and seen[1] == st.st_mtime_ns:
                continue
            digest = sha256_of(f.path)
            if seen and seen[2] == digest:  # touched, not changed: remember the new stat
                self.db.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?",
                                (st.st_size, st.st_mtime_ns, f.rel))
                continue
            out.append(FileVersion(f, st.st_size, st.st_mtime_ns, digest,
                                   seen[3] if seen else None))
        return out

    # --- crash-safe batches -------------------------------------------------------------
    def begin(self, batch_id: str, outputs: dict[str, Path]) -> None:
        """Record that ``batch_id`` is about to write ``outputs`` ({role: path})."""
        self.db.execute("INSERT INTO pending VALUES (?, ?, ?)",
                        (batch_id, json.dumps({k: str(p) for k, p in outputs.items()}), _now()))

    def commit(self, batch_id: str, entity: str, load_date: dt.date, outputs: dict[str, Path],
               outcomes: Sequence[FileOutcome]) -> None:
        now = _now()
        days = [o.version.file.folder_date for o in outcomes if o.version.file.folder_date]
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for o in outcomes:
                v = o.version
                self.db.execute(
                    "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (v.file.rel, v.size, v.mtime_ns, v.sha256, batch_id, entity,
                     v.file.folder_date.isoformat() if v.file.folder_date else None, o.status,
                     o.reason, o.rows_read, o.rows_landed, o.rows_quarantined, o.duplicates, now))
                self.db.execute("INSERT INTO file_versions VALUES (?,?,?,?,?)",
                                (v.file.rel, v.sha256, batch_id, v.previous_batch_id, now))
            self.db.execute(
                "INSERT INTO batches VALUES (?,?,?,?,?,?,?,?,?,?)",
                (batch_id, entity, load_date.isoformat(),
                 json.dumps({k: str(p) for k, p in outputs.items() if p.exists()}),
                 min(days).isoformat() if days else None, max(days).isoformat() if days else None,
                 sum(o.rows_read for o in outcomes), sum(o.rows_landed for o in outcomes),
                 sum(o.rows_quarantined for o in outcomes), now))
            self.db.execute("DELETE FROM pending WHERE batch_id = ?", (batch_id,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def recover(self) -> list[str]:
        """Undo batches a crashed run began but never committed; return their ids."""
        undone = []
        pending = self.db.execute("SELECT batch_id, outputs FROM pending").fetchall()
        for batch_id, outputs in pending:
            for p in json.loads(outputs).values():
                if os.path.exists(p):
                    os.unlink(p)
            self.db.execute("DELETE FROM pending WHERE batch_id = ?", (batch_id,))
            log.warning("removed the outputs of uncommitted batch %s (a crashed run)", batch_id)
            undone.append(batch_id)
        return undone

    # --- what earlier batches hold ------------------------------------------------------
    def batch_outputs(self, entity: str, role: str, lo: dt.date, hi: dt.date) -> list[Path]:
        """The ``role`` outputs of committed batches holding folder dates in [lo, hi]."""
        rows = self.db.execute(
            "SELECT outputs FROM batches WHERE entity = ? AND max_folder_date >= ? "
            "AND min_folder_date <= ?", (entity, lo.isoformat(), hi.isoformat())).fetchall()
        found = (json.loads(outputs).get(role) for (outputs,) in rows)
        return [Path(p) for p in found if p]

    def file_status(self, rel: str) -> dict | None:
        cur = self.db.execute("SELECT * FROM files WHERE path = ?", (rel,))
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row))


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()
