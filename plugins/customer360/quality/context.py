"""What every part of one gate run needs to know."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from customer360.core.settings import Settings


@dataclass
class GateContext:
    settings: Settings
    stage: str
    logical_date: dt.date
    run_id: str
    chunk_rows: int
    # An in-memory DuckDB for reading Parquet and describing frames: one a gate run, as
    # opening a connection costs more than most of the queries it serves.
    scratch: duckdb.DuckDBPyConnection | None = None
    # Warehouse gates: a read-only connection to the warehouse file.
    warehouse: duckdb.DuckDBPyConnection | None = None
    # dbt run_results.json files (paths or globs) that override the default locations.
    dbt_results: list[str] = field(default_factory=list)
    # Raw gate: reconciliation lines loaded into the audit store by this run.
    new_reconciliation_lines: set[str] = field(default_factory=set)

    @property
    def dbt_project_dir(self) -> Path:
        return self.settings.dbt_project_dir
