"""Publish the marts and ML tables into PostgreSQL for BI tools (Metabase, Superset, Tableau).

One transaction a publish: the tables are loaded into fresh ``<schema>__next`` schemas, the
old schemas are dropped and the new ones renamed into place, and only the commit makes the
new state visible; a reader mid-query keeps its snapshot, a failure rolls everything back.
Readers use the ``c360_analyst`` group role: USAGE and SELECT on the published schemas only.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

from customer360.core import duck
from customer360.warehouse.published import PUBLISHED_SCHEMAS, list_publishable_tables
from customer360.core.settings import Settings

log = logging.getLogger(__name__)

ANALYST_ROLE = "c360_analyst"
ADMIN_ROLE = "c360_admin"


def _pg_type(duck_type: str) -> str:
    t = duck_type.upper()
    simple = {
        "VARCHAR": "text", "BIGINT": "bigint", "INTEGER": "integer", "SMALLINT": "smallint",
        "TINYINT": "smallint", "HUGEINT": "numeric", "UBIGINT": "numeric", "UINTEGER": "bigint",
        "DOUBLE": "double precision", "FLOAT": "real", "BOOLEAN": "boolean", "DATE": "date",
        "TIMESTAMP": "timestamp", "TIMESTAMP WITH TIME ZONE": "timestamptz", "TIME": "time",
        "UUID": "uuid", "JSON": "jsonb", "INTERVAL": "interval",
    }
    if t in simple:
        return simple[t]
    if t.startswith("DECIMAL"):
        return t.replace("DECIMAL", "numeric")
    if t.startswith("TIMESTAMP"):
        return "timestamp"
    return "text"  # lists, structs, maps: published as their text form


def _ident(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"unexpected identifier {name!r}")
    return f'"{name}"'


def ensure_roles(cur) -> None:
    """Create the group roles if missing (needs a role allowed to CREATE ROLE)."""
    for role in (ANALYST_ROLE, ADMIN_ROLE):
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        if cur.fetchone() is None:
            cur.execute(f"CREATE ROLE {role} NOLOGIN")
    # Analysts get nothing by default in the public schema.
    cur.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")


def publish_postgres(settings: Settings, published_db: Path | None = None) -> dict:
    import psycopg

    dsn = settings.publish_postgres_dsn
    if not dsn:
        raise ValueError("C360_PUBLISH_POSTGRES_DSN is not set: nothing to publish to")
    published_db = published_db or settings.published_db
    dcon = duck.connect(settings, published_db, read_only=True)
    counts: dict[str, int] = {}
    try:
        catalog = dcon.execute("SELECT current_database()").fetchone()[0]
        tables = list_publishable_tables(dcon, catalog)
        with psycopg.connect(dsn) as pg, tempfile.TemporaryDirectory() as tmp:
            with pg.cursor() as cur:
                ensure_roles(cur)
                schemas = sorted({s for s, _ in tables})
                for schema in schemas:
                    cur.execute(f"DROP SCHEMA IF EXISTS {_ident(schema + '__next')} CASCADE")
                    cur.execute(f"CREATE SCHEMA {_ident(schema + '__next')} AUTHORIZATION {ADMIN_ROLE}")
                for schema, name in tables:
                    cols = dcon.execute(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                        [schema, name]).fetchall()
                    target = f"{_ident(schema + '__next')}.{_ident(name)}"
                    ddl = ", ".join(f"{_ident(c)} {_pg_type(t)}" for c, t in cols)
                    cur.execute(f"CREATE TABLE {target} ({ddl})")
                    csv_path = Path(tmp) / f"{schema}.{name}.csv"
                    dcon.execute(f"COPY {schema}.{name} TO '{csv_path}' (FORMAT csv, HEADER true)")
                    col_list = ", ".join(_ident(c) for c, _ in cols)
                    with cur.copy(f"COPY {target} ({col_list}) FROM STDIN WITH (FORMAT csv, HEADER true)") as cp:
                        with open(csv_path, "rb") as fh:
                            while chunk := fh.read(1 << 20):
                                cp.write(chunk)
                    counts[f"{schema}.{name}"] = dcon.execute(
                        f"SELECT count(*) FROM {schema}.{name}").fetchone()[0]
                for schema in schemas:
                    cur.execute(f"DROP SCHEMA IF EXISTS {_ident(schema)} CASCADE")
                    cur.execute(f"ALTER SCHEMA {_ident(schema + '__next')} RENAME TO {_ident(schema)}")
                    cur.execute(f"GRANT USAGE ON SCHEMA {_ident(schema)} TO {ANALYST_ROLE}")
                    cur.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {_ident(schema)} TO {ANALYST_ROLE}")
                    cur.execute(f"GRANT ALL ON SCHEMA {_ident(schema)} TO {ADMIN_ROLE}")
                    cur.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA {_ident(schema)} TO {ADMIN_ROLE}")
            pg.commit()
    finally:
        dcon.close()
    log.info("published %d tables to PostgreSQL", len(counts))
    return {"tables": counts, "schemas": list(PUBLISHED_SCHEMAS)}
