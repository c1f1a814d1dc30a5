"""Reading the ML inputs from the warehouse and writing the outputs back.

On DuckDB (``C360_ENGINE=duckdb``) the stage works in the warehouse file itself and its outputs
are replaced in one transaction. On Spark it works in an in-memory DuckDB holding the Spark
tables it reads (:data:`ML_INPUTS`, mirrored by :mod:`customer360.warehouse.engine_io`), so
every query of the stage is the same SQL on both engines; :func:`write_back` then replaces the
ml tables of the Spark warehouse (table by table: docs/engines.md says what is not atomic).
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable

import duckdb
import pandas as pd

from customer360.core import duck
from customer360.warehouse import engine_io

OUTPUT_SCHEMA = "ml"

# Every warehouse table the stage reads (the features, the facts CLV and the recommender read,
# the texts and the names masked in them, the RFM segment shown beside the behavioural one):
# on Spark these, and only these, are mirrored. A table the stage starts reading must be
# added here (tests/test_spark_engine.py compares the stage's outputs on both engines).
ML_INPUTS: tuple[tuple[str, str], ...] = (
    (OUTPUT_SCHEMA, "ml_customer_features"), (OUTPUT_SCHEMA, "ml_product_views"),
    ("marts", "fct_orders"), ("marts", "fct_order_lines"), ("marts", "fct_tickets"),
    ("marts", "fct_feedback"), ("marts", "customer_360"), ("intermediate", "int_customers__rfm"),
    ("staging", "stg_crm__tickets"), ("staging", "stg_crm__feedback_submissions"),
    ("staging", "stg_crm__contacts"))
# The registry: read for the decisions, and this date's rows replaced in place (so copied into
# the stage's DuckDB as tables, not views).
REGISTRY_TABLES: tuple[tuple[str, str], ...] = ((OUTPUT_SCHEMA, "ml_model_runs"), (OUTPUT_SCHEMA, "ml_drift"))


class FeaturesMissing(RuntimeError):
    """The dbt models of the ml schema have not been built in this warehouse."""


def connect(settings, registry_only: bool = False) -> duckdb.DuckDBPyConnection:
    """The stage's connection. DuckDB: the warehouse, opened for writing (the DAG's pool makes
    ML its only writer then). Spark: an in-memory DuckDB with the Spark tables the stage reads
    (only the registry with ``registry_only``), under their warehouse names."""
    if settings.engine == "spark":
        from customer360.warehouse.spark_session import spark_session

        con = duck.connect(settings)
        try:
            engine_io.spark_mirror(spark_session(settings), con, () if registry_only else ML_INPUTS,
                                   copies=REGISTRY_TABLES, types=_registry_types())
        except BaseException:
            con.close()
            raise
        return con
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    return duck.connect(settings, settings.warehouse_path)


def _registry_types() -> dict[tuple[str, str], dict[str, str]]:
    """The registry tables' column types as their DDL declares them (JSON metrics, which Spark
    keeps as text): a registry a run on Spark started is given them back."""
    from customer360.ml.registry import ensure_tables

    con = duck.connect(None)
    try:
        ensure_tables(con)
        rows = con.execute("select table_schema, table_name, column_name, data_type "
                           "from information_schema.columns where table_schema = ?",
                           [OUTPUT_SCHEMA]).fetchall()
    finally:
        con.close()
    out: dict[tuple[str, str], dict[str, str]] = {}
    for schema, name, column, data_type in rows:
        out.setdefault((schema, name), {})[column] = data_type
    return out


def write_back(settings, con: duckdb.DuckDBPyConnection, names: Iterable[str]) -> dict[str, int]:
    """After :func:`replace_tables`: on Spark, the ml tables ``names`` of the stage's DuckDB
    replace the Spark warehouse's (the registry tables last, so that a run that dies part-way
    is not recorded as done and a rerun redoes it); nothing to do on DuckDB, where
    replace_tables wrote the warehouse itself. Returns the rows written a table."""
    if settings.engine != "spark":
        return {}
    from customer360.warehouse.spark_session import spark_session

    spark = spark_session(settings)
    registry = [n for _, n in REGISTRY_TABLES]
    ordered = [n for n in names if n not in registry] + [n for n in registry if n in names]
    return {name: engine_io.write_spark_table(spark, OUTPUT_SCHEMA, name,
                                              *engine_io.duckdb_table_arrow(con, OUTPUT_SCHEMA, name))
            for name in ordered}


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
