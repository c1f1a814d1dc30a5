"""The intermediate and marts gates on a hand-made warehouse file with the docs/marts.md columns: clean data
passes; each planted defect stops the right gate with the right message, before publish runs,
leaving the last publication as it was; warn-level defects are recorded and the run goes on."""

from __future__ import annotations

import datetime as dt
import hashlib

import duckdb
import pytest

from customer360.core import audit
from customer360.core.layers import DBT_LAYERS
from customer360.serve.publish import publish
from customer360.quality.gates import GateFailed, run_gate
from tests.test_gates_helpers import build_warehouse, settings, write_dbt_results  # noqa: F401

DAY = dt.date(2026, 3, 10)


def _dbt(settings, **statuses):
    """The same results kept for every dbt layer, where the pipeline keeps them."""
    for layer in DBT_LAYERS:
        write_dbt_results(settings.dbt_results_path(layer),
                          statuses or {"test.customer360.unique_stg_web__events_message_id": "pass"})


def _fingerprint(settings) -> str:
    pub = settings.published_dir
    return hashlib.sha256((pub / "c360.duckdb").read_bytes() + (pub / "publication.json").read_bytes()).hexdigest()


def _publish_then_break(settings, **defect) -> str:
    """Publish a good warehouse (the last good run), then rebuild it with one defect."""
    build_warehouse(settings.warehouse_path)
    publish(settings, DAY - dt.timedelta(days=1))
    before = _fingerprint(settings)
    build_warehouse(settings.warehouse_path, **defect)
    return before


def _gate_then_publish(settings, stage, run_id):
    """What the DAG does: publish runs only after the gate passed."""
    run_gate(settings, stage, DAY, run_id=run_id)
    publish(settings, DAY)


def _link_share_history(settings, shares):
    audit.append(settings, "gate_metrics", [
        {"logical_date": DAY - dt.timedelta(days=i + 1), "stage": "intermediate", "metric": "order_link_share",
         "value": share, "run_id": f"earlier-{i}", "recorded_at": dt.datetime.now(dt.timezone.utc)}
        for i, share in enumerate(shares)])


# ---------------------------------------------------------------- intermediate

def test_intermediate_gate_passes_on_clean_data_and_records_the_link_share(settings):
    build_warehouse(settings.warehouse_path, linked_share=0.8)
    _dbt(settings)
    _link_share_history(settings, [0.8, 0.79, 0.81])
    result = run_gate(settings, "intermediate", DAY, run_id="core-clean")

    assert result.ok and not result.warnings, [w.describe() for w in result.warnings]
    assert result.summary_line().startswith("gate intermediate: 6 suites, ")
    metrics = audit.read(settings, "gate_metrics", "logical_date = ?", [DAY])
    assert metrics["value"].round(3).tolist() == [0.8]


def test_a_duplicated_key_after_dedup_stops_the_intermediate_gate_before_publish(settings):
    before = _publish_then_break(settings, duplicate_message=True)
    _dbt(settings)
    with pytest.raises(GateFailed) as failed:
        _gate_then_publish(settings, "intermediate", "dup")

    message = str(failed.value)
    assert message.startswith("gate intermediate stopped the run for 2026-03-10")
    assert "suite intermediate.unique_keys, expectation expect_column_values_to_be_between(column=copies, max_value=1)" in message
    assert "1 of 1 rows unexpected" in message
    assert "model='staging.stg_web__events', key_value='m0'" in message
    assert _fingerprint(settings) == before


def test_a_huge_identity_cluster_stops_the_intermediate_gate(settings):
    build_warehouse(settings.warehouse_path, cluster_keys=80)
    _dbt(settings)
    with pytest.raises(GateFailed) as failed:
        run_gate(settings, "intermediate", DAY, run_id="cluster")

    errors = failed.value.result.errors
    assert [(e.suite, e.column) for e in errors] == [("intermediate.identity_clusters", "identity_keys")]
    assert "identity_keys=80 (customer_id='c_0'" in str(failed.value)
    # the warn-level limit fires too, as a warning
    assert any(w.suite == "intermediate.identity_clusters" for w in failed.value.result.warnings)


def test_a_collapse_of_linked_orders_against_recent_runs_stops_the_intermediate_gate(settings):
    build_warehouse(settings.warehouse_path, linked_share=0.3)
    _dbt(settings)
    _link_share_history(settings, [0.8, 0.82, 0.79, 0.8])
    with pytest.raises(GateFailed) as failed:
        run_gate(settings, "intermediate", DAY, run_id="collapse")

    message = str(failed.value)
    assert "suite intermediate.order_link_share, expectation expect_column_values_to_be_between(column=ratio_to_baseline, min_value=0.8)" in message
    assert "baseline=0.8" in message and "value=0.3" in message


def test_unreadable_crm_phones_and_countries_are_counted_as_warnings(settings):
    """A phone that cannot be read (stg_crm__contacts.phone_unparsed) or a country not
    recognized is never dropped silently: the intermediate gate reports the counts."""
    build_warehouse(settings.warehouse_path, linked_share=0.8)
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute("UPDATE staging.stg_crm__contacts SET phone = NULL, phone_unparsed = true, "
                    "phone_raw = '12345' WHERE contact_id IN ('1000', '1001', '1002')")
        con.execute("UPDATE staging.stg_crm__contacts SET country = NULL, country_raw = 'Atlantis' "
                    "WHERE contact_id = '1003'")
    _dbt(settings)
    _link_share_history(settings, [0.8, 0.79, 0.81])
    result = run_gate(settings, "intermediate", DAY, run_id="phones")

    assert result.ok
    warned = {w.column: w for w in result.warnings if w.suite == "intermediate.crm_contact_keys"}
    assert set(warned) == {"phones_unparsed", "countries_unrecognized"}
    shown = " ".join(map(str, [warned["phones_unparsed"].observed_value, *warned["phones_unparsed"].sample]))
    assert "phones_unparsed=3" in shown, shown


def test_dbt_test_results_feed_the_intermediate_gate(settings):
    build_warehouse(settings.warehouse_path)
    _dbt(settings, **{"test.customer360.unique_stg_crm__contacts_contact_id": "fail",
                      "test.customer360.accepted_values_stg_web__events_event_type": "warn",
                      "model.customer360.stg_crm__contacts": "success"})
    with pytest.raises(GateFailed) as failed:
        run_gate(settings, "intermediate", DAY, run_id="dbt")

    result = failed.value.result
    assert [e.suite for e in result.errors] == ["intermediate.dbt_tests"]
    assert "unique_id='test.customer360.unique_stg_crm__contacts_contact_id'" in str(failed.value)
    assert [w.suite for w in result.warnings] == ["intermediate.dbt_tests"]
    assert "accepted_values_stg_web__events_event_type" in result.warnings[0].sample[0]


def test_dbt_results_path_can_be_given(settings, tmp_path):
    build_warehouse(settings.warehouse_path)
    elsewhere = write_dbt_results(tmp_path / "dbt" / "intermediate" / "run_results.json",
                                  {"test.customer360.not_null_x": "error"})
    with pytest.raises(GateFailed, match="intermediate.dbt_tests"):
        run_gate(settings, "intermediate", DAY, run_id="dbt-path", dbt_results=str(tmp_path / "dbt" / "*" / "run_results.json"))
    assert elsewhere.exists()


# ---------------------------------------------------------------- marts

def test_marts_gate_passes_on_clean_data(settings):
    build_warehouse(settings.warehouse_path)
    _dbt(settings)
    result = run_gate(settings, "marts", DAY, run_id="marts-clean")

    assert result.ok and not result.warnings, [w.describe() for w in result.warnings]
    suites = {s.suite for s in result.suites}
    assert {"marts.customer_360", "marts.ml_churn_scores", "marts.no_pii", "marts.feedback_spikes",
            "marts.revenue_reconciliation", "marts.segment_coverage", "marts.dbt_tests",
            "marts.fct_funnel_daily", "marts.fct_campaign_performance", "marts.attribution_reconciliation",
            "marts.fct_experiment_results"} <= suites
    stored = audit.read(settings, "gate_results", "run_id = ?", ["marts-clean"])
    assert len(stored) == result.expectations and set(stored["outcome"]) == {"pass"}


def test_a_probability_of_1_7_stops_the_marts_gate_and_publication_stays(settings):
    before = _publish_then_break(settings, churn_override=1.7)
    _dbt(settings)
    with pytest.raises(GateFailed) as failed:
        _gate_then_publish(settings, "marts", "prob")

    message = str(failed.value)
    assert ("suite marts.ml_churn_scores, expectation expect_column_values_to_be_between"
            "(column=churn_probability, min_value=0, max_value=1): 1 of 60 rows unexpected") in message
    assert "churn_probability=1.7 (customer_id='c_3'" in message
    assert _fingerprint(settings) == before
    con = duckdb.connect(str(settings.published_dir / "c360.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT max(churn_probability) FROM ml.ml_churn_scores").fetchone()[0] <= 1
    finally:
        con.close()


def test_a_raw_email_in_a_mart_stops_the_marts_gate_with_the_value_masked(settings):
    before = _publish_then_break(settings, email_in_city=True)
    _dbt(settings)
    with pytest.raises(GateFailed) as failed:
        _gate_then_publish(settings, "marts", "pii")

    message = str(failed.value)
    assert "suite marts.no_pii, expectation expect_column_values_to_be_between(column=email_values, max_value=0)" in message
    assert "table_name='marts.customer_360', column_name='city', example='a***@m***.com'" in message
    assert "ann.li@mail.com" not in message
    stored = audit.read(settings, "gate_results", "run_id = 'pii'")
    assert not stored["sample"].str.contains("ann.li@mail.com").any()
    assert not stored["observed_value"].str.contains("ann.li", na=False).any()
    docs = next((settings.artifacts / "data_docs" / "marts").rglob("pii.html")).read_text()
    assert "a***@m***.com" in docs and "ann.li@mail.com" not in docs
    assert _fingerprint(settings) == before


def test_a_missing_mart_column_stops_the_marts_gate(settings):
    build_warehouse(settings.warehouse_path, missing_column="churn_probability")
    _dbt(settings)
    with pytest.raises(GateFailed) as failed:
        run_gate(settings, "marts", DAY, run_id="column")

    message = str(failed.value)
    assert "suite marts.customer_360, expectation expect_column_distinct_values_to_contain_set(column=column_name" in message
    assert '{"missing": ["churn_probability"]}' in message
    assert "missing column: churn_probability" in message


def test_a_customer_without_a_segment_stops_the_marts_gate(settings):
    build_warehouse(settings.warehouse_path, segment_gap=2)
    _dbt(settings)
    with pytest.raises(GateFailed, match=r"suite marts.segment_coverage.*2 of 2 rows unexpected"):
        run_gate(settings, "marts", DAY, run_id="segments")


def test_revenue_that_does_not_reconcile_with_staging_stops_the_marts_gate(settings):
    build_warehouse(settings.warehouse_path, revenue_skew=0.02)
    _dbt(settings)
    with pytest.raises(GateFailed) as failed:
        run_gate(settings, "marts", DAY, run_id="revenue")
    assert "suite marts.revenue_reconciliation" in str(failed.value)
    assert "relative_gap=0.02, channel='store' (staging_net=3000.0, marts_net=3060.0" in str(failed.value)


def test_an_order_credited_twice_stops_the_marts_gate(settings):
    build_warehouse(settings.warehouse_path)
    with duckdb.connect(str(settings.warehouse_path)) as con:  # one order credited twice over under linear
        con.execute("INSERT INTO intermediate.int_marketing__order_attribution "
                    "SELECT * FROM intermediate.int_marketing__order_attribution "
                    "WHERE attribution_model = 'linear' AND order_id = 'W0'")
    _dbt(settings)
    with pytest.raises(GateFailed) as failed:
        run_gate(settings, "marts", DAY, run_id="attribution")
    message = str(failed.value)
    assert ("suite marts.attribution_reconciliation, expectation expect_column_values_to_be_between"
            "(column=worst_credit_gap") in message
    assert "worst_credit_gap=1.0 (attribution_model='linear', order_revenue=500.0" in message
    assert "revenue_gap" not in message  # the revenue matches: only the credits are wrong


def test_a_p_value_above_1_revenue_credited_from_nowhere_and_a_broken_split(settings):
    build_warehouse(settings.warehouse_path)
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute("UPDATE marts.fct_campaign_performance SET attributed_revenue = attributed_revenue + 0.5 "
                    "WHERE attribution_model = 'first_touch'")
        con.execute("UPDATE marts.fct_experiment_results SET p_value = 1.5, srm_detected = true "
                    "WHERE variation_id = 'treatment'")
    _dbt(settings)
    with pytest.raises(GateFailed) as failed:
        run_gate(settings, "marts", DAY, run_id="experiments")
    errors = [(e.suite, e.column) for e in failed.value.result.errors]
    assert sorted(errors) == [("marts.attribution_reconciliation", "revenue_gap"),
                              ("marts.fct_experiment_results", "p_value")]
    assert [(w.suite, w.column) for w in failed.value.result.warnings] == [
        ("marts.fct_experiment_results", "srm_detected")]


def test_a_warn_level_defect_in_the_marts_lets_the_run_finish(settings):
    build_warehouse(settings.warehouse_path, null_segment_share=0.3)
    _dbt(settings)
    result = run_gate(settings, "marts", DAY, run_id="warn")
    publish(settings, DAY)  # the DAG goes on to publish

    assert result.ok
    assert [(w.suite, w.column) for w in result.warnings] == [("marts.customer_360", "segment_name")]
    assert result.warnings[0].observed_value.startswith("18 of 60 rows unexpected")
    runs = audit.read(settings, "gate_runs", "run_id = 'warn'")
    assert runs["warnings"].tolist() == [1] and runs["ok"].tolist() == [True]
    assert (settings.published_dir / "c360.duckdb").exists()


def test_a_spike_of_negative_feedback_is_a_warning_naming_the_topic(settings):
    build_warehouse(settings.warehouse_path, feedback_spike=True)
    _dbt(settings)
    result = run_gate(settings, "marts", DAY, run_id="spike")

    assert result.ok
    assert [(w.suite, w.column) for w in result.warnings] == [("marts.feedback_spikes", "is_spike")]
    assert "delivery/late/parcel" in result.warnings[0].describe()


def test_no_warehouse_is_an_error_not_a_pass(settings):
    with pytest.raises(GateFailed, match="no warehouse at"):
        run_gate(settings, "marts", DAY, run_id="nothing")


def test_an_order_line_of_no_catalogue_product_is_counted_as_a_warning(settings):
    build_warehouse(settings.warehouse_path)
    con = duckdb.connect(str(settings.warehouse_path))
    try:  # a web item sent with a product_id that is no catalogue sku, and no sku of its own
        con.execute("ALTER TABLE marts.fct_order_lines ADD COLUMN product_id VARCHAR")
        con.execute("UPDATE marts.fct_order_lines SET sku = NULL, product_id = 'prod-x9' "
                    "WHERE order_id = 'T3'")
    finally:
        con.close()
    _dbt(settings)
    result = run_gate(settings, "marts", DAY, run_id="marts-sku")

    assert result.ok
    warning = next(w for w in result.warnings if w.suite == "marts.fct_order_lines")
    assert warning.column == "sku" and warning.unexpected_count == 1
    assert "product_id='prod-x9'" in " ".join(warning.sample)
