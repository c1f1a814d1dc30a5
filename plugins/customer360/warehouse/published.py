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


def list_publishable_tables(con: duckdb.DuckDBPyConnection, catalog: str) -> list[tuple[str, str]]:
    rows = con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_catalog = ? AND table_type = 'BASE TABLE' AND table_name NOT LIKE '\\_%' ESCAPE '\\' "
        "AND (table_schema = 'marts' OR (table_schema = 'ml' AND list_contains(?, table_name))) "
        "ORDER BY 1, 2",
        [catalog, list(PUBLISHED_ML_TABLES)],
    ).fetchall()
    return [(s, t) for s, t in rows]
