"""Churn: label = no order in the horizon after a snapshot, for customers with an order before it.

Training uses labelled snapshots (their horizon lies inside the data); the evaluation uses a
later labelled snapshot, never a random split: the model is judged on a date it has not seen,
as it will be used. The estimator is a gradient-boosting classifier inside a scikit-learn
Pipeline, wrapped in probability calibration.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.inspection import permutation_importance
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from customer360.ml.metrics import classification_metrics, safe_auc
from customer360.ml.spec import ModelSpec

LABEL = "churn_label"


@dataclass(frozen=True)
class TimeSplit:
    """Which snapshots train and which one evaluates; `reason` says why training cannot happen."""
    train_snapshots: list[dt.date] = field(default_factory=list)
    eval_snapshot: dt.date | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def choose_split(snapshots: pd.DataFrame, spec: ModelSpec) -> TimeSplit:
    """The latest labelled snapshot evaluates; the train_snapshots most recent labelled ones at
    least eval_gap_days before it train. Degrades to a reason instead of an error."""
    windows = spec.section("windows")
    labelled = snapshots[(~snapshots.is_scoring_snapshot) & (snapshots.labelled_rows > 0)]
    labelled = labelled.sort_values("snapshot_date")
    if labelled.empty:
        return TimeSplit(reason="no labelled snapshot: the history is shorter than the churn "
                                "horizon plus the minimum history")
    eval_row = labelled.iloc[-1]
    eval_date = pd.Timestamp(eval_row.snapshot_date).date()
    gap = dt.timedelta(days=int(windows.get("eval_gap_days", 0)))
    train = labelled[pd.to_datetime(labelled.snapshot_date).dt.date <= eval_date - gap]
    train = train.tail(int(windows.get("train_snapshots", 8)))
    dates = [pd.Timestamp(d).date() for d in train.snapshot_date]
    if not dates:
        return TimeSplit(eval_snapshot=eval_date,
                         reason=f"no labelled snapshot {gap.days}+ days before the evaluation "
                                f"snapshot {eval_date}")
    min_rows = int(windows.get("min_train_rows", 1))
    min_class = int(windows.get("min_class_rows", 1))
    n, pos = int(train.labelled_rows.sum()), int(train.churned_rows.sum())
    if n < min_rows or min(pos, n - pos) < min_class:
        return TimeSplit(dates, eval_date, f"too few training labels ({n} rows, {pos} churned)")
    n_eval, pos_eval = int(eval_row.labelled_rows), int(eval_row.churned_rows)
    if n_eval < int(windows.get("min_eval_rows", 1)) or min(pos_eval, n_eval - pos_eval) < min_class:
        return TimeSplit(dates, eval_date, f"too few evaluation labels ({n_eval} rows, {pos_eval} churned)")
    return TimeSplit(dates, eval_date)


def as_matrix(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The model's input columns as floats (nulls -> NaN, which the booster handles)."""
    return frame.reindex(columns=columns).apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")


class DropEmptyColumns(TransformerMixin, BaseEstimator):
    """Drops the input columns that had no value at all in training. A feature can be missing
    for every training snapshot yet present when scoring (e.g. consent, when the customer
    history starts with the pipeline's first run), and the booster cannot bin an empty column."""

    def fit(self, X, y=None):
        self.keep_ = ~np.all(np.isnan(np.asarray(X, dtype=float)), axis=0)
        return self

    def transform(self, X):
        return np.asarray(X, dtype=float)[:, self.keep_]


class RecencyTail(ClassifierMixin, BaseEstimator):
    """The fitted pipeline, extended beyond the recencies it was trained on.

    Trees predict flat outside their training range. With a short history every training
    snapshot is early, so its customers are at most a few weeks past their last order, while
    at scoring many are months past it; the model would rank a customer silent for 150 days
    like one silent for 50. Beyond the largest recency seen in training, each further day
    without an order lowers P(still active) by a factor exp(-1 / scale_days). Within the
    training range this changes nothing; with long histories it rarely applies.
    """

    def __init__(self, model, column: str = "recency_days", scale_days: float = 90.0):
        self.model = model
        self.column = column
        self.scale_days = scale_days

    def fit(self, X: pd.DataFrame, y):
        self.model_ = clone(self.model).fit(X, y)
        self.classes_ = self.model_.classes_
        self.max_seen_ = float(np.nanmax(pd.to_numeric(X[self.column], errors="coerce").to_numpy(float)))
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        churn = self.model_.predict_proba(X)[:, 1]
        seen = pd.to_numeric(X[self.column], errors="coerce").to_numpy(float)
        beyond = np.nan_to_num(np.maximum(seen - self.max_seen_, 0.0))
        churn = 1.0 - (1.0 - churn) * np.exp(-beyond / self.scale_days)
        return np.column_stack([1.0 - churn, churn])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


def _pipeline(model) -> Pipeline:
    return model.model_ if isinstance(model, RecencyTail) else model


def empty_features(model, spec: ModelSpec) -> list[str]:
    keep = _pipeline(model).named_steps["drop_empty"].keep_
    return [f for f, k in zip(spec.features, keep) if not k]


def build_pipeline(spec: ModelSpec):
    algo = spec.section("algorithm")
    calibration = algo.get("calibration", {})
    booster = HistGradientBoostingClassifier(**algo.get("hyperparameters", {}), random_state=spec.seed)
    # Rows arrive sorted by customer, so unshuffled folds are blocks of customers: a customer's
    # snapshots never sit on both sides of a calibration fold.
    calibrated = CalibratedClassifierCV(booster, method=calibration.get("method", "sigmoid"),
                                        cv=KFold(n_splits=int(calibration.get("cv_folds", 3))))
    pipeline = Pipeline([
        ("features", FunctionTransformer(as_matrix, kw_args={"columns": spec.features})),
        ("drop_empty", DropEmptyColumns()),
        ("classifier", calibrated),
    ])
    tail = algo.get("recency_tail")
    if not tail:
        return pipeline
    return RecencyTail(pipeline, column=tail.get("column", "recency_days"),
                       scale_days=float(tail.get("scale_days", 90)))


def fit(spec: ModelSpec, train: pd.DataFrame):
    train = train.sort_values(["customer_id", "snapshot_date"], kind="mergesort")
    model = build_pipeline(spec)
    return model.fit(train, train[LABEL].astype(int).to_numpy())


def predict(model, frame: pd.DataFrame) -> np.ndarray:
    return model.predict_proba(frame)[:, 1]


def recency_baseline(frame: pd.DataFrame) -> np.ndarray:
    """The simplest churn score: days since the last order."""
    return pd.to_numeric(frame["recency_days"], errors="coerce").fillna(10_000).to_numpy(dtype=float)


def evaluate(model, spec: ModelSpec, eval_frame: pd.DataFrame) -> dict:
    y = eval_frame[LABEL].astype(int).to_numpy()
    p = predict(model, eval_frame)
    bins = int(spec.raw.get("evaluation", {}).get("lift_bins", 10))
    metrics = classification_metrics(y, p, bins)
    metrics["recency_baseline_roc_auc"] = safe_auc(y, recency_baseline(eval_frame))
    return metrics


def top_features(model, spec: ModelSpec, eval_frame: pd.DataFrame) -> list[dict]:
    """Permutation importance (drop in ROC AUC) on a sample of the evaluation snapshot."""
    cfg = spec.raw.get("evaluation", {})
    sample = eval_frame
    n = int(cfg.get("permutation_rows", 5000))
    if len(sample) > n:
        sample = sample.sample(n=n, random_state=spec.seed)
    y = sample[LABEL].astype(int).to_numpy()
    if len(np.unique(y)) < 2:
        return []
    # Calibration is a monotone map, so one fold's booster ranks customers like the calibrated
    # ensemble does: permuting its inputs measures the same AUC drop at a third of the cost.
    booster = _pipeline(model).named_steps["classifier"].calibrated_classifiers_[0].estimator
    used = [f for f in spec.features if f not in empty_features(model, spec)]
    result = permutation_importance(booster, as_matrix(sample, used), y, scoring="roc_auc",
                                    n_repeats=int(cfg.get("permutation_repeats", 3)),
                                    random_state=spec.seed)
    order = np.argsort(-result.importances_mean, kind="stable")
    return [{"feature": used[i], "importance": float(result.importances_mean[i])} for i in order]


def heuristic_probability(frame: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """The documented fallback while no model can be trained (model_version heuristic-v1).

    A customer buys at rate lam = orders / days since the first order (at least 30 days of
    exposure). If still active, P(no order in the horizon) = exp(-lam * horizon). Being overdue
    by more than twice the usual gap (1/lam) lowers the chance of being active:
    P(active) = exp(-max(0, recency - 2/lam) / horizon). Churn = 1 - P(active) * (1 - exp(-lam*H)).
    """
    orders = pd.to_numeric(frame["orders_lifetime"], errors="coerce").fillna(0).to_numpy(float)
    exposure = np.maximum(pd.to_numeric(frame["days_since_first_order"], errors="coerce").fillna(0)
                          .to_numpy(float), 30.0)
    recency = pd.to_numeric(frame["recency_days"], errors="coerce").to_numpy(float)
    recency = np.where(np.isnan(recency), exposure, recency)
    lam = np.maximum(orders, 1.0) / exposure
    p_active = np.exp(-np.maximum(0.0, recency - 2.0 / lam) / horizon_days)
    return 1.0 - p_active * (1.0 - np.exp(-lam * horizon_days))


def risk_bands(probability: np.ndarray, spec: ModelSpec) -> np.ndarray:
    bands = spec.raw.get("risk_bands", [])
    uppers = np.array([float(b["below"]) for b in bands])
    names = np.array([b["name"] for b in bands] + [bands[-1]["name"] if bands else "unknown"])
    idx = np.searchsorted(uppers, np.asarray(probability, dtype=float), side="right")
    return names[np.minimum(idx, len(names) - 1)]


def scores_frame(scoring: pd.DataFrame, probability: np.ndarray, spec: ModelSpec,
                 model_version: str, scored_at: dt.datetime,
                 repurchase_probability: np.ndarray | None = None) -> pd.DataFrame:
    """ml_churn_scores: every customer of the scoring snapshot; those without an order get
    no probability and the spec's no_orders_band. ``repurchase_probability``: P(an order in
    the repurchase horizon), null where no repurchase model exists."""
    has_orders = pd.to_numeric(scoring["orders_lifetime"], errors="coerce").fillna(0).to_numpy() > 0
    prob = np.where(has_orders, probability, np.nan)
    band = np.where(has_orders, risk_bands(np.nan_to_num(prob), spec), spec.raw.get("no_orders_band", "no_orders"))
    repurchase = (np.full(len(scoring), np.nan) if repurchase_probability is None
                  else np.where(has_orders, repurchase_probability, np.nan))
    return pd.DataFrame({
        "customer_id": scoring["customer_id"].astype(str).to_numpy(),
        "churn_probability": prob,
        "risk_band": band,
        "repurchase_30d_probability": repurchase.astype(float),
        "model_version": model_version,
        "scored_at": pd.Timestamp(scored_at),
        "as_of_date": scoring["snapshot_date"].to_numpy(),
    })
