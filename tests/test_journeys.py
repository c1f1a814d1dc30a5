"""A/B test statistics: the SQL macros the experiment mart uses agree with scipy, and on
simulated tests with known true effects they find the real effect and not the null one."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import jinja2
import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats

from customer360.demo.simulator import simulate
from customer360.demo.sim_config import SimulationConfig

MACROS = Path(__file__).resolve().parents[1] / "dbt_project" / "macros" / "stats.sql"


@pytest.fixture(scope="module")
def sql():
    return jinja2.Environment().from_string(MACROS.read_text()).module


def test_normal_cdf_and_p_values_match_scipy(sql):
    z = np.linspace(-6, 6, 241)
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT unnest(?::DOUBLE[]) AS z", [z.tolist()])
    got = con.execute(f"SELECT z, {sql.normal_cdf('z')}, {sql.two_sided_p('z')}, "
                      f"{sql.chi_square_p('z * z', 1)}, {sql.chi_square_p('abs(z) * 3', 3)} "
                      "FROM t ORDER BY z").fetchall()
    arr = np.array(got, dtype=float)
    assert np.max(np.abs(arr[:, 1] - stats.norm.cdf(z))) < 2e-7
    assert np.max(np.abs(arr[:, 2] - 2 * stats.norm.sf(np.abs(z)))) < 4e-7
    assert np.max(np.abs(arr[:, 3] - stats.chi2.sf(z * z, 1))) < 4e-7
    # Wilson-Hilferty for df > 1: an approximation (used only for tests of 3+ variations)
    assert np.max(np.abs(arr[:, 4] - stats.chi2.sf(np.abs(z) * 3, 3))) < 2e-2


def _z_test(sql, con, x1, n1, x0, n0):
    """The mart's test (pooled z, two-sided p) on counts, in SQL."""
    p = f"(({x1} + {x0}) / ({n1} + {n0}))"
    z = f"(({x1} / {n1} - {x0} / {n0}) / sqrt({p} * (1 - {p}) * (1.0 / {n1} + 1.0 / {n0})))"
    return con.execute(f"SELECT {sql.two_sided_p(z)}").fetchone()[0]


def test_simulated_experiments_null_is_flat_and_real_effect_is_found(sql, tmp_path):
    null_significant = 0
    for seed in (11, 12, 13):
        p_values = _recover(sql, seed, tmp_path / str(seed))
        assert p_values["exp_free_shipping"][0] < 0.05 and p_values["exp_free_shipping"][1] > 0
        null_significant += p_values["exp_checkout_copy"][0] < 0.05
    assert null_significant <= 1


def _recover(sql, seed, tmp_path):
    # clean delivery (no lost, broken or repeated lines), so events and truth compare exactly
    cfg = SimulationConfig(people=2500, days=40, seed=seed, experiment_lift=1.0, corrupt_files=0,
                           malformed_row_rate=0.0, dup_message_rate=0.0)
    simulate(cfg, landing=tmp_path / "landing", sim_dir=tmp_path / "sim")
    truth = json.loads((tmp_path / "sim" / "ground_truth" / "summary.json").read_text())["experiments"]
    exposures = pq.read_table(tmp_path / "sim" / "ground_truth" / "experiments.parquet").to_pandas()
    con = duckdb.connect()
    # The landing events carry exactly the simulated exposures (one first view a person).
    events = con.execute(
        "SELECT properties.experiment_id, properties.variation_id, count(*) FROM read_json_auto(?, "
        "format='newline_delimited', ignore_errors=true, union_by_name=true) "
        "WHERE event = 'Experiment Viewed' GROUP BY ALL",
        [str(tmp_path / "landing" / "web" / "events" / "*" / "*.jsonl.gz")]).fetchall()
    seen = {(e, v): n for e, v, n in events}
    p_values = {}
    for exp_id, t in truth.items():
        arms = t["variations"]
        for v, a in arms.items():
            assert seen[(exp_id, v)] == a["people"]
        assert len(exposures[exposures.experiment_id == exp_id]) == sum(a["people"] for a in arms.values())
        c, tr = arms["control"], arms["treatment"]
        p = _z_test(sql, con, tr["converted"], tr["people"], c["converted"], c["people"])
        assert p == pytest.approx(_scipy_p(tr["converted"], tr["people"], c["converted"], c["people"]),
                                  abs=1e-6)
        p_values[exp_id] = (p, tr["converted"] / tr["people"] - c["converted"] / c["people"])
    print(seed, {k: (v, truth[k]["true_purchase_rate_lift"]) for k, v in p_values.items()})
    assert truth["exp_checkout_copy"]["true_purchase_rate_lift"] == 0.0
    return p_values


def _scipy_p(x1, n1, x0, n0):
    p = (x1 + x0) / (n1 + n0)
    z = (x1 / n1 - x0 / n0) / np.sqrt(p * (1 - p) * (1 / n1 + 1 / n0))
    return 2 * stats.norm.sf(abs(z))
