"""Recovery: ``c360 doctor`` names each broken store and the command that repairs it, and that
command does (doctor is clean again). One small home built by two daily runs through the DAG's
stages, shared by the module; each test breaks one store, repairs it and leaves the home clean.

The warehouse rebuild is checked against the home before it broke: the published marts'
checksums, every customer id and the SCD2 history rows (two runs' worth of versions: a rebuild
from the raw zone alone would stamp every version with the rebuild's date).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

import duckdb
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from customer360.cli import app
from customer360.ingest.state import StateError, StateStore
from customer360.pipeline import doctor
from customer360.pipeline.airflow import run_lock
from customer360.pipeline.stages import STAGE_NAMES, run_stage
from tests.e2e import pipeline_env, published_checksums

pytestmark = pytest.mark.slow

RUN_STAGES = [n for n in STAGE_NAMES if n != "report"]  # dbt docs add a minute, nothing to recover


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with pipeline_env(tmp_path_factory.mktemp("c360-recovery"), people=150, days=14, seed=5) as (settings, _, last):
        for day in (last - dt.timedelta(days=1), last):
            for name in RUN_STAGES:
                run_stage(name, day, "recovery-test", settings)
        yield settings, last


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def problems(settings) -> list[doctor.Finding]:
    return doctor.diagnose(settings).problems


def assert_clean(settings) -> None:
    diagnosis = doctor.diagnose(settings)
    assert diagnosis.ok, "\n".join(f.line() for f in diagnosis.problems)


def the_problem(settings, store: str) -> doctor.Finding:
    found = problems(settings)
    assert [f.store for f in found] == [store], "\n".join(f.line() for f in found)
    return found[0]


def warehouse_state(settings) -> dict:
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        return {
            "ids": con.execute("SELECT identity_key, customer_id FROM intermediate.int_identity__clusters "
                               "ORDER BY 1").fetchall(),
            "history": con.execute("SELECT * FROM snapshots.snap_customer_profile "
                                   "ORDER BY customer_id, dbt_valid_from").fetchall(),
            "valid_from": [r[0] for r in con.execute(
                "SELECT DISTINCT dbt_valid_from FROM snapshots.snap_customer_profile ORDER BY 1").fetchall()],
            "earlier_runs": con.execute(
                "SELECT * FROM ml.ml_model_runs WHERE logical_date < "
                "(SELECT max(logical_date) FROM ml.ml_model_runs) ORDER BY ALL").fetchall(),
        }
    finally:
        con.close()


def web_batches(settings) -> list:
    return sorted((settings.lake_raw / "web" / "events").glob("load_date=*/*.parquet"))


def message_ids(paths) -> set[str]:
    return {m for p in paths for m in pq.read_table(p, columns=["messageId"]).column(0).to_pylist()}


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --------------------------------------------------------------------------- a good home

def test_a_good_home_is_clean_and_every_store_is_checked(home):
    settings, _ = home
    result = cli("doctor", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] and report["repairs"] == []
    stores = {f["store"] for f in report["findings"]}
    assert {"run", "warehouse", "kept", "state", "raw", "logs", "audit", "published", "airflow",
            "leftovers"} <= stores
    kept = json.loads((settings.state_dir / "kept" / "kept.json").read_text())["tables"]
    assert {"intermediate.int_identity__clusters", "snapshots.snap_customer_profile",
            "ml.ml_model_runs"} <= set(kept)
    # the manifests carry each batch file's checksum
    with StateStore(settings, "web") as store:
        batch = store.batches("events")[0]
    sums = json.loads(batch["checksums"])
    assert sums["raw"]["rows"] == batch["rows_landed"] and len(sums["raw"]["sha256"]) == 64


def test_doctor_says_a_run_is_in_progress_and_takes_no_lock(home):
    settings, _ = home
    with run_lock(settings):
        before = settings.run_lock_path.read_text()
        diagnosis = doctor.diagnose(settings)
        assert settings.run_lock_path.read_text() == before
    assert diagnosis.run_in_progress and "pid " in diagnosis.run_in_progress
    assert [f.status for f in diagnosis.findings if f.store == "run"] == ["warn"]
    assert doctor.diagnose(settings).run_in_progress is None


# --------------------------------------------------------------------------- warehouse

def test_a_corrupt_warehouse_is_rebuilt_into_the_same_published_tables(home):
    settings, _ = home
    marts, before = published_checksums(settings), warehouse_state(settings)
    assert len(before["valid_from"]) >= 2  # history a rebuild from the raw zone alone cannot make
    truncate(settings.warehouse_path, 0.3)

    finding = the_problem(settings, "warehouse")
    assert finding.path == "warehouse/c360.duckdb" and finding.repair == "c360 rebuild-warehouse"
    result = cli("doctor")
    assert result.exit_code == 1 and "c360 rebuild-warehouse" in result.output

    result = cli("rebuild-warehouse")
    assert result.exit_code == 0, result.output
    assert_clean(settings)
    assert published_checksums(settings) == marts
    after = warehouse_state(settings)
    assert after["ids"] == before["ids"]
    assert after["history"] == before["history"]
    assert after["earlier_runs"] == before["earlier_runs"]
    # the broken file is kept as evidence
    assert list(settings.warehouse_path.parent.glob("c360.duckdb.broken-*"))


# --------------------------------------------------------------------------- raw zone

def test_a_truncated_raw_batch_is_set_aside_and_landed_again(home):
    settings, last = home
    batch = web_batches(settings)[0]
    ids = message_ids([batch])
    truncate(batch)

    finding = the_problem(settings, "raw")
    assert finding.path == str(batch.relative_to(settings.home))
    assert finding.repair == "c360 doctor --repair raw"
    result = cli("doctor", "--repair", "raw")
    assert result.exit_code == 0, result.output
    assert "c360 extract web" in result.output
    assert not batch.exists()
    moved = settings.home / "lake" / "broken" / "raw" / batch.relative_to(settings.lake_raw)
    assert moved.exists() and "bytes" in json.loads(moved.with_name(moved.name + ".reason.json").read_text())["reason"]

    result = cli("extract", "web", "--date", last.isoformat())
    assert result.exit_code == 0, result.output
    assert ids <= message_ids(web_batches(settings))
    assert_clean(settings)


def test_a_truncated_crm_batch_is_set_aside_and_the_object_loads_in_full_again(home):
    settings, last = home
    batches = sorted((settings.lake_raw / "crm" / "contacts").glob("load_date=*/*.parquet"))
    ids = {i for p in batches for i in pq.read_table(p, columns=["id"]).column(0).to_pylist()}
    truncate(batches[0])
    assert the_problem(settings, "raw").repair == "c360 doctor --repair raw"
    result = cli("doctor", "--repair", "raw")
    assert result.exit_code == 0 and "c360 extract crm" in result.output
    with StateStore(settings, "crm") as store:
        assert store.watermark("contacts").watermark_us is None  # loads in full next time
    assert cli("extract", "crm", "--date", last.isoformat()).exit_code == 0
    relanded = sorted((settings.lake_raw / "crm" / "contacts").glob("load_date=*/*.parquet"))
    assert ids <= {i for p in relanded for i in pq.read_table(p, columns=["id"]).column(0).to_pylist()}
    assert_clean(settings)


def test_an_erasure_goes_around_an_unreadable_raw_batch(home):
    settings, last = home
    contacts = (settings.lake_raw / "crm" / "contacts").glob("load_date=*/*.parquet")
    contact_id = sorted({i for p in contacts for i in pq.read_table(p, columns=["id"]).column(0).to_pylist()})[3]
    batch = web_batches(settings)[-1]
    truncate(batch)

    result = cli("erase", "--contact-id", contact_id, "--no-rebuild", "--no-verify")
    assert result.exit_code == 0, result.output
    assert "not purged, unreadable" in result.output and batch.name in result.output.replace("\n", "")
    # what the earlier repairs set aside held the person too: an erasure removes it
    assert not [p for p in settings.lake_broken.rglob("*") if p.is_file()]
    assert not list(settings.warehouse_path.parent.glob("c360.duckdb.broken-*"))
    assert the_problem(settings, "raw").repair == "c360 doctor --repair raw"
    assert cli("doctor", "--repair", "raw").exit_code == 0
    assert cli("extract", "web", "--date", last.isoformat()).exit_code == 0
    assert_clean(settings)  # the purged publication states its new row counts too


# --------------------------------------------------------------------------- state and manifests

def test_a_corrupt_state_store_names_itself_and_its_last_good_copy_is_put_back(home):
    settings, _ = home
    path = settings.state_dir / "state.sqlite"
    with open(path, "r+b") as fh:
        fh.write(b"this is not SQLite" * 300)
    with pytest.raises(StateError, match="state.sqlite cannot be read.*c360 doctor --repair state"):
        StateStore(settings, "web")
    finding = the_problem(settings, "state")
    assert finding.path == "lake/_state/state.sqlite" and finding.repair == "c360 doctor --repair state"
    result = cli("doctor", "--repair", "state")
    assert result.exit_code == 0, result.output
    assert list(settings.state_dir.glob("state.sqlite.broken-*"))
    assert_clean(settings)


def test_a_manifest_row_that_does_not_parse_is_named_and_repaired(home):
    settings, _ = home
    db = sqlite3.connect(settings.state_dir / "state.sqlite")
    batch_id = db.execute("SELECT batch_id FROM batches ORDER BY batch_id LIMIT 1").fetchone()[0]
    db.execute("UPDATE batches SET outputs = '{torn' WHERE batch_id = ?", (batch_id,))
    db.commit()
    db.close()
    finding = the_problem(settings, "manifest")
    assert batch_id in finding.path and finding.repair == "c360 doctor --repair state"
    assert cli("doctor", "--repair", "state").exit_code == 0
    assert_clean(settings)


# --------------------------------------------------------------------------- audit, publication, Airflow

def test_a_corrupt_audit_store_is_put_back_from_its_copy(home):
    settings, _ = home
    truncate(settings.audit_db, 0.3)
    assert cli("audit", "verify").exit_code == 2  # the store does not open (1 is a broken chain)
    finding = the_problem(settings, "audit")
    assert finding.path == "audit/audit.duckdb" and finding.repair == "c360 doctor --repair audit"
    assert cli("doctor", "--repair", "audit").exit_code == 0
    result = cli("audit", "verify")
    assert result.exit_code == 0, result.output
    assert_clean(settings)


def test_a_broken_publication_is_published_again(home):
    settings, _ = home
    (settings.published_dir / "current" / "c360.duckdb").unlink()
    finding = the_problem(settings, "published")
    assert finding.repair == "c360 doctor --repair published"
    assert cli("doctor", "--repair", "published").exit_code == 0
    assert_clean(settings)


def test_a_corrupt_airflow_database_is_moved_aside(home):
    settings, _ = home
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    (settings.airflow_home / "airflow.db").write_bytes(b"\x00not a database" * 1000)
    finding = the_problem(settings, "airflow")
    assert finding.path == "airflow/airflow.db" and finding.repair == "c360 doctor --repair airflow"
    assert cli("doctor", "--repair", "airflow").exit_code == 0
    assert list(settings.airflow_home.glob("airflow.db.broken-*"))
    assert_clean(settings)


def test_leftover_temporary_files_are_reported_and_removed(home):
    settings, _ = home
    left = settings.lake_raw / ".batch.parquet.x1y2.tmp"
    left.write_bytes(b"half")
    diagnosis = doctor.diagnose(settings)
    assert diagnosis.ok  # worth knowing, not a broken store
    [finding] = [f for f in diagnosis.findings if f.store == "leftovers"]
    assert finding.status == "warn" and finding.path == "lake/raw/.batch.parquet.x1y2.tmp"
    assert cli("doctor", "--repair", "leftovers").exit_code == 0
    assert not left.exists()
