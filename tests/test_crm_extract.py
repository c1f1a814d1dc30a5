"""The CRM extractor against the mock CRM server over real HTTP, with files under tmp_path."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import time

import duckdb
import pytest

from customer360.ingest import raw_zone as lake
from customer360.ingest.extract import ExtractError
from customer360.core.settings import get_settings
from customer360.ingest import crm
from customer360.ingest.crm import CrmApiError, extract_crm, load_state, read_raw_crm

D1, D2, D3 = dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)
PAGE = 5


def at(day: dt.date, hours: float = 0, ms: int = 0) -> str:
    t = dt.datetime.combine(day, dt.time(), dt.timezone.utc) + dt.timedelta(hours=hours, milliseconds=ms)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def version(record_id: str, updated: str, created: str | None = None, archived: bool = False,
            **props) -> dict:
    return {"id": record_id, "properties": props, "createdAt": created or updated,
            "updatedAt": updated, "archived": archived}


def crm_versions() -> dict[str, list[dict]]:
    """Three days of CRM history, shaped to hit the edge cases (comments say which)."""
    contacts = [version(str(i), at(D1, i), email=f"c{i}@example.com") for i in range(1, 11)]
    contacts += [version(str(i), at(D1, 12), email=f"c{i}@example.com") for i in range(11, 17)]  # a tie across a page boundary
    contacts += [version(str(i), at(D1, 13 + (i - 17) / 2), email=f"c{i}@example.com") for i in range(17, 27)]
    contacts += [version("30", at(D1, 20), email="c30@example.com")]
    # The last instant of day 1, shared by three records: the day-1 watermark.
    contacts += [version(str(i), at(D1, 23, ms=3_599_999), email=f"c{i}@example.com") for i in (27, 28, 29)]
    # Day 2: new versions of the even ids (history), and new contacts at exactly D2 00:00.
    contacts += [version(str(i), at(D2, 9 + i / 60), at(D1, i), email=f"c{i}@example.com", city="杭州")
                 for i in range(2, 21, 2)]
    contacts += [version(str(i), at(D2), email=f"c{i}@example.com") for i in range(31, 36)]
    # Day 3: two erasures (archived) and a third version of contact 2.
    contacts += [version("5", at(D3, 10), at(D1, 5), archived=True),
                 version("31", at(D3, 10), at(D2), archived=True),
                 version("2", at(D3, 11), at(D1, 2), email="new2@example.com")]
    tickets = [version(str(i), at(D1, 2 * i), contact_id=str(i), subject="退货 refund", status="open")
               for i in range(1, 9)]
    tickets += [version("3", at(D2, 8), at(D1, 6), contact_id="3", status="closed", closed_at=at(D2, 8))]
    feedback = [version(str(i), at(D2 if i < 4 else D3, i), contact_id=str(i), survey_type="NPS",
                        score=str(i + 4), comment="很好" if i % 2 else None) for i in range(1, 6)]
    return {"contacts": contacts, "tickets": tickets, "feedback_submissions": feedback}


def visible(versions: list[dict], clock: str | None, before: dt.date) -> set[tuple[str, str]]:
    """What one run should land: each id's version as the server shows it, if before D+1."""
    latest: dict[str, dict] = {}
    for v in versions:
        if clock is None or crm.parse_instant_us(v["updatedAt"]) <= crm.parse_instant_us(clock):
            if v["id"] not in latest or v["updatedAt"] > latest[v["id"]]["updatedAt"]:
                latest[v["id"]] = v
    bound = at(before + dt.timedelta(days=1))
    return {(v["id"], v["updatedAt"]) for v in latest.values() if v["updatedAt"] < bound}


def landed(settings, obj: str) -> list[tuple[str, str]]:
    df = read_raw_crm(settings, obj)
    return list(zip(df["id"], df["updatedAt"]))


def raw_fingerprint(settings) -> dict[str, list[tuple]]:
    return {obj: sorted(zip(df["id"], df["updatedAt"], df["_record_hash"]))
            for obj in crm.OBJECTS for df in [read_raw_crm(settings, obj)]}


def quarantined(settings, obj: str) -> list[dict]:
    files = list((settings.quarantine / "crm" / obj).glob("load_date=*/*.parquet"))
    if not files:
        return []
    return duckdb.sql(f"SELECT * FROM read_parquet({[str(f) for f in files]})").to_arrow_table().to_pylist()


def assert_reconciled(settings) -> None:
    audit = lake.read_reconciliation(settings)
    assert all(r["read"] == r["landed"] + r["quarantined"] for r in audit)
    assert len({r["batch_id"] for r in audit}) == len(audit)  # one line a batch, never twice
    for obj in crm.OBJECTS:
        rows = [r for r in audit if r["entity"] == obj]
        assert sum(r["landed"] for r in rows) == len(read_raw_crm(settings, obj))
        assert sum(r["quarantined"] for r in rows) == len(quarantined(settings, obj))


@pytest.fixture
def crm_api(crm_server, write_crm_versions, tmp_path, monkeypatch):
    """The server loaded with ``crm_versions()`` and the environment of an extract task."""
    versions = crm_versions()
    for obj, rows in versions.items():
        write_crm_versions(crm_server.data_dir, obj, rows)
    for name in ("AIRFLOW_CTX_DAG_ID", "AIRFLOW_CONN_CRM_API"):
        monkeypatch.delenv(name, raising=False)
    env = {"C360_HOME": tmp_path / "home", "C360_CRM_BASE_URL": crm_server.base_url,
           "C360_CRM_TOKEN": crm_server.token, "C360_CRM_PAGE_SIZE": PAGE,
           "C360_CRM_PAGES_PER_BATCH": 1, "C360_CRM_MAX_ATTEMPTS": 6,
           "C360_CRM_BACKOFF_SECONDS": 0.01, "C360_CRM_BACKOFF_MAX_SECONDS": 0.05}
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    crm_server.versions = versions
    return crm_server


def test_full_pull_lands_every_object_in_the_raw_schema(crm_api):
    s = get_settings()
    recs = extract_crm(s, D3)
    for obj in crm.OBJECTS:
        rows = landed(s, obj)
        assert len(rows) == len(set(rows))
        assert set(rows) == visible(crm_api.versions[obj], None, D3)
    df = read_raw_crm(s, "contacts")
    assert str(df["archived"].dtype) == "bool" and set(df.loc[df["archived"], "id"]) == {"5", "31"}
    latest_2 = df[df["id"] == "2"].iloc[0]
    assert json.loads(latest_2["properties"]) == {"email": "new2@example.com"}
    assert latest_2["createdAt"] == at(D1, 2)
    assert set(df["load_date"].astype(str)) == {"2026-03-03"}
    assert df["_source_file"].str.startswith("crm:contacts").all()
    assert (df["_source_file"] == "crm:contacts").sum() == PAGE  # the first page: no cursor yet
    assert df.loc[df["_source_file"] != "crm:contacts", "_source_file"].str.contains(r"\?after=").all()
    assert sorted(df["_source_line"].unique()) == list(range(1, PAGE + 1))
    fb = read_raw_crm(s, "feedback_submissions")
    assert "很好" in "".join(fb["properties"])
    assert sum(r.landed for r in recs) == 35 + 8 + 5
    assert all(r.balanced for r in recs)
    assert_reconciled(s)


def test_clock_advancing_lands_new_versions_keeps_history_and_never_duplicates(crm_api):
    s = get_settings()
    runs = [(at(D1, 23, ms=3_599_999), D1), (at(D2, 23), D2), (None, D3)]
    expected = {obj: set() for obj in crm_api.versions}
    for clock, day in runs:
        crm_api.set_clock(clock)
        extract_crm(s, day)
        for obj, versions in crm_api.versions.items():
            expected[obj] |= visible(versions, clock, day)
            rows = landed(s, obj)
            assert len(rows) == len(set(rows)), f"duplicates in {obj} after {day}"
            assert set(rows) == expected[obj]
    # History: contact 2 as it was on each day; the three records at the day-1 watermark once each.
    assert sorted(u for i, u in landed(s, "contacts") if i == "2") == [at(D1, 2), at(D2, 9 + 2 / 60), at(D3, 11)]
    assert sum(1 for i, _ in landed(s, "contacts") if i in ("27", "28", "29")) == 3
    # Day 2 asked from the day-1 watermark, inclusive, and skipped what it had already.
    queries = [r["query"] for r in crm_api.stats()["recent"] if r["path"] == "contacts"]
    assert any("updatedAfter=2026-03-01T23%3A59%3A59.999Z" in q for q in queries)
    day2_notes = [r["note"] for r in lake.read_reconciliation(s)
                  if r["entity"] == "contacts" and r["load_date"] == "2026-03-02"]
    assert "3 re-read at the watermark skipped" in day2_notes[0]
    assert_reconciled(s)


def test_failure_inside_a_tie_group_resumes_without_loss_or_duplicates(crm_api, monkeypatch):
    monkeypatch.setenv("C360_CRM_MAX_ATTEMPTS", "3")
    s = get_settings()
    day1_end = at(D1, 23, ms=3_599_999)
    crm_api.set_clock(day1_end)
    # Pages 1-3 succeed (ids 1-15; 11-15 share 12:00 with 16, which is on page 4); page 4 keeps failing.
    crm_api.set_faults(scripted=["ok", "ok", "ok", "500", "503", "502"])
    with pytest.raises(CrmApiError, match="after 3 attempts"):
        extract_crm(s, D1)
    state = load_state(s, "contacts")
    assert state.watermark_us == crm.parse_instant_us(at(D1, 12))
    assert state.keys_at_watermark == {"11", "12", "13", "14", "15"} and state.pending is None
    extract_crm(s, D1)
    rows = landed(s, "contacts")
    assert len(rows) == len(set(rows))
    assert set(rows) == visible(crm_api.versions["contacts"], day1_end, D1)
    assert_reconciled(s)


def test_429_waits_for_retry_after(crm_api):
    s = get_settings()
    crm_api.set_faults(scripted=["ok", "429"], retry_after_seconds=1)
    started = time.monotonic()
    extract_crm(s, D3, objects=("contacts",))
    assert time.monotonic() - started >= 1.0
    recent = crm_api.stats()["recent"]
    i = next(i for i, r in enumerate(recent) if r["status"] == 429)
    assert recent[i + 1]["at"] - recent[i]["at"] >= 0.95  # the retry came after Retry-After
    assert recent[i + 1]["query"] == recent[i]["query"]  # the same page again
    assert crm_api.stats()["by_status"]["429"] == 1
    assert set(landed(s, "contacts")) == visible(crm_api.versions["contacts"], None, D3)


def test_5xx_burst_and_cut_pages_are_retried_and_nothing_is_lost(crm_api, caplog):
    s = get_settings()
    crm_api.set_faults(scripted=["500", "502", "503", "ok", "cut", "ok", "cut", "cut", "503"])
    with caplog.at_level(logging.DEBUG):
        extract_crm(s, D3)
    stats = crm_api.stats()
    assert stats["cut"] == 3
    assert stats["by_status"]["500"] == 1 and stats["by_status"]["502"] == 1 and stats["by_status"]["503"] == 2
    for obj, versions in crm_api.versions.items():
        rows = landed(s, obj)
        assert len(rows) == len(set(rows)) and set(rows) == visible(versions, None, D3)
    assert "retry" in caplog.text and crm_api.token not in caplog.text
    assert_reconciled(s)


def test_random_faults_end_with_the_same_raw_data(crm_api):
    s = get_settings()
    crm_api.set_faults(rate_429=0.1, retry_after_seconds=0, rate_5xx=0.15, rate_cut=0.1, seed=5)
    extract_crm(s, D3)
    stats = crm_api.stats()
    assert stats["by_status"].get("429", 0) + stats["cut"] + sum(
        n for code, n in stats["by_status"].items() if code.startswith("5")) > 0
    for obj, versions in crm_api.versions.items():
        rows = landed(s, obj)
        assert len(rows) == len(set(rows)) and set(rows) == visible(versions, None, D3)


def test_bad_token_fails_at_once_naming_the_connection_not_the_token(crm_api, monkeypatch):
    bad_token = "wrong-token-0123456789"
    monkeypatch.setenv("C360_CRM_TOKEN", bad_token)
    s = get_settings()
    started = time.monotonic()
    with pytest.raises(ExtractError) as err:
        extract_crm(s, D3)
    assert time.monotonic() - started < 2
    message = str(err.value)
    assert crm_api.base_url in message and "environment" in message and "401" in message
    assert "C360_CRM_TOKEN" in message and "crm_api" in message
    assert bad_token not in message and crm_api.token not in message
    assert crm_api.stats()["by_status"] == {"401": 1}  # not retried
    assert not (s.lake_raw / "crm").exists()


def test_killed_mid_way_then_resumed_equals_an_uninterrupted_run(crm_api, tmp_path, monkeypatch):
    monkeypatch.setenv("C360_HOME", str(tmp_path / "reference"))
    reference = get_settings()
    extract_crm(reference, D3)

    monkeypatch.setenv("C360_HOME", str(tmp_path / "killed"))
    s = get_settings()
    crm_api.set_faults(delay_seconds=0.25)  # slow pages, so the kill lands mid-way
    code = ("import datetime; from customer360.core.settings import get_settings; "
            "from customer360.ingest.crm import extract_crm; "
            "extract_crm(get_settings(), datetime.date(2026, 3, 3))")
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    contacts_dir = s.lake_raw / "crm" / "contacts"
    deadline = time.monotonic() + 30
    while not list(contacts_dir.glob("load_date=*/*.parquet")):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    partial = raw_fingerprint(s)
    assert 0 < len(partial["contacts"]) < len(raw_fingerprint(reference)["contacts"])

    crm_api.set_faults()
    extract_crm(s, D3)
    resumed = raw_fingerprint(s)
    assert resumed == raw_fingerprint(reference)
    assert all(len(rows) == len(set(rows)) for rows in resumed.values())
    assert_reconciled(s)


def test_rerun_of_the_same_date_adds_nothing_and_a_later_date_picks_up_the_rest(crm_api):
    s = get_settings()
    extract_crm(s, D1)
    assert set(landed(s, "contacts")) == visible(crm_api.versions["contacts"], None, D1)
    files = sorted(s.lake_raw.rglob("*.parquet"))
    audit_lines = len(lake.read_reconciliation(s))
    recs = extract_crm(s, D1)
    assert sorted(s.lake_raw.rglob("*.parquet")) == files
    assert len(lake.read_reconciliation(s)) == audit_lines
    assert [r.read for r in recs] == [0, 0, 0] and all(r.batch_id == "" for r in recs)
    extract_crm(s, D3)
    for obj, versions in crm_api.versions.items():
        rows = landed(s, obj)
        assert len(rows) == len(set(rows))
        assert set(rows) == visible(versions, None, D1) | visible(versions, None, D3)
    assert_reconciled(s)


def test_records_without_id_or_timestamp_are_quarantined_once(crm_api, write_crm_versions):
    versions = crm_api.versions["contacts"] + [
        {"properties": {"email": "noid@example.com"}, "createdAt": at(D1, 3), "updatedAt": at(D1, 3, ms=1)},
        {"id": "77", "properties": {}, "createdAt": at(D1, 4), "updatedAt": "yesterday-ish"},
        {"id": "78", "properties": {}, "createdAt": at(D1, 4), "updatedAt": at(D1, 4, ms=1), "archived": "maybe"},
    ]
    write_crm_versions(crm_api.data_dir, "contacts", versions)
    s = get_settings()
    recs = extract_crm(s, D3, objects=("contacts",))
    rejected = quarantined(s, "contacts")
    assert sorted(r["reason"] for r in rejected) == [
        "archived is not a boolean", "missing id", "missing or unparseable updatedAt"]
    assert all(r["source_file"].startswith("crm:contacts") and r["source_line"] >= 1 for r in rejected)
    assert any("noid@example.com" in r["raw_text"] for r in rejected)
    assert sum(r.quarantined for r in recs) == 3 and sum(r.read for r in recs) == 35 + 3
    extract_crm(s, D3, objects=("contacts",))
    assert len(quarantined(s, "contacts")) == 3
    assert_reconciled(s)


@pytest.mark.parametrize("crash_in, outcome", [("record_reconciliation", "completed"),
                                                ("write_quarantine", "discarded")])
def test_a_batch_interrupted_between_its_files_and_its_state_is_completed_or_undone(
        crm_api, write_crm_versions, monkeypatch, caplog, crash_in, outcome):
    # A rejected record gives its batch two files (raw + quarantine); the crash hits that batch,
    # after the first batch was committed.
    write_crm_versions(crm_api.data_dir, "contacts", crm_api.versions["contacts"] + [
        {"id": "", "properties": {}, "createdAt": at(D1, 12), "updatedAt": at(D1, 12, ms=1)}])
    s = get_settings()
    real = getattr(lake, crash_in)

    def crash_on_the_batch_with_a_rejected_record(settings, batch, *args, **kwargs):
        if (batch.quarantined if crash_in == "record_reconciliation" else batch):
            if crash_in == "record_reconciliation":
                real(settings, batch, *args, **kwargs)  # the line is written, the state never moves
            raise KeyboardInterrupt("simulated crash")
        return real(settings, batch, *args, **kwargs)

    monkeypatch.setattr(lake, crash_in, crash_on_the_batch_with_a_rejected_record)
    with pytest.raises(KeyboardInterrupt):
        extract_crm(s, D3, objects=("contacts",))
    monkeypatch.setattr(lake, crash_in, real)
    pending = load_state(s, "contacts").pending
    assert pending is not None and pending["quarantined"] == 1
    assert load_state(s, "contacts").watermark_us is not None  # an earlier batch was committed
    with caplog.at_level(logging.WARNING):
        extract_crm(s, D3, objects=("contacts",))
    assert f"{outcome} batch {pending['batch_id']}" in caplog.text
    batch_ids = set(read_raw_crm(s, "contacts")["_batch_id"])
    assert (pending["batch_id"] in batch_ids) == (outcome == "completed")
    rows = landed(s, "contacts")
    assert len(rows) == len(set(rows)) and set(rows) == visible(crm_api.versions["contacts"], None, D3)
    assert len(quarantined(s, "contacts")) == 1
    assert_reconciled(s)
