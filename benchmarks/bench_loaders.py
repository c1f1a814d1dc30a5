"""Web and POS loader throughput next to a bare DuckDB read of the same files (issue 4.6).

    python benchmarks/bench_loaders.py                      # simulate, then measure
    python benchmarks/bench_loaders.py --landing DIR        # measure an existing landing folder

Without ``--landing`` the simulator writes C360_BENCH_SCALE's population (small: 10k people x
30 days, medium (default): 100k x 90, large: 300k x 90) under $C360_BENCH_HOME (default
$C360_HOME/bench), once: a later run with the same scale reuses it. Each loader then lands every
file into a fresh, empty lake, and the same files are read by DuckDB alone:

* bare read:    read_json / read_csv of every file into memory, columns given as text (what
                the loader reads), skipping bad lines;
* bare+Parquet: the same read written to one Parquet file (what the loader writes).

The figure of merit is loader time / bare time (target: within 2x). Printed as a table and
as one JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
from rich.console import Console
from rich.table import Table

SCALES = {"small": (10_000, 30), "medium": (100_000, 90), "large": (300_000, 90)}
WEB_COLUMNS = ("{'messageId': 'VARCHAR', 'type': 'VARCHAR', 'event': 'VARCHAR', "
               "'anonymousId': 'VARCHAR', 'userId': 'VARCHAR', 'timestamp': 'VARCHAR', "
               "'receivedAt': 'VARCHAR', 'context': 'JSON', 'properties': 'JSON', "
               "'traits': 'JSON'}")


def _simulated_landing(home: Path, people: int, days: int) -> Path:
    """The simulator's landing folder for this population, simulated once."""
    from customer360.demo.simulator import SimulationConfig, simulate

    stamp = home / "bench_config.json"
    wanted = {"people": people, "days": days, "seed": 42}
    landing = home / "landing"
    if stamp.exists() and json.loads(stamp.read_text()) == wanted and landing.is_dir():
        return landing
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    started = time.perf_counter()
    cfg = SimulationConfig(people=people, days=days, seed=42)
    simulate(cfg, landing=landing, sim_dir=home / "simulation", progress=True)
    print(f"simulated {people} people x {days} days in {time.perf_counter() - started:.0f} s")
    stamp.write_text(json.dumps(wanted))
    return landing


def _last_date(landing: Path) -> dt.date:
    days = [dt.date.fromisoformat(m.group(1)) for p in landing.glob("*/**/date=*")
            if (m := re.fullmatch(r"date=(\d{4}-\d{2}-\d{2})", p.name))]
    return max(days)


def _sql_list(paths) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


class Clock:
    """Wall and CPU seconds of a block (CPU of all this process's threads: on a shared
    machine it shows the work done when the wall clock also counts waiting for a core)."""

    def __enter__(self) -> "Clock":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def _timed(con: duckdb.DuckDBPyConnection, sql: str) -> Clock:
    with Clock() as clock:
        con.execute(sql).fetchall()
    return clock


def _bare_web(landing: Path, out: Path, threads: int) -> tuple[Clock, Clock, int]:
    files = _sql_list(sorted(landing.glob("web/events/date=*/part-*.jsonl.gz")))
    scan = (f"SELECT * FROM read_json({files}, format = 'newline_delimited', "
            f"columns = {WEB_COLUMNS}, ignore_errors = true)")
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    read = _timed(con, f"CREATE TEMP TABLE t AS {scan}")
    rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
    con.execute("DROP TABLE t")
    to_parquet = _timed(con, f"COPY ({scan}) TO '{out / 'web.parquet'}' "
                             f"(FORMAT parquet, COMPRESSION zstd)")
    return read, to_parquet, rows


def _bare_pos(landing: Path, out: Path, threads: int) -> tuple[Clock, Clock, int]:
    from customer360.ingest.landing.duck import load_encodings

    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    load_encodings(con)  # not timed: a fixed cost of a few seconds per process
    encodings = dict(con.execute(
        f"SELECT store_id, file_encoding FROM read_csv('{landing}/pos/reference/stores.csv', "
        f"all_varchar = true)").fetchall())
    groups: dict[str, list[Path]] = {}
    for path in sorted(landing.glob("pos/date=*/store_*.csv")):
        store = path.stem.removeprefix("store_")
        groups.setdefault(encodings.get(store, "utf-8").lower(), []).append(path)
    from customer360.ingest.landing.pos_rows import POS_COLUMNS

    # The fastest read DuckDB offers: columns given (no sniffing of 1,000 small files).
    columns = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in POS_COLUMNS) + "}"
    scans = [f"SELECT * FROM read_csv({_sql_list(paths)}, header = true, auto_detect = false, "
             f"columns = {columns}, encoding = '{enc}', ignore_errors = true)"
             for enc, paths in groups.items()]
    scan = " UNION ALL ".join(scans)
    read = _timed(con, f"CREATE TEMP TABLE t AS {scan}")
    rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
    con.execute("DROP TABLE t")
    to_parquet = _timed(con, f"COPY ({scan}) TO '{out / 'pos.parquet'}' "
                             f"(FORMAT parquet, COMPRESSION zstd)")
    return read, to_parquet, rows


def _loader(source: str, landing: Path, day: dt.date) -> tuple[Clock, int, int]:
    """Run one loader into a fresh lake; (time, records read, files)."""
    from customer360.ingest.extract import run_extract
    from customer360.core.settings import get_settings

    home = Path(tempfile.mkdtemp(prefix=f"bench-{source}-"))
    os.environ["C360_HOME"] = str(home)
    os.environ["C360_LANDING"] = str(landing)
    try:
        settings = get_settings()
        with Clock() as seconds:
            recs = run_extract(source, settings, day)
        files = sum(int(m.group(1)) + 1 if (m := re.search(r"\+(\d+) more", r.source_file or ""))
                    else 1 for r in recs if r.entity in ("events", "transactions"))
        read = sum(r.read for r in recs if r.entity in ("events", "transactions"))
        return seconds, read, files
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing", type=Path, help="an existing landing folder")
    parser.add_argument("--scale", default=os.environ.get("C360_BENCH_SCALE", "medium"),
                        choices=sorted(SCALES))
    parser.add_argument("--threads", type=int,
                        default=int(os.environ.get("C360_DUCKDB_THREADS", "2")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ["C360_DUCKDB_THREADS"] = str(args.threads)
    if args.landing:
        landing = args.landing.resolve()
        label = str(landing)
    else:
        people, days = SCALES[args.scale]
        default_home = Path(os.environ.get("C360_HOME", "data")) / "bench"
        home = Path(os.environ.get("C360_BENCH_HOME", default_home)).resolve() / args.scale
        landing = _simulated_landing(home, people, days)
        label = f"{people:,} people x {days} days"
    day = _last_date(landing)

    results = {}
    scratch = Path(tempfile.mkdtemp(prefix="bench-bare-"))
    try:
        for source, bare in (("web", _bare_web), ("pos", _bare_pos)):
            loader, read, files = _loader(source, landing, day)
            bare_read, bare_parquet, bare_rows = bare(landing, scratch, args.threads)
            results[source] = {
                "files": files, "records": read, "bare_rows": bare_rows,
                "loader_s": round(loader.wall, 2), "loader_cpu_s": round(loader.cpu, 2),
                "records_per_s": round(read / loader.wall),
                "bare_read_s": round(bare_read.wall, 2), "bare_read_cpu_s": round(bare_read.cpu, 2),
                "bare_parquet_s": round(bare_parquet.wall, 2),
                "bare_parquet_cpu_s": round(bare_parquet.cpu, 2),
                "ratio_vs_bare_read": round(loader.wall / bare_read.wall, 2),
                "ratio_vs_bare_parquet": round(loader.wall / bare_parquet.wall, 2),
                "cpu_ratio_vs_bare_parquet": round(loader.cpu / bare_parquet.cpu, 2)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    table = Table(title=f"loaders on {label} ({args.threads} DuckDB threads; wall s / CPU s)")
    for col in ("loader", "files", "records", "loader", "records/s", "bare read",
                "bare->Parquet", "loader / bare read", "loader / bare->Parquet", "same, CPU"):
        table.add_column(col, justify="left" if col == "loader" else "right")
    for source, r in results.items():
        table.add_row(source, f"{r['files']:,}", f"{r['records']:,}",
                      f"{r['loader_s']:.1f} / {r['loader_cpu_s']:.1f}", f"{r['records_per_s']:,}",
                      f"{r['bare_read_s']:.1f} / {r['bare_read_cpu_s']:.1f}",
                      f"{r['bare_parquet_s']:.1f} / {r['bare_parquet_cpu_s']:.1f}",
                      f"{r['ratio_vs_bare_read']:.2f}x", f"{r['ratio_vs_bare_parquet']:.2f}x",
                      f"{r['cpu_ratio_vs_bare_parquet']:.2f}x")
    Console(width=160).print(table)
    print(json.dumps({"benchmark": "loaders", "data": label, "results": results}))


if __name__ == "__main__":
    main()
