"""Identity resolution next to Splink's deterministic linking on the same data (issue 10.3).

    python benchmarks/bench_splink.py --scale 10k --days 120          # simulate, build, compare
    python benchmarks/bench_splink.py --home /path/to/built/home       # an existing warehouse

The home holds a simulated landing folder, its ground truth and a built warehouse; one is
simulated and built when ``--home`` (default $C360_BENCH_HOME or
$C360_HOME/bench_splink/<scale>x<days>) has no warehouse yet. An existing warehouse is only
ever read: the timed runs work on copies in a scratch folder.

What is compared, on one input and one machine:

* **ours**: the identity models downstream of ``int_identity__observations`` (ambiguous keys,
  nodes, edges, the SQL clustering, record -> customer) rebuilt by ``dbt run`` on a copy of
  the warehouse, in a fresh process. "link s" is the sum of those models' execution times as
  dbt reports them; "process s" adds the Python start-up, dbt's parse and its connection.
* **splink**: Splink's ``deterministic_link()`` + ``cluster_pairwise_predictions_at_threshold``
  (DuckDB backend) on the same records exported to Parquet: one row per record the identity
  model sees (CRM contact, till transaction, web login, web identify call) plus web orders,
  with its keys as columns, one exact-match blocking rule a key (contact id / web userId,
  email, phone, loyalty id, anonymousId). "link s" is loading the Parquet, linking and
  clustering; "process s" adds the interpreter and ``import splink``.
* **splink + our guards**: the same, but the keys ``int_identity__ambiguous_keys`` leaves out
  (shared devices, keys on too many contacts) are blanked in the input first: what Splink's
  linking gives with our guard list, to tell the guards' effect from the graph algorithm's.

Every method is scored by the same code, :mod:`customer360.demo.identity_eval` (pairwise
precision / recall / F1 against ``simulation/ground_truth/keys.parquet``), on the same records.

Why a separate virtualenv: Splink is a benchmark-only comparison, never a dependency of the
pipeline. It pins its own DuckDB, pandas and sqlglot ranges, which must not leak into
requirements.lock or the project's ``.venv`` (dbt-duckdb and Airflow pin theirs). So Splink
lives in ``$C360_BENCH_SPLINK_VENV`` (default ``.venv-splink`` in the repository, created here
with ``python3.11 -m venv`` and pip on first use) and runs in a child process that only reads
and writes Parquet. Results: ``benchmarks/results/identity-splink-<scale>x<days>.json`` and a
markdown table for BENCHMARKS.md.
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
import tempfile
import time
from pathlib import Path

from bench_pipeline import machine  # the same folder: a script's directory is on sys.path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCALES = {"1k": 1_000, "2k": 2_000, "10k": 10_000, "100k": 100_000}
BENCH_SCALES = {"small": "2k", "medium": "10k", "large": "100k"}  # C360_BENCH_SCALE (make bench)
START = dt.date(2025, 1, 1)
PII_KEY = "bench-pii-key-0123456789abcdef"
SPLINK_SPEC = "splink==5.0.0"
KEY_COLUMNS = ("contact_id", "email", "phone", "loyalty_id", "anonymous_id")
IDENTITY_MODELS = ("int_identity__ambiguous_keys", "int_identity__nodes", "int_identity__edges",
                   "int_identity__clusters", "int_identity__record_customers")

# The records the identity model links, one row each, keys as columns. The key values are the
# warehouse's identity keys ("email:...") so equality is exactly our model's equality
# (normalised upstream in staging). {guard} blanks the keys our model leaves out.
EXPORT_SQL = """
with {web_orders},
keyed as (
    select record_type, record_id, key_type, identity_key
    from intermediate.int_identity__observations
    union all
    select 'web_order', order_id, 'contact', 'contact:' || user_id from web_orders
    where user_id is not null
    union all
    select 'web_order', order_id, 'anon', 'anon:' || anonymous_id from web_orders
    where anonymous_id is not null
),
usable as (
    select * from keyed {guard}
)
select record_type || ':' || record_id as unique_id,
       max(identity_key) filter (where key_type = 'contact') as contact_id,
       max(identity_key) filter (where key_type = 'email') as email,
       max(identity_key) filter (where key_type = 'phone') as phone,
       max(identity_key) filter (where key_type = 'loyalty') as loyalty_id,
       max(identity_key) filter (where key_type = 'anon') as anonymous_id
from usable
group by record_type, record_id
order by unique_id
"""
GUARD_SQL = ("where identity_key not in "
             "(select identity_key from intermediate.int_identity__ambiguous_keys)")

# Runs in the Splink virtualenv: records Parquet in, (unique_id, cluster_id) Parquet out.
SPLINK_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import duckdb, splink
from splink import DuckDBAPI, Linker, SettingsCreator, block_on
imported = time.perf_counter()
src, dst, threads, memory = sys.argv[1:5]
keys = sys.argv[5].split(",")
con = duckdb.connect()
con.execute(f"set threads = {int(threads)}")
con.execute(f"set memory_limit = '{memory}'")
con.execute("create table records as select * from read_parquet(?)", [src])
loaded = time.perf_counter()
db_api = DuckDBAPI(connection=con)
settings = SettingsCreator(link_type="dedupe_only", unique_id_column_name="unique_id",
                           blocking_rules_to_generate_predictions=[block_on(k) for k in keys],
                           retain_intermediate_calculation_columns=False)
linker = Linker(db_api.register("records"), settings, log_level=None)
pairs = linker.inference.deterministic_link()
n_pairs = con.execute(f"select count(*) from {pairs.physical_name}").fetchall()[0][0]
linked = time.perf_counter()
clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(pairs)
con.execute(f"copy (select unique_id, cluster_id from {clusters.physical_name}) "
            f"to '{dst}' (format parquet)")
done = time.perf_counter()
print("@@RESULT@@" + json.dumps({
    "version": splink.__version__, "duckdb": duckdb.__version__, "pairs": n_pairs,
    "import_s": imported - t0, "load_s": loaded - imported, "deterministic_link_s": linked - loaded,
    "cluster_s": done - linked, "link_s": done - imported}))
"""

# Runs in the project's virtualenv with C360_HOME at a scratch copy of the warehouse.
OURS_CHILD = r"""
import json, sys
from customer360.core.settings import get_settings
from customer360.warehouse.dbt_runner import read_run_results, run_dbt
settings = get_settings()
outcome = run_dbt(settings, ["run", "--select", sys.argv[1]])
if not outcome.success:
    raise SystemExit(f"dbt run failed: {outcome.exception}")
runs = read_run_results(settings)
print("@@RESULT@@" + json.dumps({"dbt_elapsed_s": runs.elapsed_seconds,
                                 "models": {n.name: n.execution_time for n in runs.nodes}}))
"""


# ---------------------------------------------------------------- the home and its warehouse

def prepare_home(home: Path, people: int, days: int) -> dict:
    """Simulate ``people x days`` into ``home``, land all three sources and build the
    warehouse (models only), unless the home already has a warehouse. Returns timings."""
    from customer360.core.settings import get_settings

    settings = get_settings()
    if settings.warehouse_path.exists():
        return {"prepared": False}
    marker = home / ".bench_splink"
    if home.exists() and any(home.iterdir()) and not marker.exists():
        raise SystemExit(f"{home} has no warehouse and was not made by this benchmark; "
                         "pick another --home")
    from customer360 import pipeline
    from customer360.demo.crm_server import start_server
    from customer360.demo.simulator import SimulationConfig, simulate
    from customer360.warehouse.dbt_runner import build_warehouse

    home.mkdir(parents=True, exist_ok=True)
    marker.touch()
    timings = {"prepared": True}
    t0 = time.perf_counter()
    cfg = SimulationConfig.from_overrides(people=people, days=days, start=START, seed=42,
                                          overrides=[])
    simulate(cfg, landing=settings.landing, sim_dir=settings.simulation_dir, progress=False)
    timings["simulate_s"] = round(time.perf_counter() - t0, 1)
    last = START + dt.timedelta(days=days - 1)
    token = "bench-" + secrets.token_hex(8)
    t0 = time.perf_counter()
    with start_server(settings.simulation_dir / "crm", token=token) as server:
        os.environ.update(C360_CRM_BASE_URL=server.base_url, C360_CRM_TOKEN=token)
        for source in ("crm", "web", "pos"):
            pipeline.extract(source, last, get_settings())
    timings["extract_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    build_warehouse(get_settings(), logical_date=last, tests=False)
    timings["build_s"] = round(time.perf_counter() - t0, 1)
    print(f"  home prepared: {timings}", flush=True)
    return timings


def export_records(warehouse: Path, work: Path) -> dict:
    """Write the Splink input (records_raw.parquet, records_guarded.parquet) from the
    warehouse, read-only; returns paths, row counts and seconds."""
    import duckdb

    from customer360.demo.identity_eval import WEB_ORDERS_CTE

    out = {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        for variant, guard in (("raw", ""), ("guarded", GUARD_SQL)):
            path = work / f"records_{variant}.parquet"
            t0 = time.perf_counter()
            con.execute(f"copy ({EXPORT_SQL.format(guard=guard, web_orders=WEB_ORDERS_CTE)}) to '{path}' (format parquet)")
            rows = con.execute(f"select count(*) from read_parquet('{path}')").fetchone()[0]
            out[variant] = {"path": path, "records": rows,
                            "seconds": round(time.perf_counter() - t0, 2)}
    return out


# ------------------------------------------------------------------------------- the runs

def child_result(cmd: list[str], env: dict | None = None) -> tuple[dict, float]:
    """Run a child that prints one @@RESULT@@ JSON line; returns it and the process wall."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{proc.stderr[-4000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("@@RESULT@@"))
    return json.loads(line.removeprefix("@@RESULT@@")), wall


def ensure_splink_venv(venv: Path) -> Path:
    """The Splink virtualenv's python, created (python3.11 -m venv + pip) on first use."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"  creating {venv} for Splink (benchmark only)", flush=True)
        subprocess.run([shutil.which("python3.11") or sys.executable, "-m", "venv", str(venv)],
                       check=True)
    if subprocess.run([str(python), "-c", "import splink"], capture_output=True).returncode:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", SPLINK_SPEC], check=True)
    return python


def scratch_home(source_home: Path, work: Path) -> Path:
    """A home holding a copy of the warehouse (dbt writes there) and the source's ground
    truth, so our models can be rebuilt and scored without touching the source home."""
    home = work / "ours_home"
    (home / "warehouse").mkdir(parents=True)
    shutil.copyfile(source_home / "warehouse" / "c360.duckdb", home / "warehouse" / "c360.duckdb")
    (home / "simulation").symlink_to(source_home / "simulation")
    return home


def run_ours(home: Path) -> dict:
    env = dict(os.environ, C360_HOME=str(home))
    env.pop("C360_LANDING", None)
    res, wall = child_result([sys.executable, "-c", OURS_CHILD, " ".join(IDENTITY_MODELS)], env)
    return {"link_s": sum(res["models"].values()), "process_s": wall,
            "dbt_elapsed_s": res["dbt_elapsed_s"], "models_s": res["models"]}


def run_splink(python: Path, records: Path, labels: Path, settings) -> dict:
    res, wall = child_result([str(python), "-c", SPLINK_CHILD, str(records), str(labels),
                              str(settings.duckdb_threads), settings.duckdb_memory_limit,
                              ",".join(KEY_COLUMNS)])
    return {**res, "process_s": wall}


def graph_edges(home: Path) -> int:
    """Our graph's edges (key to key), the counterpart of Splink's record pairs."""
    import duckdb

    with duckdb.connect(str(home / "warehouse" / "c360.duckdb"), read_only=True) as con:
        return con.execute("select count(*) from intermediate.int_identity__edges").fetchone()[0]


def median_run(runs: list[dict]) -> dict:
    """The run with the median process time, with every run's times kept."""
    best = sorted(runs, key=lambda r: r["process_s"])[len(runs) // 2]
    return {**best, "process_s_runs": [round(r["process_s"], 2) for r in runs],
            "link_s_runs": [round(r["link_s"], 2) for r in runs]}


# ---------------------------------------------------------------------------------- scoring

def score(scored, labels) -> dict:
    """Scores of cluster ``labels`` (aligned with ``scored``; null = alone) by identity_eval."""
    from customer360.demo.identity_eval import pairwise_from_labels

    linkable = scored["linkable"].to_numpy()
    sizes = labels.value_counts()
    return {
        "linkable": pairwise_from_labels(scored["person_id"][linkable], labels[linkable]),
        "all": pairwise_from_labels(scored["person_id"], labels),
        "recall_reachable": pairwise_from_labels(scored["reachable_group"].astype(str),
                                                 labels)["recall"],
        "entities": int(labels.nunique() + labels.isna().sum()),
        "largest_cluster": int(sizes.max()) if len(sizes) else 0,
    }


def splink_labels(scored, labels_path: Path):
    import pandas as pd

    labels = pd.read_parquet(labels_path).set_index("unique_id")["cluster_id"]
    uid = scored["record_type"] + ":" + scored["record_id"]
    return pd.Series(labels.reindex(uid).to_numpy(), index=scored.index, dtype=object)


# --------------------------------------------------------------------------------- reporting

def markdown(result: dict) -> str:
    lines = ["| method | link s | process s | input records | pairs | entities | largest | "
             "precision | recall | F1 | F1 (all) | recall reachable |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in result["methods"]:
        s = m["scores"]
        lines.append(
            f"| {m['method']} | {m['link_s']:.2f} | {m['process_s']:.1f} | {m['records']:,} | "
            f"{m['pairs']:,} | {s['entities']:,} | {s['largest_cluster']:,} | "
            f"{s['linkable']['precision']:.4f} | {s['linkable']['recall']:.4f} | "
            f"{s['linkable']['f1']:.4f} | {s['all']['f1']:.4f} | {s['recall_reachable']:.4f} |")
    return "\n".join(lines)


def time_methods(home: Path, python: Path, settings, work: Path, repeat: int) -> dict:
    """Export the input, time every method ``repeat`` times and score each (median run)."""
    from customer360.demo.identity_eval import scored_records
    from customer360.core.settings import get_settings

    exported = export_records(settings.warehouse_path, work)
    result: dict = {"export": {k: {"records": v["records"], "seconds": v["seconds"]}
                               for k, v in exported.items()}}
    print(f"  exported {result['export']}", flush=True)

    ours_home = scratch_home(home, work)
    ours_runs = [run_ours(ours_home) for _ in range(repeat)]
    ours = median_run(ours_runs)
    print(f"  ours: {ours['process_s_runs']} s process, {ours['link_s_runs']} s models", flush=True)
    splink = {}
    for variant in ("raw", "guarded"):
        labels = work / f"labels_{variant}.parquet"
        splink[variant] = median_run([run_splink(python, exported[variant]["path"], labels,
                                                 settings) for _ in range(repeat)])
        print(f"  splink {variant}: {splink[variant]['process_s_runs']} s process, "
              f"{splink[variant]['link_s_runs']} s link", flush=True)

    os.environ["C360_HOME"] = str(ours_home)  # score the customer ids the timed runs wrote
    scored = scored_records(get_settings())
    result["scored_records"] = scored.groupby("record_type").size().to_dict()
    result["methods"] = [
        {"method": "ours (dbt identity models)", **_times(ours),
         "records": exported["raw"]["records"], "pairs": graph_edges(ours_home),
         "scores": score(scored, scored["customer_id"])},
        *({"method": name, **_times(splink[v]), "records": exported[v]["records"],
           "pairs": splink[v]["pairs"],
           "scores": score(scored, splink_labels(scored, work / f"labels_{v}.parquet"))}
          for name, v in (("splink deterministic_link", "raw"),
                          ("splink deterministic_link + our guards", "guarded"))),
    ]
    result["ours_models_s"] = ours["models_s"]
    result["ours_models_s_runs"] = [r["models_s"] for r in ours_runs]
    result["ours_dbt_elapsed_s"] = ours["dbt_elapsed_s"]
    result["splink_version"] = splink["raw"]["version"]
    result["splink_duckdb"] = splink["raw"]["duckdb"]
    result["splink_stages_s"] = {v: {k: round(splink[v][k], 3) for k in
                                     ("import_s", "load_s", "deterministic_link_s", "cluster_s")}
                                 for v in splink}
    return result


def _times(run: dict) -> dict:
    return {"link_s": run["link_s"], "process_s": run["process_s"],
            "link_s_runs": run["link_s_runs"], "process_s_runs": run["process_s_runs"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    env_scale = os.environ.get("C360_BENCH_SCALE", "medium")
    env_scale = BENCH_SCALES.get(env_scale, env_scale)
    ap.add_argument("--scale", choices=sorted(SCALES),
                    default=env_scale if env_scale in SCALES else "10k")
    ap.add_argument("--days", type=int, default=120)
    ap.add_argument("--home", type=Path, default=None,
                    help="a home with a built warehouse, or where to make one")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs a method (median kept)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args(argv)

    label = f"{args.scale}x{args.days}"
    home = (args.home or Path(os.environ.get("C360_BENCH_HOME")
                              or Path(os.environ.get("C360_HOME", "data")) / "bench_splink") / label
            ).resolve()
    os.environ.update(C360_HOME=str(home))
    os.environ.setdefault("C360_PII_KEY", PII_KEY)
    os.environ.pop("C360_LANDING", None)
    from customer360.core.settings import get_settings

    python = ensure_splink_venv(Path(os.environ.get("C360_BENCH_SPLINK_VENV")
                                     or REPO / ".venv-splink"))
    result: dict = {"scale": args.scale, "people": SCALES[args.scale], "days": args.days,
                    "home": str(home), "machine": machine(), "repeat": args.repeat,
                    "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    result["prepare"] = prepare_home(home, SCALES[args.scale], args.days)
    work = Path(tempfile.mkdtemp(prefix="bench_splink_"))
    try:
        result.update(time_methods(home, python, get_settings(), work, args.repeat))
    finally:
        if args.keep:
            print(f"  scratch kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    out = HERE / "results" / f"identity-splink-{label}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(markdown(result))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
