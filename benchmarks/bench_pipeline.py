"""The whole pipeline, stage by stage, at several scales (issue 10.3; never part of the tests).

    python benchmarks/bench_pipeline.py --scale 10k --days 365
    python benchmarks/bench_pipeline.py --scale 100k --days 90

For one scale it simulates ``people x days`` under $C360_BENCH_HOME (default
$C360_HOME/bench_pipeline/<scale>x<days>), delivers every landing file up to the day before the
last one, serves the CRM on 127.0.0.1, and then:

* full refresh: every stage of the DAG for the day before the last, each stage timed in its own
  child process (wall time, records per second, peak RSS of that process and its children);
* bare read: DuckDB alone reading every landing file (web NDJSON + POS CSV, columns as text),
  the physical limit on this machine; the ratio full pipeline / bare read (target < 3x);
* incremental day: the last day's files delivered and every stage run for the last day; the
  ratio incremental / full refresh (target < 5% at one year of history).

Peak memory is the stage process's high-water RSS (VmHWM); the dbt and ML work runs inside it.
Stages run through :mod:`customer360.pipeline.stages` (the functions the DAG's tasks call), not through
Airflow, so Airflow's own start-up (about 30 s a run) is not part of the figures. Results are
appended to ``benchmarks/results/pipeline-<scale>x<days>.json`` and printed as a markdown table
for BENCHMARKS.md. Identity resolution next to Splink is ``benchmarks/bench_splink.py`` (its
own virtualenv, never the project's).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCALES = {"1k": 1_000, "10k": 10_000, "100k": 100_000, "300k": 300_000, "1m": 1_000_000}
START = dt.date(2025, 1, 1)

# The same day through Airflow (`airflow dags test`, as `c360 run` does), in a child process
# with the copied home; Airflow's metadata DB is made before the clock starts.
AIRFLOW_CHILD = r"""
__file__ = "<bench_pipeline airflow child>"  # as in STAGE_CHILD
import datetime as dt, json, sys, time
from customer360.core.settings import get_settings
from customer360.pipeline.airflow import ensure_airflow, run_dag
day = dt.date.fromisoformat(sys.argv[1])
s = get_settings()
ensure_airflow(s)
t0 = time.monotonic()
res = run_dag(s, day)
print("@@RESULT@@" + json.dumps({"wall": time.monotonic() - t0, "success": res.success,
                                 "log": str(res.log_path)}))
"""

# One child process a stage: its peak RSS is then the stage's own, not the benchmark's.
STAGE_CHILD = r"""
# pyspark.sql.connect (imported by Great Expectations when pyspark is installed) calls
# sys.exit(0) when __main__ has no __file__, taking `python -c` for its doctest runner.
__file__ = "<bench_pipeline stage child>"
import datetime as dt, json, sys, time
from customer360 import pipeline
from customer360.core.settings import get_settings
stage, day = sys.argv[1], dt.date.fromisoformat(sys.argv[2])
s = get_settings()
t0 = time.monotonic()
out = pipeline.run_stage(stage, day, "bench", s)
wall = time.monotonic() - t0
# VmHWM, not getrusage: ru_maxrss is inherited across fork+exec, so a child of a large
# parent would report the parent's peak.
rss_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print("@@RESULT@@" + json.dumps({"wall": wall, "peak_rss_mb": rss_kb / 1024, "out": out}, default=str))
"""

# The pipeline's own stages, in its order, less the gates (benchmarks/bench_gates.py) and the
# privacy and report steps, which do nothing measurable on a day without erasures. The simulated
# CRM archives contacts, though, and the first erasure stage to run erases every archived
# contact of the history: with --airflow the full refresh therefore runs every stage too (the
# figures still sum the measured ones), so the incremental day on both sides is one day's work.
UNMEASURED = ("erasure", "compact_warehouse", "audiences", "report")


def measured_stages() -> tuple[str, ...]:
    from customer360 import pipeline

    return tuple(st.name for st in pipeline.STAGES
                 if not st.name.startswith("gate_") and st.name not in UNMEASURED)


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_kb / 2**20, 1),
            "python": platform.python_version(), "kernel": platform.release()}


def run_stage(stage: str, day: dt.date, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", STAGE_CHILD, stage, day.isoformat()], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage} failed:\n{proc.stderr[-4000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("@@RESULT@@"))
    return json.loads(line.removeprefix("@@RESULT@@"))


def stage_records(stage: str, out: dict) -> int:
    """Records a stage handled: rows read for extracts, rows written for the others."""
    if stage.startswith("extract_"):
        return int(out.get("read", 0))
    if stage == "publish":
        return sum((out.get("tables") or {}).values())
    return 0


def warehouse_rows(settings) -> int:
    import duckdb

    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
        return sum(con.execute(f'SELECT count(*) FROM "{s}"."{t}"').fetchone()[0] for s, t in tables)
    finally:
        con.close()


def dbt_breakdown(home: Path, stage: str, top: int = 6) -> dict | None:
    """Where a dbt stage's time went: dbt's own elapsed time (the rest of the stage's wall time
    is Python start-up, dbt's parse and, for ml, the models) and its slowest nodes."""
    from customer360 import pipeline
    from customer360.core.layers import COMBINED, DBT_LAYERS
    from customer360.core.settings import get_settings

    layer = pipeline.stage(stage).layer
    if layer in COMBINED:
        layer = COMBINED[layer][-1]  # its results are kept as each of its layers'
    if layer not in DBT_LAYERS:
        return None
    os.environ["C360_HOME"] = str(home)
    path = get_settings().dbt_results_path(layer)
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    nodes = sorted(data.get("results", []), key=lambda r: r.get("execution_time") or 0, reverse=True)
    return {"dbt_elapsed_s": round(data.get("elapsed_time") or 0, 2),
            "nodes_s": round(sum(r.get("execution_time") or 0 for r in nodes), 2),
            "slowest": [[r["unique_id"].split(".")[-1] if not r["unique_id"].startswith("test.")
                         else r["unique_id"].split(".")[2], round(r["execution_time"], 2)]
                        for r in nodes[:top]]}


def run_pipeline(day: dt.date, env: dict, label: str, stages: tuple[str, ...] | None = None) -> list[dict]:
    rows = []
    for stage in stages or measured_stages():
        res = run_stage(stage, day, env)
        n = stage_records(stage, res["out"])
        rows.append({"run": label, "stage": stage, "wall_s": round(res["wall"], 2), "records": n,
                     "records_per_s": round(n / res["wall"]) if n and res["wall"] else None,
                     "peak_rss_mb": round(res["peak_rss_mb"]),
                     "dbt": dbt_breakdown(Path(env["C360_HOME"]), stage)})
        print(f"  {label:11} {stage:13} {res['wall']:8.1f} s  {n:>11,} records  "
              f"{res['peak_rss_mb']:7.0f} MB", flush=True)
    return rows


def run_airflow(day: dt.date, env: dict) -> dict:
    """The day through Airflow; per-task seconds from the stages' own progress events."""
    from customer360.core.settings import get_settings
    from customer360.pipeline import progress

    proc = subprocess.run([sys.executable, "-c", AIRFLOW_CHILD, day.isoformat()], env=env,
                          capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("@@RESULT@@")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"the Airflow run failed:\n{proc.stderr[-4000:]}")
    out = json.loads(line.removeprefix("@@RESULT@@"))
    if not out["success"]:
        raise RuntimeError(f"the DAG run failed; see {out['log']}")
    saved = os.environ.get("C360_HOME")
    os.environ["C360_HOME"] = env["C360_HOME"]
    try:
        snap = progress.Snapshot.of(progress.read_events(progress.events_path(get_settings(), day)))
    finally:
        os.environ["C360_HOME"] = saved or ""
    out["tasks_s"] = {k: round(v, 2) for k, v in snap.done.items()}
    if not out["tasks_s"]:
        raise RuntimeError(f"Airflow reported success but ran no task; see {out['log']}")
    return out


def floor(landing: Path, out_dir: Path) -> dict:
    """DuckDB alone reading every landing file and writing it once to Parquet: the issue's
    floor for the full refresh (read, parse, write; no typing, no deduplication)."""
    import duckdb

    out_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("set enable_progress_bar = false")
    t0 = time.monotonic()
    from customer360.core.duck import sql_str

    # paths inline: COPY ... TO does not take a prepared parameter for its target
    con.execute(
        "COPY (SELECT * FROM read_json(" + sql_str(str(landing / "web" / "events" / "date=*" / "*.jsonl.gz"))
        + ", format='newline_delimited', columns={'messageId': 'VARCHAR', "
        "'type': 'VARCHAR', 'event': 'VARCHAR', 'anonymousId': 'VARCHAR', 'userId': 'VARCHAR', "
        "'timestamp': 'VARCHAR', 'receivedAt': 'VARCHAR', 'context': 'JSON', 'properties': 'JSON', "
        "'traits': 'JSON'}, ignore_errors=true)) TO " + sql_str(str(out_dir / "web.parquet"))
        + " (FORMAT parquet, COMPRESSION zstd)")
    con.execute("COPY (SELECT * FROM read_csv(" + sql_str(str(landing / "pos" / "date=*" / "*.csv"))
                + ", all_varchar=true, ignore_errors=true, union_by_name=true, encoding='utf-8')) TO "
                + sql_str(str(out_dir / "pos.parquet")) + " (FORMAT parquet, COMPRESSION zstd)")
    wall = time.monotonic() - t0
    con.close()
    import shutil
    shutil.rmtree(out_dir, ignore_errors=True)
    return {"wall_s": round(wall, 2)}


def bare_read(landing: Path) -> dict:
    """DuckDB alone reading every landing file into memory: the floor for any loader."""
    import duckdb

    con = duckdb.connect()
    con.execute("set enable_progress_bar = false")
    t0 = time.monotonic()
    web = con.execute(
        "SELECT count(*) FROM read_json(?, format='newline_delimited', columns={'messageId': 'VARCHAR', "
        "'type': 'VARCHAR', 'event': 'VARCHAR', 'anonymousId': 'VARCHAR', 'userId': 'VARCHAR', "
        "'timestamp': 'VARCHAR', 'receivedAt': 'VARCHAR', 'context': 'JSON', 'properties': 'JSON', "
        "'traits': 'JSON'}, ignore_errors=true)",
        [str(landing / "web" / "events" / "date=*" / "*.jsonl.gz")]).fetchone()[0]
    pos = con.execute("SELECT count(*) FROM read_csv(?, all_varchar=true, ignore_errors=true, "
                      "union_by_name=true, encoding='utf-8')",
                      [str(landing / "pos" / "date=*" / "*.csv")]).fetchone()[0]
    wall = time.monotonic() - t0
    con.close()
    return {"wall_s": round(wall, 2), "web_rows": web, "pos_rows": pos}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="10k")
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--home", type=Path, default=None)
    ap.add_argument("--airflow", action="store_true",
                    help="also run the incremental day through Airflow on a copy of the home "
                         "(Airflow's overhead; the CLI side then runs every stage, gates too)")
    args = ap.parse_args(argv)

    from customer360.demo.crm_server import start_server
    from customer360.demo.simulator import SimulationConfig, deliver, simulate

    people = SCALES[args.scale]
    home = args.home or Path(os.environ.get("C360_BENCH_HOME") or
                             Path(os.environ.get("C360_HOME", "data")) / "bench_pipeline"
                             ) / f"{args.scale}x{args.days}"
    token = "bench-" + secrets.token_hex(8)
    env = dict(os.environ, C360_HOME=str(home), C360_PII_KEY="bench-pii-key-0123456789abcdef",
               C360_CRM_TOKEN=token)
    env.pop("C360_LANDING", None)
    os.environ.update(env)
    from customer360.core.settings import get_settings

    marker = home / ".bench_pipeline"
    if home.exists() and any(home.iterdir()):
        # Only ever wipe a folder this script made: --home may point anywhere.
        if not marker.exists():
            raise SystemExit(f"{home} is not empty and was not made by this benchmark; pick another --home")
        import shutil
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    marker.touch()
    settings = get_settings()
    start = START
    if args.airflow:
        # The DAG's start_date is 2026-01-01 and Airflow marks a run for an earlier logical date
        # successful without running a task: the days end on 2026-01-02 so the Airflow day is one.
        start = dt.date(2026, 1, 2) - dt.timedelta(days=args.days - 1)
    last = start + dt.timedelta(days=args.days - 1)
    result: dict = {"scale": args.scale, "people": people, "days": args.days, "machine": machine(),
                    "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    print(f"simulating {people:,} people x {args.days} days into {home}", flush=True)
    t0 = time.monotonic()
    cfg = SimulationConfig.from_overrides(people=people, days=args.days, start=start, seed=42,
                                          overrides=[])
    simulate(cfg, landing=settings.landing, sim_dir=settings.simulation_dir, progress=False,
             deliver_all=False)
    result["simulate_s"] = round(time.monotonic() - t0, 1)
    # Everything visible up to the day before the last: the full refresh's history.
    deliver(settings.simulation_dir, settings.landing, through=last - dt.timedelta(days=1))
    du = subprocess.run(["du", "-sb", str(settings.landing)], capture_output=True, text=True)
    result["landing_bytes"] = int(du.stdout.split()[0])
    print(f"  simulated in {result['simulate_s']} s, landing {result['landing_bytes'] / 2**20:.0f} MiB")

    from customer360 import pipeline

    with start_server(settings.simulation_dir / "crm", token=token) as server:
        env["C360_CRM_BASE_URL"] = server.base_url
        full = run_pipeline(last - dt.timedelta(days=1), env, "full",
                            stages=pipeline.STAGE_NAMES if args.airflow else None)
        result["bare_read"] = bare_read(settings.landing)
        print(f"  bare DuckDB read of the landing: {result['bare_read']}", flush=True)
        result["floor"] = floor(settings.landing, home / "floor")
        print(f"  floor (DuckDB reads every landing file, writes it once to Parquet): "
              f"{result['floor']}", flush=True)
        af_env = None
        if args.airflow:
            import shutil
            af_home = home.parent / f"{home.name}-airflow"
            shutil.rmtree(af_home, ignore_errors=True)
            shutil.copytree(home, af_home, symlinks=True)  # the same state, for the same day
            af_env = dict(env, C360_HOME=str(af_home))
            deliver(af_home / "simulation", af_home / "landing", through=last + dt.timedelta(days=3))
        deliver(settings.simulation_dir, settings.landing, through=last + dt.timedelta(days=3))
        incr = run_pipeline(last, env, "incremental",
                            stages=pipeline.STAGE_NAMES if args.airflow else None)
        if af_env is not None:
            result["airflow"] = run_airflow(last, af_env)
            print(f"  incremental day through Airflow: {result['airflow']['wall']:.1f} s", flush=True)
    result["stages"] = full + incr
    measured = set(measured_stages())
    full_s = sum(r["wall_s"] for r in full if r["stage"] in measured)
    incr_s = sum(r["wall_s"] for r in incr if r["stage"] in measured)
    load_s = sum(r["wall_s"] for r in full if r["stage"].startswith("extract_"))
    records = sum(r["records"] for r in full if r["stage"].startswith("extract_"))
    result["summary"] = {
        "full_refresh_s": round(full_s, 1), "incremental_day_s": round(incr_s, 1),
        "incremental_over_full": round(incr_s / full_s, 4),
        "extract_s": round(load_s, 1), "records_landed": records,
        "end_to_end_records_per_s": round(records / full_s),
        "pipeline_over_bare_read": round(full_s / result["bare_read"]["wall_s"], 2),
        "floor_s": result["floor"]["wall_s"],
        "full_over_floor": round(full_s / result["floor"]["wall_s"], 2),
        "extract_over_bare_read": round(load_s / result["bare_read"]["wall_s"], 2),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in full + incr),
        "warehouse_rows": warehouse_rows(settings),
    }
    if "airflow" in result:
        cli_all_s = sum(r["wall_s"] for r in incr)
        result["summary"].update({
            "full_refresh_all_stages_s": round(sum(r["wall_s"] for r in full), 1),
            "incremental_all_stages_cli_s": round(cli_all_s, 1),
            "incremental_airflow_s": round(result["airflow"]["wall"], 1),
            "airflow_overhead": round(result["airflow"]["wall"] / cli_all_s - 1, 4),
        })
    out = HERE / "results" / f"pipeline-{args.scale}x{args.days}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(markdown(result))
    print(f"written {out}")
    return 0


def markdown(result: dict) -> str:
    lines = ["| run | stage | wall s | records | records/s | peak RSS MB | dbt s | slowest dbt nodes (s) |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in result["stages"]:
        rps = f"{r['records_per_s']:,}" if r["records_per_s"] else ""
        rec = f"{r['records']:,}" if r["records"] else ""
        dbt = r.get("dbt") or {}
        slowest = ", ".join(f"{name if len(name) <= 32 else name[:30] + '..'} {secs}"
                            for name, secs in dbt.get("slowest", [])[:3])
        lines.append(f"| {r['run']} | {r['stage']} | {r['wall_s']} | {rec} | {rps} | {r['peak_rss_mb']} "
                     f"| {dbt.get('dbt_elapsed_s', '')} | {slowest} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
