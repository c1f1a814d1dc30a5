"""The same dbt project on Spark (dbt-spark, session method, local pyspark) and on DuckDB: every
mart equal, and Spark's incremental models equal their own full refresh (docs/engines.md).
Then the ML stage, customer_360 and the publication through each engine (``after_ml``): the
same ml tables, the same customer_360, the same published tables.

One small simulated home, loaded in two deliveries and built on both engines after each, is
shared by every test here (``engines_home``, session-scoped: Spark's JVM and one warehouse
serve the whole module; a second home would need a second JVM).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import hashlib
import json
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


# --- the ML stage, customer_360 and the publication through each engine ------------------------

# Wall-clock columns: each engine's run stamps its own.
WALL_CLOCK = ("scored_at", "trained_at", "seconds", "published_at")
ML_OUTPUTS = ("ml_customer_value", "ml_churn_scores", "ml_customer_segments",
              "ml_product_recommendations", "ml_feedback_text", "ml_model_runs", "ml_drift")


def _comparable(table: pa.Table) -> pa.Table:
    """``table`` without wall-clock columns, and the registry's metrics without their timings
    (fit_seconds and the like)."""
    table = table.drop([c for c in table.column_names if c in WALL_CLOCK])
    if "metrics" in table.column_names:
        metrics = [None if m is None else json.dumps(
            {k: v for k, v in json.loads(m).items() if not k.endswith("seconds")}, sort_keys=True)
            for m in table.column("metrics").to_pylist()]
        table = table.set_column(table.column_names.index("metrics"), "metrics", pa.array(metrics, pa.string()))
    return table


@pytest.fixture(scope="session")
def after_ml(engines_home):
    """The DAG's stages after the marts on both engines, DuckDB first: ML (its dbt features,
    then training and scoring), customer_360, publish. Yields the stages' summaries."""
    from customer360.core import layers
    from customer360.pipeline import stages

    settings, on_spark, _spark, last = engines_home
    out = {}
    for engine, s in (("duckdb", settings), ("spark", on_spark)):
        out[engine] = {"ml": stages.machine_learning(last, s),
                       "customer_360": stages.build_layer(layers.CUSTOMER_360, last, s),
                       "publish": stages.publish(last, s)}
    return out


def test_ml_on_spark_writes_the_same_ml_tables(engines_home, after_ml):
    from customer360.warehouse.engine_io import read_spark_table

    settings, _on_spark, spark, _last = engines_home
    assert after_ml["spark"]["ml"]["row_counts"] == after_ml["duckdb"]["ml"]["row_counts"]
    duck = duckdb_tables(settings, "ml")
    # the features the stage reads, built by the ml layer on each engine: same rows and types
    for name in ("ml_customer_features", "ml_product_views"):
        other = spark_table(spark, f"ml.{name}")
        assert_same_rows(duck[name], other, f"ml.{name}")
        assert read_spark_table(spark, f"ml.{name}").schema == duck[name].schema, name
    for name in ML_OUTPUTS:
        assert_same_rows(_comparable(duck[name]), _comparable(spark_table(spark, f"ml.{name}")), f"ml.{name}")
    # not vacuous: scores, segments and recommendations for the home's customers
    assert duck["ml_churn_scores"].column("churn_probability").null_count < duck["ml_churn_scores"].num_rows
    assert duck["ml_customer_segments"].num_rows > 20 and duck["ml_product_recommendations"].num_rows > 20


def test_customer_360_on_spark_after_ml_equals_duckdb(engines_home, after_ml):
    settings, _on_spark, spark, _last = engines_home
    duck = duckdb_tables(settings, "marts")["customer_360"]
    assert_same_rows(duck, spark_table(spark, "marts.customer_360"), "marts.customer_360 after ML")
    # it carries the ML stage's scores (null in a build before the stage)
    for column in ("churn_probability", "segment_name"):
        assert duck.column(column).null_count < duck.num_rows, column


def test_publication_from_spark_equals_duckdbs(engines_home, after_ml):
    import duckdb

    settings, _on_spark, _spark, _last = engines_home
    versions = {e: after_ml[e]["publish"]["version"] for e in ("duckdb", "spark")}
    assert versions["duckdb"] != versions["spark"]
    assert after_ml["spark"]["publish"]["tables"] == after_ml["duckdb"]["publish"]["tables"]
    published = {}
    for engine, version in versions.items():
        con = duckdb.connect(str(settings.published_dir / version / "c360.duckdb"), read_only=True)
        try:
            columns = con.execute(
                "select table_schema, table_name, column_name, data_type from information_schema.columns "
                "where table_schema in ('marts', 'ml') order by 1, 2, ordinal_position").fetchall()
            sums = {f"{s}.{t}": checksum(canonical_rows(_comparable(
                        con.execute(f"select * from {s}.{t}").to_arrow_table())))
                    for s, t in sorted({(s, t) for s, t, _, _ in columns})}
        finally:
            con.close()
        published[engine] = (columns, sums)
    # the same tables with the same DuckDB types (a contract's TIMESTAMPTZ, the registry's JSON)
    assert published["spark"][0] == published["duckdb"][0]
    assert published["spark"][1] == published["duckdb"][1]
    assert {"marts.customer_360", "ml.ml_churn_scores"} <= set(published["duckdb"][1])
    # the work copies the Spark publish read from are gone
    assert not list((settings.home / "tmp").glob("spark_*.duckdb*"))


def test_interrupted_spark_write_is_finished_or_dropped(engines_home):
    from customer360.warehouse import engine_io

    _settings, _on_spark, spark, _last = engines_home
    probe = pa.table({"x": pa.array([1, 2], pa.int64())})
    spark.sql("create database if not exists scratch")
    # dropped before the rename: the new table is whole, so it becomes the table
    spark.createDataFrame(probe).write.format("parquet").mode("overwrite").saveAsTable("scratch.probe__c360_new")
    assert engine_io.finish_swaps(spark, "scratch") == ["renamed scratch.probe__c360_new to scratch.probe"]
    assert engine_io.spark_tables(spark, "scratch") == ["probe"]
    # a new table beside the old one never finished its write: dropped, the old one kept
    spark.createDataFrame(pa.table({"x": pa.array([9], pa.int64())})).write.format("parquet") \
        .mode("overwrite").saveAsTable("scratch.probe__c360_new")
    assert engine_io.finish_swaps(spark, "scratch") == ["dropped the unfinished scratch.probe__c360_new"]
    assert sorted(engine_io.read_spark_table(spark, "scratch.probe").column("x").to_pylist()) == [1, 2]
    spark.sql("drop database scratch cascade")


def _gate_outcomes(settings, stage: str, day: dt.date, run_id: str) -> dict:
    from customer360.quality.gates import GateFailed, run_gate

    try:
        result = run_gate(settings, stage, day, run_id=run_id)
    except GateFailed as failed:
        result = failed.result
    return {(r.suite, r.expectation, r.column, json.dumps(r.kwargs, sort_keys=True, default=str)):
            (r.outcome, r.unexpected_count) for s in result.suites for r in s.results}


def test_the_warehouse_gates_on_spark_judge_the_spark_tables(engines_home, after_ml):
    """Each expectation of the intermediate and marts gates comes out as on DuckDB; a duplicate
    written to the Spark table only fails the Spark gate (it reads Spark, not the DuckDB file)."""
    from customer360.quality.gates import GateFailed, run_gate
    from customer360.warehouse import engine_io

    settings, on_spark, spark, last = engines_home
    for stage in ("intermediate", "marts"):
        duck = _gate_outcomes(settings, stage, last, f"duck-{stage}")
        on = _gate_outcomes(on_spark, stage, last, f"spark-{stage}")
        assert len(duck) >= 10 and on.keys() == duck.keys(), stage
        # dbt's own results are each engine's (the Spark build ran no data tests here)
        differ = {k: (duck[k], on[k]) for k in duck if duck[k] != on[k] and not k[0].endswith("dbt_tests")}
        assert differ == {}, (stage, differ)
    original = engine_io.read_spark_table(spark, "intermediate.int_identity__clusters")
    engine_io.write_spark_table(spark, "intermediate", "int_identity__clusters",
                                pa.concat_tables([original, original.slice(0, 1)]))
    try:
        with pytest.raises(GateFailed) as failed:
            run_gate(on_spark, "intermediate", last, run_id="spark-duplicate")
        assert "intermediate.unique_keys" in str(failed.value)
        run_gate_duck = _gate_outcomes(settings, "intermediate", last, "duck-after")
        assert all(o != "fail" for (suite, *_), (o, _n) in run_gate_duck.items() if suite == "intermediate.unique_keys")
    finally:
        engine_io.write_spark_table(spark, "intermediate", "int_identity__clusters", original)


def test_ml_on_spark_reads_the_spark_features(engines_home, after_ml):
    """A feature changed in the Spark table only changes that customer's Spark churn score.
    Last of the module: it leaves the Spark ml outputs scored on the changed row."""
    from customer360.ml.pipeline import run_ml
    from customer360.warehouse import engine_io

    settings, on_spark, spark, last = engines_home
    original = engine_io.read_spark_table(spark, "ml.ml_customer_features")
    rows = original.to_pylist()
    buyers = [r for r in rows if r["is_scoring_snapshot"] and (r["orders_lifetime"] or 0) > 0]
    target = min(buyers, key=lambda r: (r["recency_days"], r["customer_id"]))
    assert target["recency_days"] < 100
    changed = pa.Table.from_pylist(
        [{**r, "recency_days": 300} if r is target else r for r in rows], schema=original.schema)
    before = {r["customer_id"]: r["churn_probability"]
              for r in duckdb_tables(settings, "ml")["ml_churn_scores"].to_pylist()}
    engine_io.write_spark_table(spark, "ml", "ml_customer_features", changed)
    try:
        run_ml(on_spark, last)
    finally:
        engine_io.write_spark_table(spark, "ml", "ml_customer_features", original)
    after = {r["customer_id"]: r["churn_probability"] for r in spark_table(spark, "ml.ml_churn_scores").to_pylist()}
    assert after[target["customer_id"]] > before[target["customer_id"]] + 0.01
    others = {c for c in before if c != target["customer_id"]}
    assert {c: _canonical_value(after[c]) for c in others} == {c: _canonical_value(before[c]) for c in others}
