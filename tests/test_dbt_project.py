"""The dbt project as a whole: it builds on an empty raw zone, its docs generate with every
model and column described, the profile applies the DuckDB limits from configuration, and a
failing test stops a layer with an error naming it."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import warehouse_fixtures as wf
from customer360.core.layers import COMBINED, DBT_LAYERS, GATES, covered_layers
from customer360.pipeline import STAGES
from customer360.warehouse.dbt_runner import (WarehouseBuildError, build_env, build_warehouse,
                                              generate_docs, project_dir, run_dbt, run_layer,
                                              target_dir)


@pytest.fixture(scope="module")
def empty_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("c360_project")
    with pytest.MonkeyPatch.context() as mp:
        settings = wf.use_home(mp, home)
        results = build_warehouse(settings)
        yield settings, results


def test_an_empty_raw_zone_builds_empty_tables(empty_home):
    settings, results = empty_home
    assert results.success
    assert {"model", "test", "unit_test", "seed", "snapshot"} <= {n.resource_type for n in results.nodes}
    assert wf.scalar(settings.warehouse_path, "select count(*) from marts.customer_360") == 0
    assert wf.scalar(settings.warehouse_path, "select count(*) from staging.stg_web__events") == 0
    assert wf.scalar(settings.warehouse_path, "select count(*) from staging.fx_rates") > 0


def test_docs_generate_and_describe_every_model_and_column(empty_home):
    settings, _ = empty_home
    docs = generate_docs(settings)
    assert (docs / "index.html").exists()
    manifest = json.loads((docs / "manifest.json").read_text())
    catalog = json.loads((docs / "catalog.json").read_text())
    mine = {uid: node for uid, node in manifest["nodes"].items()
            if node["resource_type"] in ("model", "seed", "snapshot")
            and node["schema"] in ("staging", "intermediate", "marts", "snapshots")}
    assert len(mine) >= 28
    for uid, node in mine.items():
        assert node["description"].strip(), f"{uid} has no description"
        built = catalog["nodes"].get(uid)
        assert built is not None, f"{uid} missing from the catalog"
        if node["resource_type"] == "snapshot":
            continue  # dbt_* columns are dbt's own; the model it snapshots is documented
        undocumented = {c.lower() for c in built["columns"]} - {c.lower() for c in node["columns"]}
        assert not undocumented, f"{uid}: columns without a description: {undocumented}"
        assert all(c["description"].strip() for c in node["columns"].values()), uid
    published = [n for n in mine.values() if n["schema"] == "marts"]
    assert len(published) == 14
    assert all(n["config"]["contract"]["enforced"] for n in published)


def test_profile_takes_duckdb_limits_from_configuration(empty_home, monkeypatch):
    settings, _ = empty_home
    monkeypatch.setenv("C360_DUCKDB_MEMORY_LIMIT", "512MB")
    monkeypatch.setenv("C360_DUCKDB_THREADS", "1")
    from customer360.core.settings import get_settings
    settings = get_settings()
    env = build_env(settings)
    assert env["C360_DUCKDB_MEMORY_LIMIT"] == "512MB" and env["C360_DUCKDB_THREADS"] == "1"
    assert env["C360_DUCKDB_TEMP_DIR"] == str(settings.home / "tmp" / "duckdb")
    assert wf.PII_KEY not in json.dumps(env)
    outcome = run_dbt(settings, ["show", "--inline",
                                 "select current_setting('memory_limit') as m, "
                                 "current_setting('threads') as t, "
                                 "current_setting('temp_directory') as d, "
                                 "current_setting('TimeZone') as z"])
    assert outcome.success
    memory, threads, temp_dir, zone = outcome.result.results[0].agate_table.rows[0]
    assert memory.startswith("488.2") and threads == 1  # 512 MB shown in MiB
    assert temp_dir == env["C360_DUCKDB_TEMP_DIR"] and zone == "UTC"


def test_profile_and_project_read_only_the_environment():
    profile = yaml.safe_load((project_dir() / "profiles.yml").read_text())
    output = profile["customer360"]["outputs"]["local"]
    assert "env_var('C360_HOME')" in output["path"]
    for key in ("memory_limit", "threads"):
        assert "env_var(" in output["settings"][key]
    # set when the database opens, not per cursor: DuckDB refuses a second SET once it spilled
    assert "env_var(" in output["config_options"]["temp_directory"]
    assert "temp_directory" not in output["settings"]
    assert output["plugins"] == [{"module": "customer360.warehouse.dbt_plugin"}]


def test_a_failing_test_stops_the_layer_and_names_itself(empty_home):
    settings, _ = empty_home
    # a till sends a transaction type the contract does not know
    lander = wf.Lander(settings, dt.date(2026, 3, 1),
                       dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc))
    lander.reference()
    lander.pos_file("S01", dt.date(2026, 3, 1), [
        wf.pos_line("T-9", 1, "2026-03-01 10:00:00", "REFUND", "A", 1, "10.00")])
    with pytest.raises(WarehouseBuildError) as failure:
        run_layer(settings, "staging")
    message = str(failure.value)
    assert "accepted_values_stg_pos__transactions_txn_type" in message
    assert "1 failing node" in message and wf.PII_KEY not in message
    assert [n.name for n in failure.value.results.failed] == [
        "accepted_values_stg_pos__transactions_txn_type__SALE__RETURN__VOID"]


def test_run_layer_knows_only_the_dbt_layers(empty_home):
    settings, _ = empty_home
    with pytest.raises(ValueError, match="unknown dbt layer"):
        run_layer(settings, "core")


def test_selectors_are_the_layers_of_the_one_vocabulary():
    """dbt's selectors, the DAG's stages and the gates name layers alike (core.layers)."""
    selectors = yaml.safe_load((project_dir() / "selectors.yml").read_text())["selectors"]
    names = [s["name"] for s in selectors]
    assert [n for n in names if n not in COMBINED] == [*DBT_LAYERS, "warehouse"]
    assert set(COMBINED) <= set(names)
    # a combined selector is the union of its layers' selectors, nothing else
    for name, parts in COMBINED.items():
        definition = next(s for s in selectors if s["name"] == name)["definition"]
        assert definition == {"union": [{"method": "selector", "value": p} for p in parts]}
    built = [covered for st in STAGES if st.name.startswith("dbt_") or st.name == "ml"
             for covered in covered_layers(st.layer)]
    assert sorted(built) == sorted(DBT_LAYERS)  # every layer built, none twice
    assert {st.layer for st in STAGES if st.name.startswith("gate_")} == set(GATES)
    for stage_dir in sorted((project_dir().parent / "expectations").iterdir()):
        if not stage_dir.is_dir():
            continue
        assert stage_dir.name in GATES, f"expectations/{stage_dir.name} is no gate of core.layers"
        for suite in stage_dir.glob("*.yml"):
            target = yaml.safe_load(suite.read_text()).get("target") or {}
            if target.get("metric") == "dbt_results":
                assert list(target["layers"]) == list(GATES[stage_dir.name]), suite


def test_customer_360_reads_the_ml_outputs_through_declared_sources(empty_home):
    """Lineage shows customer_360's dependency on the ML stage's tables, and the marts layer
    no longer builds customer_360 (it is built once a run, after ML)."""
    settings, _ = empty_home
    outcome = run_dbt(settings, ["parse"])
    assert outcome.success, outcome.exception
    manifest = json.loads((target_dir(settings) / "manifest.json").read_text())
    node = manifest["nodes"]["model.customer360.customer_360"]
    assert {"source.customer360.ml.ml_churn_scores",
            "source.customer360.ml.ml_customer_segments"} <= set(node["depends_on"]["nodes"])
    listed = run_dbt(settings, ["ls", "--selector", "marts", "--resource-type", "model", "--output", "name"])
    assert listed.success and "customer_360" not in listed.result and "dim_customer" in listed.result
    assert "fct_feedback_text" not in listed.result and "kpi_feedback_daily" not in listed.result
    listed = run_dbt(settings, ["ls", "--selector", "customer_360", "--resource-type", "model", "--output", "name"])
    # the feedback text marts read the ML stage's ml_feedback_text, as customer_360 reads them
    assert listed.success and sorted(listed.result) == ["customer_360", "fct_feedback_text", "kpi_feedback_daily"]
    texts = manifest["nodes"]["model.customer360.fct_feedback_text"]
    assert "source.customer360.ml.ml_feedback_text" in texts["depends_on"]["nodes"]


def test_a_model_that_spills_to_disk_does_not_break_the_next_one(tmp_path, monkeypatch):
    """Regression (found at 100k people x 365 days): once a query spilled to the temporary
    directory, dbt-duckdb's next cursor re-SET temp_directory and DuckDB refused it. Our profile
    gives temp_directory when the database opens; two models under a tiny memory limit, the
    first of which must spill, build in one invocation."""
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(
        'name: spill_check\nversion: "1.0.0"\nconfig-version: 2\nprofile: customer360\n')
    (project / "models" / "a_spill.sql").write_text(
        "{{ config(materialized='table') }} select range as i, random() as r, repeat('x', 50) as pad "
        "from range(3000000) order by r")
    (project / "models" / "b_after.sql").write_text(
        "{{ config(materialized='table') }} select count(*) as n from {{ ref('a_spill') }}")
    home = tmp_path / "home"
    (home / "warehouse").mkdir(parents=True)
    monkeypatch.setenv("C360_HOME", str(home))
    monkeypatch.setenv("C360_DUCKDB_MEMORY_LIMIT", "60MB")
    monkeypatch.setenv("C360_DUCKDB_THREADS", "1")
    monkeypatch.setenv("C360_DUCKDB_TEMP_DIR", str(home / "spill"))
    dbt = Path(sys.executable).with_name("dbt")
    proc = subprocess.run([str(dbt), "run", "--project-dir", str(project), "--profiles-dir", str(project_dir()),
                           "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "PASS=2" in proc.stdout


def test_a_combined_build_is_one_dbt_command_kept_as_each_of_its_layers(empty_home, monkeypatch):
    """staging and intermediate are one `dbt build` (no gate between them); the gates read the
    results by layer, so the one results file is kept for both."""
    from customer360.warehouse import dbt_runner

    settings, _ = empty_home
    commands = []

    def fake_invoke(s, args, *, what, results=True, env=None):
        commands.append((args, env))
        target = dbt_runner.target_dir(s)
        target.mkdir(parents=True, exist_ok=True)
        (target / "run_results.json").write_text('{"results": [], "elapsed_time": 1.5}')
        return dbt_runner.RunResults(args=args, elapsed_seconds=1.5)
    monkeypatch.setattr(dbt_runner, "_invoke_checked", fake_invoke)
    run_layer(settings, "staging_intermediate", logical_date=dt.date(2026, 3, 10))
    assert [args for args, _ in commands] == [["build", "--selector", "staging_intermediate"]]
    # the date goes through the environment, not --vars (dbt would re-parse on every new date)
    assert commands[0][1]["C360_AS_OF_DATE"] == "2026-03-10"
    for layer in ("staging", "intermediate"):
        assert settings.dbt_results_path(layer).read_text() == '{"results": [], "elapsed_time": 1.5}'
    assert not settings.dbt_results_path("marts").exists()
