"""An erasure is on record before purging starts and completed after (issue 18 item 5): a
purge that dies midway leaves a 'started' row, its tokens (in both copies) and a chained
event; ``c360 erase`` with the same request says so and resumes it under the same id. An
erasure that matches nothing is refused and logged as refused, never as purged."""

from __future__ import annotations

import json

import duckdb
import pytest
from typer.testing import CliRunner

from customer360.cli import app
from customer360.core import audit
from customer360.core.settings import get_settings
from customer360.privacy import erasure, erasure_log, pii

KEY = "unit-test-pii-key-000000000000"
EMAIL = "zelda.quist@example.org"


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("C360_PII_KEY", KEY)
    monkeypatch.delenv("C360_LANDING", raising=False)
    s = get_settings()
    folder = s.lake_raw / "crm" / "contacts" / "load_date=2026-03-01"
    folder.mkdir(parents=True)
    con = duckdb.connect()
    con.execute(f"""COPY (SELECT * FROM (VALUES
        ('199901', '{{"email": "{EMAIL}", "firstname": "Zelda", "lastname": "Quist"}}', false,
         '2026-03-01T10:00:00Z', TIMESTAMPTZ '2026-03-01 11:00:00+00'),
        ('199902', '{{"email": "other@example.org", "firstname": "Otto", "lastname": "Other"}}', false,
         '2026-03-01T10:00:00Z', TIMESTAMPTZ '2026-03-01 11:00:00+00'))
        t(id, properties, archived, "updatedAt", _loaded_at))
        TO '{folder / "b-0001.parquet"}' (FORMAT parquet)""")
    con.close()
    return s


def _contacts(settings) -> list[str]:
    con = duckdb.connect()
    try:
        return sorted(r[0] for r in con.execute(
            f"SELECT id FROM read_parquet('{settings.lake_raw}/crm/contacts/*/*.parquet')").fetchall())
    finally:
        con.close()


def _erase(*args):
    return CliRunner().invoke(app, ["erase", *args, "--no-rebuild", "--no-verify"])


def test_an_erasure_that_matches_nothing_is_logged_as_refused_not_purged(settings):
    out = _erase("--contact-id", "999999")
    assert out.exit_code == 4, out.output
    assert "no record carries the contact given" in out.output
    events = audit.read(settings, "events")
    assert list(events["kind"]) == ["erasure_refused"]
    payload = json.loads(events["payload"].iloc[0])
    assert payload["request_token"] == pii.pseudonymizer(settings).token("contact:999999")
    assert "nothing to erase" in payload["why"]
    assert erasure_log.erasures(settings).empty and erasure_log.erased_tokens(settings).empty
    assert not settings.erased_keys_copy_path.exists()
    assert _contacts(settings) == ["199901", "199902"]


def test_a_purge_that_dies_midway_is_on_record_and_resumed(settings, monkeypatch):
    """The purge dies before the lake is touched: the row says 'started', the person's keys
    are already caught if their records come back; the rerun carries on under the same id."""
    def dies(*a, **k):
        raise KeyboardInterrupt("killed mid-purge (injected)")
    monkeypatch.setattr(erasure, "purge_lake", dies)
    with pytest.raises(KeyboardInterrupt):
        erasure.erase(settings, [erasure.ErasureRequest("contact", "199901")])
    rows = erasure_log.erasures(settings)
    assert list(rows["status"]) == ["started"] and rows["finished_at"].isna().all()
    erasure_id = rows["erasure_id"].iloc[0]
    assert list(erasure_log.interrupted(settings)["erasure_id"]) == [erasure_id]
    assert [k for k in audit.read(settings, "events")["kind"]] == ["erasure_started"]
    token = pii.pseudonymizer(settings).token(f"email:{EMAIL}")
    assert token in set(erasure_log.erased_tokens(settings)["token"])
    assert token in settings.erased_keys_copy_path.read_text()
    assert audit.read_anchors(settings)[-1]["reason"] == f"erasure {erasure_id} started"
    assert _contacts(settings) == ["199901", "199902"]  # nothing purged yet

    monkeypatch.undo()
    monkeypatch.setenv("C360_HOME", str(settings.home))
    monkeypatch.setenv("C360_PII_KEY", KEY)
    out = _erase("--contact-id", "199901")
    text = " ".join(out.output.split())
    assert out.exit_code == 0, out.output
    assert "an earlier erasure died mid-purge" in text and erasure_id in text
    rows = erasure_log.erasures(settings)
    assert list(rows["erasure_id"]) == [erasure_id]  # the same erasure, not a second one
    assert rows["status"].iloc[0].startswith("purged") and rows["finished_at"].notna().all()
    assert erasure_log.interrupted(settings).empty
    assert _contacts(settings) == ["199902"]
    assert [k for k in audit.read(settings, "events")["kind"]] == ["erasure_started", "erasure_started",
                                                                   "erasure"]
    assert audit.verify(settings).breaks == [] and erasure_log.unlogged_erasures(settings) == []


def test_a_purge_that_died_after_the_lake_is_resumed_by_the_request_key(settings, monkeypatch):
    """Everything was purged, then the erasure died before its record was written: the
    request names nobody in the raw zone any more, yet the rerun is no refusal: it resumes the
    interrupted erasure by the request's own key (every purge runs again)."""
    from customer360.privacy import duck_purge

    calls = []
    real = duck_purge.purge_warehouse

    def dies(*a, **k):
        raise KeyboardInterrupt("killed mid-purge (injected)")
    monkeypatch.setattr(erasure_log, "record", dies)
    with pytest.raises(KeyboardInterrupt):
        erasure.erase(settings, [erasure.ErasureRequest("contact", "199901")])
    assert _contacts(settings) == ["199902"]
    erasure_id = erasure_log.interrupted(settings)["erasure_id"].iloc[0]
    monkeypatch.undo()
    monkeypatch.setenv("C360_HOME", str(settings.home))
    monkeypatch.setenv("C360_PII_KEY", KEY)

    def records(s, person, needles):
        calls.append(sorted(person.identity_keys()))
        return real(s, person, needles)
    monkeypatch.setattr(duck_purge, "purge_warehouse", records)
    out = _erase("--contact-id", "199901")
    text = " ".join(out.output.split())
    assert out.exit_code == 0, out.output
    assert f"{erasure_id}" in text and "interrupted after its records were purged" in text
    assert calls == [["contact:199901"]]  # the warehouse purge ran this time
    rows = erasure_log.erasures(settings)
    assert list(rows["erasure_id"]) == [erasure_id]
    assert rows["status"].iloc[0].startswith("purged") and erasure_log.interrupted(settings).empty
    assert "erasure_refused" not in set(audit.read(settings, "events")["kind"])
    # once closed, the same request is an ordinary refusal again
    again = _erase("--contact-id", "199901")
    assert again.exit_code == 4 and "no record carries the contact" in again.output


def test_a_dag_erasure_that_died_midway_is_asked_for_again_and_resumed(settings, monkeypatch):
    """The DAG's requests are the raw zone's archived contacts. That record is purged last, so
    an erasure that died midway (here in the warehouse purge) is asked for again by the next
    run's erasure task and resumed under its id, instead of leaving the rest behind."""
    import datetime as dt

    from customer360.privacy import duck_purge, tasks

    folder = settings.lake_raw / "crm" / "contacts" / "load_date=2026-03-02"
    folder.mkdir(parents=True)
    con = duckdb.connect()
    con.execute(f"""COPY (SELECT '199901' AS id, '{{"email": "{EMAIL}"}}' AS properties, true AS archived,
        '2026-03-02T10:00:00Z' AS "updatedAt", TIMESTAMPTZ '2026-03-02 11:00:00+00' AS _loaded_at)
        TO '{folder / "b-0002.parquet"}' (FORMAT parquet)""")
    con.close()

    def dies(*a, **k):
        raise KeyboardInterrupt("killed mid-purge (injected)")
    monkeypatch.setattr(duck_purge, "purge_warehouse", dies)
    with pytest.raises(KeyboardInterrupt):
        tasks.erasure(dt.date(2026, 3, 2), settings)
    assert "199901" in _contacts(settings)  # what asks for the erasure is still there
    erasure_id = erasure_log.interrupted(settings)["erasure_id"].iloc[0]

    monkeypatch.undo()
    monkeypatch.setenv("C360_HOME", str(settings.home))
    monkeypatch.setenv("C360_PII_KEY", KEY)
    out = tasks.erasure(dt.date(2026, 3, 3), get_settings())
    assert out["requests"] == 1
    assert any(erasure_id in m and "interrupted before it finished" in m for m in out["resumed"]), out
    assert _contacts(settings) == ["199902"]
    assert list(erasure_log.erasures(settings)["erasure_id"]) == [erasure_id]
    assert erasure_log.interrupted(settings).empty
