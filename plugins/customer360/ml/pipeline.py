"""The ML stage of the daily run: train what is due, decide promotion, score everyone, record.

    summary = run_ml(settings, logical_date)

Reads the point-in-time features that dbt built in the ml schema (ml_customer_features,
ml_product_views) and the marts; writes ml.ml_churn_scores, ml.ml_customer_segments,
ml.ml_product_recommendations (replaced) and ml.ml_model_runs, ml.ml_drift (this date's rows
replaced) in one transaction. Artifacts and model cards go to
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
from customer360.ml import churn, drift, model_card, recommend, registry, segments
from customer360.ml import spec as specs_module
from customer360.ml.spec import ModelSpec, SpecError, load_specs
from customer360.ml.warehouse_io import (connect, find_table, read_features, replace_tables,
                                         require_features_table, snapshot_summary)

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

    def artifact_dir(self, name: str, version: str) -> Path:
        return registry.artifact_dir(self.settings.model_artifacts_dir, name, version)


@dataclass
class StageResult:
    table: str
    frame: pd.DataFrame
    summary: dict
    run_rows: list[dict] = field(default_factory=list)
    drift: pd.DataFrame | None = None
    warnings: list[str] = field(default_factory=list)


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
    cols = spec.features + [churn.LABEL, "recency_days", "orders_lifetime"]
    train = read_features(ctx.con, ctx.features_table, split.train_snapshots, cols, labelled_only=True)
    evaluation = read_features(ctx.con, ctx.features_table, [split.eval_snapshot], cols, labelled_only=True)
    model = churn.fit(spec, train)
    fit_seconds = time.monotonic() - started
    metrics = churn.evaluate(model, spec, evaluation)
    metrics["top_features"] = churn.top_features(model, spec, evaluation)
    metrics["features_without_training_data"] = churn.empty_features(model, spec)
    metrics["fit_seconds"] = round(fit_seconds, 3)
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
        "sources": [ctx.features_table], "top_features": [f["feature"] for f in metrics["top_features"]]})
    row = _run_row(ctx, spec, version, promoted=promoted, decision=decision, metrics=metrics, window=window,
                   evaluation=evaluation_window, compared_with=current_version, artifact=artifact,
                   train_rows=len(train), eval_rows=len(evaluation), seconds=time.monotonic() - started)
    summary.update({"candidate_version": version, "promoted": promoted, "decision": decision,
                    "metrics": _scalars(metrics)})
    log.info("churn %s: AUC %.3f (recency baseline %s), promoted=%s: %s", version,
             metrics.get("roc_auc") or float("nan"), metrics.get("recency_baseline_roc_auc"), promoted, decision)
    return model, version, metrics, row


def _churn_stage(ctx: Context, spec: ModelSpec) -> StageResult:
    horizon = int(spec.section("target")["horizon_days"])
    due, why = registry.training_due(ctx.con, spec, ctx.logical_date)
    current = registry.champion(ctx.con, spec.name, ctx.logical_date)
    current_model = registry.load_model(current.artifact) if current else None
    summary: dict = {"training_due": due, "training_reason": why}
    rows: list[dict] = []
    scorer, version, top = None, None, None

    if due:
        split = churn.choose_split(ctx.snapshots, spec)
        summary["train_snapshots"] = [str(d) for d in split.train_snapshots]
        summary["eval_snapshot"] = str(split.eval_snapshot) if split.eval_snapshot else None
        if split.ok:
            model, candidate, metrics, row = _train_churn(ctx, spec, split, current, current_model, summary)
            rows.append(row)
            if row["promoted"]:
                scorer, version = model, candidate
                top = [f["feature"] for f in metrics["top_features"]]
        else:
            summary["decision"] = f"not trained: {split.reason}"

    if scorer is None and current_model is not None:
        scorer, version = current_model, current.model_version
        top = registry.load_metadata(current.artifact).get("top_features")

    scoring = ctx.population
    if scorer is not None:
        probability = churn.predict(scorer, scoring)
    else:
        heuristic = spec.raw.get("scoring_heuristic", {}).get("version", "heuristic-v1")
        version, top = heuristic, ["recency_days", "orders_lifetime", "days_since_first_order"]
        probability = churn.heuristic_probability(scoring, horizon)
        reason = summary.get("decision") or why
        metrics = _ceiling(ctx, lambda frame: churn.heuristic_probability(frame, horizon), None, None) or {}
        summary["metrics"] = _scalars(metrics)
        rows.append(_run_row(ctx, spec, heuristic, promoted=False,
                             decision=f"scored with the documented heuristic: {reason}",
                             metrics=metrics, window=(None, None), evaluation=None, compared_with=None,
                             artifact=None, train_rows=0, eval_rows=0, seconds=0.0,
                             features=["recency_days", "orders_lifetime", "days_since_first_order"]))
    frame = churn.scores_frame(scoring, probability, spec, version, ctx.now)
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
    due, why = registry.training_due(ctx.con, spec, ctx.logical_date)
    current = registry.champion(ctx.con, spec.name, ctx.logical_date)
    current_model = registry.load_model(current.artifact) if current else None
    if current_model is None and not due:
        due, why = True, "no current model to score with"
    summary: dict = {"training_due": due, "training_reason": why}
    rows, warnings = [], []
    scorer, version = current_model, current.model_version if current else None
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
        summary.update({"candidate_version": candidate, "promoted": promoted, "decision": decision,
                        "metrics": _scalars(metrics)})
        if promoted or current_model is None:
            if not promoted:
                warnings.append(f"segments: no promoted model exists; scoring with the unpromoted "
                                f"candidate {candidate} ({decision})")
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

    due, why = registry.training_due(ctx.con, spec, ctx.logical_date)
    current = registry.champion(ctx.con, spec.name, ctx.logical_date)
    current_model = registry.load_model(current.artifact) if current else None
    if current_model is None and not due:
        due, why = True, "no current model to score with"
    summary: dict = {"training_due": due, "training_reason": why}
    rows, warnings = [], []
    scorer, version = current_model, current.model_version if current else None

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
        summary.update({"candidate_version": candidate, "promoted": promoted, "decision": decision,
                        "metrics": _scalars(metrics)})
        if promoted or current_model is None:
            if not promoted:
                warnings.append(f"recommendations: no promoted model exists; scoring with the "
                                f"unpromoted candidate {candidate} ({decision})")
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


# --- the stage ---------------------------------------------------------------------------------

def training_due_any(settings, logical_date: dt.date, *, models_dir: Path | None = None) -> bool:
    """Whether any model will train on ``logical_date`` (then the feature build must include the
    labelled snapshots). True when the warehouse or the registry does not exist yet."""
    specs = load_specs(Path(models_dir) if models_dir else specs_module.models_dir(settings))
    if not Path(settings.warehouse_path).exists():
        return True
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
    """Train (if due) and score churn, segments and recommendations for one logical date.
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
                            f"(was dbt run with --vars as_of_date?)")
        horizon = int(specs["churn_classifier"].section("target")["horizon_days"])
        built = int(scoring_rows.label_horizon_days.iloc[0])
        if built != horizon:
            raise SpecError(f"{table} was built with a {built}-day churn horizon but models/churn.yml "
                            f"says {horizon}: set the dbt var ml_churn_horizon_days or the spec")
        population = read_features(con, table, [scoring_date])
        ctx = Context(settings, con, logical_date, scoring_date, table, snapshots, population,
                      dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0),
                      churn_evaluators=tuple(churn_evaluators))
        stages = []
        # OpenMP (the booster, KMeans) spin-waits: on a machine busier than its thread count
        # training got 5x slower with 2 threads than with 1 (benchmarks/bench_ml.py), so one
        # thread unless the settings grant more (Settings.ml_threads, if the lead adds it).
        with threadpool_limits(limits=int(getattr(settings, "ml_threads", 1))):
            for name, stage in (("churn_classifier", _churn_stage), ("behavioural_segments", _segments_stage),
                                ("item_item_recommender", _recommend_stage)):
                t = time.monotonic()
                result = stage(ctx, specs[name])
                result.summary["seconds"] = round(time.monotonic() - t, 2)
                stages.append(result)
        runs = pd.DataFrame([r for s in stages for r in s.run_rows])
        drifts = pd.concat([s.drift for s in stages if s.drift is not None and len(s.drift)]
                           or [pd.DataFrame(columns=["logical_date", "model_name", "variable", "status"])],
                           ignore_index=True)
        date_filter = f"logical_date = date '{logical_date.isoformat()}'"
        counts = replace_tables(con, {s.table: s.frame for s in stages},
                                {"ml_model_runs": (date_filter, runs), "ml_drift": (date_filter, drifts)})
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
                   zip(("churn_classifier", "behavioural_segments", "item_item_recommender"), stages)},
        "row_counts": counts,
        "drift": [{"model": r.model_name, "variable": r.variable,
                   "psi": None if pd.isna(r.psi) else round(float(r.psi), 4), "status": r.status}
                  for r in drifts.itertuples()],
        "warnings": warnings,
        "seconds": round(time.monotonic() - started, 2),
    }
    return registry.jsonable(summary)
