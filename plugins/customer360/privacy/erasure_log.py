"""The erasure log, in the audit store (``$C360_HOME/audit/audit.duckdb``, schema ``audit``).

``audit.erasures``: one row per erasure: when, why (a request or an archived CRM contact),
the token of the key that asked for it, how many keys and customers it resolved to, what was
purged where (counts per table and file kind), and its status. Every erasure is also an
entry of the hash-chained event log (``kind = 'erasure'``), so rewriting this table after
the fact shows in ``c360 audit verify``.

``audit.erased_rows``: rows removed per raw or quarantine batch, so that reconciliation
(read = landed + quarantined, landed = rows in the batch file) can allow for them.

``audit.erased_keys``: the tokens of every key of every erased person, with the erasure
time. Incoming data is matched against it so that a late file, a redelivery or a re-read of
the CRM cannot bring back records from before the erasure (:mod:`customer360.privacy.erasure`).
The same tokens are appended to ``lake/_state/erased_keys.jsonl`` too, and the two are read as
one: losing or deleting audit.duckdb must not let an erased person's records back in.

An erasure is written twice: ``status = 'started'`` (its tokens included) before anything is
purged, and its final status after. A row still ``started`` is an erasure that died mid-purge
(:func:`interrupted`); ``c360 erase`` with the same request resumes it.

Nothing personal is stored: tokens are SHA-256 of the keyed HMAC
(:meth:`customer360.privacy.pii.Pseudonymizer.token`): not the hashes the marts publish, and
useless for guessing without ``C360_PII_KEY``.
"""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd

from customer360.core import audit
from customer360.core.files import append_jsonl, read_jsonl_lines
from customer360.core.settings import Settings

_DDL = """
CREATE TABLE IF NOT EXISTS audit.erasures (
    erasure_id VARCHAR PRIMARY KEY, requested_at TIMESTAMPTZ, finished_at TIMESTAMPTZ,
    reason VARCHAR, request_kind VARCHAR, request_token VARCHAR, status VARCHAR,
    keys_json VARCHAR, purged_json VARCHAR, compacted_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS audit.erased_keys (
    token VARCHAR, key_type VARCHAR, erasure_id VARCHAR, erased_at TIMESTAMPTZ,
    PRIMARY KEY (token, erasure_id));
CREATE TABLE IF NOT EXISTS audit.erased_rows (
    erasure_id VARCHAR, zone VARCHAR, source_entity VARCHAR, batch_id VARCHAR, "rows" BIGINT,
    erased_at TIMESTAMPTZ);
"""


def _ensure(con) -> None:
    con.execute(_DDL)


STARTED = "started"
_TOKEN_COLUMNS = ["token", "key_type", "erasure_id", "erased_at"]


def _copy_tokens(settings: Settings, erasure_id: str, erased_at: dt.datetime,
                 key_tokens: list[tuple[str, str]]) -> None:
    append_jsonl(settings.erased_keys_copy_path, [
        audit.canonical_json({"token": token, "key_type": key_type, "erasure_id": erasure_id,
                              "erased_at": erased_at.isoformat()})
        for token, key_type in key_tokens])


def begin(settings: Settings, *, erasure_id: str, requested_at: dt.datetime, reason: str,
          request_kind: str, request_token: str, keys: dict,
          key_tokens: list[tuple[str, str]]) -> dict:
    """Put an erasure on record before purging starts: its row (``started``), its key tokens
    (so that records of the person are caught from now on, even if the purge dies) in both
    copies, a chained event, and an anchor of the chain's head."""
    _copy_tokens(settings, erasure_id, requested_at, key_tokens)
    with audit.connect(settings) as con:
        _ensure(con)
        con.execute("BEGIN TRANSACTION")
        con.execute("INSERT OR REPLACE INTO audit.erasures VALUES (?, ?, NULL, ?, ?, ?, ?, ?, NULL, NULL)",
                    [erasure_id, requested_at, reason, request_kind, request_token, STARTED,
                     json.dumps(keys, sort_keys=True)])
        if key_tokens:
            con.executemany("INSERT OR IGNORE INTO audit.erased_keys VALUES (?, ?, ?, ?)",
                            [(token, key_type, erasure_id, requested_at) for token, key_type in key_tokens])
        con.execute("COMMIT")
    event = audit.log_event(settings, "erasure_started", {
        "erasure_id": erasure_id, "reason": reason, "request_kind": request_kind,
        "request_token": request_token, "requested_at": requested_at.isoformat(), "keys": keys})
    audit.anchor(settings, f"erasure {erasure_id} started")
    return {"erasure_id": erasure_id, "status": STARTED, "event_seq": event["seq"]}


def interrupted(settings: Settings, request_token: str | None = None) -> pd.DataFrame:
    """Erasures still ``started``: their purge died before it finished (optionally only those
    asked for by ``request_token``)."""
    frame = erasures(settings)
    if frame.empty:
        return frame
    frame = frame[frame["status"] == STARTED]
    if request_token is not None:
        frame = frame[frame["request_token"] == request_token]
    return frame


def record(settings: Settings, *, erasure_id: str, requested_at: dt.datetime, reason: str,
           request_kind: str, request_token: str, status: str, keys: dict, purged: dict,
           key_tokens: list[tuple[str, str]],
           batch_rows: dict[tuple[str, str, str], int] | None = None) -> dict:
    """Store one erasure (its final status) and its key tokens; append it to the chained event
    log and anchor the chain's head."""
    finished = dt.datetime.now(dt.timezone.utc)
    _copy_tokens(settings, erasure_id, requested_at, key_tokens)
    with audit.connect(settings) as con:
        _ensure(con)
        con.execute("BEGIN TRANSACTION")
        con.execute("INSERT OR REPLACE INTO audit.erasures VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                    [erasure_id, requested_at, finished, reason, request_kind, request_token, status,
                     json.dumps(keys, sort_keys=True), json.dumps(purged, sort_keys=True)])
        if key_tokens:
            con.executemany("INSERT OR IGNORE INTO audit.erased_keys VALUES (?, ?, ?, ?)",
                            [(token, key_type, erasure_id, requested_at) for token, key_type in key_tokens])
        if batch_rows:
            con.executemany("INSERT INTO audit.erased_rows VALUES (?, ?, ?, ?, ?, ?)",
                            [(erasure_id, zone, entity, batch, rows, requested_at)
                             for (zone, entity, batch), rows in sorted(batch_rows.items())])
        con.execute("COMMIT")
    event = audit.log_event(settings, "erasure", {
        "erasure_id": erasure_id, "reason": reason, "request_kind": request_kind,
        "request_token": request_token, "status": status, "requested_at": requested_at.isoformat(),
        "keys": keys, "purged": purged})
    audit.anchor(settings, f"erasure {erasure_id}")
    return {"erasure_id": erasure_id, "status": status, "event_seq": event["seq"]}


def _copied_tokens(settings: Settings) -> pd.DataFrame:
    rows = []
    for line in read_jsonl_lines(settings.erased_keys_copy_path):
        try:
            item = json.loads(line)
            rows.append({c: item[c] for c in _TOKEN_COLUMNS})
        except (ValueError, KeyError, TypeError):
            continue  # a line someone edited: the store's copy still has it
    # begin() and record() both append an erasure's tokens: one row each
    frame = pd.DataFrame(rows, columns=_TOKEN_COLUMNS).drop_duplicates(["token", "erasure_id"])
    frame["erased_at"] = pd.to_datetime(frame["erased_at"], utc=True)
    return frame


def erased_tokens(settings: Settings) -> pd.DataFrame:
    """token, key_type, erasure_id, erased_at of every erased key: the audit store's and the
    copy outside it, together (either may have been lost)."""
    copied = _copied_tokens(settings)
    if not audit.audit_path(settings).exists():
        return copied.reset_index(drop=True)
    with audit.connect(settings) as con:
        _ensure(con)
        stored = con.execute("SELECT token, key_type, erasure_id, erased_at FROM audit.erased_keys").df()
    stored["erased_at"] = pd.to_datetime(stored["erased_at"], utc=True)
    frames = [f for f in (stored, copied) if not f.empty]
    if not frames:
        return stored
    both = pd.concat(frames, ignore_index=True)
    return both.drop_duplicates(["token", "erasure_id"]).reset_index(drop=True)


def unlogged_erasures(settings: Settings) -> list[str]:
    """Erasures the erased-keys copy knows and the audit chain does not: the chain's tail
    (the erasure entry included) was cut, or the store was replaced."""
    known = set(_copied_tokens(settings)["erasure_id"])
    if not known:
        return []
    logged: set[str] = set()
    if audit.audit_path(settings).exists():
        events = audit.read(settings, "events", "kind IN ('erasure', 'erasure_started')")
        for payload in events["payload"]:
            try:
                logged.add(json.loads(payload).get("erasure_id"))
            except ValueError:
                continue
    return sorted(known - logged)


def erased_rows(settings: Settings) -> pd.DataFrame:
    """erasure_id, zone (raw, quarantine), source_entity, batch_id, rows, erased_at."""
    if not audit.audit_path(settings).exists():
        return pd.DataFrame(columns=["erasure_id", "zone", "source_entity", "batch_id", "rows", "erased_at"])
    with audit.connect(settings) as con:
        _ensure(con)
        return con.execute("SELECT * FROM audit.erased_rows").df()


def erasures(settings: Settings) -> pd.DataFrame:
    if not audit.audit_path(settings).exists():
        return pd.DataFrame()
    with audit.connect(settings) as con:
        _ensure(con)
        return con.execute("SELECT * FROM audit.erasures ORDER BY requested_at").df()


def awaiting_compaction(settings: Settings) -> list[str]:
    """Erasures whose warehouse has not been compacted since (a DAG run purged it in place
    and the day's rebuild still had to happen)."""
    if not audit.audit_path(settings).exists():
        return []
    with audit.connect(settings) as con:
        _ensure(con)
        return [r[0] for r in con.execute(
            "SELECT erasure_id FROM audit.erasures WHERE compacted_at IS NULL ORDER BY requested_at").fetchall()]


def mark_compacted(settings: Settings, erasure_ids: list[str], detail: dict) -> None:
    if not erasure_ids:
        return
    now = dt.datetime.now(dt.timezone.utc)
    with audit.connect(settings) as con:
        _ensure(con)
        con.executemany("UPDATE audit.erasures SET compacted_at = ? WHERE erasure_id = ?",
                        [(now, e) for e in erasure_ids])
    audit.log_event(settings, "erasure_compaction", {"erasures": erasure_ids, **detail})
