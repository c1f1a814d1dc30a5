"""The core and marts gates: suites over the warehouse DuckDB file, opened read-only; on
``C360_ENGINE=spark`` over an in-memory DuckDB holding copies of the Spark tables the suites
name (read through the engine, :mod:`customer360.warehouse.engine_io`), so the suites' SQL is
one for both engines.

The intermediate gate runs after dbt's staging and intermediate layers (keys unique after dedup,
orders linked to customers, identity clusters, dbt test results); the marts gate runs after
the marts and ML, before anything is published (column contracts of docs/marts.md, value ranges,
revenue reconciliation, a PII scan of every published column).
"""

from __future__ import annotations

import json
import logging
import re
import time

import duckdb
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from customer360.core import duck
from customer360.quality.context import GateContext
from customer360.quality.results import SuiteResult
from customer360.quality.suite_runner import evaluate, run_metric_suite, to_result, unreadable
from customer360.quality.suites import Suite
from customer360.quality.targets import QuerySource

log = logging.getLogger(__name__)


def _is_lock_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


# The warehouse has one writer (dbt, then ML); if it is still closing the file, wait briefly.
@retry(retry=retry_if_exception(_is_lock_conflict), wait=wait_exponential(multiplier=0.1, max=2),
       stop=stop_after_delay(30), reraise=True)
def open_warehouse(ctx: GateContext) -> duckdb.DuckDBPyConnection:
    return duck.connect(ctx.settings, ctx.settings.warehouse_path, read_only=True)


# A schema-qualified warehouse relation in a suite's target (its table, SQL or parameters).
_RELATION = re.compile(r"\b(staging|intermediate|marts|ml|snapshots)\.([A-Za-z_][A-Za-z0-9_]*)\b")


def spark_tables_read(spark, suites: list[Suite]) -> list[tuple[str, str]]:
    """The Spark tables the suites read: those their targets name, and for the PII scan every
    published table of its schemas (it finds them by listing, so they must all be there)."""
    from customer360.warehouse.published import list_spark_publishable_tables

    wanted: set[tuple[str, str]] = set()
    for suite in suites:
        wanted |= set(_RELATION.findall(json.dumps(suite.target)))
        if suite.target.get("metric") == "pii_scan":
            schemas = set(suite.target.get("schemas", ["marts", "ml"]))
            wanted |= {t for t in list_spark_publishable_tables(spark) if t[0] in schemas}
    return sorted(wanted)


def open_spark_mirror(ctx: GateContext, suites: list[Suite]) -> duckdb.DuckDBPyConnection:
    """Copies, not views: the PII scan lists tables, which a view is not. Types from the
    models' contracts, so a contract suite sees the types DuckDB would have."""
    from customer360.warehouse.dbt_runner import contract_types
    from customer360.warehouse.engine_io import spark_mirror
    from customer360.warehouse.spark_session import spark_session

    spark = spark_session(ctx.settings)
    con = duck.connect(ctx.settings)
    try:
        mirrored = spark_mirror(spark, con, (), copies=spark_tables_read(spark, suites),
                                types=contract_types(ctx.settings))
    except BaseException:
        con.close()
        raise
    log.info("%s gate on Spark: %d table(s) read through the engine", ctx.stage, len(mirrored))
    return con


def target_sql(suite: Suite) -> str:
    if "table" in suite.target:
        return f"SELECT * FROM {suite.target['table']}"
    return suite.target["sql"]


def run_query_suite(ctx: GateContext, suite: Suite) -> SuiteResult:
    started = time.monotonic()
    result = SuiteResult(suite.name, suite.target.get("table") or "sql query")
    try:
        source = QuerySource(ctx.warehouse, target_sql(suite), ctx.chunk_rows)
    except duckdb.Error as exc:
        result.results.append(unreadable(suite, exc))
        return result
    outcomes = evaluate(suite, source, source.types)
    result.results = [to_result(suite, o) for o in outcomes]
    result.rows = max((o.element_count for o in outcomes if o.map_result), default=0)
    result.seconds = time.monotonic() - started
    return result


def run(ctx: GateContext, suites: list[Suite]) -> list[SuiteResult]:
    path = ctx.settings.warehouse_path
    if ctx.settings.engine == "spark":
        # never the DuckDB file: a Spark run does not write it, so it would pass on stale data
        ctx.warehouse = open_spark_mirror(ctx, suites)
    elif not path.exists():
        return [SuiteResult(s.name, "warehouse", [unreadable(s, f"no warehouse at {path}")])
                for s in suites]
    else:
        ctx.warehouse = open_warehouse(ctx)
    try:
        results = []
        for suite in suites:
            if suite.kind == "metric":
                suite_result = run_metric_suite(ctx, suite)
            else:
                suite_result = run_query_suite(ctx, suite)
            results.append(suite_result)
            log.info("%s suite %s: %d expectations, %d failed (%.2f s)", ctx.stage, suite.name,
                     len(suite_result.results), len(suite_result.errors), suite_result.seconds)
        return results
    finally:
        ctx.warehouse.close()
        ctx.warehouse = None
