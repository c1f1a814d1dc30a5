"""The in-memory DuckDB the simulator formats JSON and CSV lines with."""

from __future__ import annotations

import duckdb

THREADS = 2   # the writers also gzip in 2 threads; more buys little on small machines


def connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    # DuckDB draws its own progress bar on long queries; the simulator has one already.
    con.execute(f"SET enable_progress_bar = false; SET threads = {THREADS}")
    return con
