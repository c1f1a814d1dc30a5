"""The one state store of the extract tasks (customer360.ingest.state): CRM watermarks and
web/POS file records in one SQLite database, the import of older homes' state files, and
the write-ahead step that keeps a crash from landing anything twice."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading

import pytest

from customer360.core.settings import get_settings
from customer360.ingest import crm
from customer360.ingest import raw_zone as lake
from customer360.ingest.crm import extract_crm, load_state
from customer360.ingest.state import STATE_DB, StateStore, state_db_path
from customer360.ingest.web import load_web
from tests.landing_fixtures import batch_files, event, read_raw, write_web_part
from tests.test_crm_extract import (D1, D3, assert_reconciled, at, crm_api, crm_env, landed,  # noqa: F401
                                    raw_fingerprint, visible)

# The manifest schema of older homes (one SQLite file a landing source).
LEGACY_MANIFEST_SCHEMA = """
CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL, batch_id TEXT NOT NULL, entity TEXT NOT NULL, folder_date TEXT,
    status TEXT NOT NULL, reason TEXT, rows_read INTEGER, rows_landed INTEGER,
    rows_quarantined INTEGER, duplicates INTEGER, loaded_at TEXT NOT NULL);
CREATE TABLE file_versions (path TEXT NOT NULL, sha256 TEXT NOT NULL, batch_id TEXT NOT NULL,
    supersedes_batch_id TEXT, loaded_at TEXT NOT NULL, PRIMARY KEY (path, batch_id));
CREATE TABLE batches (batch_id TEXT PRIMARY KEY, entity TEXT NOT NULL, load_date TEXT NOT NULL,
    outputs TEXT NOT NULL, min_folder_date TEXT, max_folder_date TEXT, rows_read INTEGER,
    rows_landed INTEGER, rows_quarantined INTEGER, committed_at TEXT NOT NULL);
CREATE TABLE pending (batch_id TEXT PRIMARY KEY, outputs TEXT NOT NULL, created_at TEXT NOT NULL);
"""


def _rows(settings, sql: str, *params) -> list[tuple]:
    db = sqlite3.connect(state_db_path(settings))
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def _to_legacy(settings) -> None:
    """Turn a home's store back into the files an older version kept, as if it had never
    had the store: crm/<object>.json and web_manifest.sqlite."""
    with StateStore(settings, "crm") as store:
        for obj in crm.OBJECTS:
            mark = store.watermark(obj)
            pending = store.pending(obj)
            if mark.watermark_us is None and not pending:
                continue
            path = settings.state_dir / "crm" / f"{obj}.json"
            path.write_text(json.dumps({
                "object": obj, "watermark_us": mark.watermark_us,
                "watermark": crm.format_instant_us(mark.watermark_us) if mark.watermark_us else None,
                "keys_at_watermark": sorted(mark.keys_at_watermark),
                "pending": pending[0].payload | {"batch_id": pending[0].batch_id} if pending else None,
                "saved_at": "2026-03-01T00:00:00+00:00"}, indent=1))
    web = _rows(settings, "SELECT path, size, mtime_ns, sha256, batch_id, entity, folder_date, "
                "status, reason, rows_read, rows_landed, rows_quarantined, duplicates, loaded_at "
                "FROM files WHERE source = 'web'")
    versions = _rows(settings, "SELECT path, sha256, batch_id, supersedes_batch_id, loaded_at "
                     "FROM file_versions WHERE source = 'web'")
    batches = _rows(settings, "SELECT batch_id, entity, load_date, outputs, min_folder_date, "
                    "max_folder_date, rows_read, rows_landed, rows_quarantined, committed_at "
                    "FROM batches WHERE source = 'web'")
    if web:
        old = sqlite3.connect(settings.state_dir / "web_manifest.sqlite")
        old.executescript(LEGACY_MANIFEST_SCHEMA)
        old.executemany(f"INSERT INTO files VALUES ({','.join('?' * 14)})", web)
        old.executemany("INSERT INTO file_versions VALUES (?,?,?,?,?)", versions)
        old.executemany(f"INSERT INTO batches VALUES ({','.join('?' * 10)})", batches)
        old.commit()
        old.close()
    for suffix in ("", "-wal", "-shm"):
        state_db_path(settings).with_name(STATE_DB + suffix).unlink(missing_ok=True)


@pytest.fixture
def settings(crm_api, monkeypatch):  # noqa: F811 (crm_api is the fixture imported above)
    monkeypatch.delenv("C360_LANDING", raising=False)
    return get_settings()


def test_a_crm_watermark_and_a_web_file_record_live_in_the_same_store(settings):
    write_web_part(settings.landing, D1, 0, [event("a1", D1), event("a2", D1)])
    (web_rec,) = load_web(settings, D1)
    extract_crm(settings, D1, objects=("contacts",))

    # One database; no JSON state file, no manifest a source.
    assert [p.name for p in settings.state_dir.rglob("*.sqlite")] == [STATE_DB]
    assert not list(settings.state_dir.rglob("*.json"))
    assert _rows(settings, "SELECT source, path, batch_id, status FROM files") == [
        ("web", f"web/events/date={D1}/part-0000.jsonl.gz", web_rec.batch_id, "loaded")]
    ((source, entity, wm_us, wm_text, keys),) = _rows(
        settings, "SELECT source, entity, watermark_us, watermark, keys_at_watermark FROM watermarks")
    assert (source, entity, wm_text) == ("crm", "contacts", at(D1, 23, ms=3_599_999))
    # the versions landed within the lookback window below the watermark: id@ms
    assert wm_us == crm.parse_instant_us(wm_text)
    assert json.loads(keys) == [f"{i}@{wm_us // 1000}" for i in (27, 28, 29)]
    # Every committed batch of both sources, in one table, matching the reconciliation log.
    batches = _rows(settings, "SELECT source, entity, batch_id, rows_landed FROM batches")
    audit = lake.read_reconciliation(settings)
    assert {(s, e, b, n) for s, e, b, n in batches} == {
        (r["source"], r["entity"], r["batch_id"], r["landed"]) for r in audit}
    assert {s for s, *_ in batches} == {"crm", "web"}
    assert _rows(settings, "SELECT * FROM pending") == []
    # The watermark of the CRM is the one the store holds, and a rerun lands nothing.
    assert load_state(settings, "contacts").watermark_us == wm_us
    assert load_web(settings, D1) == []
    assert [r.batch_id for r in extract_crm(settings, D1, objects=("contacts",))] == [""]
    assert len(lake.read_reconciliation(settings)) == len(audit)


def test_an_older_homes_json_watermarks_and_manifest_are_imported_once(settings, crm_api, tmp_path,
                                                                        monkeypatch, caplog):
    # The reference: a home that always had the store, run for D1 then D3.
    write_web_part(settings.landing, D1, 0, [event("a1", D1), event("a2", D1)])
    monkeypatch.setenv("C360_HOME", str(tmp_path / "reference"))
    monkeypatch.setenv("C360_LANDING", str(settings.landing))
    reference = get_settings()
    load_web(reference, D1)
    extract_crm(reference, D1)
    extract_crm(reference, D3)

    # The older home: D1 run, then its state put back as JSON files and a web manifest.
    monkeypatch.setenv("C360_HOME", str(settings.home))
    s = get_settings()
    load_web(s, D1)
    extract_crm(s, D1)
    wm = {obj: load_state(s, obj).watermark_us for obj in crm.OBJECTS}
    _to_legacy(s)
    assert not state_db_path(s).exists()
    assert sorted(p.name for p in (s.state_dir / "crm").glob("*.json")) == [
        "contacts.json", "feedback_submissions.json", "tickets.json"]  # feedback: listed empty

    with caplog.at_level(logging.WARNING, logger="customer360.ingest.state"):
        assert load_web(s, D1) == []  # the manifest was imported: nothing lands again
    assert "imported the legacy web_manifest.sqlite" in caplog.text
    assert "imported the legacy crm/contacts.json" in caplog.text
    assert {obj: load_state(s, obj).watermark_us for obj in crm.OBJECTS} == wm
    assert (s.state_dir / "crm" / "contacts.json.imported").exists()
    assert not list((s.state_dir / "crm").glob("*.json"))
    assert (s.state_dir / "web_manifest.sqlite.imported").exists()
    imports = _rows(s, "SELECT legacy FROM imports ORDER BY legacy")
    assert ("crm/contacts.json",) in imports and ("web_manifest.sqlite",) in imports

    # The next date continues from the imported watermarks: the same raw data as the reference.
    recs = extract_crm(s, D3)
    # searched from the imported watermark (minus the lookback), skipping what D1 landed
    assert any(r["path"].endswith("/contacts/search") for r in crm_api.stats()["recent"])
    assert any("3 version(s) landed before skipped" in r.note for r in recs)
    assert raw_fingerprint(s) == raw_fingerprint(reference)
    assert_reconciled(s)

    # Once only: an old file put back (say an old version wrote it again) is not read again.
    caplog.clear()
    (s.state_dir / "crm" / "contacts.json").write_text(json.dumps(
        {"object": "contacts", "watermark_us": 0, "keys_at_watermark": [], "pending": None}))
    with caplog.at_level(logging.WARNING, logger="customer360.ingest.state"):
        assert [r.batch_id for r in extract_crm(s, D3, objects=("contacts",))] == [""]
    assert "imported the legacy" not in caplog.text and "ignored crm/contacts.json" in caplog.text
    assert (s.state_dir / "crm" / "contacts.json.ignored").exists()
    assert json.loads((s.state_dir / "crm" / "contacts.json.imported").read_text())["watermark_us"] \
        == wm["contacts"]  # the file that was imported, kept as it was
    assert load_state(s, "contacts").watermark_us > wm["contacts"]
    assert len(_rows(s, "SELECT legacy FROM imports")) == len(imports)


def test_a_legacy_pending_batch_is_completed_after_the_import(settings, crm_api, write_crm_versions,
                                                              monkeypatch, caplog):
    # A crash after the batch's files and reconciliation line, before its state: the old
    # extractor left it as "pending" in the JSON file; the store completes it once.
    bad = dict(crm_api.versions["contacts"][0], id="99", updatedAt="not a time")
    bad["properties"] = dict(bad["properties"], hs_object_id="99", lastmodifieddate="not a time")
    write_crm_versions(crm_api.data_dir, "contacts", crm_api.versions["contacts"] + [bad])
    real = StateStore.commit_watermark

    def crash_on_the_batch_with_a_rejected_record(store, pending):
        if pending.payload["quarantined"]:
            raise KeyboardInterrupt("killed between the batch files and the state")
        return real(store, pending)

    monkeypatch.setattr(StateStore, "commit_watermark", crash_on_the_batch_with_a_rejected_record)
    with pytest.raises(KeyboardInterrupt):
        extract_crm(settings, D3, objects=("contacts",))
    monkeypatch.setattr(StateStore, "commit_watermark", real)
    pending = load_state(settings, "contacts").pending
    assert pending is not None
    _to_legacy(settings)
    assert json.loads((settings.state_dir / "crm" / "contacts.json").read_text())["pending"][
        "batch_id"] == pending["batch_id"]

    with caplog.at_level(logging.WARNING):
        extract_crm(settings, D3, objects=("contacts",))
    assert f"pending batch {pending['batch_id']}" in caplog.text
    assert f"completed batch {pending['batch_id']}" in caplog.text
    rows = landed(settings, "contacts")
    assert len(rows) == len(set(rows)) and set(rows) == visible(crm_api.versions["contacts"], None, D3)
    assert_reconciled(settings)


def test_a_crash_between_the_batch_files_and_the_state_commit_lands_nothing_twice(
        settings, crm_api, monkeypatch, caplog):
    write_web_part(settings.landing, D1, 0, [event("a", D1), event("b", D1)])
    real_files, real_mark = StateStore.commit_files, StateStore.commit_watermark
    calls = {"crm": 0}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed after the batch files were written")

    def killed_on_the_third_crm_batch(store, pending):
        calls["crm"] += 1
        if calls["crm"] == 3:
            raise KeyboardInterrupt("killed after the batch files were written")
        return real_mark(store, pending)

    monkeypatch.setattr(StateStore, "commit_files", killed)
    monkeypatch.setattr(StateStore, "commit_watermark", killed_on_the_third_crm_batch)
    with pytest.raises(KeyboardInterrupt):
        load_web(settings, D1)
    with pytest.raises(KeyboardInterrupt):
        extract_crm(settings, D3, objects=("contacts",))
    # Both batches wrote their files and stayed pending in the one store.
    assert len(batch_files(settings, "web", "events")) == 1
    assert sorted(s for (s,) in _rows(settings, "SELECT source FROM pending")) == ["crm", "web"]
    crm_pending = load_state(settings, "contacts").pending
    assert crm_pending["batch_id"] in {r["batch_id"] for r in lake.read_reconciliation(settings)}

    monkeypatch.setattr(StateStore, "commit_files", real_files)
    monkeypatch.setattr(StateStore, "commit_watermark", real_mark)
    with caplog.at_level(logging.WARNING):
        (web_rec,) = load_web(settings, D1)  # rolled back, then loaded again once
        extract_crm(settings, D3, objects=("contacts",))  # rolled forward
    assert "removed the outputs of uncommitted batch" in caplog.text
    assert f"completed batch {crm_pending['batch_id']}" in caplog.text
    assert _rows(settings, "SELECT * FROM pending") == []
    assert sorted(r["messageId"] for r in read_raw(settings, "web", "events")) == ["a", "b"]
    assert len(batch_files(settings, "web", "events")) == 1
    rows = landed(settings, "contacts")
    assert len(rows) == len(set(rows)) and set(rows) == visible(crm_api.versions["contacts"], None, D3)
    web_audit = [r["batch_id"] for r in lake.read_reconciliation(settings) if r["source"] == "web"]
    assert web_audit == [web_rec.batch_id]
    assert_reconciled(settings)
    # Nothing new on a rerun, for either source.
    assert load_web(settings, D1) == []
    assert [r.batch_id for r in extract_crm(settings, D3, objects=("contacts",))] == [""]


def test_sources_writing_at_once_wait_for_each_other(settings):
    """Each source's writer holds its own connection; SQLite serializes their commits."""
    errors: list[BaseException] = []

    def write(source: str) -> None:
        try:
            with StateStore(settings, source) as store:
                for i in range(40):
                    p = store.begin(f"{source}-{i}", "contacts", {}, {
                        "load_date": "2026-03-01", "watermark_us": i, "keys_at_watermark": [str(i)],
                        "reconciliation": {"read": 1, "landed": 1, "quarantined": 0}})
                    store.commit_watermark(p)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s,)) for s in ("crm", "web", "pos")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _rows(settings, "SELECT source, watermark_us FROM watermarks ORDER BY source") == [
        ("crm", 39), ("pos", 39), ("web", 39)]
    assert _rows(settings, "SELECT count(*) FROM batches") == [(120,)]


def test_an_erasure_rewriting_a_landing_file_keeps_the_store_in_step(settings):
    """privacy.lake_purge blanks a person's lines in a landing file it already loaded: the
    store records the new content as the loaded version, so nothing loads again."""
    from customer360.privacy.lake_purge import LakePurge, purge_landing
    from customer360.privacy.person import Needles

    path = write_web_part(settings.landing, D1, 0, [event("a1", D1, userId="zed@example.com"),
                                                    event("a2", D1)])
    load_web(settings, D1)
    rel = path.relative_to(settings.landing).as_posix()
    with StateStore(settings, "web") as store:
        before = store.file_status(rel)["sha256"]
    report = purge_landing(settings, Needles(text=("zed@example.com",), digits=(), alnum=()),
                           LakePurge())
    assert (report.landing_lines, report.manifest_rows) == (1, 1)
    with StateStore(settings, "web") as store:
        after = store.file_status(rel)
    assert after["sha256"] != before and after["size"] == path.stat().st_size
    assert load_web(settings, D1) == []


def test_a_version_1_store_gains_the_crm_cursor_and_goes_on_from_its_watermark(settings):
    # A store written before the CRM cursor: its watermarks table has no cursor column.
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(state_db_path(settings))
    db.executescript(
        "CREATE TABLE watermarks (source TEXT NOT NULL, entity TEXT NOT NULL, watermark_us INTEGER, "
        "watermark TEXT, keys_at_watermark TEXT NOT NULL, batch_id TEXT, updated_at TEXT NOT NULL, "
        "PRIMARY KEY (source, entity));"
        "INSERT INTO watermarks VALUES ('crm', 'contacts', 1772409599999000, "
        "'2026-03-01T23:59:59.999Z', '[\"27\", \"28\", \"29\"]', NULL, '2026-03-02');"
        "PRAGMA user_version = 1;")
    db.close()
    with StateStore(settings, "crm") as store:
        mark = store.watermark("contacts")
    assert mark.watermark_us == 1772409599999000 and mark.cursor is None
    assert "cursor" in {r[1] for r in _rows(settings, "PRAGMA table_info(watermarks)")}
    state = load_state(settings, "contacts")
    assert state.mode == "incremental" and state.seen == set()  # old keys: no lookback memory
    extract_crm(settings, D3, objects=("contacts",))  # searched from that watermark
    assert load_state(settings, "contacts").watermark_us > mark.watermark_us
