"""The journeys marts recover what was simulated: one small run (1,500 people x 40 days, the
real experiment's purchase rate doubled) through the DAG's own stages up to the marts, then
marts.fct_experiment_results against the simulator's ground truth (summary.json), and the
attribution totals of marts.fct_campaign_performance against the orders' revenue.

The test SQL statistics against scipy on simulated counts is tests/test_journeys.py's; this one
checks the whole way from landing files (identity resolution, exposure dedup, conversion
windows) to the published numbers."""

from __future__ import annotations

import json

import duckdb
import pytest

from customer360.pipeline.stages import STAGE_NAMES, run_stage
from tests.e2e import pipeline_env

pytestmark = pytest.mark.slow

# the stages that build the marts (the rest, ML to the report, read them)
UP_TO_MARTS = STAGE_NAMES[:STAGE_NAMES.index("dbt_marts") + 1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    home = tmp_path_factory.mktemp("c360")
    # clean delivery (no lost, broken or repeated lines) so the marts and the truth count the same events
    knobs = ["experiment_lift=1.0", "corrupt_files=0", "malformed_row_rate=0", "dup_message_rate=0"]
    with pipeline_env(home, people=1500, days=40, seed=22, knobs=knobs) as (settings, _, last):
        for name in UP_TO_MARTS:
            run_stage(name, last, "recovery", settings)
        truth = json.loads((settings.simulation_dir / "ground_truth" / "summary.json").read_text())
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
            results = con.execute("SELECT * FROM marts.fct_experiment_results").df()
            attribution = con.execute("""
                WITH per_order AS (
                    SELECT attribution_model, order_id, sum(credit) AS credit
                    FROM intermediate.int_marketing__order_attribution GROUP BY ALL)
                SELECT p.attribution_model, count(*) AS orders, sum(o.net_amount)::DOUBLE AS order_revenue,
                       (SELECT sum(attributed_revenue) FROM marts.fct_campaign_performance AS c
                        WHERE c.attribution_model = p.attribution_model) AS attributed_revenue,
                       (SELECT sum(net_amount)::DOUBLE FROM marts.fct_orders) AS all_revenue,
                       (SELECT count(*) FROM marts.fct_orders) AS all_orders
                FROM per_order AS p JOIN marts.fct_orders AS o USING (order_id)
                GROUP BY ALL ORDER BY 1""").df()
        yield truth["experiments"], results, attribution


def _rows(results, experiment_id):
    rows = results[results.experiment_id == experiment_id].set_index("variation_id")
    return rows.loc["control"], rows.loc["treatment"]


def _true_difference(arms) -> float:
    c, t = arms["variations"]["control"], arms["variations"]["treatment"]
    return t["converted"] / t["people"] - c["converted"] / c["people"]


def test_recovered_against_true_effects(built):
    truth, results, _ = built
    for exp_id, arms in truth.items():
        control, treatment = _rows(results, exp_id)
        print(f"\n{exp_id}: true purchase-rate lift {arms['true_purchase_rate_lift']:+.2f}; "
              f"simulated conversion {_true_difference(arms):+.4f}; mart lift {treatment.lift_vs_control:+.4f} "
              f"[{treatment.ci_low:+.4f}, {treatment.ci_high:+.4f}], relative {treatment.relative_lift:+.3f}, "
              f"p {treatment.p_value:.4g}; exposed {int(control.exposed_customers)}/{int(treatment.exposed_customers)} "
              f"(simulated {arms['variations']['control']['people']}/{arms['variations']['treatment']['people']}), "
              f"SRM p {treatment.srm_p_value:.3g}, mixed units {int(treatment.mixed_units)}")
        assert not treatment.srm_detected
        # a person bucketed on two devices before identity joined them is left out: a few only
        assert treatment.mixed_units <= 0.01 * (control.exposed_customers + treatment.exposed_customers)
    null, real = truth["exp_checkout_copy"], truth["exp_free_shipping"]
    assert null["true_purchase_rate_lift"] == 0.0 and real["true_purchase_rate_lift"] > 0

    _, treated = _rows(results, "exp_checkout_copy")
    assert not treated.is_significant and treated.p_value >= 0.05
    assert treated.ci_low <= 0 <= treated.ci_high  # no effect is inside the interval

    _, treated = _rows(results, "exp_free_shipping")
    assert treated.is_significant and treated.lift_vs_control > 0
    # the simulated people's own conversion difference lies in the mart's 95% interval
    assert treated.ci_low <= _true_difference(real) <= treated.ci_high


def test_attributed_revenue_reconciles_to_order_revenue_per_model(built):
    _, _, attribution = built
    print()
    for r in attribution.itertuples():
        print(f"{r.attribution_model:<12} orders {r.orders:>6,} of {r.all_orders:,}; attributed "
              f"{r.attributed_revenue:>14,.2f} = order revenue {r.order_revenue:>14,.2f} "
              f"({r.order_revenue / r.all_revenue:.1%} of all net revenue {r.all_revenue:,.2f})")
    assert list(attribution.attribution_model) == ["first_touch", "last_touch", "linear"]
    for r in attribution.itertuples():
        assert r.attributed_revenue == pytest.approx(r.order_revenue, abs=0.01)
        assert 0 < r.order_revenue < r.all_revenue  # some orders had no campaign touch in the window
    # every model attributes the same orders (an order with a touch in the window)
    assert attribution.orders.nunique() == 1
