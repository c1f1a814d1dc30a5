"""The audit chain keyed and anchored: each attack of issue 18 item 7 made on a real store
(truncating its tail with an erasure, rewriting it with recomputed hashes, deleting the file,
an older version's store) and what ``audit verify`` and the erased keys make of it."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json

import duckdb
import pytest
from typer.testing import CliRunner

from customer360.cli import app
from customer360.core import audit
from customer360.core.settings import get_settings
from customer360.privacy import erasure_log

PII_KEY = "unit-test-pii-key-000000000000"


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("C360_PII_KEY", PII_KEY)
    monkeypatch.delenv("C360_AUDIT_KEY", raising=False)
    return get_settings()


def _sql(settings, sql, params=None):
    con = duckdb.connect(str(audit.audit_path(settings)))
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def _erase(settings, erasure_id="er-000000000001", tokens=(("tok-email-1", "email"),)):
    at = dt.datetime(2026, 3, 10, 12, tzinfo=dt.timezone.utc)
    common = dict(erasure_id=erasure_id, requested_at=at, reason="request", request_kind="email",
                  request_token="req-token-1", keys={"emails": 1}, key_tokens=list(tokens))
    erasure_log.begin(settings, **common)
    erasure_log.record(settings, status="complete", purged={}, **common)


def _breaks(settings):
    return [str(b) for b in audit.verify(settings).breaks]


def test_entries_are_hmac_keyed_with_a_sub_key_of_the_pii_key(settings):
    entry = audit.log_event(settings, "gate", {"n": 1})
    key = settings.audit_key()
    assert key == hmac.new(PII_KEY.encode(), b"customer360 audit chain v1", hashlib.sha256).digest()
    assert key != PII_KEY.encode()
    body = audit.GENESIS_HASH + audit.canonical_json(
        {"seq": 1, "recorded_at": entry["recorded_at"], "kind": "gate", "payload": {"n": 1}})
    assert entry["hash"] == hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
    assert entry["hash"] != hashlib.sha256(body.encode()).hexdigest()
    assert _sql(settings, "SELECT scheme FROM audit.audit.events") == [("hmac-sha256",)]


def test_an_audit_key_of_its_own_wins_and_a_short_one_is_refused(settings, monkeypatch):
    monkeypatch.setenv("C360_AUDIT_KEY", "a-separate-audit-key-0001")
    assert get_settings().audit_key() == b"a-separate-audit-key-0001"
    monkeypatch.setenv("C360_AUDIT_KEY", "short")
    with pytest.raises(ValueError, match="C360_AUDIT_KEY must be at least 16"):
        get_settings().audit_key()


def test_a_rewrite_with_recomputed_hashes_is_caught_without_the_key(settings):
    """The tamperer edits an entry and recomputes every hash after it, as one could against a
    plain SHA-256 chain: with no key, the MACs do not match (and unkeyed ones are not taken)."""
    for i in range(4):
        audit.log_event(settings, "publication", {"run": i})
    rows = _sql(settings, "SELECT seq, recorded_at, kind, payload FROM audit.audit.events ORDER BY seq")
    prev = audit.GENESIS_HASH
    for seq, recorded_at, kind, payload in rows:
        payload = {"run": 42} if seq == 2 else json.loads(payload)
        forged = audit._entry_hash(prev, seq, recorded_at, kind, payload)  # unkeyed: no key
        _sql(settings, "UPDATE audit.audit.events SET payload = ?, prev_hash = ?, hash = ? WHERE seq = ?",
             [audit.canonical_json(payload), prev, forged, seq])
        prev = forged
    assert _breaks(settings) == [f"entry {s}: content does not match its hash (entry was modified)"
                                 for s in range(1, 5)]
    # Marking the forged entries unkeyed makes their content check out as SHA-256, but
    # verify counts them as unkeyed and says so. (With an anchor made before the forgery, the
    # next test, it is a break; this forger even anchored their own chain afterwards.)
    audit.anchor(settings, "publication v000001")
    _sql(settings, "UPDATE audit.audit.events SET scheme = 'sha256'")
    report = audit.verify(settings)
    assert report.unkeyed == 4 and report.keyed == 0 and report.breaks == []
    result = CliRunner().invoke(app, ["audit", "verify"])
    assert "not keyed" in result.output and "4 of 4 entries" in result.output


def test_a_wholly_forged_unkeyed_chain_does_not_match_the_anchors(settings):
    for i in range(3):
        audit.log_event(settings, "gate", {"run": i})
    audit.anchor(settings, "publication v000001")
    rows = _sql(settings, "SELECT seq, recorded_at, kind, payload FROM audit.audit.events ORDER BY seq")
    prev = audit.GENESIS_HASH
    for seq, recorded_at, kind, payload in rows:
        forged = audit._entry_hash(prev, seq, recorded_at, kind, {"run": 7})
        _sql(settings, "UPDATE audit.audit.events SET payload = '{\"run\":7}', prev_hash = ?, hash = ?, "
                       "scheme = 'sha256' WHERE seq = ?", [prev, forged, seq])
        prev = forged
    assert _breaks(settings) == ["entry 3: hash differs from the one anchored by the publication "
                                 f"v000001 at {audit.read_anchors(settings)[0]['anchored_at']} "
                                 "(the log was rewritten)"]


def test_a_truncated_tail_with_its_erasure_entry_is_caught(settings):
    audit.log_event(settings, "gate", {"run": 1})
    audit.anchor(settings, "publication v000001")
    _erase(settings)
    last = _sql(settings, "SELECT max(seq) FROM audit.audit.events")[0][0]
    assert _breaks(settings) == []

    # cut the tail back to before the erasure (no break inside what is left)
    _sql(settings, "DELETE FROM audit.audit.events WHERE kind LIKE 'erasure%'")
    _sql(settings, "DELETE FROM audit.audit.erasures")
    breaks = _breaks(settings)
    assert breaks and all("no longer has it (truncated: it ends at entry 1)" in b for b in breaks)
    assert {b.split(":")[0] for b in breaks} == {f"entry {s}" for s in range(2, last + 1)}
    assert erasure_log.unlogged_erasures(settings) == ["er-000000000001"]

    result = CliRunner().invoke(app, ["audit", "verify"])
    assert result.exit_code == 1
    assert "erasure er-000000000001 is in the erased-keys copy but not in the log" in result.output


def test_deleting_the_store_is_caught_and_the_erased_keys_survive(settings):
    _erase(settings, tokens=[("tok-email-1", "email"), ("tok-phone-1", "phone")])
    before = erasure_log.erased_tokens(settings)
    assert set(before["token"]) == {"tok-email-1", "tok-phone-1"}

    audit.audit_path(settings).unlink()
    assert not audit.audit_path(settings).exists()
    breaks = _breaks(settings)
    assert len(breaks) == 1 and "is missing" in breaks[0] and "it was deleted" in breaks[0]
    after = erasure_log.erased_tokens(settings)
    assert sorted(after["token"]) == ["tok-email-1", "tok-phone-1"]
    assert set(after["erasure_id"]) == {"er-000000000001"}
    assert after["erased_at"].iloc[0] == before["erased_at"].iloc[0]
    # the copy holds tokens only: nothing a dictionary attack on a hash could use
    copy = settings.erased_keys_copy_path.read_text()
    assert set(json.loads(copy.splitlines()[0])) == {"token", "key_type", "erasure_id", "erased_at"}

    result = CliRunner().invoke(app, ["audit", "verify"])
    assert result.exit_code == 1 and "it was deleted" in result.output


def test_the_erased_keys_are_the_union_of_both_copies(settings):
    _erase(settings, "er-000000000001", [("tok-a", "email")])
    settings.erased_keys_copy_path.unlink()  # the copy lost: the store still has it
    _erase(settings, "er-000000000002", [("tok-b", "phone")])
    _sql(settings, "DELETE FROM audit.audit.erased_keys WHERE token = 'tok-b'")  # the store lost this one
    assert sorted(erasure_log.erased_tokens(settings)["token"]) == ["tok-a", "tok-b"]


def test_a_store_written_by_an_older_version_is_reported_not_crashed(settings, monkeypatch):
    """The events table without the scheme column, every entry plain SHA-256."""
    path = audit.audit_path(settings)
    path.parent.mkdir(parents=True)
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA audit.audit; CREATE TABLE audit.audit.events (seq BIGINT PRIMARY KEY, "
                "recorded_at VARCHAR, kind VARCHAR, payload VARCHAR, prev_hash VARCHAR, hash VARCHAR)")
    prev = audit.GENESIS_HASH
    for seq in (1, 2):
        at = f"2026-01-0{seq}T00:00:00+00:00"
        body = audit.canonical_json({"seq": seq, "recorded_at": at, "kind": "gate", "payload": {"n": seq}})
        digest = hashlib.sha256((prev + body).encode()).hexdigest()
        con.execute("INSERT INTO audit.audit.events VALUES (?, ?, 'gate', ?, ?, ?)",
                    [seq, at, audit.canonical_json({"n": seq}), prev, digest])
        prev = digest
    con.close()

    report = audit.verify(settings)  # read-only: the old file is not changed by a check
    assert (report.entries, report.unkeyed, report.keyed, report.breaks) == (2, 2, 0, [])
    result = CliRunner().invoke(app, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "2 of 2 entries carry a plain SHA-256" in result.output and "older version" in result.output

    audit.log_event(settings, "gate", {"n": 3})  # the new version carries on, keyed
    report = audit.verify(settings)
    assert (report.entries, report.unkeyed, report.keyed, report.breaks) == (3, 2, 1, [])
    # an unkeyed entry after a keyed one is a forgery, not an old entry
    audit.log_event(settings, "gate", {"n": 4})
    _sql(settings, "UPDATE audit.audit.events SET scheme = NULL WHERE seq = 4")
    assert "entry 4: an unkeyed entry after keyed ones (rewritten by someone without the audit key)" \
        in _breaks(settings)


def test_keyed_entries_cannot_be_checked_without_a_key_and_say_so(settings, monkeypatch):
    audit.log_event(settings, "gate", {"n": 1})
    monkeypatch.delenv("C360_PII_KEY")
    breaks = _breaks(get_settings())
    assert breaks == ["entry 1: keyed entries, but neither C360_AUDIT_KEY nor C360_PII_KEY is set "
                      "here: they cannot be checked"]


def test_the_publication_records_the_head_and_anchors_it(settings, monkeypatch):
    """Through the publish stage on a tiny warehouse: publication.json carries the head, the
    anchors log gets the head after the publication event, and cutting that event shows."""
    from customer360.core import duck
    from customer360.pipeline import stages
    from customer360.serve.publish import publication_anchors

    settings.warehouse_path.parent.mkdir(parents=True)
    con = duck.connect(settings, settings.warehouse_path)
    con.execute("CREATE SCHEMA marts; CREATE TABLE marts.customer_360 AS SELECT 1 AS customer_id")
    con.close()
    audit.log_event(settings, "gate", {"n": 1})
    stages.publish(dt.date(2026, 3, 10), settings)
    pub = json.loads(settings.publication_path.read_text())
    assert pub["audit_head"] == {"seq": 1, "hash": audit.read(settings, "events")["hash"].iloc[0]}
    anchors = audit.read_anchors(settings)
    assert [a["seq"] for a in anchors] == [2] and anchors[0]["reason"].startswith("publication v000001")
    assert audit.verify(settings, publication_anchors(settings)).breaks == []

    _sql(settings, "DELETE FROM audit.audit.events WHERE seq = 2")  # the publication entry
    assert _breaks(settings)[0].startswith("entry 2: anchored by the publication v000001")
    settings.audit_anchors_path.unlink()  # and the anchors log with it: publication.json remains
    _sql(settings, "DELETE FROM audit.audit.events")
    assert [str(b) for b in audit.verify(settings, publication_anchors(settings)).breaks] == [
        f"entry 1: anchored by the current publication at {pub['published_at']}, but the log no "
        "longer has it (truncated: it ends at entry 0)"]
