"""The ML stage of the daily run: train what is due, decide promotion, score everyone, record.

    summary = run_ml(settings, logical_date)

Reads the point-in-time features that dbt built in the ml schema (ml_customer_features,
ml_product_views) and the marts; writes ml.ml_customer_value, ml.ml_churn_scores,
ml.ml_customer_segments, ml.ml_product_recommendations, ml.ml_feedback_text and the
unpublished ml.ml_feedback_text_analysis (replaced), and ml.ml_model_runs, ml.ml_drift (this
date's rows replaced) in one transaction (on Spark, in the stage's own DuckDB, then table by table into the
Spark warehouse: ml.warehouse_io, docs/engines.md). Artifacts and model cards go to
$C360_HOME/artifacts/models/<name>/<version>/. Returns a JSON-able summary.

Rerunning a logical date gives the same tables: versions derive from the date and the spec,
decisions look only at runs before the date, and every random choice takes the spec's seed.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import duckdb
import numpy as np
import pandas as pd

from threadpoolctl import threadpool_limits

from customer360.core import duck
from customer360.ml import churn, clv, drift, model_card, recommend, registry, segments, text
from customer360.ml import spec as specs_module
from customer360.ml.spec import ModelSpec, SpecError, load_specs
from customer360.ml.warehouse_io import (columns_of, connect, find_table, read_features, replace_tables,
                                         require_features_table, snapshot_summary, write_back)

log = logging.getLogger(__name__)

# Extra churn metrics computed beside ours, e.g. the demo simulator's ceiling
# (customer360.demo.ml_oracle.SimulatorCeiling). Production runs pass none: nothing here may
# read a simulator's ground truth. Called with the warehouse connection and keyword arguments
# eval_snapshot, eval_rows (customer_id, recency_days, y, p), scoring_date, scoring_rows.
ChurnEvaluator = Callable[..., "dict | None"]


@dataclass
class Context:
    settings: object
    con: duckdb.DuckDBPyConnection
    logical_date: dt.date
    scoring_date: dt.date
    features_table: str
    snapshots: pd.DataFrame
    population: pd.DataFrame
    now: dt.datetime
    churn_evaluators: Sequence[ChurnEvaluator] = ()
    specs: dict = field(default_factory=dict)
    _purchases: pd.DataFrame | None = None

    def artifact_dir(self, name: str, version: str) -> Path:
        return registry.artifact_dir(self.settings.model_artifacts_dir, name, version)

    def purchases(self) -> pd.DataFrame:
        """Purchase days up to the scoring date (read once: CLV and the churn candidates)."""
        if self._purchases is None:
            self._purchases = clv.load_purchases(self.con, self.scoring_date)
        return self._purchases


@dataclass
class StageResult:
    table: str
    frame: pd.DataFrame
    summary: dict
    run_rows: list[dict] = field(default_factory=list)
    drift: pd.DataFrame | None = None
    warnings: list[str] = field(default_factory=list)
    # working tables the stage also replaces (not published: PUBLISHED_ML_TABLES)
    extra_tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}


def _run_row(ctx: Context, spec: ModelSpec, version: str, *, promoted: bool, decision: str,
             metrics: dict, window: tuple, evaluation: str | None, compared_with: str | None,
             artifact: Path | None, train_rows: int | None, eval_rows: int | None,
             seconds: float, features: list[str] | None = None) -> dict:
    return {
        "model_name": spec.name, "model_version": version, "kind": spec.kind,
        "logical_date": ctx.logical_date, "trained_at": ctx.now,
        "training_window_start": window[0], "training_window_end": window[1],
        "evaluation_window": evaluation,
        "features": registry.to_json(features if features is not None else spec.features),
        "hyperparameters": registry.to_json(spec.section("algorithm")),
        "metrics": registry.to_json(metrics), "promoted": promoted, "decision": decision,
        "compared_with": compared_with, "spec_hash": spec.hash,
        "artifact_path": str(artifact) if artifact else None,
        "train_rows": train_rows, "eval_rows": eval_rows, "seconds": round(seconds, 3),
    }


def _register(ctx: Context, spec: ModelSpec, version: str, model, metadata: dict) -> Path:
    directory = ctx.artifact_dir(spec.name, version)
    metadata = {"model_name": spec.name, "model_version": version, "kind": spec.kind,
                "logical_date": ctx.logical_date, "trained_at": ctx.now, "spec_hash": spec.hash,
                "hyperparameters": spec.section("algorithm"), **metadata}
    registry.save_artifact(directory, model, metadata, model_card.render(spec, metadata))
    return directory


# --- churn -------------------------------------------------------------------------------------

def _ceiling(ctx: Context, predict, eval_snapshot: dt.date | None, evaluation: pd.DataFrame | None) -> dict | None:
    """Metrics of the injected churn evaluators (none in production) for a churn scorer: on the
    evaluation snapshot's labels and on today's buyers."""
    if not ctx.churn_evaluators:
        return None
    buyers = ctx.population[pd.to_numeric(ctx.population.orders_lifetime, errors="coerce") > 0]
    columns = ["customer_id", "recency_days", "y", "p"]
    eval_rows = pd.DataFrame(columns=columns)
    if evaluation is not None and len(evaluation):
        eval_rows = pd.DataFrame({"customer_id": evaluation.customer_id, "recency_days": evaluation.recency_days,
                                  "y": evaluation[churn.LABEL].astype(int), "p": predict(evaluation)})
    scoring_rows = pd.DataFrame({"customer_id": buyers.customer_id, "recency_days": buyers.recency_days,
                                 "p": predict(buyers)})
    out: dict = {}
    for evaluate in ctx.churn_evaluators:
        out.update(evaluate(ctx.con, eval_snapshot=eval_snapshot, eval_rows=eval_rows,
                            scoring_date=ctx.scoring_date, scoring_rows=scoring_rows) or {})
    return out


def _train_churn(ctx: Context, spec: ModelSpec, split: churn.TimeSplit, current, current_model,
                 summary: dict) -> tuple[object, str, dict, dict]:
    """Fit on the training snapshots, evaluate on the later one (and against the current model
    on the same rows), register the artifact. Returns the model, its version, metrics, run row."""
    horizon = int(spec.section("target")["horizon_days"])
    started = time.monotonic()
    repurchase_label = _repurchase_label(ctx, spec)
    cols = spec.features + [churn.LABEL, "recency_days", "orders_lifetime"] + (
        [repurchase_label] if repurchase_label else [])
    train = read_features(ctx.con, ctx.features_table, split.train_snapshots, cols, labelled_only=True)
    evaluation = read_features(ctx.con, ctx.features_table, [split.eval_snapshot], cols, labelled_only=True)
    candidates = _candidate_features(spec)
    if candidates:
        features = clv.snapshot_features(ctx.purchases(), [*split.train_snapshots, split.eval_snapshot],
                                         ctx.specs["customer_value"])
        train = clv.with_snapshot_features(train, features)
        evaluation = clv.with_snapshot_features(evaluation, features)
    model = churn.fit(spec, train)
    fit_seconds = time.monotonic() - started
    metrics = churn.evaluate(model, spec, evaluation)
    if candidates:
        # Item 4 of issue 21: the CLV outputs join the model only if they lift AUC on the
        # same evaluation snapshot by more than min_auc_lift (a tie keeps the simpler model).
        with_spec = spec.with_overrides(features=spec.features + candidates)
        with_model = churn.fit(with_spec, train)
        with_metrics = churn.evaluate(with_model, with_spec, evaluation)
        without_auc, with_auc = metrics.get("roc_auc"), with_metrics.get("roc_auc")
        lift = None if without_auc is None or with_auc is None else with_auc - without_auc
        min_lift = float(spec.raw["candidate_features"].get("min_auc_lift", 0.0))
        kept = lift is not None and lift > min_lift
        decision = {"clv_features": candidates, "clv_features_roc_auc_without": without_auc,
                    "clv_features_roc_auc_with": with_auc, "clv_features_auc_lift": lift,
                    "clv_features_min_auc_lift": min_lift, "clv_features_kept": kept}
        if kept:
            model, spec, metrics = with_model, with_spec, with_metrics
        metrics.update(decision)
        log.info("churn: CLV candidate features lift AUC by %s (min %s): %s", lift, min_lift,
                 "kept" if kept else "dropped")
    metrics["top_features"] = churn.top_features(model, spec, evaluation)
    metrics["features_without_training_data"] = churn.empty_features(model, spec)
    metrics["fit_seconds"] = round(fit_seconds, 3)
    repurchase_model = None
    if repurchase_label:
        repurchase_model, repurchase_metrics = _train_repurchase(spec, train, evaluation, repurchase_label)
        metrics.update(repurchase_metrics)
    metrics.update(_ceiling(ctx, lambda frame: churn.predict(model, frame), split.eval_snapshot, evaluation) or {})
    current_metrics = None
    if current_model is not None:
        try:  # the fair comparison: the current model on the same evaluation snapshot
            current_metrics = churn.evaluate(current_model, spec, evaluation)
        except Exception as exc:  # e.g. its features no longer exist
            log.warning("churn: cannot re-evaluate %s (%s); using its recorded metrics",
                        current.model_version, exc)
            current_metrics = current.metrics
        metrics["current_model_roc_auc_same_eval"] = current_metrics.get("roc_auc")
    current_version = current.model_version if current else None
    promoted, decision = registry.decide_promotion(spec, metrics, current_metrics, current_version)
    version = registry.model_version(spec, ctx.logical_date)
    window = (min(split.train_snapshots), max(split.train_snapshots))
    evaluation_window = (f"snapshot {split.eval_snapshot}, labels to "
                         f"{split.eval_snapshot + dt.timedelta(days=horizon)}")
    artifact = _register(ctx, spec, version, model, {
        "features": spec.features, "metrics": metrics, "promoted": promoted, "decision": decision,
        "training_window_start": window[0], "training_window_end": window[1],
        "evaluation_window": evaluation_window, "train_rows": len(train), "eval_rows": len(evaluation),
        "sources": [ctx.features_table] + (["fct_orders"] if candidates else []),
        "top_features": [f["feature"] for f in metrics["top_features"]]})
    if repurchase_model is not None:
        registry.save_companion(artifact, REPURCHASE, repurchase_model)
    row = _run_row(ctx, spec, version, promoted=promoted, decision=decision, metrics=metrics, window=window,
                   evaluation=evaluation_window, compared_with=current_version, artifact=artifact,
                   train_rows=len(train), eval_rows=len(evaluation), seconds=time.monotonic() - started,
                   features=spec.features)
    summary.update({"candidate_version": version, "promoted": promoted, "decision": decision,
                    "metrics": _scalars(metrics)})
    log.info("churn %s: AUC %.3f (recency baseline %s), promoted=%s: %s", version,
             metrics.get("roc_auc") or float("nan"), metrics.get("recency_baseline_roc_auc"), promoted, decision)
    return (model, repurchase_model), version, metrics, row


REPURCHASE = "repurchase_30d"


def _candidate_features(spec: ModelSpec) -> list[str]:
    return list((spec.raw.get("candidate_features") or {}).get("columns", []))


def _repurchase_label(ctx: Context, spec: ModelSpec) -> str | None:
    """The second target's label column, if the spec asks for it and the features have it (a
    warehouse built before the column existed has not)."""
    column = (spec.raw.get("repurchase") or {}).get("label")
    if column and column.lower() in columns_of(ctx.con, ctx.features_table):
        return column
    if column:
        log.warning("churn: %s has no %s; no repurchase model is trained", ctx.features_table, column)
    return None


def _train_repurchase(spec: ModelSpec, train: pd.DataFrame, evaluation: pd.DataFrame,
                      label: str) -> tuple[object | None, dict]:
    """P(an order in the repurchase horizon) with churn's pipeline and features: trained on
    "no order in the horizon", which is churn with a shorter horizon, so the recency tail
    points the right way; the published probability is its complement. The metrics compare
    it with the recency-only ranking on the same evaluation snapshot."""
    def no_order(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame[frame[label].notna()]
        return frame.assign(**{churn.LABEL: 1 - frame[label].astype(int)})

    fit_on, judge = no_order(train), no_order(evaluation)
    if fit_on[churn.LABEL].nunique() < 2 or judge.empty:
        return None, {f"{REPURCHASE}_decision": "not trained: one class only in training or no evaluation rows"}
    model = churn.fit(spec, fit_on)
    m = churn.evaluate(model, spec, judge)
    auc, baseline = m.get("roc_auc"), m.get("recency_baseline_roc_auc")
    return model, {f"{REPURCHASE}_roc_auc": auc, f"{REPURCHASE}_recency_baseline_roc_auc": baseline,
                   f"{REPURCHASE}_auc_lift_over_recency": None if auc is None or baseline is None else auc - baseline,
                   f"{REPURCHASE}_brier": m.get("brier"), f"{REPURCHASE}_eval_rows": m.get("rows"),
                   f"{REPURCHASE}_base_rate": None if m.get("base_rate") is None else 1 - m["base_rate"]}


@dataclass
class _Turn:
    """Whether a model trains today, and the champion it would replace (or score with)."""

    due: bool
    why: str
    current: object | None
    current_model: object | None

    @property
    def version(self) -> str | None:
        return self.current.model_version if self.current else None

    def summary(self) -> dict:
        return {"training_due": self.due, "training_reason": self.why}


def _takes_over(summary: dict, warnings: list[str], stage: str, candidate: str, promoted: bool,
                decision: str, metrics: dict, current_model) -> bool:
    """Record a trained candidate's decision; whether it scores today: promoted, or the only
    model there is (with a warning saying so)."""
    summary.update({"candidate_version": candidate, "promoted": promoted, "decision": decision,
                    "metrics": _scalars(metrics)})
    if not promoted and current_model is not None:
        return False
    if not promoted:
        warnings.append(f"{stage}: no promoted model exists; scoring with the unpromoted "
                        f"candidate {candidate} ({decision})")
    return True


def _turn(ctx: Context, spec: ModelSpec, need_model: bool = True) -> _Turn:
    """Training is due by the spec's schedule, or, where scoring needs a model
    (``need_model``), because there is no champion to score with."""
    due, why = registry.training_due(ctx.con, spec, ctx.logical_date)
    current = registry.champion(ctx.con, spec.name, ctx.logical_date)
    current_model = registry.load_model(current.artifact) if current else None
    if need_model and current_model is None and not due:
        due, why = True, "no current model to score with"
    return _Turn(due, why, current, current_model)


def _churn_stage(ctx: Context, spec: ModelSpec) -> StageResult:
    horizon = int(spec.section("target")["horizon_days"])
    # churn scores with a heuristic while no model exists, so it never forces a training
    turn = _turn(ctx, spec, need_model=False)
    due, current, current_model = turn.due, turn.current, turn.current_model
    summary, rows = turn.summary(), []
    scorer, repurchaser, version, top = None, None, None, None

    if due:
        split = churn.choose_split(ctx.snapshots, spec)
        summary["train_snapshots"] = [str(d) for d in split.train_snapshots]
        summary["eval_snapshot"] = str(split.eval_snapshot) if split.eval_snapshot else None
        if split.ok:
            (model, repurchase_model), candidate, metrics, row = _train_churn(
                ctx, spec, split, current, current_model, summary)
            rows.append(row)
            if row["promoted"]:
                scorer, repurchaser, version = model, repurchase_model, candidate
                top = [f["feature"] for f in metrics["top_features"]]
        else:
            summary["decision"] = f"not trained: {split.reason}"

    if scorer is None and current_model is not None:
        scorer, version = current_model, current.model_version
        repurchaser = registry.load_companion(current.artifact, REPURCHASE)
        top = registry.load_metadata(current.artifact).get("top_features")

    scoring = ctx.population
    repurchase = None if repurchaser is None else 1.0 - churn.predict(repurchaser, scoring)
    if scorer is not None:
        probability = churn.predict(scorer, scoring)
    else:
        heuristic = spec.raw.get("scoring_heuristic", {}).get("version", "heuristic-v1")
        version, top = heuristic, ["recency_days", "orders_lifetime", "days_since_first_order"]
        probability = churn.heuristic_probability(scoring, horizon)
        reason = summary.get("decision") or turn.why
        metrics = _ceiling(ctx, lambda frame: churn.heuristic_probability(frame, horizon), None, None) or {}
        summary["metrics"] = _scalars(metrics)
        rows.append(_run_row(ctx, spec, heuristic, promoted=False,
                             decision=f"scored with the documented heuristic: {reason}",
                             metrics=metrics, window=(None, None), evaluation=None, compared_with=None,
                             artifact=None, train_rows=0, eval_rows=0, seconds=0.0,
                             features=["recency_days", "orders_lifetime", "days_since_first_order"]))
    frame = churn.scores_frame(scoring, probability, spec, version, ctx.now, repurchase)
    summary["scoring_version"] = version

    buyers = scoring[frame.churn_probability.notna().to_numpy()]
    numeric = {"churn_probability": frame.churn_probability.dropna().to_numpy()}
    watched = (top or [])[: int(spec.drift.get("top_features", 5))] + list(spec.drift.get("always", []))
    for name in dict.fromkeys(watched):
        if name in buyers.columns:
            numeric[name] = pd.to_numeric(buyers[name], errors="coerce").to_numpy(dtype=float)
    drift_rows, warnings = drift.measure(ctx.con, ctx.logical_date, spec.name, version, numeric, {},
                                         float(spec.drift.get("psi_warn", 0.2)), int(spec.drift.get("bins", 10)))
    summary["risk_bands"] = frame.risk_band.value_counts().to_dict()
    return StageResult("ml_churn_scores", frame, summary, rows, drift_rows, warnings)


# --- segments ----------------------------------------------------------------------------------

def _rfm(ctx: Context) -> pd.DataFrame | None:
    """The warehouse's RFM segment, shown beside the behavioural one: from the marts layer's
    int_customers__rfm (built before ML), else customer_360 (rebuilt after ML: the last build)."""
    for name, schemas in (("int_customers__rfm", ("intermediate",)), ("customer_360", ("marts",))):
        table = find_table(ctx.con, name, schemas)
        if table is None:
            continue
        try:
            return ctx.con.execute(f"select cast(customer_id as varchar) as customer_id, "
                                   f"any_value(rfm_segment) as rfm_segment from {table} group by 1").df()
        except duckdb.Error:
            continue
    return None


def _segments_stage(ctx: Context, spec: ModelSpec) -> StageResult:
    turn = _turn(ctx, spec)
    due, current, current_model = turn.due, turn.current, turn.current_model
    summary, rows, warnings = turn.summary(), [], []
    scorer, version = current_model, turn.version
    min_customers = int(spec.section("algorithm").get("min_customers", 50))
    if due and len(ctx.population) < min_customers:  # a first demo day: nothing to cluster yet
        due = False
        summary["decision"] = f"not trained: {len(ctx.population)} customers (< {min_customers})"
        if scorer is None:
            warnings.append(f"segments: {summary['decision']}; every customer is unsegmented")
            frame = pd.DataFrame({"customer_id": ctx.population.customer_id.astype(str), "segment_id": 0,
                                  "segment_name": "unsegmented", "model_version": "none",
                                  "scored_at": pd.Timestamp(ctx.now), "as_of_date": ctx.population.snapshot_date})
            summary["scoring_version"] = "none"
            return StageResult("ml_customer_segments", frame, summary, rows, None, warnings)

    if due:
        started = time.monotonic()
        model, metrics = segments.fit(ctx.population, spec, previous=current_model)
        current_metrics = None
        if current_model is not None:
            # share of today's customers who keep their segment id if the candidate replaces
            # the current model (both assign the same population, so a rerun measures the same)
            X = segments.transform(ctx.population, spec)
            metrics["agreement_with_previous"] = float(np.mean(model.assign(X)[0] == current_model.assign(X)[0]))
            current_metrics = {"silhouette": segments.silhouette_of(current_model, ctx.population, spec)}
            metrics["current_model_silhouette_same_data"] = current_metrics["silhouette"]
        promoted, decision = registry.decide_promotion(
            spec, metrics, current_metrics, current.model_version if current else None)
        candidate = registry.model_version(spec, ctx.logical_date)
        window = (ctx.scoring_date - dt.timedelta(days=364), ctx.scoring_date)
        artifact = _register(ctx, spec, candidate, model, {
            "features": model.features, "metrics": metrics, "promoted": promoted, "decision": decision,
            "training_window_start": window[0], "training_window_end": window[1],
            "evaluation_window": "silhouette on a sample of the same population",
            "train_rows": len(ctx.population), "eval_rows": metrics["rows"],
            "sources": [ctx.features_table], "segments": model.describe()})
        rows.append(_run_row(ctx, spec, candidate, promoted=promoted, decision=decision, metrics=metrics,
                             window=window, evaluation="silhouette on a sample of the same population",
                             compared_with=current.model_version if current else None, artifact=artifact,
                             train_rows=len(ctx.population), eval_rows=metrics["rows"],
                             seconds=time.monotonic() - started, features=model.features))
        if _takes_over(summary, warnings, "segments", candidate, promoted, decision,
                       metrics, current_model):
            scorer, version = model, candidate

    rfm = _rfm(ctx)
    frame = segments.segments_frame(ctx.population, scorer, spec, version, ctx.now, rfm)
    summary["scoring_version"] = version
    summary["segments"] = frame.segment_name.value_counts().to_dict()
    drift_rows, drift_warnings = drift.measure(ctx.con, ctx.logical_date, spec.name, version, {},
                                               {"segment_id": frame.segment_id.astype(str).to_numpy()},
                                               float(spec.drift.get("psi_warn", 0.2)))
    return StageResult("ml_customer_segments", frame, summary, rows, drift_rows, warnings + drift_warnings)


# --- recommendations ---------------------------------------------------------------------------

def _recommend_stage(ctx: Context, spec: ModelSpec) -> StageResult:
    windows = spec.section("windows")
    end = ctx.scoring_date + dt.timedelta(days=1)
    start = end - dt.timedelta(days=int(windows["lookback_days"]) + int(windows["holdout_days"]))
    purchases = recommend.load_purchases(ctx.con, start, end)
    views = recommend.load_views(ctx.con, start, end)

    turn = _turn(ctx, spec)
    due, current, current_model = turn.due, turn.current, turn.current_model
    summary, rows, warnings = turn.summary(), [], []
    scorer, version = current_model, turn.version

    if due:
        started = time.monotonic()
        metrics = recommend.evaluate(purchases, views, spec, ctx.scoring_date)
        model = recommend.fit(purchases, views, spec, end)
        promoted, decision = registry.decide_promotion(
            spec, metrics, current.metrics if current else None, current.model_version if current else None)
        candidate = registry.model_version(spec, ctx.logical_date)
        window = (end - dt.timedelta(days=int(windows["lookback_days"])), ctx.scoring_date)
        evaluation = f"hit rate@{metrics['k']} on {metrics['holdout_start']} to {metrics['holdout_end']} held out"
        features = ["co_purchase", "co_view", "popularity"]
        artifact = _register(ctx, spec, candidate, model, {
            "features": features, "metrics": metrics, "promoted": promoted, "decision": decision,
            "training_window_start": window[0], "training_window_end": window[1],
            "evaluation_window": evaluation, "train_rows": len(purchases) + len(views),
            "eval_rows": metrics["eval_customers"], "sources": ["fct_orders", "fct_order_lines", "ml_product_views"]})
        rows.append(_run_row(ctx, spec, candidate, promoted=promoted, decision=decision, metrics=metrics,
                             window=window, evaluation=evaluation,
                             compared_with=current.model_version if current else None, artifact=artifact,
                             train_rows=len(purchases) + len(views), eval_rows=metrics["eval_customers"],
                             seconds=time.monotonic() - started, features=features))
        if _takes_over(summary, warnings, "recommendations", candidate, promoted, decision,
                       metrics, current_model):
            scorer, version = model, candidate

    frame = recommend.recommend(scorer, purchases, views, ctx.population.customer_id, spec, end)
    frame["model_version"] = version
    frame["as_of_date"] = ctx.scoring_date
    summary["scoring_version"] = version
    summary["sources"] = frame.source.value_counts().to_dict()
    # the best score a customer gets: stable enough to compare (a top-1 sku share is too noisy)
    top_score = frame[frame["rank"] == 1].score.to_numpy(dtype=float)
    drift_rows, drift_warnings = drift.measure(ctx.con, ctx.logical_date, spec.name, version,
                                               {"top_recommendation_score": top_score},
                                               {"recommendation_source": frame.source.to_numpy()},
                                               float(spec.drift.get("psi_warn", 0.2)))
    return StageResult("ml_product_recommendations", frame, summary, rows, drift_rows,
                       warnings + drift_warnings)


# --- customer value ----------------------------------------------------------------------------

def _clv_stage(ctx: Context, spec: ModelSpec) -> StageResult:
    """Validate on a date-split holdout, refit on the whole history, score every customer with
    a purchase. The current model's recorded holdout metrics are the comparison: re-running
    it on today's holdout would judge it on purchases it was fitted on."""
    purchases = ctx.purchases()
    customers = clv.summarise(purchases, ctx.scoring_date)
    turn = _turn(ctx, spec)
    due, current, current_model = turn.due, turn.current, turn.current_model
    summary, rows, warnings = turn.summary(), [], []
    scorer, version = current_model, turn.version
    if due:
        started = time.monotonic()
        try:
            _, metrics = clv.holdout_evaluation(purchases, spec, ctx.scoring_date)
            evaluation = (f"holdout {metrics['calibration_end'] + dt.timedelta(days=1)} to {ctx.scoring_date}: "
                          f"predicted vs actual repeat purchase days of the calibration customers")
        except clv.NotFitted as exc:
            metrics, evaluation = {"holdout": f"not evaluated: {exc}"}, None
        try:
            model = clv.fit(customers, spec, ctx.scoring_date)
        except clv.NotFitted as exc:
            model = None
            summary["decision"] = f"not trained: {exc}"
        if model is not None:
            metrics.update({**model.bgnbd, **(model.gamma_gamma or {}), "customers": model.customers,
                            "repeat_buyers": model.repeat_buyers,
                            "repeat_buyers_without_positive_amount": model.excluded_from_gamma_gamma,
                            "gamma_gamma_fitted": model.gamma_gamma is not None,
                            "bgnbd_penalizer": model.penalizers["bgnbd"],
                            "fit_seconds": round(time.monotonic() - started, 3)})
            promoted, decision = registry.decide_promotion(
                spec, metrics, current.metrics if current else None, current.model_version if current else None)
            candidate = registry.model_version(spec, ctx.logical_date)
            first = purchases.order_date.min().date()
            window = (first, ctx.scoring_date)
            artifact = _register(ctx, spec, candidate, model, {
                "features": ["frequency", "recency_days", "tenure_days", "monetary_value"], "metrics": metrics,
                "promoted": promoted, "decision": decision, "training_window_start": window[0],
                "training_window_end": window[1], "evaluation_window": evaluation,
                "train_rows": model.customers, "eval_rows": metrics.get("holdout_customers"),
                "sources": ["fct_orders"]})
            rows.append(_run_row(ctx, spec, candidate, promoted=promoted, decision=decision, metrics=metrics,
                                 window=window, evaluation=evaluation,
                                 compared_with=current.model_version if current else None, artifact=artifact,
                                 train_rows=model.customers, eval_rows=metrics.get("holdout_customers"),
                                 seconds=time.monotonic() - started,
                                 features=["frequency", "recency_days", "tenure_days", "monetary_value"]))
            if _takes_over(summary, warnings, "clv", candidate, promoted, decision,
                           metrics, current_model):
                scorer, version = model, candidate
    if scorer is None:
        warnings.append(f"clv: no model ({summary.get('decision') or turn.why}); "
                        f"{len(customers)} customers get null predictions")
    frame = clv.value_frame(scorer, customers, version or "none", ctx.now, ctx.scoring_date)
    summary["scoring_version"] = version or "none"
    drift_rows, drift_warnings = drift.measure(
        ctx.con, ctx.logical_date, spec.name, version or "none",
        {"p_alive": frame.p_alive.to_numpy(float), "clv_365d": frame.clv_365d.to_numpy(float)}, {},
        float(spec.drift.get("psi_warn", 0.2)), int(spec.drift.get("bins", 10)))
    return StageResult("ml_customer_value", frame, summary, rows, drift_rows, warnings + drift_warnings)


# --- feedback text -----------------------------------------------------------------------------

def _text_stage(ctx: Context) -> StageResult:
    """Sentiment and topics of tickets and comments up to the scoring date (nothing to train:
    the lexicons ship in their packages, topics are refitted on each day's texts)."""
    texts = text.read_texts(ctx.con, ctx.scoring_date)
    if texts is None:
        empty = text.analyse(pd.DataFrame(columns=["source", "source_id", "customer_id", "created_at", "text"]),
                             scored_at=ctx.now, keep_tokens=True)
        return StageResult(text.TABLE, empty.drop(columns="tokens"), {"texts": 0},
                           warnings=["no CRM tickets or feedback built: ml_feedback_text is empty"],
                           extra_tables={text.ANALYSIS_TABLE: text.analysis_table(empty)})
    known = text.read_known(ctx.con)
    frame = text.analyse(texts, scored_at=ctx.now, names=text.read_names(ctx.con), known=known,
                         keep_tokens=True)
    summary = {**text.summarise(frame), "reused": int(frame.text.isin(known.keys()).sum())}
    return StageResult(text.TABLE, frame.drop(columns="tokens"), summary,
                       extra_tables={text.ANALYSIS_TABLE: text.analysis_table(frame)})


# --- the stage ---------------------------------------------------------------------------------

STAGES = (("customer_value", _clv_stage), ("churn_classifier", _churn_stage),
          ("behavioural_segments", _segments_stage), ("item_item_recommender", _recommend_stage))


def training_due_any(settings, logical_date: dt.date, *, models_dir: Path | None = None) -> bool:
    """Whether any model will train on ``logical_date`` (then the feature build must include the
    labelled snapshots). True when the warehouse or the registry does not exist yet."""
    specs = load_specs(Path(models_dir) if models_dir else specs_module.models_dir(settings))
    if settings.engine == "spark":
        con = connect(settings, registry_only=True)
    elif not Path(settings.warehouse_path).exists():
        return True
    else:
        con = duck.connect(settings, settings.warehouse_path, read_only=True)
    try:
        registry_exists = con.execute("select count(*) from information_schema.tables where "
                                      "table_schema = 'ml' and table_name = 'ml_model_runs'").fetchone()[0]
        if not registry_exists:
            return True
        return any(registry.training_due(con, spec, logical_date)[0] for spec in specs.values())
    finally:
        con.close()


def run_ml(settings, logical_date: dt.date, *, models_dir: Path | None = None,
           churn_evaluators: Sequence[ChurnEvaluator] = ()) -> dict:
    """Train (if due) and score customer value, churn, segments and recommendations for one
    logical date.
    ``churn_evaluators``: extra metrics recorded with each churn run (see ChurnEvaluator)."""
    started = time.monotonic()
    specs = load_specs(Path(models_dir) if models_dir else specs_module.models_dir(settings))
    con = connect(settings)
    warnings: list[str] = []
    try:
        registry.ensure_tables(con)
        table = require_features_table(con)
        snapshots = snapshot_summary(con, table)
        scoring_rows = snapshots[snapshots.is_scoring_snapshot]
        if scoring_rows.empty:
            raise SpecError(f"{table} has no scoring snapshot")
        scoring_date = pd.Timestamp(scoring_rows.snapshot_date.max()).date()
        if scoring_date != logical_date:
            warnings.append(f"features are as of {scoring_date}, not the logical date {logical_date} "
                            f"(was dbt run without the logical date, C360_AS_OF_DATE?)")
        horizon = int(specs["churn_classifier"].section("target")["horizon_days"])
        built = int(scoring_rows.label_horizon_days.iloc[0])
        if built != horizon:
            raise SpecError(f"{table} was built with a {built}-day churn horizon but models/churn.yml "
                            f"says {horizon}: set the dbt var ml_churn_horizon_days or the spec")
        population = read_features(con, table, [scoring_date])
        ctx = Context(settings, con, logical_date, scoring_date, table, snapshots, population,
                      dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0),
                      churn_evaluators=tuple(churn_evaluators), specs=specs)
        if _candidate_features(specs["churn_classifier"]):  # whichever churn model scores may use them
            ctx.population = clv.with_snapshot_features(population, clv.snapshot_features(
                ctx.purchases(), [scoring_date], specs["customer_value"]))
        stages = []
        # OpenMP (the booster, KMeans) spin-waits: on a machine busier than its thread count
        # training got 5x slower with 2 threads than with 1 (benchmarks/bench_ml.py), so one
        # thread unless the settings grant more (Settings.ml_threads, if the lead adds it).
        with threadpool_limits(limits=int(getattr(settings, "ml_threads", 1))):
            for name, stage in STAGES:
                t = time.monotonic()
                result = stage(ctx, specs[name])
                result.summary["seconds"] = round(time.monotonic() - t, 2)
                stages.append(result)
            t = time.monotonic()
            stages.append(_text_stage(ctx))
            stages[-1].summary["seconds"] = round(time.monotonic() - t, 2)
        runs = pd.DataFrame([r for s in stages for r in s.run_rows])
        drifts = pd.concat([s.drift for s in stages if s.drift is not None and len(s.drift)]
                           or [pd.DataFrame(columns=["logical_date", "model_name", "variable", "status"])],
                           ignore_index=True)
        date_filter = f"logical_date = date '{logical_date.isoformat()}'"
        counts = replace_tables(con, {**{s.table: s.frame for s in stages},
                                      **{n: f for s in stages for n, f in s.extra_tables.items()}},
                                {"ml_model_runs": (date_filter, runs), "ml_drift": (date_filter, drifts)})
        write_back(settings, con, counts)  # on Spark; the DuckDB warehouse is already written
    finally:
        con.close()

    warnings += [w for s in stages for w in s.warnings]
    for w in warnings:
        log.warning("ml: %s", w)
    summary = {
        "logical_date": logical_date.isoformat(),
        "as_of_date": scoring_date.isoformat(),
        "customers": int(len(population)),
        "models": {specs[name].name: stage.summary for name, stage in
                   zip([name for name, _ in STAGES], stages)},
        "feedback_text": stages[-1].summary,
        "row_counts": counts,
        "drift": [{"model": r.model_name, "variable": r.variable,
                   "psi": None if pd.isna(r.psi) else round(float(r.psi), 4), "status": r.status}
                  for r in drifts.itertuples()],
        "warnings": warnings,
        "seconds": round(time.monotonic() - started, 2),
    }
    return registry.jsonable(summary)
