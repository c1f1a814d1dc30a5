"""Fit time of the CLV model (customer360.ml.clv: lifetimes BG/NBD + Gamma-Gamma) at scale.

    python benchmarks/bench_clv.py                 # 100k customers (C360_BENCH_SCALE=medium)
    C360_BENCH_SCALE=small python benchmarks/bench_clv.py   # 10k

Purchases are drawn from a BG/NBD-like process (gamma purchase rates, beta dropout after each
purchase, gamma spend; parameters in TRUTH) over 365 days of sign-ups and a 730-day history.
It is a load generator only: purchases on the same day merge into one purchase day, so the
fitted parameters are not expected to equal TRUTH (the CDNOW tests check the fit). Measured:
the summary of the purchase days (frequency/recency/T), the BG/NBD fit, the Gamma-Gamma fit,
and the holdout validation (a calibration fit plus predictions) as the ML stage runs them.
Writes benchmarks/results/clv-<n>.json.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "plugins"))

from customer360.ml import clv  # noqa: E402
from customer360.ml.spec import load_specs, repo_root  # noqa: E402

SCALES = {"small": 10_000, "medium": 100_000, "large": 300_000}
TRUTH = {"r": 0.8, "alpha": 30.0, "a": 0.8, "b": 2.5, "p": 6.0, "q": 4.0, "v": 15.0}


def simulate(n: int, days: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lam = rng.gamma(TRUTH["r"], 1 / TRUTH["alpha"], n)
    drop = rng.beta(TRUTH["a"], TRUTH["b"], n)
    nu = rng.gamma(TRUTH["p"], 1 / TRUTH["v"], n)  # spend rate: mean amount p / nu ... per customer
    start = rng.integers(0, days, n)
    ids, dates = [], []
    t = start.astype(float)
    alive = np.ones(n, bool)
    while alive.any():
        idx = np.flatnonzero(alive)
        ids.append(idx)
        dates.append(np.floor(t[idx]).astype(int))
        leave = rng.random(idx.size) < drop[idx]
        t[idx] += rng.exponential(1 / lam[idx])
        alive[idx[leave]] = False
        alive[idx[t[idx] >= 2 * days]] = False
    who, day = np.concatenate(ids), np.concatenate(dates)
    keep = day < 2 * days
    who, day = who[keep], day[keep]
    amount = rng.gamma(TRUTH["p"], 1 / nu[who]) * 10
    frame = pd.DataFrame({"customer_id": who.astype(str), "order_date": pd.Timestamp("2024-01-01")
                          + pd.to_timedelta(day, unit="D"), "net_amount": amount})
    return frame.groupby(["customer_id", "order_date"], as_index=False).net_amount.sum()


def main() -> int:
    n = SCALES[os.environ.get("C360_BENCH_SCALE", "medium")]
    days = 365
    spec = load_specs(repo_root() / "models")["customer_value"]
    purchases = simulate(n, days)
    scoring = (pd.Timestamp("2024-01-01") + pd.Timedelta(days=2 * days - 1)).date()
    out = {"customers": n, "purchase_days": len(purchases)}
    t = time.perf_counter()
    summary = clv.summarise(purchases, scoring)
    out["summary_seconds"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    model = clv.fit(summary, spec, scoring)
    out["fit_seconds_bgnbd_and_gamma_gamma"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    _, metrics = clv.holdout_evaluation(purchases, spec, scoring)
    out["holdout_evaluation_seconds"] = round(time.perf_counter() - t, 2)
    out["repeat_buyers"] = model.repeat_buyers
    out["fitted"] = {**model.bgnbd, **(model.gamma_gamma or {})}
    out.update({k: metrics[k] for k in ("holdout_correlation", "holdout_aggregate_error", "holdout_customers")})
    out["measured_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    print(json.dumps(out, indent=1))
    (HERE / "results" / f"clv-{n // 1000}k.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
