"""Score identity resolution against the simulator's ground truth and print it.

    C360_HOME=... python benchmarks/bench_identity.py            # score the built warehouse
    C360_HOME=... python benchmarks/bench_identity.py --build    # build all layers first

Reads $C360_HOME/simulation/ground_truth/keys.parquet and the warehouse's identity tables;
prints pairwise precision / recall / F1 (linkable records and all records) and the counts
behind them, then one JSON line for scripts.
"""

from __future__ import annotations

import argparse
import json
import time

from rich.console import Console
from rich.table import Table

from customer360.demo.identity_eval import pairwise_scores
from customer360.core.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", action="store_true", help="build the warehouse first")
    args = parser.parse_args()
    settings = get_settings()
    console = Console()
    if args.build:
        from customer360.warehouse.dbt_runner import build_warehouse
        started = time.perf_counter()
        build_warehouse(settings, tests=False)
        console.print(f"warehouse built in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    scores = pairwise_scores(settings)
    elapsed = time.perf_counter() - started

    table = Table(title=f"identity resolution vs ground truth ({settings.home})")
    for col in ("scope", "records", "true pairs", "predicted pairs", "correct pairs",
                "precision", "recall", "F1"):
        table.add_column(col, justify="left" if col == "scope" else "right")
    for scope, s in (("linkable", scores), ("all", scores["all"])):
        table.add_row(scope, str(s["records"]), str(s["true_pairs"]), str(s["predicted_pairs"]),
                      str(s["correct_pairs"]), f"{s['precision']:.4f}", f"{s['recall']:.4f}",
                      f"{s['f1']:.4f}")
    console.print(table)
    console.print(f"records by type: {scores['by_record_type']}; scored in {elapsed:.2f} s")
    print(json.dumps({k: v for k, v in scores.items()}, default=str))


if __name__ == "__main__":
    main()
