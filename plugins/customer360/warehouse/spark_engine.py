"""Building the warehouse on Spark (``C360_ENGINE=spark``; docs/engines.md): the dbt
invocations, and the identity clusters until their model is SQL. The session and its SQL
functions are :mod:`customer360.warehouse.spark_session`."""

from __future__ import annotations

from customer360.core.settings import Settings
from customer360.warehouse import dbt_runner
from customer360.warehouse.spark_session import spark_session


# --- identity clusters until they are SQL ------------------------------------------------
# int_identity__clusters is a dbt Python model today (scipy, DuckDB's Python API), and
# dbt-spark runs Python models only on Databricks. Until the portable SQL version replaces it,
# the Spark build computes the same table here, with the same rules (identity_clusters), and
# dbt builds everything else. When the model is SQL, identity_standin() is False and dbt builds
# it like any other model.
IDENTITY_MODEL = "int_identity__clusters"


def identity_standin(settings: Settings) -> bool:
    """True while the identity model is the Python one."""
    return (settings.dbt_project_dir / "models" / "intermediate" / f"{IDENTITY_MODEL}.py").exists()
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
    common = [*dbt_runner._vars(logical_date), *(["--full-refresh"] if full_refresh else [])]
    if not tests:
        common += ["--exclude-resource-type", "test"]
    common += ["--exclude-resource-type", "unit_test"]
    skip = list(SPARK_UNSUPPORTED)
    upstream_of_clusters = ["path:seeds", "path:models/staging", "path:models/intermediate"]
    results = []
    if identity_standin(settings):
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
