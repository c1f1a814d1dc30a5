"""Benchmark of the ML stage on synthetic marts (never part of the tests).

    C360_BENCH_SCALE=small|medium|large python benchmarks/bench_ml.py
    (small: 10k people, medium: 100k, large: 300k; 240 days of history)

Times: generating and writing the marts, building the ml feature models (the dbt SQL rendered
straight into DuckDB; a dbt invocation adds its ~5 s start-up), a first run_ml (trains all three
models, scores everyone) and a next-day run_ml (scores with the current models only). Prints
the churn metrics, including the share of the simulator's ceiling, and the peak memory.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import duckdb

SCALES = {"small": 10_000, "medium": 100_000, "large": 300_000}


def main() -> int:
    scale = os.environ.get("C360_BENCH_SCALE", "medium")
    people = SCALES.get(scale)
    if people is None:
        print(f"C360_BENCH_SCALE must be one of {', '.join(SCALES)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="c360-bench-ml-") as tmp:
        home = Path(tmp)
        os.environ["C360_HOME"] = str(home)
        from customer360.demo.ml_dbt_render import build_ml_models
        from customer360.ml.pipeline import run_ml
        from customer360.demo.ml_oracle import SimulatorCeiling
        from customer360.demo.ml_synthetic import (SyntheticConfig, generate, write_ground_truth,
                                              write_warehouse)
        from customer360.core.settings import get_settings

        cfg = SyntheticConfig(people=people, days=240, seed=7)
        timings: dict[str, float] = {}
        t = time.monotonic()
        data = generate(cfg)
        timings["generate"] = time.monotonic() - t
        t = time.monotonic()
        warehouse = home / "warehouse" / "c360.duckdb"
        write_warehouse(data, warehouse)
        write_ground_truth(data, home / "simulation")
        timings["write_marts"] = time.monotonic() - t
        sizes = {name: len(frame) for name, frame in data.tables.items()}
        del data

        t = time.monotonic()
        with duckdb.connect(str(warehouse)) as con:
            build_ml_models(con, {"as_of_date": str(cfg.as_of)})
            feature_rows = con.execute("select count(*) from ml.ml_customer_features").fetchone()[0]
            view_rows = con.execute("select count(*) from ml.ml_product_views").fetchone()[0]
        timings["build_features"] = time.monotonic() - t

        settings = get_settings()
        t = time.monotonic()
        ceiling = [SimulatorCeiling(settings.simulation_dir)]
        first = run_ml(settings, cfg.as_of, churn_evaluators=ceiling)
        timings["run_ml_train_and_score"] = time.monotonic() - t
        t = time.monotonic()
        run_ml(settings, cfg.as_of + dt.timedelta(days=1), churn_evaluators=ceiling)
        timings["run_ml_score_only"] = time.monotonic() - t

    churn = first["models"]["churn"]["metrics"]
    report = {
        "scale": scale, "people": people, "days": cfg.days, "threads": settings.duckdb_threads,
        "marts_rows": sizes, "feature_rows": feature_rows, "product_view_rows": view_rows,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "stage_seconds": {name: m["seconds"] for name, m in first["models"].items()},
        "churn": {k: churn.get(k) for k in ("rows", "roc_auc", "pr_auc", "brier", "recency_baseline_roc_auc",
                                           "oracle_method", "model_roc_auc_vs_truth", "oracle_roc_auc",
                                           "recency_baseline_roc_auc_vs_truth", "auc_share_of_ceiling",
                                           "fit_seconds")},
        "segments": first["models"]["segments"]["metrics"].get("k"),
        "recommendations": {k: first["models"]["recommendations"]["metrics"].get(k)
                            for k in ("hit_rate_at_k", "popularity_hit_rate_at_k", "eval_customers")},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
