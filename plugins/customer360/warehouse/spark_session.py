"""The Spark session of the warehouse (``C360_ENGINE=spark``; docs/engines.md).

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
import os
import sys
from pathlib import Path

from customer360.core.settings import Settings, SettingsError

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
    # (The workers inherit this process's environment; sys.path already holds PYTHONPATH.)
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    package_root = str(Path(__file__).resolve().parents[2])
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([package_root, *filter(None, sys.path)]))
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
