"""`make bench`: issue 19's targets measured side by side, then every other benchmark script in
this folder (never part of the tests), and the targets table of BENCHMARKS.md rewritten from
the results (benchmarks/targets.py).

C360_BENCH_SCALE chooses the pipeline runs (each ``bench_pipeline.py`` with its arguments):

- ``small``: 1k x 30 with the day through Airflow (the small-day target), 10k x 30/60/90
  (incremental day as history grows, at a size a shared machine can take);
- ``medium`` (default): 100k x 365 with Airflow's overhead, 100k x 90 and x 180 (incremental
  day flat as history grows), 10k x 365 (a scale point);
- ``large``: medium, then 300k x 365 and 1M x 365 (peak RSS and per-stage slopes).

``python benchmarks/run_all.py pipeline`` runs the pipeline runs only; other names choose
bench_<name>.py scripts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

PLANS: dict[str, list[list[str]]] = {
    "small": [["--scale", "1k", "--days", "30", "--airflow"],
              ["--scale", "10k", "--days", "30"], ["--scale", "10k", "--days", "60"],
              ["--scale", "10k", "--days", "90"]],
    "medium": [["--scale", "100k", "--days", "365", "--airflow"],
               ["--scale", "100k", "--days", "90"], ["--scale", "100k", "--days", "180"],
               ["--scale", "10k", "--days", "365"]],
}
PLANS["large"] = PLANS["medium"] + [["--scale", "300k", "--days", "365"], ["--scale", "1m", "--days", "365"]]


def _run(script: Path, args: list[str]) -> int:
    shown = " ".join([script.name, *args])
    print(f"\n=== {shown} ===", flush=True)
    t0 = time.monotonic()
    rc = subprocess.call([sys.executable, str(script), *args])
    print(f"=== {shown}: exit {rc} in {time.monotonic() - t0:.1f} s ===", flush=True)
    return rc


def main(argv: list[str]) -> int:
    only = set(argv)
    plan_name = os.environ.get("C360_BENCH_SCALE", "medium")
    if plan_name not in PLANS:
        raise SystemExit(f"C360_BENCH_SCALE must be one of {', '.join(PLANS)}, got {plan_name!r}")
    failures = 0
    if not only or "pipeline" in only:
        for args in PLANS[plan_name]:
            failures += _run(HERE / "bench_pipeline.py", args) != 0
        sys.path.insert(0, str(HERE))
        import targets

        print(targets.write(f"C360_BENCH_SCALE={plan_name} make bench"))
    for script in sorted(HERE.glob("bench_*.py")):
        if script.stem in ("bench_pipeline", "bench_dbt_parse"):
            continue  # the plan above; bench_dbt_parse needs a built home (--home)
        if only and script.stem not in only and script.stem.removeprefix("bench_") not in only:
            continue
        failures += _run(script, []) != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
