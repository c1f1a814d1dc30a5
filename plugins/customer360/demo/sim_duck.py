"""The in-memory DuckDB the simulator formats JSON and CSV lines with."""

from __future__ import annotations

import duckdb

from customer360.core import duck

THREADS = 2   # the writers also gzip in 2 threads; more buys little on small machines


def connect() -> duckdb.DuckDBPyConnection:
    # core.duck turns DuckDB's progress bar off (the simulator draws one already).
    return duck.connect(config={"threads": THREADS})
