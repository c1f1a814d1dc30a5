"""Recovery on a home with one small web load (no warehouse): the manifests' checksums, a
manifest from before them, a state row that does not parse, the state store's last good copy,
and a raw batch set aside and landed again. The whole-home repairs are tests/test_recovery.py."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

import duckdb
import pytest

from customer360.core.settings import get_settings
from customer360.ingest.state import StateError, StateStore, backup_state, restore_state, state_db_path
from customer360.ingest.web import load_web
from customer360.pipeline import doctor
from tests.landing_fixtures import event, write_web_part

D1 = dt.date(2026, 3, 1)


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("C360_LANDING", raising=False)
    s = get_settings()
    write_web_part(s.landing, D1, 0, [event(f"m{i}", D1) for i in range(6)])
    load_web(s, D1)
    return s


def only_batch(settings) -> dict:
    with StateStore(settings, "web") as store:
        (batch,) = store.batches("events")
    return batch


def raw_path(settings):
    return json.loads(only_batch(settings)["outputs"])["raw"]


def rewrite(path, sql: str) -> None:
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t AS SELECT * FROM read_parquet('{path}')")
    con.execute(sql)
    con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    con.close()


def test_the_manifest_records_each_file_and_doctor_finds_one_that_changed(settings):
    batch = only_batch(settings)
    sums = json.loads(batch["checksums"])
    assert sums["raw"]["rows"] == 6 and sums["files"]["rows"] == 1
    assert doctor.check_raw(settings, doctor._read_state(settings)[1]["batches"])[0].status == "ok"
    rewrite(raw_path(settings), "UPDATE t SET \"userId\" = 'someone'")  # same rows, other bytes
    (bad,) = doctor.bad_batches(settings, doctor._read_state(settings)[1]["batches"])
    assert bad.path == raw_path(settings) and bad.batch_id == batch["batch_id"]
    assert "bytes" in bad.reason or "SHA-256" in bad.reason


def test_a_manifest_from_before_checksums_is_checked_by_its_rows(settings):
    db = sqlite3.connect(state_db_path(settings))
    db.execute("UPDATE batches SET checksums = NULL")
    db.commit()
    db.close()
    batches = doctor._read_state(settings)[1]["batches"]
    assert doctor.bad_batches(settings, batches) == []
    rewrite(raw_path(settings), "DELETE FROM t WHERE \"messageId\" = 'm0'")  # an erasure's rewrite
    assert doctor.bad_batches(settings, batches) == []
    rewrite(raw_path(settings), "INSERT INTO t SELECT * FROM t")  # more rows than ever landed
    (bad,) = doctor.bad_batches(settings, batches)
    assert bad.reason == "10 rows, the manifest says 6"


def test_a_state_row_that_does_not_parse_names_the_store_and_the_repair(settings):
    backup_state(settings)  # what each publication does
    db = sqlite3.connect(state_db_path(settings))
    db.execute("UPDATE batches SET outputs = '{torn'")
    db.commit()
    db.close()
    with StateStore(settings, "web") as store, \
            pytest.raises(StateError, match=r"state\.sqlite: the manifest row .*c360 doctor --repair state"):
        store.batch_outputs("events", "raw", D1, D1)
    finding = [f for f in doctor.diagnose(settings).findings if f.store == "manifest"]
    assert [f.repair for f in finding] == ["c360 doctor --repair state"]


def test_the_last_good_copy_of_the_state_store_is_put_back(settings):
    assert backup_state(settings) is not None
    expected = only_batch(settings)
    state_db_path(settings).write_bytes(b"garbage" * 1000)
    with pytest.raises(StateError, match="cannot be read"):
        StateStore(settings, "web")
    out = restore_state(settings)
    assert out["moved_aside"] and (settings.state_dir / out["moved_aside"].rsplit("/", 1)[1]).exists()
    assert only_batch(settings) == expected


def test_without_a_copy_a_corrupt_state_store_has_no_repair_command(settings):
    state_db_path(settings).write_bytes(b"garbage" * 1000)
    with pytest.raises(StateError, match="no good copy"):
        StateStore(settings, "web")
    (finding,) = [f for f in doctor.diagnose(settings).findings if f.store == "state"]
    assert finding.status == "problem" and finding.repair is None and "no good copy" in finding.detail


def test_an_unreadable_batch_is_set_aside_and_the_loader_lands_it_again(settings):
    path = raw_path(settings)
    with open(path, "r+b") as fh:
        fh.truncate(100)
    (finding,) = doctor.diagnose(settings).problems
    assert finding.store == "raw" and finding.repair == "c360 doctor --repair raw"
    batch_id = only_batch(settings)["batch_id"]
    out = doctor.repair(settings, "raw")
    assert [b["batch_id"] for b in out["batches"]] == [batch_id]
    assert "c360 extract web" in out["next"][0]
    with StateStore(settings, "web") as store:
        assert store.batches("events") == []
        aside = store.db.execute("SELECT reason FROM set_aside WHERE batch_id = ?", (batch_id,)).fetchone()
    assert aside and "bytes" in aside[0]
    (rec,) = load_web(settings, D1)
    assert rec.landed == 6
    assert doctor.diagnose(settings).ok


def test_a_rebuild_takes_what_it_cannot_derive_from_the_old_warehouse_where_it_opens(settings, tmp_path):
    from customer360.core import duck
    from customer360.warehouse import keep

    def warehouse(path, customer_id: str) -> None:
        con = duck.connect(settings, path)
        con.execute("CREATE SCHEMA intermediate; CREATE SCHEMA snapshots")
        con.execute(f"CREATE TABLE intermediate.int_identity__clusters AS "
                    f"SELECT 'email:x' AS identity_key, '{customer_id}' AS customer_id")
        con.execute("CREATE TABLE snapshots.snap_customer_profile AS SELECT 1 AS version")
        con.execute("CREATE TABLE intermediate.int_other AS SELECT 1 AS derived")
        con.close()

    kept_from = tmp_path / "at_publication.duckdb"
    warehouse(kept_from, "c_kept")
    index = keep.export_kept(settings, kept_from)
    assert sorted(index["tables"]) == ["intermediate.int_identity__clusters", "snapshots.snap_customer_profile"]
    old = tmp_path / "old.duckdb"
    warehouse(old, "c_old")

    new = tmp_path / "new.duckdb"
    restored = keep.restore_kept(settings, new, old)
    assert restored["intermediate.int_identity__clusters"].startswith("old warehouse")
    con = duck.connect(settings, new, read_only=True)
    assert con.execute("SELECT customer_id FROM intermediate.int_identity__clusters").fetchall() == [("c_old",)]
    assert con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'int_other'").fetchone()[0] == 0
    con.close()

    old.write_bytes(b"not a database" * 100)  # the old file no longer opens: the kept copy
    newer = tmp_path / "newer.duckdb"
    restored = keep.restore_kept(settings, newer, old)
    assert restored["intermediate.int_identity__clusters"].startswith("kept copy")
    con = duck.connect(settings, newer, read_only=True)
    assert con.execute("SELECT customer_id FROM intermediate.int_identity__clusters").fetchall() == [("c_kept",)]
    con.close()
