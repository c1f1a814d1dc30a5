"""The same dbt project on Spark (dbt-spark, session method, local pyspark) and on DuckDB: every
mart equal, and Spark's incremental models equal their own full refresh (docs/engines.md).

One small simulated home, loaded in two deliveries and built on both engines after each, is
shared by every test here (``engines_home``, session-scoped: Spark's JVM and one warehouse
serve the whole module; a second home would need a second JVM).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import hashlib
import math
from pathlib import Path

import pyarrow as pa
import pytest

from tests.e2e import START, pipeline_env

pytestmark = pytest.mark.slow

PEOPLE, DAYS = 120, 4
FIRST_DELIVERY = START + dt.timedelta(days=1)
INCREMENTAL_MODELS = ("staging.stg_web__events", "intermediate.int_web__sessions",
                      "intermediate.int_identity__web_observations", "marts.fct_order_lines")


def _canonical_value(value):
    """A value as both engines must agree on it: money to the cent, other floats to 9
    significant digits (sums of doubles differ in the last bits with the order of adding),
    timestamps as naive UTC, lists in order."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return float(f"{value:.9g}")
    if isinstance(value, decimal.Decimal):
        return str(value.quantize(decimal.Decimal("0.01"), rounding=decimal.ROUND_HALF_EVEN))
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return tuple(_canonical_value(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _canonical_value(v)) for k, v in value.items()))
    return value


def canonical_rows(table: pa.Table) -> list[tuple]:
    """Rows with columns by lower-cased name, canonical values, in a deterministic order."""
    names = sorted(table.column_names, key=str.lower)
    columns = [table.column(n).to_pylist() for n in names]
    rows = [tuple(_canonical_value(v) for v in row) for row in zip(*columns)]
    return sorted(rows, key=repr)


def checksum(rows: list[tuple]) -> str:
    return hashlib.sha256("\n".join(map(repr, rows)).encode()).hexdigest()[:16]


def assert_same_rows(left: pa.Table, right: pa.Table, what: str) -> None:
    assert sorted(c.lower() for c in left.column_names) == sorted(c.lower() for c in right.column_names), what
    a, b = canonical_rows(left), canonical_rows(right)
    assert len(a) == len(b), f"{what}: {len(a)} rows vs {len(b)}"
    if checksum(a) != checksum(b):
        only_a = [r for r in a if r not in set(b)][:3]
        only_b = [r for r in b if r not in set(a)][:3]
        names = sorted(left.column_names, key=str.lower)
        raise AssertionError(f"{what}: same {len(a)} rows count, other content; columns {names}\n"
                             f"  first only in the first: {only_a}\n  first only in the second: {only_b}")


def duckdb_tables(settings, schema: str) -> dict[str, pa.Table]:
    from customer360.core.duck import connect

    con = connect(settings, settings.warehouse_path, read_only=True)
    try:
        names = [n for (n,) in con.execute(
            "select table_name from information_schema.tables where table_schema = ? "
            "and table_type = 'BASE TABLE' order by 1", [schema]).fetchall()]
        return {n: con.execute(f'select * from "{schema}"."{n}"').to_arrow_table() for n in names}
    finally:
        con.close()


def spark_table(spark, name: str) -> pa.Table:
    return spark.table(name).toArrow()


@pytest.fixture(scope="session")
def engines_home(tmp_path_factory):
    """A home built on both engines after a first delivery and again, incrementally, after
    the rest: yields (settings, spark settings, spark session, last day)."""
    from customer360.demo.simulator import deliver
    from customer360.pipeline import stages
    from customer360.warehouse import dbt_runner, spark_engine

    home = tmp_path_factory.mktemp("engines") / "home"
    with pipeline_env(home, people=PEOPLE, days=DAYS, deliver_through=FIRST_DELIVERY) as (settings, _server, last):
        on_spark = dataclasses.replace(settings, engine="spark")
        for day in (FIRST_DELIVERY, last):
            if day == last:
                deliver(settings.simulation_dir, settings.landing, through=last + dt.timedelta(days=3))
            for source in ("crm", "web", "pos"):
                stages.extract(source, day, settings)
            dbt_runner.build_warehouse(settings, logical_date=day, tests=False)
            spark_engine.build_warehouse(on_spark, logical_date=day)
        yield settings, on_spark, spark_engine.spark_session(on_spark), last


def test_every_mart_on_spark_equals_duckdb(engines_home):
    settings, _on_spark, spark, _last = engines_home
    marts = duckdb_tables(settings, "marts")
    assert {"customer_360", "kpi_daily", "dim_customer", "fct_order_lines"} <= set(marts)
    spark_marts = {r.tableName for r in spark.sql("show tables in marts").collect()}
    assert set(marts) <= spark_marts, set(marts) - spark_marts
    for name, table in marts.items():
        assert_same_rows(table, spark_table(spark, f"marts.{name}"), f"marts.{name}")
    # the layers below too, but for dbt's run id (each engine's own invocation)
    for schema in ("staging", "intermediate"):
        for name, table in duckdb_tables(settings, schema).items():
            other = spark_table(spark, f"{schema}.{name}")
            drop = [c for c in table.column_names if c == "_invocation_id"]
            assert_same_rows(table.drop(drop), other.drop(drop), f"{schema}.{name}")
    # not a vacuous equality: the home has customers, orders and days
    assert marts["customer_360"].num_rows > 20 and marts["kpi_daily"].num_rows >= DAYS


def test_identity_partition_and_ids_agree(engines_home):
    settings, _on_spark, spark, _last = engines_home
    duck = duckdb_tables(settings, "intermediate")["int_identity__clusters"]
    assert_same_rows(duck, spark_table(spark, "intermediate.int_identity__clusters"),
                     "intermediate.int_identity__clusters")
    assert len(set(duck.column("customer_id").to_pylist())) > 20


def test_snapshot_history_agrees(engines_home):
    settings, _on_spark, spark, _last = engines_home
    duck = duckdb_tables(settings, "snapshots")["snap_customer_profile"]
    keep = [c for c in duck.column_names if c not in ("dbt_scd_id", "dbt_updated_at")]
    spark_snap = spark_table(spark, "snapshots.snap_customer_profile")
    assert_same_rows(duck.select(keep), spark_snap.select(keep), "snapshots.snap_customer_profile")
    # two loads: some versions were closed by the second one
    assert duck.column("dbt_valid_to").null_count < duck.num_rows


def test_spark_incremental_equals_its_full_refresh(engines_home):
    _settings, on_spark, spark, last = engines_home
    from customer360.warehouse import dbt_runner

    incremental = {name: spark_table(spark, name) for name in INCREMENTAL_MODELS}
    dbt_runner._invoke_checked(on_spark, [
        "build", "--select", *[n.split(".")[1] for n in INCREMENTAL_MODELS], "--full-refresh",
        "--exclude-resource-type", "test", "--exclude-resource-type", "unit_test",
        "--vars", f'{{"as_of_date": "{last.isoformat()}"}}'], what="Spark full refresh")
    for name, table in incremental.items():
        fresh = spark_table(spark, name)
        drop = [c for c in ("_invocation_id",) if c in fresh.column_names]
        assert_same_rows(table.drop(drop), fresh.drop(drop), f"{name} incremental vs full refresh")
        assert table.num_rows > 0, name
