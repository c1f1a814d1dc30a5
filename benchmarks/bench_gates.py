"""Quality gates against the stages they gate (issue 6.5: gate time under 15% of stage time).

    python benchmarks/bench_gates.py                    # C360_BENCH_SCALE, default medium
    python benchmarks/bench_gates.py --scale small

Simulates C360_BENCH_SCALE's population once under $C360_BENCH_HOME/<scale>/gates (small:
10k people x 30 days, medium: 100k x 90, large: 300k x 90), serves the mock CRM on loopback,
and runs the pipeline's stages twice, as the demo does: a catch-up run for the day before the
last (everything lands at once), then the last day incrementally. For each run:

    extract (crm, web, pos)               -> raw gate
    dbt staging + intermediate            -> intermediate gate
    dbt marts + ML                        -> marts gate

Stage and gate are timed separately, with the same functions the DAG calls. Each gate runs in
its own Airflow task process, so it pays the Great Expectations import once: that import is
measured in a fresh interpreter and shown apart ("gx import") and in the "gate + import"
ratio. A gate that stops the run is reported and the benchmark goes on. Prints a table and
one JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

SCALES = {"small": (10_000, 30), "medium": (100_000, 90), "large": (300_000, 90)}
START = dt.date(2026, 1, 1)
TARGET = 0.15
console = Console()


def _prepare_home(home: Path, people: int, days: int) -> None:
    """Simulate into ``home/simulation`` once; every run starts from an empty lake."""
    from customer360.demo.simulator import SimulationConfig, simulate

    stamp = home / "bench_config.json"
    wanted = {"people": people, "days": days, "seed": 42, "start": START.isoformat()}
    if not (stamp.exists() and json.loads(stamp.read_text()) == wanted):
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        started = time.perf_counter()
        cfg = SimulationConfig.from_overrides(people=people, days=days, start=START, seed=42, overrides=[])
        simulate(cfg, landing=home / "landing", sim_dir=home / "simulation", progress=True,
                 deliver_all=False)
        console.print(f"simulated {people} people x {days} days in {time.perf_counter() - started:.0f} s")
        stamp.write_text(json.dumps(wanted))
    for derived in ("landing", "lake", "warehouse", "audit", "artifacts", "published", "models", "tmp"):
        shutil.rmtree(home / derived, ignore_errors=True)


def _gx_import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import great_expectations; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _timed(fn, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - started, value


def _gate(settings, stage: str, day: dt.date, run_id: str) -> tuple[float, str]:
    from customer360.quality.gates import GateFailed, run_gate

    started = time.perf_counter()
    try:
        summary = run_gate(settings, stage, day, run_id=run_id).summary_line()
    except GateFailed as exc:
        summary = exc.result.summary_line() + " STOPPED: " + "; ".join(
            f"{e.suite}: {e.label}" for e in exc.result.errors[:3])
    return time.perf_counter() - started, summary


def _run_day(settings, server, day: dt.date, label: str) -> list[dict]:
    """The pipeline's stages in their order, each gate timed apart from the stages before it
    (up to publish: the privacy steps and the report carry no gate)."""
    from customer360 import pipeline
    from customer360.demo.runner import end_of_day
    from customer360.demo.simulator import deliver

    deliver(settings.simulation_dir, settings.landing, through=day)
    server.set_clock(end_of_day(day))
    rows = []
    stage_names: list[str] = []
    stage_seconds = 0.0
    for stage in pipeline.STAGES:
        if stage.name.startswith("gate_"):
            gate = stage.layer
            gate_seconds, summary = _gate(settings, gate, day, f"bench-{label}-{gate}")
            name = "+".join(stage_names)
            rows.append({"run": label, "stage": name, "gate": gate, "stage_s": round(stage_seconds, 2),
                         "gate_s": round(gate_seconds, 2), "summary": summary})
            console.print(f"{label}: {name} {stage_seconds:.1f} s, gate {gate} {gate_seconds:.1f} s: "
                          f"{summary}", markup=False)
            stage_names, stage_seconds = [], 0.0
            continue
        if stage.name == "publish":
            pipeline.run_stage(stage.name, day, f"bench-{label}", settings)
            break
        seconds, _ = _timed(pipeline.run_stage, stage.name, day, f"bench-{label}", settings)
        stage_names.append(stage.name)
        stage_seconds += seconds
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default=os.environ.get("C360_BENCH_SCALE", "medium"), choices=SCALES)
    args = parser.parse_args()
    people, days = SCALES[args.scale]
    home = Path(os.environ.get("C360_BENCH_HOME", "data/bench")).resolve() / args.scale / "gates"
    _prepare_home(home, people, days)
    os.environ["C360_HOME"] = str(home)
    os.environ.pop("C360_LANDING", None)
    for name in ("C360_CRM_TOKEN", "C360_PII_KEY"):
        os.environ.setdefault(name, secrets.token_urlsafe(32))

    from customer360.demo.crm_server import start_server
    from customer360.core.settings import get_settings

    settings = get_settings()
    gx_import = _gx_import_seconds()
    from customer360.quality.gx_validation import gx

    gx()  # imported here once, outside the timings: the import is accounted apart
    last = START + dt.timedelta(days=days - 1)
    rows: list[dict] = []
    with start_server(settings.simulation_dir / "crm", token=os.environ["C360_CRM_TOKEN"]) as server:
        os.environ["C360_CRM_BASE_URL"] = server.base_url
        rows += _run_day(settings, server, last - dt.timedelta(days=1), "catch-up")
        rows += _run_day(settings, server, last, "incremental")

    table = Table(title=f"gates vs stages, {people} people x {days} days (gx import {gx_import:.1f} s a task)")
    for col in ("run", "stage", "stage s", "gate", "gate s", "gate/stage", "gate+import/stage"):
        table.add_column(col, justify="right" if col.endswith(("s", "stage")) else "left")
    for r in rows:
        r["ratio"] = round(r["gate_s"] / r["stage_s"], 3) if r["stage_s"] else None
        r["ratio_with_import"] = round((r["gate_s"] + gx_import) / r["stage_s"], 3) if r["stage_s"] else None
        table.add_row(r["run"], r["stage"], f"{r['stage_s']:.1f}", r["gate"], f"{r['gate_s']:.1f}",
                      f"{r['ratio']:.1%}", f"{r['ratio_with_import']:.1%}")
    for label in ("catch-up", "incremental"):
        part = [r for r in rows if r["run"] == label]
        stage, gate = sum(r["stage_s"] for r in part), sum(r["gate_s"] for r in part)
        table.add_row(label, "all stages", f"{stage:.1f}", "all gates", f"{gate:.1f}", f"{gate / stage:.1%}",
                      f"{(gate + 3 * gx_import) / stage:.1%}")
    console.print(table)
    console.print(f"target: gates under {TARGET:.0%} of the stage they gate")
    print(json.dumps({"bench": "gates", "people": people, "days": days, "gx_import_s": round(gx_import, 2),
                      "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
