"""Which warehouse tables are the published interface (docs/marts.md): every table of the
marts schema and the ML stage's outputs. The publisher copies them, the marts gate checks
them, the erasure purges them in the publication."""

from __future__ import annotations

import duckdb

PUBLISHED_SCHEMAS = ("marts", "ml")
# The ml schema also holds working tables (point-in-time features, product views with
# device ids, drift): only the docs/marts.md model outputs are published.
PUBLISHED_ML_TABLES = ("ml_customer_segments", "ml_churn_scores", "ml_product_recommendations", "ml_feedback_text",
                       "ml_model_runs", "ml_customer_value")


def list_spark_publishable_tables(spark) -> list[tuple[str, str]]:
    """The same rule on the Spark warehouse: its side tables (``__c360_`` work tables of the
    Parquet incremental models and staged writes) are no more published than DuckDB's
    underscored ones."""
    from customer360.warehouse.engine_io import SIDE_TABLE_MARKER, spark_tables

    out = []
    for schema in PUBLISHED_SCHEMAS:
        for name in spark_tables(spark, schema):
            if name.startswith("_") or SIDE_TABLE_MARKER in name:
                continue
            if schema == "marts" or name in PUBLISHED_ML_TABLES:
                out.append((schema, name))
    return out


def list_publishable_tables(con: duckdb.DuckDBPyConnection, catalog: str) -> list[tuple[str, str]]:
    rows = con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_catalog = ? AND table_type = 'BASE TABLE' AND table_name NOT LIKE '\\_%' ESCAPE '\\' "
        "AND (table_schema = 'marts' OR (table_schema = 'ml' AND list_contains(?, table_name))) "
        "ORDER BY 1, 2",
        [catalog, list(PUBLISHED_ML_TABLES)],
    ).fetchall()
    return [(s, t) for s, t in rows]
