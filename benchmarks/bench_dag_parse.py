"""How long Airflow takes to parse dags/c360_daily.py (the issue asks for well under a second).

Airflow itself is imported first: its import cost is paid once per process by the
dag-processor, not per parse. Prints the median of several DagBag parses."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="c360-bench-airflow-"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    t0 = time.perf_counter()
    import great_expectations  # noqa: F401  (before airflow: STACK.md)
    from airflow.dag_processing.dagbag import DagBag
    imported = time.perf_counter() - t0
    times = []
    for _ in range(7):
        t = time.perf_counter()
        bag = DagBag(dag_folder=str(REPO / "dags"))
        times.append(time.perf_counter() - t)
        assert not bag.import_errors, bag.import_errors
    print(f"airflow + GX import (once per process): {imported:.2f} s")
    print(f"DagBag parse of dags/ (median of {len(times)}): {statistics.median(times) * 1000:.0f} ms "
          f"(min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms), "
          f"{len(bag.dag_ids)} DAG(s), {sum(len(d.tasks) for d in bag.dags.values())} tasks")


if __name__ == "__main__":
    main()
