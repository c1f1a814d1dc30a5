"""The audit store: gate results, gated-batch watermarks, reconciliation counts and a
hash-chained event log, in their own DuckDB file ``$C360_HOME/audit/audit.duckdb``.

It lives apart from the warehouse so that rebuilding the warehouse (a full refresh, an
erasure) never loses the audit trail. Nothing personal is stored: every string written
through this module in a free-text column (observed values, samples, notes, event payloads)
is passed through :func:`customer360.core.masking.mask_text`.

The event log (``audit.events``) is append-only and tamper-evident: each entry stores the
HMAC-SHA256 (keyed with :meth:`Settings.audit_key`) of the previous entry's hash followed by
its own canonical JSON, so editing or deleting an entry breaks every hash after it, and
rewriting the whole chain with recomputed hashes needs the key. Entries written by an older
version, or with no key configured, are plain SHA-256 (``scheme`` NULL or ``sha256``): they
are counted and reported, never taken for keyed ones.

A chain can still be cut at its end, or deleted, without a break inside it. So the head
(seq, hash) is *anchored* outside the store: :func:`anchor` appends it to
``published/audit_anchors.jsonl`` at every publication and erasure, and the publication
records it in publication.json. :func:`verify` reports the breaks inside the chain and every
anchor the chain no longer matches (``c360 audit verify``). The anchors are only as safe as
the place they are kept: someone who can rewrite both the store and the anchors log (and the
publication) undetected is out of reach of this check; ship the anchors log elsewhere for that.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import hmac
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import duckdb
import pandas as pd
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from customer360.core import duck
from customer360.core.files import append_jsonl, read_jsonl_lines
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
-- added with the keyed chain; NULL in entries an older version wrote (plain SHA-256)
ALTER TABLE audit.events ADD COLUMN IF NOT EXISTS scheme VARCHAR;
"""
KEYED = "hmac-sha256"
UNKEYED = "sha256"

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
    except duckdb.Error as exc:
        con.close()
        if _is_lock_conflict(exc):
            raise
        # Said plainly, once: every command and gate that meets it stops here, not in a
        # traceback, and nothing writes into a file it cannot read.
        raise AuditError(f"the audit store {path} cannot be opened ({exc}): it is corrupt. Keep it "
                         "for a look and restore a copy; `c360 audit verify` checks the copy") from exc
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
            except (duckdb.IOException, duckdb.TransactionException) as exc:
                if _is_lock_conflict(exc):
                    raise
                # a full disk, mostly (a commit that cannot write its WAL is a transaction
                # error): said with the store's name; DuckDB rolled the transaction back
                raise AuditError(f"the audit store {path} could not be written ({exc}); nothing "
                                 "was recorded") from exc
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


def _entry_hash(prev_hash: str, seq: int, recorded_at: str, kind: str, payload: Any,
                key: bytes | None = None) -> str:
    body = (prev_hash + canonical_json({"seq": seq, "recorded_at": recorded_at, "kind": kind,
                                        "payload": payload})).encode("utf-8")
    if key is None:
        return hashlib.sha256(body).hexdigest()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def log_event(settings: Settings, kind: str, payload: dict) -> dict:
    """Append one entry to the hash-chained event log and return it.

    ``kind`` says what happened (gate, publication, erasure, ...); ``payload`` is any
    JSON-able dict, masked before it is stored.
    """
    payload = json.loads(canonical_json(mask_payload(payload)))
    recorded_at = dt.datetime.now(dt.timezone.utc).isoformat()
    key = settings.audit_key()
    scheme = KEYED if key is not None else UNKEYED
    with connect(settings) as con:
        con.execute("BEGIN TRANSACTION")
        last = con.execute("SELECT seq, hash FROM audit.events ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        digest = _entry_hash(prev_hash, seq, recorded_at, kind, payload, key)
        con.execute("INSERT INTO audit.events (seq, recorded_at, kind, payload, prev_hash, hash, scheme) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [seq, recorded_at, kind, canonical_json(payload), prev_hash, digest, scheme])
        con.execute("COMMIT")
    return {"seq": seq, "recorded_at": recorded_at, "kind": kind, "payload": payload,
            "prev_hash": prev_hash, "hash": digest, "scheme": scheme}


def head(settings: Settings) -> dict | None:
    """The last entry of the chain as ``{"seq", "hash"}``, or None when it is empty."""
    if not audit_path(settings).exists():
        return None
    with connect(settings, read_only=True) as con:
        last = con.execute("SELECT seq, hash FROM audit.events ORDER BY seq DESC LIMIT 1").fetchone()
    return {"seq": int(last[0]), "hash": last[1]} if last else None


def anchor(settings: Settings, reason: str) -> dict | None:
    """Record the chain's head in the anchors log (append-only, beside the publication), so
    that a later truncation, rewrite or deletion of the store shows in :func:`verify`, and
    refresh the store's last good copy (:func:`backup`). Returns the anchor, or None when the
    chain is empty."""
    current = head(settings)
    if current is None:
        return None
    line = {**current, "reason": reason, "anchored_at": dt.datetime.now(dt.timezone.utc).isoformat()}
    append_jsonl(settings.audit_anchors_path, [canonical_json(line)])
    backup(settings)  # a restored copy then ends at an anchor: no anchor points past it
    return line


def read_anchors(settings: Settings) -> list[dict]:
    anchors = []
    for line in read_jsonl_lines(settings.audit_anchors_path):
        try:
            item = json.loads(line)
            anchors.append({"seq": int(item["seq"]), "hash": str(item["hash"]),
                            "reason": str(item.get("reason", "?")),
                            "anchored_at": str(item.get("anchored_at", "?"))})
        except (ValueError, KeyError, TypeError):
            anchors.append({"seq": None, "hash": None, "reason": "unreadable anchor line",
                            "anchored_at": "?"})
    return anchors


@dataclass
class Verification:
    """What :func:`verify` found. ``breaks`` make the log untrustworthy; ``unkeyed`` entries
    (an older version's, or written with no key) prove order but not who wrote them."""

    entries: int = 0
    breaks: list[ChainBreak] = field(default_factory=list)
    unkeyed: int = 0
    keyed: int = 0
    key_configured: bool = False
    anchors: int = 0
    store_exists: bool = True

    @property
    def ok(self) -> bool:
        return not self.breaks


def _check_anchor(anchor_: dict, hashes: dict[int, str], store_exists: bool) -> ChainBreak | None:
    seq, where = anchor_["seq"], f"{anchor_['reason']} at {anchor_['anchored_at']}"
    if seq is None:
        return ChainBreak(0, "an anchor line cannot be read (the anchors log was edited)")
    if not store_exists:
        return None  # reported once for the whole store
    if seq not in hashes:
        return ChainBreak(seq, f"anchored by the {where}, but the log no longer has it "
                               f"(truncated: it ends at entry {max(hashes, default=0)})")
    if hashes[seq] != anchor_["hash"]:
        return ChainBreak(seq, f"hash differs from the one anchored by the {where} "
                               "(the log was rewritten)")
    return None


def verify(settings: Settings, extra_anchors: Iterable[dict] = ()) -> Verification:
    """Check the chain (links, sequence, each entry's MAC) and every anchor: the anchors log
    and ``extra_anchors`` (e.g. the head the current publication recorded)."""
    key = settings.audit_key()
    report = Verification(key_configured=key is not None)
    anchors = read_anchors(settings) + [dict(a) for a in extra_anchors]
    report.anchors = len(anchors)
    report.store_exists = audit_path(settings).exists()
    rows = []
    if report.store_exists:
        with connect(settings, read_only=True) as con:
            columns = {r[0] for r in con.execute("DESCRIBE audit.events").fetchall()}
            # a store an older version wrote, opened read-only, has no scheme column yet
            scheme = "scheme" if "scheme" in columns else "NULL AS scheme"
            rows = con.execute(f"SELECT seq, recorded_at, kind, payload, prev_hash, hash, {scheme} "
                               "FROM audit.events ORDER BY seq").fetchall()
    elif anchors:
        last = max((a["seq"] or 0) for a in anchors)
        report.breaks.append(ChainBreak(0, f"the audit store {audit_path(settings)} is missing, but "
                                           f"{len(anchors)} anchor(s) record entries up to {last}: "
                                           "it was deleted"))
    report.entries = len(rows)
    breaks = report.breaks
    expected_prev, expected_seq, seen_keyed, told_no_key = GENESIS_HASH, 1, False, False
    for seq, recorded_at, kind, payload, prev_hash, digest, scheme in rows:
        if seq != expected_seq:
            breaks.append(ChainBreak(seq, f"expected entry {expected_seq} here: "
                                          f"{seq - expected_seq} entr{'y' if seq - expected_seq == 1 else 'ies'} missing"
                                     if seq > expected_seq else "duplicate sequence number"))
        if prev_hash != expected_prev:
            breaks.append(ChainBreak(seq, "prev_hash does not match the hash of the entry before it"))
        keyed = scheme == KEYED
        if keyed:
            report.keyed += 1
            seen_keyed = True
        else:
            report.unkeyed += 1
            if seen_keyed:
                breaks.append(ChainBreak(seq, "an unkeyed entry after keyed ones (rewritten by "
                                              "someone without the audit key)"))
        if keyed and key is None:
            if not told_no_key:
                breaks.append(ChainBreak(seq, "keyed entries, but neither C360_AUDIT_KEY nor "
                                              "C360_PII_KEY is set here: they cannot be checked"))
                told_no_key = True
            recomputed = digest
        else:
            try:
                recomputed = _entry_hash(prev_hash, seq, recorded_at, kind, json.loads(payload),
                                         key if keyed else None)
            except (TypeError, ValueError):
                recomputed = None
        if recomputed != digest:
            breaks.append(ChainBreak(seq, "content does not match its hash (entry was modified)"))
        expected_prev, expected_seq = digest, seq + 1
    hashes = {int(r[0]): r[5] for r in rows}
    for a in anchors:
        found = _check_anchor(a, hashes, report.store_exists)
        if found is not None:
            breaks.append(found)
    return report


def verify_chain(settings: Settings) -> list[ChainBreak]:
    """Every break in the event log (:func:`verify`): a missing entry, a wrong link, an entry
    whose content no longer matches its hash, an anchor the log no longer matches. An empty
    list means the log is intact."""
    return verify(settings).breaks


# --------------------------------------------------------------------------- last good copy

def backup_path(settings: Settings) -> Path:
    return settings.audit_dir / "backup" / "audit.duckdb"


def backup(settings: Settings) -> Path | None:
    """Copy the store to ``audit/backup/audit.duckdb`` (after each publication's anchor, so
    that the copy's chain ends where the anchors do); what :func:`restore_backup` puts back
    when the store no longer opens. None when there is no store yet."""
    from customer360.core.files import atomic_path

    path = audit_path(settings)
    if not path.exists():
        return None
    dest = backup_path(settings)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".audit.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)  # no writer while the copy is made
        try:
            con = duck.connect(settings)
            try:
                with atomic_path(dest, create=False, sidecars=(".wal",)) as tmp:
                    con.execute(f"ATTACH '{path}' AS src (READ_ONLY)")
                    con.execute(f"ATTACH '{tmp}' AS dst")
                    con.execute("COPY FROM DATABASE src TO dst")
                    con.execute("DETACH dst")
                    con.execute("DETACH src")
            finally:
                con.close()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return dest


def restore_backup(settings: Settings) -> dict:
    """Move the store aside (``audit.duckdb.broken-<UTC time>``, kept as evidence) and put
    back the last good copy, then log that in the chain. What the store recorded after the
    copy was made (gate results and events of the stages after the last publication) is not
    in the copy: the event says so. Raises AuditError without a copy."""
    import shutil

    from customer360.core.files import atomic_path, move_aside

    path, copy = audit_path(settings), backup_path(settings)
    if not copy.exists():
        raise AuditError(f"no good copy of the audit store at {copy}")
    moved = None
    with open(path.parent / ".audit.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if path.exists():
                moved = move_aside(path)
            with atomic_path(path) as tmp:
                shutil.copyfile(copy, tmp)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    copied_at = dt.datetime.fromtimestamp(copy.stat().st_mtime, dt.timezone.utc).isoformat()
    log_event(settings, "audit_store_restored",
              {"moved_aside": moved.name if moved else None, "copy_made_at": copied_at,
               "note": "entries recorded after the copy was made are not in the restored store"})
    return {"moved_aside": str(moved) if moved else None, "restored_from": str(copy),
            "copy_made_at": copied_at}
