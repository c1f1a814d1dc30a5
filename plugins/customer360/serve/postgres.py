"""Publish the marts and ML tables into PostgreSQL for BI tools (Metabase, Superset, Tableau).

One transaction a publish: the tables are loaded into fresh ``<schema>__next`` schemas, the
old schemas are dropped and the new ones renamed into place, and only the commit makes the
new state visible; a reader mid-query keeps its snapshot, a failure rolls everything back.
Readers use the ``c360_analyst`` group role: USAGE and SELECT on the published schemas only,
no TEMP objects, no CONNECT to other databases the publisher controls. The swap needs the
readers' locks released: a publish waits at most C360_PUBLISH_LOCK_TIMEOUT_SECONDS for them,
then rolls back and tries again, and after its last attempt fails with the cause named.
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
    """Create the group roles if missing (needs a role allowed to CREATE ROLE), and take from
    PUBLIC what every PostgreSQL role gets by default: CREATE in schema public, TEMP objects and
    CONNECT on this database (the group roles get CONNECT back), CONNECT on the other databases
    where the publisher may change it (a warning names those it may not)."""
    for role in (ANALYST_ROLE, ADMIN_ROLE):
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        if cur.fetchone() is None:
            cur.execute(f"CREATE ROLE {role} NOLOGIN")
    cur.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    cur.execute("SELECT current_database()")
    here = cur.fetchone()[0]
    cur.execute(f"REVOKE TEMPORARY, CONNECT ON DATABASE {_quoted(here)} FROM PUBLIC")
    cur.execute(f"GRANT CONNECT ON DATABASE {_quoted(here)} TO {ANALYST_ROLE}, {ADMIN_ROLE}")
    # Another database is another team's: its CONNECT for PUBLIC goes only where the publisher
    # owns it or is a superuser (a dedicated server, as in docker-compose), and its owner keeps it.
    cur.execute("""
        SELECT d.datname, pg_get_userbyid(d.datdba),
               pg_has_role(current_user, d.datdba, 'USAGE')
               OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
        FROM pg_database d
        WHERE d.datallowconn AND d.datname <> current_database()
          AND has_database_privilege('public', d.oid, 'CONNECT')""")
    left_open = []
    for name, owner, may in cur.fetchall():
        if may:
            cur.execute(f"GRANT CONNECT ON DATABASE {_quoted(name)} TO {_quoted(owner)}")
            cur.execute(f"REVOKE CONNECT ON DATABASE {_quoted(name)} FROM PUBLIC")
        else:
            left_open.append(name)
    if left_open:
        log.warning("PostgreSQL: every role, analysts included, may still CONNECT to %s (the "
                    "publisher does not own it); its owner can REVOKE CONNECT ... FROM PUBLIC",
                    ", ".join(sorted(left_open)))


def _quoted(name: str) -> str:
    """A catalog name (database, role) as an identifier, whatever it holds."""
    return '"' + name.replace('"', '""') + '"'


class PublishLockTimeout(RuntimeError):
    """Publishing waited too long for a lock readers held, on every attempt."""


PUBLISH_ATTEMPTS = 3


def publish_postgres(settings: Settings, published_db: Path | None = None) -> dict:
    """Publish, retrying when an open reader transaction holds a lock past the lock timeout:
    a BI tool's long query must delay a publication, never hang it."""
    import psycopg
    import tenacity

    dsn = settings.publish_postgres_dsn
    if not dsn:
        raise ValueError("C360_PUBLISH_POSTGRES_DSN is not set: nothing to publish to")
    timeout = settings.publish_lock_timeout_seconds
    try:
        for attempt in tenacity.Retrying(
                retry=tenacity.retry_if_exception_type(psycopg.errors.LockNotAvailable),
                stop=tenacity.stop_after_attempt(PUBLISH_ATTEMPTS),
                wait=tenacity.wait_exponential(multiplier=min(timeout, 5.0), max=30),
                before_sleep=lambda state: log.warning(
                    "PostgreSQL publish: a lock was held for more than %gs (attempt %d of %d); "
                    "rolled back, trying again", timeout, state.attempt_number, PUBLISH_ATTEMPTS),
                reraise=True):
            with attempt:
                return _publish_once(settings, published_db or settings.published_db, timeout)
    except psycopg.errors.LockNotAvailable as exc:
        raise PublishLockTimeout(
            f"PostgreSQL publish gave up after {PUBLISH_ATTEMPTS} attempts: each waited more than "
            f"{timeout:g}s (C360_PUBLISH_LOCK_TIMEOUT_SECONDS) for a lock that an open transaction "
            f"holds on the published schemas (see pg_stat_activity); the previous publication "
            f"is unchanged") from exc
    raise AssertionError("unreachable")


def _publish_once(settings: Settings, published_db: Path, lock_timeout: float) -> dict:
    import psycopg

    dcon = duck.connect(settings, published_db, read_only=True)
    counts: dict[str, int] = {}
    try:
        catalog = dcon.execute("SELECT current_database()").fetchone()[0]
        tables = list_publishable_tables(dcon, catalog)
        with psycopg.connect(settings.publish_postgres_dsn) as pg, \
                tempfile.TemporaryDirectory() as tmp:
            with pg.cursor() as cur:
                # Only for this transaction: the DDL below waits for readers' locks this long.
                cur.execute("SELECT set_config('lock_timeout', %s, true)",
                            (f"{int(lock_timeout * 1000)}ms",))
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
