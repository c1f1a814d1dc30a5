"""What a suite validates, read with DuckDB into DataFrames: a query (over the warehouse or
over raw Parquet batches) read in chunks, and the schema of a target as a one-row frame
for the suite's column contract."""

from __future__ import annotations

import re
from typing import Iterator

import duckdb
import pandas as pd
import pyarrow as pa

from customer360.core.settings import DEFAULT_GATE_CHUNK_ROWS as DEFAULT_CHUNK_ROWS  # C360_GATE_CHUNK_ROWS
from customer360.quality.gx_validation import FrameSource


def type_family(duckdb_type: str) -> str:
    """The family of a DuckDB type name, as the column contracts name them."""
    t = duckdb_type.upper()
    if t.endswith("[]") or t.startswith(("LIST", "ARRAY")):
        return "list"
    if t.startswith(("STRUCT", "MAP", "UNION")):
        return "struct"
    if t == "JSON":
        return "json"
    if t in ("VARCHAR", "TEXT", "STRING", "UUID") or t.startswith("VARCHAR"):
        return "string"
    if t == "BOOLEAN":
        return "boolean"
    if re.fullmatch(r"U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)|UHUGEINT", t):
        return "integer"
    if t in ("FLOAT", "DOUBLE", "REAL"):
        return "float"
    if t.startswith("DECIMAL"):
        return "decimal"
    if t == "DATE":
        return "date"
    if t.startswith("TIMESTAMP"):
        return "timestamp"
    return "other"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def describe(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, str]:
    """Column name -> DuckDB type of a query's result, without running it."""
    return {row[0]: row[1] for row in con.execute(f"DESCRIBE {sql}").fetchall()}


def schema_table(types: dict[str, str], contract: dict[str, str]) -> pd.DataFrame:
    """One row per contract column the target has: its name and type family (the frame a
    column contract is checked on; columns beyond the contract are welcome and left out)."""
    present = [c for c in contract if c in types]
    return pd.DataFrame({"column_name": present, "type_family": [type_family(types[c]) for c in present]},
                        dtype=object)


def _to_pandas(batch: pa.RecordBatch) -> pd.DataFrame:
    return batch.to_pandas()


class QuerySource(FrameSource):
    """The result of a DuckDB query, read column-projected and in chunks of ``chunk_rows``.

    Decimals and huge integers are read as doubles: GX compares numbers in pandas, where
    Decimal objects are slow and mix badly with float bounds.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, sql: str,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS):
        self.con, self.sql, self.chunk_rows = con, sql, chunk_rows
        self.types = describe(con, f"SELECT * FROM ({sql}) AS _target")
        self.columns = list(self.types)

    def _projection(self, columns: list[str]) -> str:
        parts = []
        for c in columns:
            family = type_family(self.types[c])
            if family == "decimal" or self.types[c].upper() in ("HUGEINT", "UHUGEINT"):
                parts.append(f"CAST({quote(c)} AS DOUBLE) AS {quote(c)}")
            else:
                parts.append(quote(c))
        return ", ".join(parts) or "1 AS _row"

    def chunks(self, columns: list[str]) -> Iterator[pd.DataFrame]:
        reader = self.con.execute(
            f"SELECT {self._projection(columns)} FROM ({self.sql}) AS _target"
        ).to_arrow_reader(self.chunk_rows)
        for batch in reader:
            if batch.num_rows:
                yield _to_pandas(batch)

    def row_count(self) -> int:
        return int(self.con.execute(f"SELECT count(*) FROM ({self.sql}) AS _target").fetchone()[0])
