"""Reading the ML inputs from the warehouse DuckDB and writing the outputs back atomically."""

from __future__ import annotations

import datetime as dt
from typing import Iterable

import duckdb
import pandas as pd

from customer360.core import duck

OUTPUT_SCHEMA = "ml"


class FeaturesMissing(RuntimeError):
    """The dbt models of the ml schema have not been built in this warehouse."""


def connect(settings) -> duckdb.DuckDBPyConnection:
    """The warehouse, opened for writing (the DAG's pool makes ML its only writer then)."""
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    return duck.connect(settings, settings.warehouse_path)


def find_table(con: duckdb.DuckDBPyConnection, name: str,
               preferred_schemas: Iterable[str] = (OUTPUT_SCHEMA,)) -> str | None:
    """The quoted schema.table holding `name`: in a preferred schema if there, else wherever
    dbt put it (a project without the custom schema macro writes <target>_ml)."""
    rows = con.execute("select table_schema from information_schema.tables where table_name = ?",
                       [name]).fetchall()
    schemas = [r[0] for r in rows]
    if not schemas:
        return None
    for preferred in preferred_schemas:
        if preferred in schemas:
            return f'"{preferred}"."{name}"'
    ends_ml = [s for s in schemas if s.endswith(OUTPUT_SCHEMA)]
    return f'"{(ends_ml or sorted(schemas))[0]}"."{name}"'


def columns_of(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    schema, name = [part.strip('"') for part in table.split(".")]
    rows = con.execute("select column_name, data_type from information_schema.columns "
                       "where table_schema = ? and table_name = ?", [schema, name]).fetchall()
    return {c.lower(): t for c, t in rows}


def require_features_table(con: duckdb.DuckDBPyConnection) -> str:
    table = find_table(con, "ml_customer_features")
    if table is None:
        raise FeaturesMissing(
            "ml.ml_customer_features does not exist in the warehouse: build the ml dbt models "
            "first (dbt build --select ml, after the marts)")
    return table


def snapshot_summary(con: duckdb.DuckDBPyConnection, table: str) -> pd.DataFrame:
    """One row a snapshot: its rows, and its labelled rows by class."""
    return con.execute(f"""
        select snapshot_date, bool_or(is_scoring_snapshot) as is_scoring_snapshot,
               max(label_horizon_days) as label_horizon_days, max(as_of_date) as as_of_date,
               count(*) as rows,
               count(churn_label) as labelled_rows,
               count(*) filter (where churn_label = 1) as churned_rows
        from {table} group by 1 order by 1""").df()


def read_features(con: duckdb.DuckDBPyConnection, table: str, snapshots: list[dt.date],
                  columns: list[str] | None = None, labelled_only: bool = False) -> pd.DataFrame:
    """Feature rows of some snapshots, in a stable order (customer, snapshot)."""
    if not snapshots:
        return pd.DataFrame()
    cols = "*" if columns is None else ", ".join(f'"{c}"' for c in dict.fromkeys(
        ["customer_id", "snapshot_date", *columns]))
    where = "snapshot_date in (select unnest(?::date[]))"
    if labelled_only:
        where += " and churn_label is not null"
    frame = con.execute(f"select {cols} from {table} where {where} order by customer_id, snapshot_date",
                        [list(snapshots)]).df()
    return frame


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
    return bool(con.execute("select count(*) from information_schema.tables "
                            "where table_schema = ? and table_name = ?", [schema, name]).fetchone()[0])


def replace_tables(con: duckdb.DuckDBPyConnection, frames: dict[str, pd.DataFrame],
                   appends: dict[str, tuple[str, pd.DataFrame]] | None = None) -> dict[str, int]:
    """In one transaction: replace each ml.<name> with its frame, and for appends
    {name: (delete_where, frame)} delete the matching rows then insert the frame (a rerun of a
    logical date replaces its own rows of the registry). Readers see all or nothing."""
    counts = {}
    con.execute(f"create schema if not exists {OUTPUT_SCHEMA}")
    con.execute("begin transaction")
    try:
        for name, frame in frames.items():
            con.register("_ml_out", frame)
            con.execute(f"create or replace table {OUTPUT_SCHEMA}.{name} as select * from _ml_out")
            con.unregister("_ml_out")
            counts[name] = len(frame)
        for name, (delete_where, frame) in (appends or {}).items():
            con.execute(f"delete from {OUTPUT_SCHEMA}.{name} where {delete_where}")
            if len(frame):
                con.register("_ml_out", frame)
                con.execute(f"insert into {OUTPUT_SCHEMA}.{name} by name select * from _ml_out")
                con.unregister("_ml_out")
            counts[name] = len(frame)
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise
    return counts
