"""What has been landed, for all three sources: one SQLite database a home,
``$C360_HOME/lake/_state/state.sqlite`` (WAL, every change in a transaction).

- **Landing files** (web, POS): each file is known by its path relative to the landing root.
  A size and mtime equal to what the store saw mean "unchanged" without reading the file;
  otherwise its SHA-256 decides (a file touched but not changed is not loaded again). A
  changed file is loaded again as a new version (``file_versions`` keeps every version).
- **Watermarks** (CRM): per object, the latest last-modified time landed, the record
  versions landed within the lookback window below it (``keys_at_watermark``, "id@ms") and
  the extractor's cursor (JSON: full load or incremental, where a listing or a search window
  stopped; :mod:`customer360.ingest.crm` says why).
- **Batches**: every committed batch of every source, with its output files.

Crash safety, the same write-ahead step for every source. Before a batch writes anything,
a *pending* row records its output paths (and, for the CRM, the watermark the batch moves
to); that row is committed on its own. The batch files are written (each atomically), then
one transaction records the batch (files seen, or the new watermark), and deletes the pending
row. A run that starts and finds a pending row of its source knows that batch never
committed:

- a landing loader deletes whatever of its outputs exist, so the files it held are loaded
  again once, under a new batch (:meth:`StateStore.recover`);
- the CRM extractor completes the batch when all its files exist (its pending row holds all
  the commit needs) and deletes them otherwise (:meth:`StateStore.commit_watermark`,
  :meth:`StateStore.discard`).

Either way nothing is landed twice or counted twice. Writers of one source serialize on
:func:`source_lock`; different sources share the database (SQLite serializes their short
write transactions; readers never wait in WAL mode).

Older homes kept this in other files: ``lake/_state/crm/<object>.json`` (CRM watermarks) and
``lake/_state/<source>_manifest.sqlite`` (web/POS manifests). Opening the store imports any
of them it finds, once (recorded in ``imports``, in the same transaction as the rows), logs
it, and renames the old file to ``<name>.imported``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from customer360.core.settings import Settings
from customer360.ingest.errors import ExtractError
from customer360.ingest.landing.layout import LandingFile

log = logging.getLogger(__name__)

STATE_DB = "state.sqlite"
SCHEMA_VERSION = 3  # 2: watermarks.cursor; 3: batches.checksums, set_aside
BACKUP_DIR = "backup"  # lake/_state/backup/state.sqlite: the last good copy (backup_state)
LANDING_SOURCES = ("web", "pos")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (            -- landing files: the newest version of each
    path TEXT PRIMARY KEY, source TEXT NOT NULL, entity TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL,
    batch_id TEXT NOT NULL, folder_date TEXT, status TEXT NOT NULL, reason TEXT,
    rows_read INTEGER, rows_landed INTEGER, rows_quarantined INTEGER, duplicates INTEGER,
    loaded_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS files_by_entity ON files (source, entity);
CREATE TABLE IF NOT EXISTS file_versions (    -- landing files: every version ever loaded
    path TEXT NOT NULL, source TEXT NOT NULL, sha256 TEXT NOT NULL, batch_id TEXT NOT NULL,
    supersedes_batch_id TEXT, loaded_at TEXT NOT NULL, PRIMARY KEY (path, batch_id));
CREATE TABLE IF NOT EXISTS watermarks (       -- CRM: per object, how far it has landed
    source TEXT NOT NULL, entity TEXT NOT NULL,
    watermark_us INTEGER, watermark TEXT,     -- µs since the epoch, and the same as ISO text
    keys_at_watermark TEXT NOT NULL,          -- JSON array: keys landed near it (CRM: id@ms)
    batch_id TEXT,                            -- the batch that moved it last
    updated_at TEXT NOT NULL,
    cursor TEXT,                              -- JSON: where the extractor stands (CRM)
    PRIMARY KEY (source, entity));
CREATE TABLE IF NOT EXISTS batches (          -- every committed batch, all sources
    batch_id TEXT PRIMARY KEY, source TEXT NOT NULL, entity TEXT NOT NULL,
    load_date TEXT NOT NULL, outputs TEXT NOT NULL,   -- JSON {role: path} of files written
    min_folder_date TEXT, max_folder_date TEXT,
    rows_read INTEGER, rows_landed INTEGER, rows_quarantined INTEGER, committed_at TEXT NOT NULL,
    checksums TEXT);                          -- JSON {role: {rows, bytes, sha256}}, NULL before v3
CREATE INDEX IF NOT EXISTS batches_by_entity ON batches (source, entity);
CREATE TABLE IF NOT EXISTS pending (          -- batches begun, not committed (write-ahead)
    batch_id TEXT PRIMARY KEY, source TEXT NOT NULL, entity TEXT,
    outputs TEXT NOT NULL,                    -- JSON {role: path} the batch may write
    payload TEXT,                             -- JSON: what the commit records (CRM)
    created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS set_aside (        -- batches whose files were unreadable, moved aside
    batch_id TEXT PRIMARY KEY, source TEXT NOT NULL, entity TEXT, batch TEXT NOT NULL,
    moved TEXT NOT NULL, reason TEXT NOT NULL, set_aside_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS imports (          -- legacy state files imported, once each
    legacy TEXT PRIMARY KEY, imported_at TEXT NOT NULL, detail TEXT);
"""


class StateError(ExtractError):
    """The state store (or one of its rows) cannot be read: names the file and the repair
    (an ExtractError: nothing is extracted over a state that cannot be trusted)."""


def state_db_path(settings: Settings) -> Path:
    return settings.state_dir / STATE_DB


def state_backup_path(settings: Settings) -> Path:
    return settings.state_dir / BACKUP_DIR / STATE_DB


def _repair_hint(path: Path) -> str:
    if (path.parent / BACKUP_DIR / STATE_DB).exists():
        return "`c360 doctor --repair state` puts back its last good copy"
    return ("it has no good copy (made at each publication): move it aside and every source "
            "loads again from the start")


def _unreadable(path: Path, exc: BaseException) -> StateError:
    return StateError(f"the state store {path} cannot be read, it is corrupt ({type(exc).__name__}: "
                      f"{exc}); "
                      f"`c360 doctor` says what is wrong; {_repair_hint(path)}")


def output_checksums(outputs: dict[str, str | Path]) -> dict[str, dict]:
    """{role: {rows, bytes, sha256}} of a batch's output files that exist: what ``c360 doctor``
    checks a raw batch against (a truncated or altered file no longer matches)."""
    import pyarrow.parquet as pq

    out = {}
    for role, p in outputs.items():
        path = Path(p)
        if path.exists():
            out[role] = {"rows": pq.read_metadata(path).num_rows, "bytes": path.stat().st_size,
                         "sha256": sha256_of(path)}
    return out


def sha256_of(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def iso_us(us: int | None) -> str | None:
    """µs since the epoch as ISO-8601 UTC text (for people reading the store)."""
    if us is None:
        return None
    spec = "milliseconds" if us % 1000 == 0 else "microseconds"
    return (_EPOCH + dt.timedelta(microseconds=us)).isoformat(timespec=spec).replace("+00:00", "Z")


@contextmanager
def source_lock(state_dir: Path, source: str, entity: str | None = None) -> Iterator[None]:
    """One writer per source (web, pos) or per CRM object at a time; the OS drops the lock
    if a run is killed. ``lake/_state/<source>.lock``, ``lake/_state/<source>/<entity>.lock``."""
    path = state_dir / f"{source}.lock" if entity is None else state_dir / source / f"{entity}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass(frozen=True)
class FileVersion:
    """A landing file that is new or changed since the store last saw it."""

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


@dataclass(frozen=True)
class Pending:
    """A batch begun and not committed: the paths it may write and what its commit records."""

    batch_id: str
    source: str
    entity: str | None
    outputs: dict[str, Path]
    payload: dict = field(default_factory=dict)

    def outputs_exist(self) -> bool:
        return all(p.exists() for p in self.outputs.values())


@dataclass(frozen=True)
class Watermark:
    watermark_us: int | None = None
    keys_at_watermark: frozenset[str] = frozenset()
    batch_id: str | None = None
    cursor: dict | None = None
    updated_at: str | None = None  # this host's clock when the watermark was stored


class StateStore:
    """The home's state database, seen by one source (``crm``, ``web`` or ``pos``): every
    method reads or writes that source's rows only."""

    def __init__(self, settings: Settings, source: str):
        self.settings = settings
        self.source = source
        self.path = state_db_path(settings)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit: transactions are explicit below; wait for another source's writer
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=60)
        try:
            _use_wal(self.db)
            self.db.execute("PRAGMA synchronous = FULL")
            if self.db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                with self._transaction():
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self.db.execute(statement)
                    columns = {r[1] for r in self.db.execute("PRAGMA table_info(watermarks)")}
                    if "cursor" not in columns:  # a version-1 store
                        self.db.execute("ALTER TABLE watermarks ADD COLUMN cursor TEXT")
                    if "checksums" not in {r[1] for r in self.db.execute("PRAGMA table_info(batches)")}:
                        self.db.execute("ALTER TABLE batches ADD COLUMN checksums TEXT")
                    self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            _import_legacy(self)
        except sqlite3.OperationalError as exc:  # a full or read-only disk, a lock held too long
            self.db.close()
            raise ExtractError(f"the ingest state {self.path} could not be opened ({exc}): is its "
                               "disk full or read-only? Nothing was extracted") from exc
        except sqlite3.DatabaseError as exc:
            self.db.close()
            # "file is not a database", "database disk image is malformed": the file itself
            # (its other subclasses are a bad statement or an integrity rule: not the file's fault)
            if type(exc) is not sqlite3.DatabaseError:
                raise
            raise _unreadable(self.path, exc) from exc
        except BaseException:
            self.db.close()
            raise

    @classmethod
    def _sharing(cls, other: "StateStore", source: str) -> "StateStore":
        """The same connection seen as another source (the legacy import only)."""
        view = cls.__new__(cls)
        view.settings, view.source, view.path, view.db = other.settings, source, other.path, other.db
        return view

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "StateStore":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
        # A write that meets a full or read-only disk (SQLite says only "database or disk is
        # full"): said once, naming the store; SQLite rolled the statement back, so the store
        # is as the last commit left it and a rerun resumes from there.
        if isinstance(exc, sqlite3.OperationalError) and not isinstance(exc, StateError):
            raise ExtractError(f"the ingest state {self.path} could not be written ({exc}): is its "
                               "disk full or read-only? Its last commit stands; rerun once there "
                               "is room") from exc

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- landing files: what to load ----------------------------------------------------
    def changed(self, files: Sequence[LandingFile], entity: str,
                retry_quarantined: bool = False) -> list[FileVersion]:
        """The files that are new or whose content changed, in the order given; with
        ``retry_quarantined`` also the unchanged files that were quarantined whole (their
        reference data may have been fixed since)."""
        known = {row[0]: row[1:] for row in self.db.execute(
            "SELECT path, size, mtime_ns, sha256, batch_id, status FROM files "
            "WHERE source = ? AND entity = ?", (self.source, entity))}
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

    def file_status(self, rel: str) -> dict | None:
        cur = self.db.execute("SELECT * FROM files WHERE path = ? AND source = ?",
                              (rel, self.source))
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row))

    def record_rewritten_file(self, rel: str, old_sha: str, path: Path) -> int:
        """A landing file rewritten in place (an erasure): record it as the version already
        loaded, if that is the version the store holds (a file changed since, or never
        loaded, is left to the loader). Returns the rows updated (0 or 1)."""
        st = path.stat()
        cur = self.db.execute(
            "UPDATE files SET size = ?, mtime_ns = ?, sha256 = ? "
            "WHERE path = ? AND source = ? AND sha256 = ?",
            (st.st_size, st.st_mtime_ns, sha256_of(path), rel, self.source, old_sha))
        return cur.rowcount

    # --- batches: the write-ahead step --------------------------------------------------
    def begin(self, batch_id: str, entity: str, outputs: dict[str, Path],
              payload: dict | None = None) -> Pending:
        """Record (durably) that ``batch_id`` is about to write ``outputs`` ({role: path});
        ``payload`` is what its commit will record, so that a later run can complete it."""
        self.db.execute("INSERT INTO pending VALUES (?, ?, ?, ?, ?, ?)",
                        (batch_id, self.source, entity, _paths_json(outputs),
                         None if payload is None else json.dumps(payload), _now()))
        return Pending(batch_id, self.source, entity, dict(outputs), payload or {})

    def pending(self, entity: str | None = None) -> list[Pending]:
        """Batches of this source (and entity) begun and never committed, oldest first."""
        rows = self.db.execute(
            "SELECT batch_id, entity, outputs, payload FROM pending WHERE source = ? "
            "AND (? IS NULL OR entity = ?) ORDER BY created_at, batch_id",
            (self.source, entity, entity)).fetchall()
        return [Pending(batch_id, self.source, ent,
                        {k: Path(p) for k, p in self._parsed(outputs, f"pending {batch_id}").items()},
                        self._parsed(payload, f"pending {batch_id}") if payload else {})
                for batch_id, ent, outputs, payload in rows]

    def discard(self, pending: Pending) -> None:
        """Undo a batch that never committed: delete what of its outputs exists, then its row."""
        for p in pending.outputs.values():
            p.unlink(missing_ok=True)
        self.db.execute("DELETE FROM pending WHERE batch_id = ?", (pending.batch_id,))

    def recover(self) -> list[str]:
        """Undo every batch of this source a crashed run began but never committed (the
        landing loaders: their commit needs what only the run had in memory)."""
        undone = []
        for p in self.pending():
            self.discard(p)
            log.warning("removed the outputs of uncommitted batch %s (a crashed run)", p.batch_id)
            undone.append(p.batch_id)
        return undone

    def commit_files(self, batch_id: str, entity: str, load_date: dt.date,
                     outputs: dict[str, Path], outcomes: Sequence[FileOutcome]) -> None:
        """Commit a landing batch: its files' versions and the batch, in one transaction."""
        now = _now()
        days = [o.version.file.folder_date for o in outcomes if o.version.file.folder_date]
        with self._transaction():
            for o in outcomes:
                v = o.version
                self.db.execute(
                    "INSERT OR REPLACE INTO files (path, source, entity, size, mtime_ns, sha256, "
                    "batch_id, folder_date, status, reason, rows_read, rows_landed, "
                    "rows_quarantined, duplicates, loaded_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (v.file.rel, self.source, entity, v.size, v.mtime_ns, v.sha256, batch_id,
                     v.file.folder_date.isoformat() if v.file.folder_date else None, o.status,
                     o.reason, o.rows_read, o.rows_landed, o.rows_quarantined, o.duplicates, now))
                self.db.execute("INSERT INTO file_versions VALUES (?,?,?,?,?,?)",
                                (v.file.rel, self.source, v.sha256, batch_id,
                                 v.previous_batch_id, now))
            self._insert_batch(
                batch_id, entity, load_date.isoformat(), outputs,
                min(days).isoformat() if days else None, max(days).isoformat() if days else None,
                sum(o.rows_read for o in outcomes), sum(o.rows_landed for o in outcomes),
                sum(o.rows_quarantined for o in outcomes), now)
            self.db.execute("DELETE FROM pending WHERE batch_id = ?", (batch_id,))

    def commit_watermark(self, pending: Pending) -> None:
        """Commit a CRM batch from its pending row: the watermark it moves to and the batch,
        in one transaction (the same call completes a batch an interrupted run left).
        The payload holds ``load_date``, ``watermark_us``, ``keys_at_watermark``, ``cursor``
        (optional) and the ``reconciliation`` counts (``read``, ``landed``, ``quarantined``)."""
        p, now = pending.payload, _now()
        rec = p.get("reconciliation") or {}
        with self._transaction():
            self._set_watermark(pending.entity, p["watermark_us"], p["keys_at_watermark"],
                                pending.batch_id, now, p.get("cursor"))
            self._insert_batch(pending.batch_id, pending.entity, p["load_date"], pending.outputs,
                               None, None, rec.get("read"), rec.get("landed"),
                               rec.get("quarantined"), now)
            self.db.execute("DELETE FROM pending WHERE batch_id = ?", (pending.batch_id,))

    def _insert_batch(self, batch_id: str, entity: str | None, load_date: str,
                      outputs: dict[str, Path], min_day: str | None, max_day: str | None,
                      read: int | None, landed: int | None, quarantined: int | None,
                      now: str) -> None:
        written = {k: p for k, p in outputs.items() if Path(p).exists()}
        self.db.execute(
            "INSERT OR REPLACE INTO batches (batch_id, source, entity, load_date, outputs, "
            "min_folder_date, max_folder_date, rows_read, rows_landed, rows_quarantined, "
            "committed_at, checksums) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (batch_id, self.source, entity, load_date, _paths_json(written),
             min_day, max_day, read, landed, quarantined, now,
             json.dumps(output_checksums(written), sort_keys=True)))

    def refresh_checksums(self, batch_ids: Sequence[str]) -> int:
        """Record the present checksums of batches whose files were rewritten on purpose (an
        erasure removes rows), any source; returns the batches updated."""
        done = 0
        for batch_id in batch_ids:
            row = self.db.execute("SELECT outputs FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
            if row is None:
                continue
            sums = output_checksums(self._parsed(row[0], f"batch {batch_id}"))
            self.db.execute("UPDATE batches SET checksums = ? WHERE batch_id = ?",
                            (json.dumps(sums, sort_keys=True), batch_id))
            done += 1
        return done

    def set_aside(self, batch_id: str, moved: dict[str, str], reason: str) -> dict:
        """Forget a committed batch whose files were moved aside (unreadable), so that the
        next extract lands its records again: a landing loader finds its files new again; a
        CRM object loses its watermark and loads in full (the staging models keep one version
        of a record landed twice). Kept in ``set_aside`` with the reason. Returns the batch."""
        cur = self.db.execute("SELECT * FROM batches WHERE batch_id = ?", (batch_id,))
        row = cur.fetchone()
        if row is None:
            raise StateError(f"no committed batch {batch_id} in {self.path}")
        batch = dict(zip([d[0] for d in cur.description], row))
        with self._transaction():
            self.db.execute("INSERT OR REPLACE INTO set_aside VALUES (?,?,?,?,?,?,?)",
                            (batch_id, batch["source"], batch["entity"], json.dumps(batch),
                             json.dumps(moved), reason, _now()))
            self.db.execute("DELETE FROM batches WHERE batch_id = ?", (batch_id,))
            if batch["source"] in LANDING_SOURCES:
                self.db.execute("DELETE FROM files WHERE batch_id = ?", (batch_id,))
            else:
                self.db.execute("DELETE FROM watermarks WHERE source = ? AND entity = ?",
                                (batch["source"], batch["entity"]))
        return batch

    def save_watermark(self, entity: str, watermark_us: int | None, keys: Any,
                       cursor: dict | None) -> None:
        """Move a watermark (and cursor) with no batch: a run that landed nothing but still
        moved on (a listing finished, a window searched empty)."""
        with self._transaction():
            self._set_watermark(entity, watermark_us, keys, self.watermark(entity).batch_id,
                                _now(), cursor)

    def _set_watermark(self, entity: str | None, watermark_us: int | None, keys: Any,
                       batch_id: str | None, now: str, cursor: dict | None = None) -> None:
        self.db.execute("INSERT OR REPLACE INTO watermarks (source, entity, watermark_us, "
                        "watermark, keys_at_watermark, batch_id, updated_at, cursor) "
                        "VALUES (?,?,?,?,?,?,?,?)",
                        (self.source, entity, watermark_us, iso_us(watermark_us),
                         json.dumps(sorted(keys)), batch_id, now,
                         None if cursor is None else json.dumps(cursor, sort_keys=True)))

    def _parsed(self, text: str, row: str) -> Any:
        """A JSON column of the store; one that does not parse is named with its repair."""
        try:
            return json.loads(text)
        except ValueError as exc:
            raise StateError(
                f"{self.path}: the manifest row of {row} does not parse ({exc}); "
                f"{_repair_hint(self.path)}") from exc

    # --- what earlier batches hold ------------------------------------------------------
    def watermark(self, entity: str) -> Watermark:
        row = self.db.execute(
            "SELECT watermark_us, keys_at_watermark, batch_id, cursor, updated_at FROM watermarks "
            "WHERE source = ? AND entity = ?", (self.source, entity)).fetchone()
        if row is None:
            return Watermark()
        try:
            return Watermark(row[0], frozenset(json.loads(row[1])), row[2],
                             json.loads(row[3]) if row[3] else None, row[4])
        except ValueError as exc:
            raise StateError(
                f"{self.path}: the watermark of {self.source}/{entity} does not parse ({exc}); "
                f"{_repair_hint(self.path)}") from exc

    def batches(self, entity: str | None = None) -> list[dict]:
        """Committed batches of this source (and entity), in commit order."""
        cur = self.db.execute(
            "SELECT * FROM batches WHERE source = ? AND (? IS NULL OR entity = ?) "
            "ORDER BY committed_at, batch_id", (self.source, entity, entity))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def batch_outputs(self, entity: str, role: str, lo: dt.date, hi: dt.date) -> list[Path]:
        """The ``role`` outputs of committed batches holding folder dates in [lo, hi]."""
        rows = self.db.execute(
            "SELECT outputs FROM batches WHERE source = ? AND entity = ? "
            "AND max_folder_date >= ? AND min_folder_date <= ?",
            (self.source, entity, lo.isoformat(), hi.isoformat())).fetchall()
        found = (self._parsed(outputs, f"a {self.source}/{entity} batch").get(role) for (outputs,) in rows)
        return [Path(p) for p in found if p]


def _use_wal(db: sqlite3.Connection, wait: float = 60.0) -> None:
    """Put the database in WAL mode (persistent: once one connection did, all see it).
    The switch needs the database to itself and SQLite does not wait for that, so two
    sources opening a new store at once retry here instead of failing."""
    deadline = time.monotonic() + wait
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# --------------------------------------------------------------------------- last good copy

def backup_state(settings: Settings) -> Path | None:
    """Copy the store to ``lake/_state/backup/state.sqlite`` (SQLite's online backup: a
    consistent copy while extracts may write), after each successful run; what
    :func:`restore_state` puts back. None when there is no store yet."""
    from customer360.core.files import atomic_path

    src_path = state_db_path(settings)
    if not src_path.exists():
        return None
    dest = state_backup_path(settings)
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True, timeout=60)
    try:
        with atomic_path(dest, sidecars=("-journal",)) as tmp:
            copy = sqlite3.connect(tmp)
            try:
                src.backup(copy)
                copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
                if copy.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                    raise StateError(f"the copy of {src_path} fails SQLite's integrity check")
            finally:
                copy.close()
    except sqlite3.DatabaseError as exc:
        raise _unreadable(src_path, exc) from exc
    finally:
        src.close()
    return dest


def restore_state(settings: Settings) -> dict:
    """Move the store aside (``state.sqlite.broken-<UTC time>``, with its -wal/-shm: kept as
    evidence) and put back the last good copy. Raises :class:`StateError` without one."""
    from customer360.core.files import atomic_path

    backup = state_backup_path(settings)
    path = state_db_path(settings)
    if not backup.exists():
        raise StateError(f"no good copy of the state store at {backup}")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    moved = None
    if path.exists():
        moved = path.with_name(f"{path.name}.broken-{stamp}")
        _retire(path, f".broken-{stamp}")
    src = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    try:
        with atomic_path(path, sidecars=("-journal",)) as tmp:
            dest = sqlite3.connect(tmp)
            try:
                src.backup(dest)
            finally:
                dest.close()
    finally:
        src.close()
    log.warning("state: put back the copy of %s in place of %s (moved to %s)", backup, path, moved)
    return {"restored_from": str(backup), "moved_aside": str(moved) if moved else None}


# --------------------------------------------------------------------------- legacy files

def _legacy_files(settings: Settings) -> list[tuple[str, Path]]:
    """(key, path) of the state files older homes kept (key: the path under _state)."""
    state_dir = settings.state_dir
    found = [(f"{s}_manifest.sqlite", state_dir / f"{s}_manifest.sqlite") for s in LANDING_SOURCES]
    found = [(k, p) for k, p in found if p.exists()]
    crm_dir = state_dir / "crm"
    if crm_dir.is_dir():
        found += [(f"crm/{p.name}", p) for p in sorted(crm_dir.glob("*.json"))]
    return found


def _import_legacy(store: StateStore) -> None:
    """Import the old state files into the store, once each, then rename them."""
    legacy = _legacy_files(store.settings)
    if not legacy:
        return
    imported: list[tuple[str, str]] = []
    strays: list[Path] = []
    with store._transaction():
        done = {k for (k,) in store.db.execute("SELECT legacy FROM imports")}
        for key, path in legacy:
            if key in done:
                # imported already: an import that stopped before its rename, or a file
                # written again since (by an older version?): the store is newer
                if path.exists() and Path(f"{path}.imported").exists():
                    log.warning("state: ignored %s: a file of that name was imported into %s "
                                "before; renamed it %s.ignored", key, STATE_DB, key)
                    strays.append(path)
                continue
            if key.startswith("crm/"):
                detail = _import_crm_json(store, path)
            else:
                detail = _import_manifest(store, key.split("_", 1)[0], path)
            store.db.execute("INSERT INTO imports VALUES (?, ?, ?)", (key, _now(), detail))
            imported.append((key, detail))
    for key, detail in imported:
        log.warning("state: imported the legacy %s into %s (%s); it is kept as %s.imported",
                    key, STATE_DB, detail, key)
    for _, path in legacy:  # imported now or by an earlier run that stopped before renaming
        _retire(path, ".ignored" if path in strays else ".imported")


def _retire(path: Path, mark: str) -> None:
    """``name`` -> ``name<mark>`` (a SQLite file with its -wal/-shm, should they remain)."""
    for suffix in ("", "-wal", "-shm"):
        try:
            os.replace(f"{path}{suffix}", f"{path}{mark}{suffix}")
        except FileNotFoundError:  # none, or another run renamed it first
            pass


def _import_crm_json(store: StateStore, path: Path) -> str:
    """``crm/<object>.json``: {object, watermark_us, keys_at_watermark, pending, ...}, the
    pending batch as the old extractor wrote it (its commit payload plus batch_id)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    obj = data.get("object") or path.stem
    crm = StateStore._sharing(store, "crm")
    if crm.db.execute("SELECT 1 FROM watermarks WHERE source = 'crm' AND entity = ?",
                      (obj,)).fetchone():
        return f"{obj}: the store already had a watermark, kept it"
    keys = data.get("keys_at_watermark") or []
    crm._set_watermark(obj, data.get("watermark_us"), keys, None,
                       data.get("saved_at") or _now())
    detail = f"{obj}: watermark {iso_us(data.get('watermark_us')) or '-'}, {len(keys)} key(s) at it"
    pending = data.get("pending")
    if pending:
        from customer360.ingest.raw_zone import batch_path  # only for this import
        load_date = dt.date.fromisoformat(pending["load_date"])
        outputs = {}
        if pending.get("landed"):
            outputs["raw"] = batch_path(store.settings.lake_raw, "crm", obj, load_date,
                                        pending["batch_id"])
        if pending.get("quarantined"):
            outputs["quarantine"] = batch_path(store.settings.quarantine, "crm", obj, load_date,
                                               pending["batch_id"])
        payload = {k: v for k, v in pending.items() if k != "batch_id"}
        crm.begin(pending["batch_id"], obj, outputs, payload)
        detail += f", pending batch {pending['batch_id']}"
    return detail


def _import_manifest(store: StateStore, source: str, path: Path) -> str:
    """``<source>_manifest.sqlite``: the same tables, one database a source."""
    old = sqlite3.connect(path, timeout=60)
    try:
        files = old.execute(
            "SELECT path, size, mtime_ns, sha256, batch_id, entity, folder_date, status, reason, "
            "rows_read, rows_landed, rows_quarantined, duplicates, loaded_at FROM files").fetchall()
        versions = old.execute(
            "SELECT path, sha256, batch_id, supersedes_batch_id, loaded_at FROM file_versions"
        ).fetchall()
        batches = old.execute(
            "SELECT batch_id, entity, load_date, outputs, min_folder_date, max_folder_date, "
            "rows_read, rows_landed, rows_quarantined, committed_at FROM batches").fetchall()
        pending = old.execute("SELECT batch_id, outputs, created_at FROM pending").fetchall()
    finally:
        old.close()
    db = store.db
    db.executemany(
        "INSERT OR REPLACE INTO files (path, size, mtime_ns, sha256, batch_id, entity, "
        "folder_date, status, reason, rows_read, rows_landed, rows_quarantined, duplicates, "
        "loaded_at, source) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [(*row, source) for row in files])
    db.executemany("INSERT OR IGNORE INTO file_versions (path, sha256, batch_id, "
                   "supersedes_batch_id, loaded_at, source) VALUES (?,?,?,?,?,?)",
                   [(*row, source) for row in versions])
    db.executemany("INSERT OR IGNORE INTO batches (batch_id, entity, load_date, outputs, "
                   "min_folder_date, max_folder_date, rows_read, rows_landed, rows_quarantined, "
                   "committed_at, source) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                   [(*row, source) for row in batches])
    for batch_id, outputs, created_at in pending:
        raw = json.loads(outputs).get("raw")
        entity = Path(raw).parent.parent.name if raw else None
        db.execute("INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?, NULL, ?)",
                   (batch_id, source, entity, outputs, created_at))
    return (f"{len(files)} file(s), {len(batches)} batch(es)"
            + (f", {len(pending)} pending" if pending else ""))


def _paths_json(paths: dict[str, Path]) -> str:
    return json.dumps({k: str(p) for k, p in paths.items()})


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()
