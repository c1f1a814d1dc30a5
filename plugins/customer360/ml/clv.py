"""Customer lifetime value: BG/NBD for purchase frequency and survival, Gamma-Gamma for spend.

Inputs are the warehouse's purchases (marts.fct_orders, the same purchase rule as the
point-in-time features), summarised per customer as of a cutoff date in days:
``frequency`` = repeat purchase days, ``recency`` = days from the first to the last purchase,
``T`` = days from the first purchase to the cutoff, ``monetary_value`` = mean net amount of
the repeat purchase days (the Gamma-Gamma convention: the first purchase is left out).

Validation is by date, never by random rows: the model is fitted on a calibration period that
ends ``holdout_days`` before the scoring date, and its predicted repeat purchases of every
calibration customer in the holdout are compared with what they did (aggregate error,
per-customer correlation, a weekly cumulative curve for the run report). The model that scores
is then refitted on the whole history up to the scoring date.

Library choice (issue 21), measured on this machine (2 cores) on 2026-12, Python 3.11:

- pymc-marketing 0.19.2 (the maintained successor of lifetimes) is REJECTED: it cannot be
  installed into the project environment without changing a pinned package. Its dependency
  pymc 5.28.5 requires ``cachetools<7`` while requirements.lock pins cachetools 8.0.1 (for
  apache-airflow-core); ``uv pip install --dry-run pymc-marketing`` would uninstall 8.0.1 and
  install 6.2.6, and ``uv pip compile`` of requirements.in plus pymc-marketing resolves to
  cachetools 6.2.6 as well. It would also add 26 packages (pytensor, numba, llvmlite, arviz,
  h5py, ...): a fresh venv with it is 583 MB (``du -sh``). Fit times with ``fit(method="map")``:
  BetaGeoModel on CDNOW 13.7 s (the first fit compiles pytensor's C code), GammaGammaModel on
  CDNOW's 946 repeat buyers 3.5 s; on 100k resampled CDNOW customers 2.4 s (BG/NBD) and 1.3 s
  (Gamma-Gamma, 40,135 repeat buyers). Its MAP under the default priors is not the published
  maximum-likelihood fit (CDNOW: a 0.706, b 2.092 against 0.793, 2.426).
- lifetimes 0.11.3 is CHOSEN: it installs into the project environment adding only lifetimes
  and autograd (no pinned package changes; a fresh venv with it is 223 MB, lifetimes itself
  2.8 MB, autograd 0.3 MB), its fitters and summary utilities work with numpy 2.4.6, pandas
  3.1.1 and scipy 1.17.1, and it reproduces the published CDNOW maximum-likelihood parameters
  (tests/test_ml_clv.py). Fit times: BG/NBD on 100k resampled CDNOW customers 0.8 s,
  Gamma-Gamma on their 40,135 repeat buyers 0.1 s (benchmarks/bench_clv.py measures it on
  our own data). The risk is that it is unmaintained (last release 2020): its import sets a
  pandas option deprecated in pandas 3 (silenced below) and its ``lifetimes.datasets`` loader
  needs ``pkg_resources`` (the tests read the shipped CSV files directly). Everything we use
  of it is in this module, and the CDNOW tests fail if a future numpy/scipy breaks it.
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd

from customer360.ml.spec import ModelSpec
from customer360.ml.warehouse_io import columns_of, find_table

with warnings.catch_warnings():
    # lifetimes sets pandas' mode.chained_assignment at import; pandas 3 deprecated the option
    # (it has no effect there), and the warning would repeat in every ML run's log.
    warnings.filterwarnings("ignore", message=".*mode.chained_assignment.*")
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import summary_data_from_transaction_data

log = logging.getLogger(__name__)

BGNBD_PARAMS = ("r", "alpha", "a", "b")
GAMMA_GAMMA_PARAMS = ("p", "q", "v")
# point-in-time churn candidates (ml/churn.yml candidate_features)
CHURN_FEATURES = ("clv_p_alive", "clv_expected_purchases_90d")


class NotFitted(RuntimeError):
    """Too little data to fit, or the optimiser did not converge; the message says which."""


def load_purchases(con: duckdb.DuckDBPyConnection, end: dt.date) -> pd.DataFrame:
    """Purchase days of known customers on or before ``end``: customer_id, order_date,
    net_amount (the day's net sum). A purchase is what the features count as an order
    (order_kind 'purchase'; without that column gross_amount > 0)."""
    table = find_table(con, "fct_orders", ("marts",))
    if table is None:
        return pd.DataFrame({"customer_id": pd.Series(dtype=str), "order_date": pd.Series(dtype="datetime64[us]"),
                             "net_amount": pd.Series(dtype=float)})
    purchase = ("order_kind = 'purchase'" if "order_kind" in columns_of(con, table)
                else "coalesce(gross_amount, 0) > 0")
    return con.execute(f"""
        select cast(customer_id as varchar) as customer_id,
               cast(cast(ordered_at as date) as timestamp) as order_date,
               cast(sum(coalesce(net_amount, 0)) as double) as net_amount
        from {table}
        where customer_id is not null and ordered_at is not null and {purchase}
          and cast(ordered_at as date) <= ?
        group by 1, 2 order by 1, 2""", [end]).df()


def summarise(purchases: pd.DataFrame, cutoff: dt.date) -> pd.DataFrame:
    """frequency / recency / T / monetary_value in days of every customer with a purchase on or
    before ``cutoff``, indexed by customer_id."""
    rows = purchases[purchases.order_date <= pd.Timestamp(cutoff)]
    if rows.empty:
        return pd.DataFrame(columns=["frequency", "recency", "T", "monetary_value"],
                            index=pd.Index([], name="customer_id", dtype=str))
    return summary_data_from_transaction_data(rows, "customer_id", "order_date", monetary_value_col="net_amount",
                                              observation_period_end=pd.Timestamp(cutoff), freq="D")


@dataclass
class ValueModel:
    """The fitted parameters only: lifetimes' fitters keep their training frame (customer
    rows), which must not reach an artifact, so the fitters are rebuilt from these on use."""
    bgnbd: dict
    gamma_gamma: dict | None
    cutoff: dt.date
    customers: int
    repeat_buyers: int
    excluded_from_gamma_gamma: int = 0
    penalizers: dict = field(default_factory=dict)

    def _bgf(self) -> BetaGeoFitter:
        fitter = BetaGeoFitter(penalizer_coef=self.penalizers.get("bgnbd", 0.0))
        fitter.params_ = pd.Series(self.bgnbd)[list(BGNBD_PARAMS)]
        return fitter

    def _ggf(self) -> GammaGammaFitter | None:
        if self.gamma_gamma is None:
            return None
        fitter = GammaGammaFitter(penalizer_coef=self.penalizers.get("gamma_gamma", 0.0))
        fitter.params_ = pd.Series(self.gamma_gamma)[list(GAMMA_GAMMA_PARAMS)]
        return fitter

    def p_alive(self, summary: pd.DataFrame) -> np.ndarray:
        return np.asarray(self._bgf().conditional_probability_alive(
            summary.frequency.to_numpy(float), summary.recency.to_numpy(float), summary["T"].to_numpy(float)), float)

    def expected_purchases(self, days: float, summary: pd.DataFrame) -> np.ndarray:
        return np.asarray(self._bgf().conditional_expected_number_of_purchases_up_to_time(
            days, summary.frequency.to_numpy(float), summary.recency.to_numpy(float),
            summary["T"].to_numpy(float)), float)

    def expected_order_value(self, summary: pd.DataFrame) -> np.ndarray:
        """Gamma-Gamma's expected net amount of a purchase day. A customer without a repeat
        purchase, or whose repeat purchases net to nothing (returns), gets the population
        mean: the conditional expectation with frequency 0."""
        ggf = self._ggf()
        if ggf is None:
            return np.full(len(summary), np.nan)
        monetary = summary.monetary_value.to_numpy(float)
        usable = monetary > 0
        frequency = np.where(usable, summary.frequency.to_numpy(float), 0.0)
        return np.asarray(ggf.conditional_expected_average_profit(
            frequency, np.where(usable, monetary, 1.0)), float)


def _algorithm(spec: ModelSpec) -> dict:
    return spec.section("algorithm")


def fit(summary: pd.DataFrame, spec: ModelSpec, cutoff: dt.date) -> ValueModel:
    # The optimisers' line searches try extreme parameters where the likelihood overflows;
    # they reject those steps themselves and lifetimes checks convergence, so the numpy
    # warnings of those trials (hundreds a run) say nothing.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return _fit(summary, spec, cutoff)


def _fit(summary: pd.DataFrame, spec: ModelSpec, cutoff: dt.date) -> ValueModel:
    algo = _algorithm(spec)
    windows = spec.section("windows")
    if len(summary) < int(windows.get("min_customers", 1)):
        raise NotFitted(f"{len(summary)} customers with a purchase (< {windows.get('min_customers')})")
    gg_penalizer = float(algo.get("gamma_gamma_penalizer", 0.0))
    # When dropout is nearly the same for everyone the maximum likelihood lies at a -> inf,
    # b -> inf (a/(a+b) finite) and lifetimes reports no convergence; the L2 penalizer it
    # recommends then keeps a and b finite. Tried in order, the one used is recorded.
    penalizers = [float(algo.get("bgnbd_penalizer", 0.0))] + [float(x) for x in algo.get("bgnbd_fallback_penalizers", [])]
    bgf, errors = None, []
    for bg_penalizer in penalizers:
        try:
            bgf = BetaGeoFitter(penalizer_coef=bg_penalizer).fit(
                summary.frequency, summary.recency, summary["T"])
            break
        except Exception as exc:  # lifetimes raises ConvergenceError and friends
            errors.append(f"penalizer {bg_penalizer}: {str(exc).strip().splitlines()[0]}")
    if bgf is None:
        raise NotFitted("BG/NBD did not fit: " + "; ".join(errors))
    repeat = summary[summary.frequency > 0]
    positive = repeat[repeat.monetary_value > 0]
    gamma_gamma = None
    if len(positive) >= int(windows.get("min_repeat_buyers", 1)):
        try:
            ggf = GammaGammaFitter(penalizer_coef=gg_penalizer).fit(positive.frequency, positive.monetary_value)
            gamma_gamma = {k: float(ggf.params_[k]) for k in GAMMA_GAMMA_PARAMS}
        except Exception as exc:
            log.warning("clv: Gamma-Gamma did not fit (%s); order values are not predicted", exc)
    return ValueModel(bgnbd={k: float(bgf.params_[k]) for k in BGNBD_PARAMS}, gamma_gamma=gamma_gamma,
                      cutoff=cutoff, customers=len(summary), repeat_buyers=len(repeat),
                      excluded_from_gamma_gamma=len(repeat) - len(positive),
                      penalizers={"bgnbd": bg_penalizer, "gamma_gamma": gg_penalizer})


def holdout_evaluation(purchases: pd.DataFrame, spec: ModelSpec, scoring_date: dt.date) -> tuple[ValueModel, dict]:
    """Fit on the calibration period (to scoring_date - holdout_days) and compare each
    calibration customer's predicted repeat purchase days in the holdout with the actual ones.
    Customers whose first purchase lies in the holdout are not part of it (the model has not
    seen them); the metrics say how many there were."""
    windows = spec.section("windows")
    holdout = int(windows["holdout_days"])
    calibration_end = scoring_date - dt.timedelta(days=holdout)
    first = purchases.order_date.min() if len(purchases) else None
    min_calibration = int(windows.get("min_calibration_days", 0))
    if first is None or (calibration_end - first.date()).days < min_calibration:
        raise NotFitted(f"calibration period shorter than {min_calibration} days "
                        f"(purchases from {first.date() if first is not None else 'none'}, "
                        f"calibration to {calibration_end})")
    calibration = summarise(purchases, calibration_end)
    model = fit(calibration, spec, calibration_end)
    after = purchases[(purchases.order_date > pd.Timestamp(calibration_end))
                      & (purchases.order_date <= pd.Timestamp(scoring_date))]
    known = after[after.customer_id.isin(calibration.index)]
    actual = known.groupby("customer_id").size().reindex(calibration.index, fill_value=0).to_numpy(float)
    predicted = model.expected_purchases(holdout, calibration)
    total_actual, total_predicted = float(actual.sum()), float(predicted.sum())
    days_after = (known.order_date - pd.Timestamp(calibration_end)).dt.days.to_numpy()
    curve = []
    for day in list(range(7, holdout + 1, 7)) + ([holdout] if holdout % 7 else []):
        curve.append({"day": day, "actual": int((days_after <= day).sum()),
                      "predicted": round(float(model.expected_purchases(day, calibration).sum()), 3)})
    correlation = (float(np.corrcoef(actual, predicted)[0, 1])
                   if len(actual) > 1 and actual.std() > 0 and predicted.std() > 0 else None)
    metrics = {
        "calibration_end": calibration_end, "holdout_days": holdout,
        "holdout_customers": int(len(calibration)),
        "holdout_new_customers_not_scored": int(after.customer_id[~after.customer_id.isin(calibration.index)].nunique()),
        "holdout_actual_repeat_purchases": total_actual,
        "holdout_predicted_repeat_purchases": round(total_predicted, 3),
        # signed: > 0 the model over-predicts the holdout's repeat purchases
        "holdout_aggregate_error": (total_predicted - total_actual) / total_actual if total_actual else None,
        "holdout_abs_aggregate_error": abs(total_predicted - total_actual) / total_actual if total_actual else None,
        "holdout_mae": float(np.mean(np.abs(predicted - actual))) if len(actual) else None,
        "holdout_correlation": correlation,
        "holdout_curve": curve,
        "calibration_params": {**model.bgnbd, **(model.gamma_gamma or {}),
                               "bgnbd_penalizer": model.penalizers["bgnbd"]},
    }
    return model, metrics


def value_frame(model: ValueModel | None, summary: pd.DataFrame, version: str, scored_at: dt.datetime,
                as_of: dt.date) -> pd.DataFrame:
    """ml_customer_value: one row a customer with a purchase (predictions null without a model)."""
    n = len(summary)
    if model is None:
        p_alive = e90 = e365 = value = np.full(n, np.nan)
    else:
        p_alive = model.p_alive(summary)
        e90 = model.expected_purchases(90, summary)
        e365 = model.expected_purchases(365, summary)
        value = model.expected_order_value(summary)
        # a degenerate fit (e.g. nobody seen leaving) can give inf/NaN: published as null
        p_alive, e90, e365, value = (np.where(np.isfinite(x), x, np.nan) for x in (p_alive, e90, e365, value))
    return pd.DataFrame({
        "customer_id": summary.index.astype(str),
        "frequency": summary.frequency.to_numpy(dtype="int64"),
        "recency_days": summary.recency.to_numpy(dtype="int64"),
        "tenure_days": summary["T"].to_numpy(dtype="int64"),
        "monetary_value": summary.monetary_value.to_numpy(float),
        "p_alive": p_alive,
        "expected_purchases_90d": e90,
        "expected_purchases_365d": e365,
        "expected_avg_order_value": value,
        # undiscounted: a year is short enough that a discount rate would mostly add a knob
        "clv_365d": e365 * value,
        "model_version": version,
        "scored_at": pd.Timestamp(scored_at),
        "as_of_date": as_of,
    })


def snapshot_features(purchases: pd.DataFrame, snapshots: list[dt.date], spec: ModelSpec) -> pd.DataFrame:
    """The churn model's candidate CLV features, point in time: for each snapshot date S a
    BG/NBD fitted on the purchases up to S alone gives p_alive and expected purchases in the
    next 90 days of every customer with a purchase by S. A snapshot too small to fit gives
    no rows (the features are missing there, which the booster handles)."""
    frames = []
    for snapshot in sorted(set(snapshots)):
        summary = summarise(purchases, snapshot)
        try:
            model = fit(summary, spec, snapshot)
        except NotFitted as exc:
            log.info("clv features for %s: %s", snapshot, exc)
            continue
        frames.append(pd.DataFrame({
            "customer_id": summary.index.astype(str), "snapshot_date": pd.Timestamp(snapshot),
            "clv_p_alive": model.p_alive(summary),
            "clv_expected_purchases_90d": model.expected_purchases(90, summary)}))
    if not frames:
        return pd.DataFrame(columns=["customer_id", "snapshot_date", *CHURN_FEATURES])
    return pd.concat(frames, ignore_index=True)


def with_snapshot_features(frame: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (customer_id, snapshot_date, ...) with the CLV features joined, row order kept."""
    out = frame.drop(columns=[c for c in CHURN_FEATURES if c in frame.columns])
    if out.empty:
        return out.assign(**{c: pd.Series(dtype=float) for c in CHURN_FEATURES})
    keys = features.assign(snapshot_date=pd.to_datetime(features.snapshot_date).dt.date)
    left = out.assign(_date=pd.to_datetime(out.snapshot_date).dt.date, _order=np.arange(len(out)))
    merged = left.merge(keys.rename(columns={"snapshot_date": "_date"}), on=["customer_id", "_date"], how="left")
    return merged.sort_values("_order").drop(columns=["_date", "_order"]).set_index(out.index)
