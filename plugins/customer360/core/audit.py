"""The audit store: gate results, gated-batch watermarks, reconciliation counts and a
hash-chained event log, in their own DuckDB file ``$C360_HOME/audit/audit.duckdb``.

It lives apart from the warehouse so that rebuilding the warehouse (a full refresh, an
erasure) never loses the audit trail. Nothing personal is stored: every string written
through this module in a free-text column (observed values, samples, notes, event payloads)
is passed through :func:`customer360.core.masking.mask_text`.

The event log (``audit.events``) is append-only and tamper-evident: each entry stores the
SHA-256 of the previous entry's hash followed by its own canonical JSON, so editing or
deleting an entry breaks every hash after it; :func:`verify_chain` reports the breaks
(``c360 audit verify``).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import duckdb
import pandas as pd
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from customer360.core import duck
from customer360.core.masking import mask_payload, mask_text
from customer360.core.settings import Settings

GENESIS_HASH = "0" * 64
CATALOG = "audit_store"

_DDL = """
CREATE SCHEMA IF NOT EXISTS audit;
CREATE TABLE IF NOT EXISTS audit.gate_results (
    run_id VARCHAR, stage VARCHAR, logical_date DATE, suite VARCHAR, expectation VARCHAR,
    column_name VARCHAR, kwargs VARCHAR, severity VARCHAR, scope VARCHAR,
    outcome VARCHAR,              -- pass | warn | quarantine | fail | skipped
    success BOOLEAN, observed_value VARCHAR, unexpected_count BIGINT, element_count BIGINT,
    sample VARCHAR, checked_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS audit.gate_runs (
    run_id VARCHAR, stage VARCHAR, logical_date DATE, ok BOOLEAN, suites INTEGER,
    expectations INTEGER, errors INTEGER, warnings INTEGER, rows_quarantined BIGINT,
    seconds DOUBLE, summary VARCHAR, docs_path VARCHAR, finished_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS audit.gated_batches (
    batch_id VARCHAR PRIMARY KEY, source VARCHAR, entity VARCHAR, load_date DATE,
    rows BIGINT, rows_rejected BIGINT, run_id VARCHAR, gated_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS audit.reconciliation (
    line_sha256 VARCHAR PRIMARY KEY, source VARCHAR, entity VARCHAR, batch_id VARCHAR,
    load_date DATE, source_file VARCHAR, "read" BIGINT, landed BIGINT, quarantined BIGINT,
    duplicates_in_raw BIGINT, note VARCHAR, recorded_at TIMESTAMPTZ, loaded_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS audit.gate_metrics (
    logical_date DATE, stage VARCHAR, metric VARCHAR, value DOUBLE, run_id VARCHAR,
    recorded_at TIMESTAMPTZ, PRIMARY KEY (logical_date, stage, metric));
CREATE TABLE IF NOT EXISTS audit.events (
    seq BIGINT PRIMARY KEY, recorded_at VARCHAR, kind VARCHAR, payload VARCHAR,
    prev_hash VARCHAR, hash VARCHAR);
"""

TABLES = ("gate_results", "gate_runs", "gated_batches", "reconciliation", "gate_metrics", "events")
# Columns that hold free text (values, samples, notes) and are masked on the way in; the
# others are identifiers and counts, which masking would only corrupt.
FREE_TEXT = {"gate_results": ("observed_value", "sample", "kwargs"), "gate_runs": ("summary",),
             "reconciliation": ("note", "source_file")}
# Tables whose primary key makes a re-append of the same row a no-op or an update.
_CONFLICT = {"gated_batches": "OR REPLACE", "reconciliation": "OR IGNORE", "gate_metrics": "OR REPLACE"}


class AuditError(RuntimeError):
    pass


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    problem: str

    def __str__(self) -> str:
        return f"entry {self.seq}: {self.problem}"


def audit_path(settings: Settings) -> Path:
    return settings.audit_db


def _is_lock_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


# Another process (a report, a second gate) may hold the file for a moment: wait, don't fail.
@retry(retry=retry_if_exception(_is_lock_conflict), wait=wait_exponential(multiplier=0.05, max=2),
       stop=stop_after_delay(60), reraise=True)
def _open(settings: Settings, path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    # Opened directly, a file named audit.duckdb is a catalog called "audit", and then
    # "audit.events" is ambiguous (catalog or schema?). Attached under another name, the
    # schema "audit" is unambiguous. Direct SQL on the file must say audit.audit.<table>.
    con = duck.connect(settings)
    try:
        con.execute(f"ATTACH '{path}' AS {CATALOG}" + (" (READ_ONLY)" if read_only else ""))
        con.execute(f"USE {CATALOG}")
    except BaseException:
        con.close()
        raise
    return con


@contextmanager
def connect(settings: Settings, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the audit store; writers are serialized by a file lock."""
    path = audit_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    if read_only and not path.exists():
        with connect(settings, read_only=False):
            pass  # create the schema so that readers see empty tables
    with open(path.parent / ".audit.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH if read_only else fcntl.LOCK_EX)
        try:
            con = _open(settings, path, read_only)
            try:
                if not read_only:
                    con.execute(_DDL)
                yield con
            finally:
                con.close()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _masked_frame(table: str, rows: pd.DataFrame | Iterable[dict]) -> pd.DataFrame:
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for col in FREE_TEXT.get(table, ()):
        if col in frame.columns:
            frame[col] = frame[col].map(lambda v: mask_text(v) if isinstance(v, str) else v)
    return frame


def append(settings: Settings, table: str, rows: pd.DataFrame | Iterable[dict]) -> int:
    """Append rows (dicts or a DataFrame, matched to columns by name) to ``audit.<table>``.

    Tables with a primary key treat a re-append as an update (watermarks, metrics) or a
    no-op (reconciliation lines), so reruns are idempotent. Returns the number of rows given.
    """
    if table not in TABLES or table == "events":
        raise AuditError(f"unknown audit table {table!r} (events are written by log_event)")
    frame = _masked_frame(table, rows)
    if frame.empty:
        return 0
    with connect(settings) as con:
        con.register("_rows", frame)
        con.execute(f"INSERT {_CONFLICT.get(table, '')} INTO audit.{table} BY NAME SELECT * FROM _rows")
        con.unregister("_rows")
    return len(frame)


def read(settings: Settings, table: str, where: str | None = None,
         params: list[Any] | None = None) -> pd.DataFrame:
    """``audit.<table>`` as a DataFrame, optionally filtered by a SQL ``where`` clause."""
    if table not in TABLES:
        raise AuditError(f"unknown audit table {table!r}")
    order = " ORDER BY seq" if table == "events" else ""
    sql = f"SELECT * FROM audit.{table}" + (f" WHERE {where}" if where else "") + order
    with connect(settings, read_only=True) as con:
        return con.execute(sql, params or []).df()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _entry_hash(prev_hash: str, seq: int, recorded_at: str, kind: str, payload: Any) -> str:
    body = canonical_json({"seq": seq, "recorded_at": recorded_at, "kind": kind, "payload": payload})
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def log_event(settings: Settings, kind: str, payload: dict) -> dict:
    """Append one entry to the hash-chained event log and return it.

    ``kind`` says what happened (gate, publication, erasure, ...); ``payload`` is any
    JSON-able dict, masked before it is stored.
    """
    payload = json.loads(canonical_json(mask_payload(payload)))
    recorded_at = dt.datetime.now(dt.timezone.utc).isoformat()
    with connect(settings) as con:
        con.execute("BEGIN TRANSACTION")
        last = con.execute("SELECT seq, hash FROM audit.events ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        digest = _entry_hash(prev_hash, seq, recorded_at, kind, payload)
        con.execute("INSERT INTO audit.events VALUES (?, ?, ?, ?, ?, ?)",
                    [seq, recorded_at, kind, canonical_json(payload), prev_hash, digest])
        con.execute("COMMIT")
    return {"seq": seq, "recorded_at": recorded_at, "kind": kind, "payload": payload,
            "prev_hash": prev_hash, "hash": digest}


def verify_chain(settings: Settings) -> list[ChainBreak]:
    """Every break in the event log: a missing entry, a wrong link, or an entry whose content
    no longer matches its hash. An empty list means the log is intact."""
    breaks: list[ChainBreak] = []
    if not audit_path(settings).exists():
        return breaks
    with connect(settings, read_only=True) as con:
        rows = con.execute("SELECT seq, recorded_at, kind, payload, prev_hash, hash "
                           "FROM audit.events ORDER BY seq").fetchall()
    expected_prev, expected_seq = GENESIS_HASH, 1
    for seq, recorded_at, kind, payload, prev_hash, digest in rows:
        if seq != expected_seq:
            breaks.append(ChainBreak(seq, f"expected entry {expected_seq} here: "
                                          f"{seq - expected_seq} entr{'y' if seq - expected_seq == 1 else 'ies'} missing"
                                     if seq > expected_seq else "duplicate sequence number"))
        if prev_hash != expected_prev:
            breaks.append(ChainBreak(seq, "prev_hash does not match the hash of the entry before it"))
        try:
            recomputed = _entry_hash(prev_hash, seq, recorded_at, kind, json.loads(payload))
        except (TypeError, ValueError):
            recomputed = None
        if recomputed != digest:
            breaks.append(ChainBreak(seq, "content does not match its hash (entry was modified)"))
        expected_prev, expected_seq = digest, seq + 1
    return breaks
