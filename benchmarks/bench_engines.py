"""The dbt build of the whole warehouse on DuckDB and on Spark local[N], same home (issue 20.5;
never part of the tests).

    python benchmarks/bench_engines.py --scale 10k --days 30
    python benchmarks/bench_engines.py --scale 100k --days 30

Simulates ``people x days`` under $C360_BENCH_HOME (default
$C360_HOME/bench_engines/<scale>x<days>), delivers everything, serves the CRM, loads the raw
zone once (the extracts are the same for both engines), then times, each in its own child
process so that each engine starts cold as it would in a daily run:

* duckdb: ``dbt build`` of every layer, models only (no data tests);
* spark: the same project through dbt-spark's session method on local[N]
  (customer360.warehouse.spark_engine.build_warehouse, models only), JVM start included, and
  the JVM start alone (a session that runs ``select 1``), so the build's own share is visible.

Results go to ``benchmarks/results/engines-<scale>x<days>.json`` and are printed as a markdown
row for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCALES = {"1k": 1_000, "10k": 10_000, "100k": 100_000}
START = dt.date(2025, 1, 1)

CHILD = r"""
import dataclasses, datetime as dt, json, sys, time
from customer360.core.settings import get_settings
engine, day = sys.argv[1], dt.date.fromisoformat(sys.argv[2])
s = get_settings()
t0 = time.monotonic()
if engine == "duckdb":
    from customer360.warehouse import dbt_runner
    dbt_runner.build_warehouse(s, logical_date=day, tests=False)
elif engine == "spark":
    from customer360.warehouse import spark_engine
    spark_engine.build_warehouse(dataclasses.replace(s, engine="spark"), logical_date=day)
else:  # the JVM and the session alone
    from customer360.warehouse import spark_engine
    spark_engine.spark_session(dataclasses.replace(s, engine="spark")).sql("select 1").collect()
wall = time.monotonic() - t0
rss_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print("@@RESULT@@" + json.dumps({"wall_s": round(wall, 1), "peak_rss_mb": round(rss_kb / 1024)}))
"""


def timed(engine: str, day: dt.date, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, engine, day.isoformat()], env=env,
                          capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("@@RESULT@@")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{engine} build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("@@RESULT@@"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="10k")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--home", type=Path, default=None)
    ap.add_argument("--spark-master", default="local[2]")
    args = ap.parse_args(argv)

    from customer360.demo.crm_server import start_server
    from customer360.demo.simulator import SimulationConfig, deliver, simulate

    people = SCALES[args.scale]
    home = args.home or Path(os.environ.get("C360_BENCH_HOME") or
                             Path(os.environ.get("C360_HOME", "data")) / "bench_engines"
                             ) / f"{args.scale}x{args.days}"
    token = "bench-" + secrets.token_hex(8)
    env = dict(os.environ, C360_HOME=str(home), C360_PII_KEY="bench-pii-key-0123456789abcdef",
               C360_CRM_TOKEN=token, C360_SPARK_MASTER=args.spark_master)
    env.pop("C360_LANDING", None)
    os.environ.update(env)
    from customer360.core.settings import get_settings
    from customer360.pipeline import stages

    marker = home / ".bench_engines"
    if home.exists() and any(home.iterdir()):
        if not marker.exists():  # only ever wipe a folder this script made
            raise SystemExit(f"{home} is not empty and was not made by this benchmark")
        import shutil
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    marker.touch()
    settings = get_settings()
    last = START + dt.timedelta(days=args.days - 1)
    result: dict = {"scale": args.scale, "people": people, "days": args.days,
                    "spark_master": args.spark_master, "cpus": os.cpu_count(),
                    "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    print(f"simulating {people:,} people x {args.days} days into {home}", flush=True)
    cfg = SimulationConfig.from_overrides(people=people, days=args.days, start=START, seed=42,
                                          overrides=[])
    simulate(cfg, landing=settings.landing, sim_dir=settings.simulation_dir, progress=False,
             deliver_all=False)
    deliver(settings.simulation_dir, settings.landing, through=last + dt.timedelta(days=3))
    with start_server(settings.simulation_dir / "crm", token=token) as server:
        env["C360_CRM_BASE_URL"] = server.base_url
        os.environ["C360_CRM_BASE_URL"] = server.base_url
        landed = sum(stages.extract(source, last, get_settings())["landed"]
                     for source in ("crm", "web", "pos"))
    result["records_landed"] = landed
    print(f"  {landed:,} records landed", flush=True)
    for engine in ("duckdb", "spark_session", "spark"):
        result[engine] = timed(engine, last, env)
        print(f"  {engine}: {result[engine]}", flush=True)
    result["spark_over_duckdb"] = round(result["spark"]["wall_s"] / result["duckdb"]["wall_s"], 2)
    out = HERE / "results" / f"engines-{args.scale}x{args.days}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| {args.scale} x {args.days} d | {landed:,} | {result['duckdb']['wall_s']} s | "
          f"{result['spark']['wall_s']} s ({args.spark_master}; JVM and session "
          f"{result['spark_session']['wall_s']} s) | {result['spark_over_duckdb']}x |")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
