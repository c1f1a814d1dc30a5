"""The Spark engine of the warehouse (``C360_ENGINE=spark``; docs/engines.md).

dbt-spark's ``session`` method runs dbt's SQL on ``SparkSession.builder.getOrCreate()`` in this
process, so the session :func:`spark_session` starts first is the one dbt uses: it carries the
warehouse's settings (a local master, few shuffle partitions, UTC, the metastore and the table
files under the home) and the warehouse's SQL functions, registered here with the SAME Python
code DuckDB registers (:mod:`customer360.warehouse.sql_functions`), so both engines give the same
phone numbers, countries, hashes and till amounts.

One session serves one home: Spark fixes its warehouse folder and metastore when the JVM
starts, so asking for another home in the same process is refused rather than writing one
home's tables into another's.
"""

from __future__ import annotations

import glob as _glob
import logging
import os
import sys
from pathlib import Path

from customer360.core.settings import Settings, SettingsError

log = logging.getLogger(__name__)

_HOME_CONF = "spark.customer360.home"


def spark_dir(settings: Settings) -> Path:
    """Where the spark engine keeps its tables (one folder per schema) and its metastore."""
    return settings.home / "warehouse" / "spark"


def spark_session(settings: Settings):
    """The process's SparkSession for ``settings.home``, started on first use."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        started_for = active.conf.get(_HOME_CONF, None)
        if started_for != str(settings.home):
            raise SettingsError(
                f"this process's Spark session serves the home {started_for}, not "
                f"{settings.home}: one Spark session (one JVM) serves one home")
        return active
    root = spark_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    (settings.home / "tmp" / "spark").mkdir(parents=True, exist_ok=True)
    # Spark's Python workers must be this interpreter with this package importable.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    package_root = str(Path(__file__).resolve().parents[2])
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if package_root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([package_root, *paths])
    metastore = root / "metastore_db"
    builder = (SparkSession.builder
               .master(settings.spark_master)
               .appName("customer360-dbt")
               .config(_HOME_CONF, str(settings.home))
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
               .config("spark.default.parallelism", str(settings.spark_shuffle_partitions))
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.driver.extraJavaOptions",
                       f"-Duser.timezone=UTC -Dderby.system.home={root}")
               .config("spark.sql.warehouse.dir", str(root / "tables"))
               .config("spark.local.dir", str(settings.home / "tmp" / "spark"))
               .config("spark.hadoop.javax.jdo.option.ConnectionURL",
                       f"jdbc:derby:;databaseName={metastore};create=true")
               # Batches written before a column existed lack it: read the union of the
               # columns, as DuckDB's read_parquet(union_by_name = true) does.
               .config("spark.sql.parquet.mergeSchema", "true")
               # insert_overwrite replaces only the partitions a run produces (delete+insert
               # by partition key on DuckDB).
               .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
               .config("spark.sql.legacy.createHiveTableByDefault", "false")
               # A literal's backslashes are the regular expression's own, as in DuckDB.
               # (ANSI mode is not ours to set: dbt-spark turns it off on every statement.)
               .config("spark.sql.parser.escapedStringLiterals", "true")
               .enableHiveSupport())
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    register_functions(session, settings)
    return session


def stop_session() -> None:
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()


def register_functions(spark, settings: Settings) -> None:
    """The warehouse's scalar functions on ``spark``, as Arrow-batched UDFs over the very
    functions DuckDB gets (:func:`customer360.warehouse.sql_functions.register_functions`).

    ``c360_pos_amount`` runs the POS loader's own DuckDB macro on each batch in an in-memory
    DuckDB: re-writing that regular-expression rule in Spark SQL would give the warehouse a
    second owner of "what this till's text means" and let the two drift apart.
    """
    import pyarrow as pa
    from pyspark.sql.functions import ArrowUDFType, arrow_udf

    from customer360.warehouse import sql_functions

    def scalar(fn, return_type: str):
        return arrow_udf(fn, return_type, ArrowUDFType.SCALAR)

    def glob_counts(patterns: pa.Array) -> pa.Array:
        return pa.array([len(_glob.glob(p)) if p is not None else 0 for p in patterns.to_pylist()],
                        type=pa.int64())

    for name, fn, return_type in (
            ("normalize_phone", sql_functions.phone_batch, "string"),
            ("normalize_country", sql_functions.country_batch, "string"),
            ("pii_hash", pii_hash_batch, "string"),
            ("c360_pos_amount", pos_amount_batch, "decimal(18,2)"),
            ("c360_glob_count", glob_counts, "bigint")):
        spark.udf.register(name, scalar(fn, return_type))


_HASH_BATCH = None


def pii_hash_batch(values):
    """pii_hash over one Arrow batch. The key is read from C360_PII_KEY where the batch runs
    (a Python worker inherits the driver's environment; a cluster's executors get it through
    spark.executorEnv, docs/engines.md), never shipped inside the pickled function."""
    global _HASH_BATCH
    if _HASH_BATCH is None:
        from customer360.warehouse import sql_functions

        _HASH_BATCH = sql_functions.hash_batch(sql_functions.hasher_for_settings())
    return _HASH_BATCH(values)


def pos_amount_batch(txt, country):
    """c360_pos_amount over one Arrow batch, by the DuckDB macro itself."""
    import pyarrow as pa

    con = _amount_connection()
    con.register("amount_batch", pa.table({"txt": txt.cast(pa.string()),
                                           "country": country.cast(pa.string())}))
    try:
        rows = con.execute("select c360_pos_amount(txt, country) from amount_batch").fetchall()
    finally:
        con.unregister("amount_batch")
    return pa.array([r[0] for r in rows], type=pa.decimal128(18, 2))


_AMOUNT_CON = None


def _amount_connection():
    """One in-memory DuckDB per Spark Python worker, with the amount macros."""
    global _AMOUNT_CON
    if _AMOUNT_CON is None:
        from customer360.core.duck import connect
        from customer360.ingest.landing.pos_amounts import install_amount_macros

        _AMOUNT_CON = connect(None)
        install_amount_macros(_AMOUNT_CON)
    return _AMOUNT_CON


# --- identity clusters until they are SQL ------------------------------------------------
# int_identity__clusters is a dbt Python model today (scipy, DuckDB's Python API), and
# dbt-spark runs Python models only on Databricks. Until the portable SQL version replaces it,
# the Spark build computes the same table here, with the same rules (identity_clusters), and
# dbt builds everything else. When the model is SQL, IDENTITY_STANDIN is False and dbt builds
# it like any other model.
IDENTITY_MODEL = "int_identity__clusters"
IDENTITY_STANDIN = (Path(__file__).resolve().parents[3] / "dbt_project" / "models"
                    / "intermediate" / f"{IDENTITY_MODEL}.py").exists()
_PERSON_KEY_TYPES = ("contact", "email", "phone", "loyalty")


def build_identity_clusters(spark) -> int:
    """Write intermediate.int_identity__clusters from the nodes and edges on Spark, keeping
    the ids of its previous version, as the Python model does on DuckDB. Returns its rows."""
    import pandas as pd
    import pyarrow as pa

    from customer360.warehouse.identity_clusters import assign_ids, component_labels, keyed_id_maker

    schema = pa.schema([("identity_key", pa.string()), ("key_type", pa.string()),
                        ("customer_id", pa.string()), ("cluster_size", pa.int64())])
    nodes = spark.table("intermediate.int_identity__nodes").select("identity_key", "key_type").toPandas()
    edges = spark.table("intermediate.int_identity__edges").select("left_key", "right_key").toPandas()
    target = f"intermediate.{IDENTITY_MODEL}"
    if spark.catalog.tableExists(target):
        previous = spark.table(target).selectExpr("identity_key", "customer_id as previous_id").toPandas()
    else:
        previous = pd.DataFrame({"identity_key": pd.Series(dtype="str"),
                                 "previous_id": pd.Series(dtype="str")})
    if nodes.empty:
        out = schema.empty_table()
    else:
        nodes = nodes.sort_values("identity_key", ignore_index=True)
        nodes["component"] = component_labels(nodes["identity_key"], edges["left_key"],
                                              edges["right_key"])
        is_person = nodes["key_type"].isin(_PERSON_KEY_TYPES)
        nodes = nodes[is_person.groupby(nodes["component"]).transform("any")]
        frame = assign_ids(nodes, previous, keyed_id_maker())[schema.names].sort_values("identity_key")
        out = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    # Written through a side table: Spark will not overwrite a table it is reading from.
    frame = spark.createDataFrame(out.to_pandas()) if out.num_rows else spark.createDataFrame(
        [], "identity_key string, key_type string, customer_id string, cluster_size bigint")
    frame.write.mode("overwrite").format("parquet").saveAsTable(f"{target}__c360_new")
    spark.sql(f"drop table if exists {target}")
    spark.sql(f"alter table {target}__c360_new rename to {target}")
    return out.num_rows


# Nodes the Spark build leaves out (none: the snapshot is written to Parquet by
# dbt_project/macros/spark_snapshot.sql).
SPARK_UNSUPPORTED: tuple[str, ...] = ()


def build_warehouse(settings: Settings, *, full_refresh: bool = False, logical_date=None,
                    tests: bool = False):
    """Every layer through customer_360 and kpi_daily on Spark, in dbt invocations around the
    identity stand-in. ``tests`` runs dbt's data tests too (unit tests are DuckDB SQL
    fixtures and run on DuckDB only). Returns the RunResults of each invocation."""
    from customer360.warehouse import dbt_runner

    common = [*dbt_runner._vars(logical_date), *(["--full-refresh"] if full_refresh else [])]
    if not tests:
        common += ["--exclude-resource-type", "test"]
    common += ["--exclude-resource-type", "unit_test"]
    skip = list(SPARK_UNSUPPORTED)
    upstream_of_clusters = ["path:seeds", "path:models/staging", "path:models/intermediate"]
    results = []
    if IDENTITY_STANDIN:
        results.append(dbt_runner._invoke_checked(settings, [
            "build", "--select", *upstream_of_clusters,
            "--exclude", f"{IDENTITY_MODEL}+", *skip, *common], what="dbt build on Spark (before identity)"))
        build_identity_clusters(spark_session(settings))
        results.append(dbt_runner._invoke_checked(settings, [
            "build", "--select", f"{IDENTITY_MODEL}+", "path:snapshots", "path:models/marts",
            "path:models/ml", "--exclude", IDENTITY_MODEL, *skip, *common],
            what="dbt build on Spark (after identity)"))
    else:
        results.append(dbt_runner._invoke_checked(settings, [
            "build", "--selector", "warehouse", *(["--exclude", *skip] if skip else []), *common],
            what="dbt build of the warehouse on Spark"))
    return results
