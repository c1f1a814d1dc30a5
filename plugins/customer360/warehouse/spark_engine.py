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
               # Read the project's SQL as DuckDB does: "x" is an identifier (needs ANSI
               # mode, which also makes bad casts fail as DuckDB's do) and a literal's
               # backslashes are the regular expression's own.
               .config("spark.sql.ansi.enabled", "true")
               .config("spark.sql.ansi.doubleQuotedIdentifiers", "true")
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
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    from customer360.core.countries import country_code
    from customer360.warehouse.sql_functions import hasher_for_settings, normalize_phone

    hasher = hasher_for_settings()

    @pandas_udf("string")
    def c360_normalize_phone(raw: pd.Series, country: pd.Series) -> pd.Series:
        return pd.Series([normalize_phone(r, c) for r, c in
                          zip(_values(raw), _values(country))], dtype=object)

    @pandas_udf("string")
    def c360_normalize_country(values: pd.Series) -> pd.Series:
        return pd.Series([country_code(v) for v in _values(values)], dtype=object)

    @pandas_udf("string")
    def c360_pii_hash(values: pd.Series) -> pd.Series:
        return pd.Series([hasher(v) for v in _values(values)], dtype=object)

    @pandas_udf("decimal(18,2)")
    def c360_pos_amount(txt: pd.Series, country: pd.Series) -> pd.Series:
        return _pos_amounts(txt, country)

    @pandas_udf("bigint")
    def c360_glob_count(patterns: pd.Series) -> pd.Series:
        return pd.Series([len(_glob.glob(p)) if p is not None else 0 for p in _values(patterns)],
                         dtype="int64")

    for name, fn in (("normalize_phone", c360_normalize_phone),
                     ("normalize_country", c360_normalize_country),
                     ("pii_hash", c360_pii_hash),
                     ("c360_pos_amount", c360_pos_amount),
                     ("c360_glob_count", c360_glob_count)):
        spark.udf.register(name, fn)


def _values(series) -> list:
    """A pandas Series as Python values with None for missing (pandas 3 gives NaN/NA)."""
    import pandas as pd

    return [None if v is None or (not isinstance(v, str) and pd.isna(v)) else v
            for v in series.tolist()]


def _pos_amounts(txt, country):
    import pandas as pd
    import pyarrow as pa

    con = _amount_connection()
    batch = pa.table({"txt": pa.array(_values(txt), pa.string()),
                      "country": pa.array(_values(country), pa.string())})
    con.register("amount_batch", batch)
    try:
        rows = con.execute("select c360_pos_amount(txt, country) from amount_batch").fetchall()
    finally:
        con.unregister("amount_batch")
    return pd.Series([r[0] for r in rows], dtype=object)


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
