"""Building the warehouse on Spark (``C360_ENGINE=spark``; docs/engines.md): one dbt build of
every layer, identity clustering included (it is SQL that both engines run). The session and
its SQL functions are :mod:`customer360.warehouse.spark_session`."""

from __future__ import annotations

from customer360.core.settings import Settings
from customer360.warehouse import dbt_runner
from customer360.warehouse.spark_session import spark_session


# Nodes the Spark build leaves out (none: the snapshot is written to Parquet by
# dbt_project/macros/spark_snapshot.sql).
SPARK_UNSUPPORTED: tuple[str, ...] = ()


def build_warehouse(settings: Settings, *, full_refresh: bool = False, logical_date=None,
                    tests: bool = False):
    """Every layer through customer_360 and kpi_daily on Spark, in one dbt
    build. ``tests`` runs dbt's data tests too (unit tests are DuckDB SQL fixtures and run on
    DuckDB only). Returns the RunResults of the invocation, in a list."""
    common = ["--full-refresh"] if full_refresh else []
    if not tests:
        common += ["--exclude-resource-type", "test"]
    common += ["--exclude-resource-type", "unit_test"]
    skip = list(SPARK_UNSUPPORTED)
    # the session (and its SQL functions) exists before dbt-spark's session method asks for it
    spark_session(settings)
    return [dbt_runner._invoke_checked(
        settings, ["build", "--selector", "warehouse", *(["--exclude", *skip] if skip else []),
                   *common],
        what="dbt build of the warehouse on Spark", env=dbt_runner._date_env(logical_date))]
