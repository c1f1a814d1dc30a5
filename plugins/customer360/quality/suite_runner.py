"""Run one suite against one target: first its column contract on the target's schema (no
data read), then, if the contract holds, its expectations on the data."""

from __future__ import annotations

import logging
import time
from typing import Callable

from customer360.quality.gx_validation import (DataFrameSource, FrameSample, FrameSource, Outcome,
                                               validate_source)
from customer360.quality import metrics
from customer360.quality.context import GateContext
from customer360.quality.results import FAIL, PASS, SKIPPED, WARN, ExpectationResult, SuiteResult
from customer360.quality.suites import TYPE_FAMILIES, ExpectationSpec, Suite
from customer360.quality.targets import describe, schema_table, type_family

log = logging.getLogger(__name__)


def evaluate(
    suite: Suite,
    source: FrameSource | Callable[[], FrameSource],
    types: dict[str, str],
    how: FrameSample | None = None,
    collect_rows: Callable[[ExpectationSpec], bool] = lambda spec: False,
) -> list[Outcome]:
    """One :class:`Outcome` per expectation of ``suite``, in the suite's order.

    ``types`` (column -> DuckDB type) is what the contract is checked against; ``source``
    may be a factory, called only when the contract holds (a query deriving columns from a
    missing one would not even compile).
    """
    how = how or FrameSample(key_columns=suite.key_columns, pii_columns=suite.pii_columns)
    contract = [s for s in suite.expectations if s.generated]
    data = [s for s in suite.expectations if not s.generated]
    outcomes = check_contract(suite, contract, types) if contract else []
    if any(o.success is False for o in outcomes):
        outcomes += [Outcome(s, success=None, exception="not evaluated: the column contract failed")
                     for s in data]
        return outcomes
    if data:
        try:
            frames = source() if callable(source) else source
        except Exception as exc:  # a query that does not compile against this target
            reason = f"cannot read the target: {str(exc).splitlines()[0]}"
            return outcomes + [Outcome(s, success=False, exception=reason) for s in data]
        outcomes += validate_source(data, frames, suite.name, how, collect_rows)
    return outcomes


def check_contract(suite: Suite, specs: list[ExpectationSpec], types: dict[str, str]) -> list[Outcome]:
    """The contract's expectations on the schema frame (no data read); samples name what is
    missing or mistyped."""
    frame = schema_table(types, suite.columns)
    outcomes = validate_source(specs, DataFrameSource(frame), f"{suite.name}.contract")
    missing = [c for c in suite.columns if c not in types]
    wrong = [c for c, family in suite.columns.items()
             if c in types and type_family(types[c]) not in TYPE_FAMILIES[family]]
    for out in outcomes:
        if out.success is not False:
            continue
        if out.spec.type == "expect_column_distinct_values_to_contain_set":
            out.observed = {"missing": missing}
            out.sample = [f"missing column{'s' if len(missing) > 1 else ''}: {', '.join(missing)}"]
        else:
            out.sample = [f"{c} is {types[c]}, the contract says {suite.columns[c]}" for c in wrong][:5]
    return outcomes


def classify(out: Outcome) -> str:
    if out.success is None:
        return SKIPPED
    if out.success:
        return PASS
    return WARN if out.spec.severity == "warn" else FAIL


def to_result(suite: Suite, out: Outcome, outcome: str | None = None, note: str = "",
              rows_quarantined: int = 0) -> ExpectationResult:
    spec = out.spec
    return ExpectationResult(
        suite=suite.name, expectation=spec.type, label=spec.label(), column=spec.column,
        kwargs=spec.kwargs, severity=spec.severity, scope=spec.scope,
        outcome=outcome or classify(out), success=out.success,
        observed_value=out.observed_text(),
        unexpected_count=out.unexpected_count if out.map_result else None,
        element_count=out.element_count if out.map_result else None,
        sample=list(out.sample), note=note, rows_quarantined=rows_quarantined)


def unreadable(suite: Suite, error: Exception | str) -> ExpectationResult:
    """The target could not be read at all (a missing table, a broken query): an error."""
    from customer360.core.masking import mask_text

    message = mask_text(str(error).splitlines()[0] if str(error) else type(error).__name__)
    return ExpectationResult(
        suite=suite.name, expectation="target_is_readable", label="target_is_readable()",
        column=None, kwargs={"target": suite.target}, severity="error", scope="batch",
        outcome=FAIL, success=False, observed_value=f"cannot read the target: {message}")


def run_metric_suite(ctx: GateContext, suite: Suite) -> SuiteResult:
    """A suite whose target is a computed metric frame (see :mod:`customer360.quality.metrics`)."""
    started = time.monotonic()
    result = SuiteResult(suite.name, f"metric {suite.target['metric']}")
    try:
        frame = metrics.compute(ctx, suite.target)
    except Exception as exc:
        log.exception("metric %s of suite %s failed", suite.target["metric"], suite.name)
        result.results.append(unreadable(suite, exc))
        return result
    ctx.scratch.register("metric_frame", frame)
    try:
        types = describe(ctx.scratch, "SELECT * FROM metric_frame") if len(frame.columns) else {}
    finally:
        ctx.scratch.unregister("metric_frame")
    outcomes = evaluate(suite, DataFrameSource(frame), types)
    result.results = [to_result(suite, o) for o in outcomes]
    result.rows, result.seconds = len(frame), time.monotonic() - started
    return result
