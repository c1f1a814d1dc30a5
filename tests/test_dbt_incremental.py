"""Incremental models give what a full refresh gives: build over two loads (with a late web
event, a duplicate delivery and a corrected POS file), rerun the same date, then rebuild with
--full-refresh, and compare every table of every layer."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from tests import warehouse_fixtures as wf
from customer360.warehouse.dbt_runner import WarehouseBuildError, build_warehouse, target_dir

SCHEMAS = ("staging", "intermediate", "marts", "snapshots")


def table_contents(db: Path) -> dict[str, list[tuple]]:
    """Every table of the warehouse layers as a sorted list of rows."""
    out = {}
    with duckdb.connect(str(db), read_only=True) as con:
        tables = con.execute("select table_schema, table_name from information_schema.tables "
                             "where table_schema in ? and table_type = 'BASE TABLE'",
                             [list(SCHEMAS)]).fetchall()
        for schema, table in tables:
            columns = [c[0] for c in con.execute(f'describe {schema}."{table}"').fetchall()]
            # which dbt invocation wrote a row is bookkeeping, not content
            kept = ", ".join(f'"{c}"' for c in columns if c != "_invocation_id")
            rows = con.execute(f'select {kept} from {schema}."{table}"').fetchall()
            out[f"{schema}.{table}"] = sorted(rows, key=repr)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    home = tmp_path_factory.mktemp("c360_incremental")
    with pytest.MonkeyPatch.context() as mp:
        settings = wf.use_home(mp, home)
        wf.land_first_load(settings)
        build_warehouse(settings, logical_date=wf.LOAD_1, tests=False)
        wf.land_second_load(settings)
        build_warehouse(settings, logical_date=wf.LOAD_2, tests=False)
        compiled_dir = target_dir(settings) / "compiled" / "customer360" / "models"
        compiled = (compiled_dir / "staging" / "web" / "stg_web__events.sql").read_text()
        compiled_sessions = (compiled_dir / "intermediate" / "int_web__sessions.sql").read_text()
        compiled_pos = (compiled_dir / "staging" / "pos" / "stg_pos__transactions.sql").read_text()
        compiled_contacts = (compiled_dir / "staging" / "crm" / "stg_crm__contacts.sql").read_text()
        manifest = json.loads((target_dir(settings) / "manifest.json").read_text())
        incremental_models = sorted(
            f"{node['schema'].split('_')[-1]}.{node['alias'] or node['name']}"
            for node in manifest["nodes"].values()
            if node["resource_type"] == "model" and node["config"].get("materialized") == "incremental")
        incremental = table_contents(settings.warehouse_path)
        build_warehouse(settings, logical_date=wf.LOAD_2, tests=False)  # the same date again
        rerun = table_contents(settings.warehouse_path)
        build_warehouse(settings, logical_date=wf.LOAD_2, tests=False, full_refresh=True)
        full = table_contents(settings.warehouse_path)
        yield {"incremental": incremental, "rerun": rerun, "full": full, "compiled": compiled,
               "compiled_sessions": compiled_sessions, "compiled_pos": compiled_pos,
               "compiled_contacts": compiled_contacts,
               "incremental_models": incremental_models, "settings": settings}


def test_the_second_load_ran_incrementally(runs):
    # the incremental branch reads only new batches and skips message ids already kept
    assert "not exists" in runs["compiled"] and "_loaded_at >=" in runs["compiled"]
    # sessions: only devices with new events, from the session before their first new event
    assert "recompute_from" in runs["compiled_sessions"]
    # POS lines: only the files with a batch landed since the last run
    assert "new_batches._loaded_at >=" in runs["compiled_pos"]
    # CRM records: only those with a version landed since the last run
    assert "changed._loaded_at >=" in runs["compiled_contacts"]


def test_every_incremental_model_equals_its_full_refresh_and_is_not_empty(runs):
    """Whatever model is made incremental is held to this: its table after two incremental
    loads is the full refresh's, row for row."""
    models = runs["incremental_models"]
    assert {"staging.stg_web__events", "staging.stg_pos__transactions",
            "staging.stg_crm__contacts"} <= set(models)
    for table in models:
        assert table in runs["full"], table
        assert runs["incremental"][table], table
        assert runs["incremental"][table] == runs["full"][table], table


def test_incremental_models_equal_a_full_refresh(runs):
    for table in ("staging.stg_web__events", "intermediate.int_web__sessions", "marts.fct_order_lines"):
        assert runs["incremental"][table] == runs["full"][table], table
        assert runs["incremental"][table]  # not trivially empty


def test_every_table_equals_the_full_refresh_and_the_rerun(runs):
    assert set(runs["incremental"]) == set(runs["full"]) == set(runs["rerun"])
    assert len(runs["incremental"]) >= 25
    differ = [t for t in runs["incremental"] if runs["incremental"][t] != runs["full"][t]]
    assert differ == []
    differ = [t for t in runs["incremental"] if runs["incremental"][t] != runs["rerun"][t]]
    assert differ == []


def test_late_duplicate_and_corrected_data_are_in_the_incremental_tables(runs):
    events = {row[0] for row in runs["incremental"]["staging.stg_web__events"]}
    assert "m-ann-6" in events  # the late event
    assert len(runs["incremental"]["staging.stg_web__events"]) == len(events)  # no duplicate
    orders = {row[1] for row in runs["incremental"]["marts.fct_order_lines"]}
    assert "T-1003" in orders and "T-1009" not in orders  # the corrected POS file


def test_an_incremental_table_of_an_older_version_fails_with_the_repair(runs):
    """An upgrade that adds columns to an incremental model meets the table an older version
    built: dbt refuses it, and the error says which table and how to repair it (last in this
    module: it changes the warehouse the fixture built)."""
    settings = runs["settings"]
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute("alter table intermediate.int_web__sessions drop column exit_path")
    with pytest.raises(WarehouseBuildError) as failed:
        build_warehouse(settings, logical_date=wf.LOAD_2, tests=False)
    message = str(failed.value)
    assert "int_web__sessions: the table was built by an earlier version" in message, message
    assert "c360 rebuild-warehouse" in message
