"""run_ml end to end on synthetic marts: published columns, the registry and its artifacts,
promotion, the training cadence, drift, and reruns of a date."""

from __future__ import annotations

import datetime as dt
import json
import pickle
import re
import shutil
from pathlib import Path

import duckdb
import joblib
import numpy as np
import pytest
import yaml

from customer360.ml import drift, registry
from customer360.ml.pipeline import run_ml, training_due_any
from customer360.ml.spec import load_specs, repo_root
from customer360.demo.ml_oracle import SimulatorCeiling
from customer360.demo.ml_synthetic import SyntheticConfig, build_home, generate
from customer360.core.settings import get_settings

CFG = SyntheticConfig(people=500, days=247, seed=41)
DAY1 = CFG.as_of - dt.timedelta(days=7)
DAY2 = CFG.as_of
CUSTOMER_ID = re.compile(rb"C\d{7}")

REQUIRED = {  # docs/marts.md
    "ml_customer_segments": {"customer_id", "segment_id", "segment_name", "model_version", "scored_at"},
    "ml_churn_scores": {"customer_id", "churn_probability", "risk_band", "repurchase_30d_probability",
                        "model_version", "scored_at"},
    "ml_customer_value": {"customer_id", "frequency", "recency_days", "tenure_days", "monetary_value", "p_alive",
                          "expected_purchases_90d", "expected_purchases_365d", "expected_avg_order_value",
                          "clv_365d", "model_version", "scored_at"},
    "ml_product_recommendations": {"customer_id", "rank", "sku", "score", "model_version"},
    "ml_model_runs": {"model_name", "model_version", "trained_at", "metrics", "promoted"},
}


def _run(home: Path, day: dt.date, **kwargs) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("C360_HOME", str(home))
        mp.setenv("C360_DUCKDB_THREADS", "1")  # shared machine: no OpenMP oversubscription
        settings = get_settings()
        kwargs.setdefault("churn_evaluators", [SimulatorCeiling(settings.simulation_dir)])
        return run_ml(settings, day, **kwargs)


def _query(home: Path, sql: str, params=None):
    with duckdb.connect(str(home / "warehouse" / "c360.duckdb"), read_only=True) as con:
        return con.execute(sql, params or []).df()


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Two daily runs a week apart on the same home: DAY1 (data to DAY1), then DAY2 (a week more)."""
    home = tmp_path_factory.mktemp("ml_home")
    data = generate(CFG)
    build_home(home, CFG, last_day=DAY1, data=data)
    first = _run(home, DAY1)
    build_home(home, CFG, data=data)  # the marts and features rebuilt a week later
    second = _run(home, DAY2)
    return home, first, second


def _copy(home: Path, tmp_path: Path) -> Path:
    """A copy of the home (warehouse and artifacts) for tests that write to it."""
    target = tmp_path / "home"
    shutil.copytree(home, target)
    return target


def test_outputs_have_the_published_columns(history):
    home, _, second = history
    for table, required in REQUIRED.items():
        columns = set(_query(home, f"select * from ml.{table} limit 0").columns)
        assert required <= columns, (table, required - columns)
    population = _query(home, "select count(*) as n from ml.ml_customer_features where is_scoring_snapshot").n[0]
    assert second["row_counts"]["ml_churn_scores"] == population
    assert second["row_counts"]["ml_customer_segments"] == population
    assert second["row_counts"]["ml_product_recommendations"] == 5 * population
    json.dumps(second)  # the summary is JSON-able


def test_registry_records_every_training_run(history):
    home, first, second = history
    runs = _query(home, "select * from ml.ml_model_runs order by logical_date, model_name")
    assert list(runs.model_name) == ["churn", "clv", "recommendations", "segments"] * 2
    assert runs.promoted.all()
    day1, day2 = runs[runs.logical_date.dt.date == DAY1], runs[runs.logical_date.dt.date == DAY2]
    assert day1.compared_with.isna().all()
    assert list(day2.compared_with) == list(day1.model_version)  # challenger vs current model
    for row in runs.itertuples():
        metrics, features = json.loads(row.metrics), json.loads(row.features)
        assert metrics and features and row.training_window_start <= row.training_window_end
        assert row.model_version.startswith(row.logical_date.strftime("%Y%m%d"))
    churn_metrics = json.loads(day2[day2.model_name == "churn"].metrics.iloc[0])
    assert {"roc_auc", "pr_auc", "brier", "lift_table", "recency_baseline_roc_auc",
            "oracle_roc_auc", "auc_share_of_ceiling", "current_model_roc_auc_same_eval"} <= set(churn_metrics)
    recs = json.loads(day2[day2.model_name == "recommendations"].metrics.iloc[0])
    assert recs["hit_rate_at_k"] > recs["popularity_hit_rate_at_k"]
    assert second["models"]["churn"]["scoring_version"] == day2[day2.model_name == "churn"].model_version.iloc[0]


def test_artifacts_and_model_cards_hold_no_customer_ids(history):
    home, _, _ = history
    runs = _query(home, "select model_name, model_version, artifact_path from ml.ml_model_runs")
    assert runs.customer_id.empty if "customer_id" in runs else True
    for row in runs.itertuples():
        directory = Path(row.artifact_path)
        assert directory == home / "artifacts" / "models" / row.model_name / row.model_version
        card = (directory / "model_card.md").read_text()
        for section in ("## Intended use", "## Data", "## Metrics", "## Limits"):
            assert section in card
        model_bytes = pickle.dumps(joblib.load(directory / "model.joblib"))
        for blob in (card.encode(), (directory / "metadata.json").read_bytes(), model_bytes):
            assert not CUSTOMER_ID.search(blob)
    assert CUSTOMER_ID.search(_query(home, "select customer_id from ml.ml_churn_scores limit 1")
                              .customer_id[0].encode())  # the pattern does match real ids


def test_segments_keep_their_ids_a_week_later(history):
    home, first, second = history
    seg = second["models"]["segments"]["metrics"]
    assert seg["matched_to_previous"] == seg["k"] == first["models"]["segments"]["metrics"]["k"]
    assert seg["agreement_with_previous"] >= 0.85
    names = _query(home, "select distinct segment_id, segment_name from ml.ml_customer_segments")
    assert names.segment_id.is_unique and names.segment_name.is_unique


def test_drift_is_measured_against_the_previous_run(history):
    home, first, second = history
    rows = _query(home, "select * from ml.ml_drift order by logical_date")
    assert (rows[rows.logical_date.dt.date == DAY1].status == "no_reference").all()
    later = rows[rows.logical_date.dt.date == DAY2]
    always = {"churn_probability", "recency_days", "orders_90d", "sessions_28d", "net_revenue_365d",
              "segment_id", "top_recommendation_score", "recommendation_source"}
    assert always <= set(later.variable)
    compared = later[later.variable.isin(always)]
    assert compared.psi.notna().all() and set(compared.status) <= {"ok", "warn"}
    assert (compared.reference_date.dt.date == DAY1).all()
    # a top feature of today's model that was not watched last week has nothing to compare with
    assert set(later[later.psi.isna()].status) <= {"no_reference"}
    assert len(second["drift"]) == len(later)


def test_drift_warns_when_the_population_shifts(tmp_path: Path):
    rng = np.random.default_rng(0)
    with duckdb.connect(str(tmp_path / "d.duckdb")) as con:
        registry.ensure_tables(con)
        day1, day2 = dt.date(2025, 1, 1), dt.date(2025, 1, 2)
        reference, warnings = drift.measure(con, day1, "churn", "v1", {"score": rng.normal(0, 1, 2000)}, {}, 0.2)
        assert warnings == [] and reference.status.tolist() == ["no_reference"]
        con.register("ref", reference)
        con.execute("insert into ml.ml_drift by name select * from ref")
        same, _ = drift.measure(con, day2, "churn", "v1", {"score": rng.normal(0, 1, 2000)}, {}, 0.2)
        shifted, warnings = drift.measure(con, day2, "churn", "v1", {"score": rng.normal(1.5, 1, 2000)}, {}, 0.2)
    assert same.status.tolist() == ["ok"] and same.psi[0] < 0.05
    assert shifted.status.tolist() == ["warn"] and shifted.psi[0] > 0.2 and "score" in warnings[0]


def test_next_day_scores_with_the_current_models_without_training(history, tmp_path: Path):
    home = _copy(history[0], tmp_path)
    summary = _run(home, DAY2 + dt.timedelta(days=1))
    for name, model in summary["models"].items():
        assert model["training_due"] is False and "candidate_version" not in model
        assert model["scoring_version"] == history[2]["models"][name]["scoring_version"]
    runs = _query(home, "select count(*) as n from ml.ml_model_runs where logical_date > ?", [DAY2])
    assert runs.n[0] == 0
    assert any("not the logical date" in w for w in summary["warnings"])  # features are as of DAY2


def test_training_due_any_follows_the_cadence(history, tmp_path: Path, monkeypatch):
    """The ML task builds the scoring snapshot alone exactly on the days run_ml will not train."""
    home = history[0]
    monkeypatch.setenv("C360_HOME", str(home))
    settings = get_settings()
    assert training_due_any(settings, DAY2) is True  # a rerun of a training day trains again
    assert training_due_any(settings, DAY2 + dt.timedelta(days=1)) is False
    assert training_due_any(settings, DAY2 + dt.timedelta(days=7)) is True  # retrain_every_days
    monkeypatch.setenv("C360_HOME", str(tmp_path / "empty"))
    assert training_due_any(get_settings(), DAY2) is True  # no warehouse, no registry yet


def test_rerun_of_a_date_gives_the_same_tables(history, tmp_path: Path):
    home = _copy(history[0], tmp_path)
    before = _query(home, "select * exclude (scored_at) from ml.ml_churn_scores order by customer_id")
    segments_before = _query(home, "select * exclude (scored_at) from ml.ml_customer_segments order by customer_id")
    recs_before = _query(home, "select * from ml.ml_product_recommendations order by customer_id, rank")
    runs_before = _query(home, "select model_name, model_version, promoted, metrics::varchar as m "
                               "from ml.ml_model_runs order by all")
    _run(home, DAY2)
    after = _query(home, "select * exclude (scored_at) from ml.ml_churn_scores order by customer_id")
    assert after.equals(before)
    assert _query(home, "select * exclude (scored_at) from ml.ml_customer_segments order by customer_id").equals(segments_before)
    assert _query(home, "select * from ml.ml_product_recommendations order by customer_id, rank").equals(recs_before)
    runs_after = _query(home, "select model_name, model_version, promoted, metrics::varchar as m "
                              "from ml.ml_model_runs order by all")
    strip = lambda frame: frame.assign(m=frame.m.map(lambda m: {k: v for k, v in json.loads(m).items()
                                                                if k not in ("fit_seconds",)}))
    assert strip(runs_after).equals(strip(runs_before))  # no duplicate rows, same decisions


def test_promotion_refuses_a_worse_model_and_the_current_one_keeps_scoring(history, tmp_path: Path):
    home = _copy(history[0], tmp_path)
    models = tmp_path / "models"
    shutil.copytree(repo_root() / "models", models)
    spec = yaml.safe_load((models / "churn.yml").read_text())
    spec["features"] = ["tenure_days", "marketing_consent"]  # a much weaker model
    spec.pop("candidate_features")  # p_alive alone carries most of recency's signal
    (models / "churn.yml").write_text(yaml.safe_dump(spec))
    current = history[2]["models"]["churn"]["scoring_version"]
    scores_before = _query(home, "select customer_id, churn_probability from ml.ml_churn_scores order by 1")

    summary = _run(home, DAY2 + dt.timedelta(days=1), models_dir=models)
    churn = summary["models"]["churn"]
    assert churn["training_due"] and "spec changed" in churn["training_reason"]
    assert churn["promoted"] is False
    assert churn["scoring_version"] == current
    run = _query(home, "select promoted, decision, compared_with from ml.ml_model_runs "
                       "where model_version = ?", [churn["candidate_version"]])
    assert not run.promoted[0] and run.compared_with[0] == current
    assert "worse than current model" in run.decision[0] or "below thresholds" in run.decision[0]
    scores_after = _query(home, "select customer_id, churn_probability from ml.ml_churn_scores order by 1")
    assert scores_after.equals(scores_before)


def test_decide_promotion_rules():
    spec = load_specs(repo_root() / "models")["churn_classifier"]
    good = {"roc_auc": 0.80, "brier": 0.15}
    assert registry.decide_promotion(spec, good, None, None)[0]
    assert not registry.decide_promotion(spec, {"roc_auc": 0.60, "brier": 0.15}, None, None)[0]
    assert not registry.decide_promotion(spec, {"roc_auc": 0.80, "brier": 0.40}, None, None)[0]
    assert registry.decide_promotion(spec, good, {"roc_auc": 0.805}, "v0")[0]      # within tolerance
    refused, why = registry.decide_promotion(spec, good, {"roc_auc": 0.85}, "v0")
    assert not refused and "worse than current model v0" in why


def test_a_first_day_with_hardly_any_data_degrades_instead_of_failing(tmp_path: Path):
    cfg = SyntheticConfig(people=30, days=10, seed=4)
    build_home(tmp_path, cfg)
    summary = _run(tmp_path, cfg.as_of)
    assert summary["models"]["churn"]["scoring_version"] == "heuristic-v1"
    assert summary["models"]["segments"]["scoring_version"] == "none"
    assert any("unsegmented" in w for w in summary["warnings"])
    customers = summary["customers"]
    assert customers > 0
    assert summary["row_counts"]["ml_churn_scores"] == summary["row_counts"]["ml_customer_segments"] == customers
    recs = _query(tmp_path, "select customer_id, count(*) as n from ml.ml_product_recommendations group by 1")
    assert len(recs) == customers and (recs.n <= 5).all()
