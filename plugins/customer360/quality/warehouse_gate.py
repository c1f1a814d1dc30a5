"""The core and marts gates: suites over the warehouse DuckDB file, opened read-only.

The intermediate gate runs after dbt's staging and intermediate layers (keys unique after dedup,
orders linked to customers, identity clusters, dbt test results); the marts gate runs after
the marts and ML, before anything is published (column contracts of docs/marts.md, value ranges,
revenue reconciliation, a PII scan of every published column).
"""

from __future__ import annotations

import logging
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
    if ctx.settings.engine != "duckdb":
        # Not validating the DuckDB file a Spark run does not write: it would pass on stale data.
        why = (f"the warehouse gates read the DuckDB warehouse only; C360_ENGINE="
               f"{ctx.settings.engine} is not validated (docs/engines.md)")
        return [SuiteResult(s.name, "warehouse", [unreadable(s, why)]) for s in suites]
    if not path.exists():
        return [SuiteResult(s.name, "warehouse", [unreadable(s, f"no warehouse at {path}")])
                for s in suites]
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
