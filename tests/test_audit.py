"""The audit store: its own DuckDB file, masked free text, idempotent watermarks, and a
hash-chained event log whose every kind of tampering verify_chain reports."""

from __future__ import annotations

import datetime as dt
import multiprocessing

import duckdb
import pytest

from customer360.core import audit
from customer360.core.settings import get_settings


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
    return get_settings()


def _raw(settings):
    """The audit file opened directly, as a tamperer (or a BI tool) would."""
    return duckdb.connect(str(audit.audit_path(settings)))


def test_the_store_is_its_own_file_outside_the_warehouse(settings):
    audit.log_event(settings, "publication", {"logical_date": "2026-03-10", "tables": 12})
    assert audit.audit_path(settings) == settings.home / "audit" / "audit.duckdb"
    assert audit.audit_path(settings).exists() and not settings.warehouse_path.exists()
    con = _raw(settings)
    try:
        tables = {r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'audit'").fetchall()}
    finally:
        con.close()
    assert set(audit.TABLES) <= tables


def test_append_and_read_round_trip_with_free_text_masked(settings):
    now = dt.datetime.now(dt.timezone.utc)
    audit.append(settings, "gate_results", [{
        "run_id": "r1", "stage": "raw", "logical_date": dt.date(2026, 3, 10), "suite": "raw.pos_transactions",
        "expectation": "expect_column_values_to_match_regex", "severity": "error", "outcome": "fail",
        "success": False, "observed_value": "bad value Ann@Mail.com / +86 138-0013-8000",
        "sample": '["customer_phone=13800138000"]', "checked_at": now}])
    rows = audit.read(settings, "gate_results", "run_id = ?", ["r1"])

    assert len(rows) == 1
    assert rows["observed_value"][0] == "bad value A***@M***.com / +86*******8000"
    assert rows["sample"][0] == '["customer_phone=13*****8000"]'
    assert rows["suite"][0] == "raw.pos_transactions" and not rows["success"][0]


def test_identifiers_are_not_masked(settings):
    # a batch id whose random part is all digits must come back as written
    audit.append(settings, "gated_batches", [{"batch_id": "web-events-20260310T101500-12345678",
                                              "source": "web", "entity": "events", "rows": 3}])
    assert audit.read(settings, "gated_batches")["batch_id"].tolist() == ["web-events-20260310T101500-12345678"]


def test_watermarks_and_metrics_are_idempotent(settings):
    for rows in (5, 7):
        audit.append(settings, "gated_batches", [{"batch_id": "b1", "source": "web", "entity": "events",
                                                  "rows": rows}])
    audit.append(settings, "reconciliation", [{"line_sha256": "h1", "read": 1, "landed": 1, "quarantined": 0}])
    audit.append(settings, "reconciliation", [{"line_sha256": "h1", "read": 9, "landed": 9, "quarantined": 0}])

    assert audit.read(settings, "gated_batches")["rows"].tolist() == [7]
    assert audit.read(settings, "reconciliation")["read"].tolist() == [1]


def test_unknown_tables_are_refused(settings):
    with pytest.raises(audit.AuditError):
        audit.append(settings, "gate_results; DROP TABLE audit.events", [{"x": 1}])
    with pytest.raises(audit.AuditError, match="log_event"):
        audit.append(settings, "events", [{"seq": 1}])


def test_every_entry_links_to_the_one_before(settings):
    first = audit.log_event(settings, "gate", {"stage": "raw", "ok": True})
    second = audit.log_event(settings, "erasure", {"customer_id": "c_0a1b", "requested_by": "dpo"})

    assert first["seq"] == 1 and first["prev_hash"] == audit.GENESIS_HASH
    assert second["prev_hash"] == first["hash"]
    assert audit.verify_chain(settings) == []
    assert audit.read(settings, "events")["kind"].tolist() == ["gate", "erasure"]


def test_event_payloads_are_masked(settings):
    entry = audit.log_event(settings, "erasure", {"note": "asked by ann@mail.com", "n": 1})
    stored = audit.read(settings, "events")["payload"][0]
    assert "ann@mail.com" not in stored and "a***@m***.com" in stored
    assert entry["payload"]["note"] == "asked by a***@m***.com"
    assert audit.verify_chain(settings) == []


def test_verify_reports_a_modified_entry(settings):
    for i in range(4):
        audit.log_event(settings, "publication", {"run": i})
    con = _raw(settings)
    try:  # direct SQL on the file has to spell the catalog: audit.audit.<table>
        con.execute("""UPDATE audit.audit.events SET payload = '{"run":99}' WHERE seq = 2""")
    finally:
        con.close()

    breaks = audit.verify_chain(settings)
    assert [(b.seq, b.problem) for b in breaks] == [(2, "content does not match its hash (entry was modified)")]


def test_verify_reports_a_deleted_entry(settings):
    for i in range(4):
        audit.log_event(settings, "gate", {"run": i})
    con = _raw(settings)
    try:
        con.execute("DELETE FROM audit.audit.events WHERE seq = 3")
    finally:
        con.close()

    breaks = audit.verify_chain(settings)
    assert [b.seq for b in breaks] == [4, 4]
    assert "1 entry missing" in breaks[0].problem and "prev_hash" in breaks[1].problem


def test_verify_reports_a_rewritten_tail(settings):
    """Recomputing one entry's hash after editing it still breaks the link to the next."""
    for i in range(3):
        audit.log_event(settings, "gate", {"run": i})
    con = _raw(settings)
    try:
        seq, recorded_at, kind, prev = con.execute(
            "SELECT seq, recorded_at, kind, prev_hash FROM audit.audit.events WHERE seq = 2").fetchone()
        forged = audit._entry_hash(prev, seq, recorded_at, kind, {"run": 42})
        con.execute("UPDATE audit.audit.events SET payload = '{\"run\":42}', hash = ? WHERE seq = 2", [forged])
    finally:
        con.close()

    assert [(b.seq, b.problem) for b in audit.verify_chain(settings)] == [
        (3, "prev_hash does not match the hash of the entry before it")]


def _append_events(home: str, n: int) -> None:
    import os

    os.environ["C360_HOME"] = home
    s = get_settings()
    for i in range(n):
        audit.log_event(s, "gate", {"pid": os.getpid(), "i": i})


def test_concurrent_writers_keep_one_unbroken_chain(settings):
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_append_events, args=(str(settings.home), 10)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0]

    events = audit.read(settings, "events")
    assert events["seq"].tolist() == list(range(1, 31))
    assert audit.verify_chain(settings) == []
