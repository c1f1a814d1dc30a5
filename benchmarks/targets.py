"""Issue 19's targets, side by side, from the results of ``bench_pipeline.py`` in
``benchmarks/results/``: written into BENCHMARKS.md between the ``<!-- targets -->`` markers
(the rest of the page is prose kept by hand), with a log-log chart of per-stage time by scale.

    python benchmarks/targets.py            # what run_all.py calls after the runs

A target is "met" or "missed" only when a result at the target's own scale has the figure;
otherwise the row says what was measured instead, at which scale, and that the target itself
was not measured. Nothing here runs the pipeline.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PAGE = HERE.parent / "BENCHMARKS.md"
CHART = RESULTS / "stage-scaling.png"
BEGIN, END = "<!-- targets -->", "<!-- /targets -->"
SCALE_PEOPLE = {"1k": 1_000, "10k": 10_000, "100k": 100_000, "300k": 300_000, "1m": 1_000_000}


def load() -> dict[tuple[str, int], dict]:
    out = {}
    for path in sorted(RESULTS.glob("pipeline-*x*.json")):
        m = re.fullmatch(r"pipeline-(\w+?)x(\d+)", path.stem)
        if m and m.group(1) in SCALE_PEOPLE:
            out[(m.group(1), int(m.group(2)))] = json.loads(path.read_text())
    return out


def _tag(r: dict) -> str:
    return f"{r['scale']} x {r['days']} ({r['when'][:10]})"


def _verdict(value: float, limit: float, at_target: bool) -> str:
    if not at_target:
        return "not measured at the target's scale"
    return "**met**" if value <= limit else "**missed**"


def _pick(results: dict, scale: str, days: int, key: str) -> tuple[dict | None, bool]:
    """The result at the target's scale if it has ``key``, else the largest one that has it."""
    exact = results.get((scale, days))
    if exact and key in exact.get("summary", {}):
        return exact, True
    having = [r for r in results.values() if key in r.get("summary", {})]
    having.sort(key=lambda r: (r["people"], r["days"]))
    return (having[-1] if having else None), False


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(time) on log(people): 1 is linear, above 1 superlinear."""
    pts = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    den = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / den if den else None


def scaling(results: dict) -> tuple[int | None, dict[str, list[tuple[int, float]]]]:
    """Per full-refresh stage: (people, seconds) at every scale of the history length that has
    the most scales."""
    by_days: dict[int, list[dict]] = {}
    for (_, days), r in results.items():
        by_days.setdefault(days, []).append(r)
    if not by_days:
        return None, {}
    days = max(by_days, key=lambda d: (len(by_days[d]), d))
    series: dict[str, list[tuple[int, float]]] = {"_from": [(r["people"], r["when"][:10]) for r in by_days[days]]}
    for r in sorted(by_days[days], key=lambda r: r["people"]):
        for row in r["stages"]:
            if row["run"] == "full":
                series.setdefault(row["stage"], []).append((r["people"], row["wall_s"]))
    return days, series


def chart(days: int, series: dict[str, list[tuple[int, float]]]) -> bool:
    if not any(len(v) >= 2 for v in series.values()):
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for stage, pts in series.items():
        if len(pts) >= 2:
            ax.plot([p for p, _ in pts], [s for _, s in pts], marker="o", label=stage)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("people")
    ax.set_ylabel("stage wall time, s (full refresh)")
    ax.set_title(f"per-stage time by scale, {days} days of history")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(CHART, dpi=110)
    plt.close(fig)
    return True


def section(results: dict, command: str) -> str:
    lines = [BEGIN, "", "## Issue 19 targets, side by side", "",
             f"Written by `{command}` from `benchmarks/results/pipeline-*.json`; each row names the "
             "result it comes from (scale and date). A row at another scale than its target's is "
             "shown as measured there and marked not measured.", "",
             "| target | limit | measured | from | verdict |", "|---|---:|---:|---|---|"]

    r, exact = _pick(results, "100k", 365, "full_over_floor")
    if r:
        s = r["summary"]
        lines.append(f"| full refresh / floor (DuckDB reads every landing file, writes it once to "
                     f"Parquet); bare read ratio beside it | 3x | {s['full_over_floor']}x "
                     f"({s['full_refresh_s']} s / {s['floor_s']} s); bare read "
                     f"{s['pipeline_over_bare_read']}x | {_tag(r)} | "
                     f"{_verdict(s['full_over_floor'], 3, exact)} |")
    else:
        lines.append("| full refresh / floor | 3x | - | no result with the floor | not measured |")

    r, exact = _pick(results, "100k", 365, "incremental_over_full")
    if r:
        s = r["summary"]
        lines.append(f"| incremental day / full refresh | 5% | {s['incremental_over_full']:.1%} "
                     f"({s['incremental_day_s']} s / {s['full_refresh_s']} s) | {_tag(r)} | "
                     f"{_verdict(s['incremental_over_full'], 0.05, exact)} |")
    # flat as history grows: the same scale at several history lengths
    for scale in SCALE_PEOPLE:
        runs = sorted((d, res) for (sc, d), res in results.items() if sc == scale)
        if len(runs) >= 2:
            figures = ", ".join(f"{d} d: {res['summary']['incremental_day_s']} s" for d, res in runs)
            at_target = scale == "100k" and {90, 180, 365} <= {d for d, _ in runs}
            lines.append(f"| incremental day flat as history grows ({scale}) | flat | {figures} | "
                         f"{', '.join(_tag(res) for _, res in runs)} | "
                         f"{'see figures' if at_target else 'not measured at 100k x 90/180/365'} |")

    r, exact = _pick(results, "1m", 365, "peak_rss_mb")
    if r:
        s = r["summary"]
        lines.append(f"| 1M people x 365 days end to end, peak RSS | 16 GB | {s['peak_rss_mb'] / 1024:.1f} GB "
                     f"| {_tag(r)} | {_verdict(s['peak_rss_mb'] / 1024, 16, exact)} |")

    r, exact = _pick(results, "100k", 365, "airflow_overhead")
    if r:
        s = r["summary"]
        lines.append(f"| Airflow overhead (DAG run / the same stages from the CLI) | 10% | "
                     f"{s['airflow_overhead']:+.1%} ({s['incremental_airflow_s']} s / "
                     f"{s['incremental_all_stages_cli_s']} s, incremental day) | {_tag(r)} | "
                     f"{_verdict(s['airflow_overhead'], 0.10, exact)} |")
    else:
        lines.append("| Airflow overhead | 10% | - | no result with an Airflow run | not measured |")

    small = [res for (sc, _), res in results.items() if sc == "1k" and "incremental_airflow_s" in res["summary"]]
    if small:
        res = max(small, key=lambda x: x["when"])
        v = res["summary"]["incremental_airflow_s"]
        lines.append(f"| small day (1k people, one new day) through Airflow end to end | 25 s | {v} s | "
                     f"{_tag(res)} | {'**met**' if v <= 25 else '**missed**'} |")
    else:
        lines.append("| small day through Airflow | 25 s | - | no 1k result with an Airflow run | not measured |")

    days, series = scaling(results)
    if days is not None:
        sources = series.pop("_from")
        lines += ["", f"### Per-stage time by scale ({days} days of history, full refresh)", "",
                  "From the results of " + ", ".join(f"{p:,} people ({when})" for p, when in sorted(sources))
                  + "; results of different dates ran different code (stage names changed on "
                  "2026-12-07: `dbt_staging` and `dbt_intermediate` became `dbt_staging_intermediate`).", ""]
        if chart(days, series):
            lines.append(f"![per-stage time, log-log]({CHART.relative_to(PAGE.parent).as_posix()})")
            lines.append("")
        # Columns are every scale measured, and each stage's figure goes under its own scale:
        # stages renamed between runs exist at some scales only, and must not slide left.
        scales = sorted({p for pts in series.values() for p, _ in pts})
        lines += ["| stage | " + " | ".join(f"{p:,} people s" for p in scales) + " | log-log slope |",
                  "|---|" + "---:|" * (len(scales) + 1)]
        for stage, pts in series.items():
            k = slope([(float(p), float(t)) for p, t in pts])
            at = dict(pts)
            lines.append(f"| {stage} | " + " | ".join(str(at.get(p, "-")) for p in scales)
                         + f" | {'' if k is None else f'{k:.2f}'} |")
        if scales != [10_000, 100_000, 300_000, 1_000_000]:
            lines += ["", f"Scales measured: {', '.join(f'{p:,}' for p in scales)}; the issue's "
                      "10k, 100k, 300k and 1M were not all run, so these slopes are not the target's."]
    lines += ["", END]
    return "\n".join(lines)


def write(command: str = "python benchmarks/targets.py") -> str:
    text = section(load(), command)
    page = PAGE.read_text(encoding="utf-8")
    if BEGIN in page and END in page:
        page = page[:page.index(BEGIN)] + text + page[page.index(END) + len(END):]
    else:
        page = page.rstrip("\n") + "\n\n" + text + "\n"
    PAGE.write_text(page, encoding="utf-8")
    return text


if __name__ == "__main__":
    print(write(" ".join(["python", *sys.argv]) if len(sys.argv) > 1 else "python benchmarks/targets.py"))
