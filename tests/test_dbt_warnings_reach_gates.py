"""A dbt test warning in any layer reaches its gate's results and the run report.

The gates read each layer's run results where the pipeline keeps them
(``Settings.dbt_results_path``). Two warn-severity tests are planted in a copy of the dbt
project, one over a staging model and one over a mart, and the day is run through the
pipeline's own stages; each warning must show in the gate that covers its layer, in the audit
store, and in the report.
"""

from __future__ import annotations

import shutil

import pytest

from customer360 import pipeline
from customer360.core import audit
from customer360.core.layers import GATES
from customer360.quality.gates import GateFailed
from customer360.warehouse.dbt_runner import project_dir
from tests import warehouse_fixtures as wf

PLANTED = {
    # one row whenever the model exists, so dbt reports the test as "warn" (severity warn)
    "planted_staging_warning": ("stg_crm__contacts", "staging"),
    "planted_marts_warning": ("dim_customer", "marts"),
}


@pytest.fixture(scope="module")
def day_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dbt_warnings")
    project = root / "dbt_project"
    shutil.copytree(project_dir(), project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    for name, (model, _) in PLANTED.items():
        (project / "tests" / f"{name}.sql").write_text(
            "{{ config(severity='warn') }}\n"
            f"select 1 as planted from (select count(*) as n from {{{{ ref('{model}') }}}}) where n >= 0\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("C360_DBT_PROJECT_DIR", str(project))  # before the settings are read
        settings = wf.use_home(mp, root / "home")
        wf.land_first_load(settings)
        day, run_id = wf.LOAD_1, "warnings-run"
        outcomes = {}
        for stage in pipeline.STAGES:
            if stage.name in ("dbt_staging_intermediate", "dbt_marts", "dbt_customer_360",
                              "gate_intermediate", "gate_marts", "publish", "report"):
                try:
                    outcomes[stage.name] = pipeline.run_stage(stage.name, day, run_id, settings)
                except GateFailed as exc:  # the hand-made day may trip a gate; warnings still count
                    outcomes[stage.name] = {"failed": str(exc)}
        yield settings, run_id, outcomes


def _warned_tests(settings, run_id: str, gate: str) -> str:
    with audit.connect(settings, read_only=True) as con:
        rows = con.execute("SELECT sample FROM audit.gate_results WHERE run_id = ? AND stage = ? "
                           "AND suite = ? AND outcome = 'warn'",
                           [run_id, gate, f"{gate}.dbt_tests"]).fetchall()
    return " ".join(r[0] for r in rows)


@pytest.mark.slow
def test_each_layers_warning_reaches_the_gate_that_covers_it(day_run):
    settings, run_id, _ = day_run
    for name, (_, layer) in PLANTED.items():
        gate = next(g for g, covered in GATES.items() if layer in covered)
        assert name in _warned_tests(settings, run_id, gate), (name, gate)
        others = [g for g in GATES if g not in (gate, "raw")]
        assert all(name not in _warned_tests(settings, run_id, g) for g in others)
        assert name in settings.dbt_results_path(layer).read_text()


@pytest.mark.slow
def test_the_warnings_are_in_the_run_report(day_run):
    settings, run_id, outcomes = day_run
    page = (open(outcomes["report"]["report"], encoding="utf-8").read())
    warnings = page.split("<h3>Warnings</h3>", 1)[1]
    for name in PLANTED:
        assert name in warnings
