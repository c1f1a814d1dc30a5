"""Run a suite's expectations with Great Expectations 1.x on pandas DataFrames.

Great Expectations is imported here, lazily, on first use: the import costs seconds and the
DAG file (which imports the quality package indirectly) must parse in well under one.
DuckDB is not validated through GX's SQL datasource (it fails on every metric with our
versions, see STACK.md); targets are read with DuckDB and handed over as DataFrames, in
chunks for big ones. Expectations that look at one row at a time are run chunk by chunk and
their counts added up; the few that need every row at once (uniqueness, aggregates) run on
a frame of just the columns they use.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import pandas as pd

from customer360.core.masking import mask_text, mask_value
from customer360.core.settings import apply_library_defaults
from customer360.quality.suites import ExpectationSpec, SuiteError, gx_class_name

log = logging.getLogger(__name__)

SAMPLE_SIZE = 5
GX_SEVERITY = {"error": "critical", "warn": "warning"}
# Map expectations whose verdict depends on rows outside the chunk at hand.
_WHOLE_FRAME_MAP = {"ExpectColumnValuesToBeUnique", "ExpectCompoundColumnsToBeUnique",
                    "ExpectMulticolumnValuesToBeUnique", "ExpectColumnValuesToBeIncreasing",
                    "ExpectColumnValuesToBeDecreasing", "ExpectColumnValuesToNotBeOutliers",
                    "ExpectColumnValueZScoresToBeLessThan"}

_gx_state: dict[str, Any] = {}


def gx():
    """The great_expectations module with a quiet ephemeral context, imported once."""
    if "module" not in _gx_state:
        apply_library_defaults()  # GX_ANALYTICS_ENABLED=false unless set
        import great_expectations as gx_module
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.execution_engine import pandas_execution_engine

        # GX fingerprints every DataFrame batch by hashing all of it (a batch marker we never
        # read); on a 250k-row chunk that is most of the validation's time. 0 turns it off.
        pandas_execution_engine.HASH_THRESHOLD = 0

        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        context = gx_module.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        asset = context.data_sources.add_pandas("c360_frames").add_dataframe_asset("frame")
        _gx_state.update(module=gx_module, context=context,
                         batch_definition=asset.add_batch_definition_whole_dataframe("whole"),
                         classes={n.lower(): getattr(gx_module.expectations, n)
                                  for n in dir(gx_module.expectations) if n.startswith("Expect")})
    return _gx_state["module"]


def expectation_class(spec: ExpectationSpec):
    gx()
    cls = _gx_state["classes"].get(gx_class_name(spec.type).lower())
    if cls is None:
        raise SuiteError(f"{spec.type} is not an expectation of Great Expectations "
                         f"{gx().__version__}")
    return cls


def is_chunkable(spec: ExpectationSpec) -> bool:
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)

    cls = expectation_class(spec)
    return (issubclass(cls, (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation))
            and cls.__name__ not in _WHOLE_FRAME_MAP)


def columns_used(spec: ExpectationSpec, available: Iterable[str]) -> list[str]:
    """The frame columns an expectation reads (its column kwargs and any row_condition)."""
    kw = spec.kwargs
    cols = [kw[k] for k in ("column", "column_A", "column_B") if k in kw]
    cols += list(kw.get("column_list") or [])
    condition = kw.get("row_condition")
    if condition:
        words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", condition))
        cols += [c for c in available if c in words]
    return list(dict.fromkeys(cols))


@dataclass
class Outcome:
    """One expectation's verdict over a whole target, merged across chunks."""

    spec: ExpectationSpec
    success: bool | None = True          # None: not evaluated (its input is missing)
    element_count: int = 0
    unexpected_count: int = 0
    missing_count: int = 0
    observed: Any = None                 # aggregate expectations: GX's observed value
    sample: list[str] = field(default_factory=list)
    exception: str | None = None
    map_result: bool = False
    # Row scope: identifying columns of the failing rows (raw gate uses them to quarantine).
    failing_rows: list[pd.DataFrame] = field(default_factory=list)

    def observed_text(self) -> str:
        if self.success is None:
            return self.exception or "not evaluated"
        if self.exception:
            return f"error: {self.exception}"
        if self.map_result:
            share = self.unexpected_count / max(self.element_count - self.missing_count, 1)
            return (f"{self.unexpected_count} of {self.element_count} rows unexpected ({share:.2%})"
                    + (f", {self.missing_count} null" if self.missing_count else ""))
        return mask_text(_compact(self.observed))


def _compact(value: Any, limit: int = 400) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "..."


def _exception_message(info: dict) -> str | None:
    if not info:
        return None
    if "raised_exception" in info:
        message = info.get("exception_message") if info.get("raised_exception") else None
        return str(message).splitlines()[0] if message else None
    for value in info.values():
        if isinstance(value, dict) and value.get("exception_message"):
            return str(value["exception_message"]).splitlines()[0]
    return None


def _build_expectation(spec: ExpectationSpec, index: int):
    cls = expectation_class(spec)
    try:
        return cls(**spec.kwargs, severity=GX_SEVERITY[spec.severity], meta={"spec": index})
    except Exception as exc:  # pydantic validation: wrong or missing kwargs
        raise SuiteError(f"{spec.label()}: invalid arguments for {cls.__name__}: "
                         f"{str(exc).splitlines()[0]}") from None


def _gx_suite(specs: list[ExpectationSpec], name: str):
    """The GX suite for ``specs``, built once: building one costs as much as validating a
    small frame (add_expectation compares each new expectation with every earlier one)."""
    key = json.dumps([name] + [[s.type, s.kwargs, s.severity] for s in specs], sort_keys=True, default=str)
    cache = _gx_state.setdefault("suites", {})
    if key not in cache:
        if len(cache) > 512:
            cache.clear()
        cache[key] = gx().ExpectationSuite(
            name=name, expectations=[_build_expectation(spec, i) for i, spec in enumerate(specs)])
    return cache[key]


def _validate(specs: list[ExpectationSpec], frame: pd.DataFrame, name: str, result_format: str) -> list[dict]:
    suite = _gx_suite(specs, name)
    batch = _gx_state["batch_definition"].get_batch(batch_parameters={"dataframe": frame})
    validation = batch.validate(suite, result_format={"result_format": result_format})
    results: list[dict] = [{} for _ in specs]
    for r in validation.results:
        results[r.expectation_config.meta["spec"]] = {
            "success": bool(r.success), "result": dict(r.result or {}),
            "exception": _exception_message(r.exception_info or {})}
    return results


def run_expectations(specs: list[ExpectationSpec], frame: pd.DataFrame, name: str) -> list[dict]:
    """Validate ``frame`` with GX; one result dict per spec, in the order of ``specs``.

    GX's fixed cost per expectation is most of a gate's time, and the COMPLETE result format
    (row indices, details) costs about half again as much as BASIC. So everything runs with
    BASIC first, and only what failed runs again with COMPLETE to find the offending rows.
    """
    results = _validate(specs, frame, name, "BASIC")
    failed = [i for i, r in enumerate(results) if not r.get("success") and not r.get("exception")]
    if failed:
        for i, detailed in zip(failed, _validate([specs[i] for i in failed], frame, name, "COMPLETE")):
            results[i] = detailed
    return results


@dataclass
class FrameSample:
    """How to show and identify offending rows.

    ``locator`` columns are small (integers) and carried in every chunk so that a failing row
    can be found again in its source; ``where`` turns them into words for samples. Wide
    identifying columns (file paths, hashes) are looked up only for the rows that failed.
    """

    key_columns: tuple[str, ...] = ()
    pii_columns: tuple[str, ...] = ()
    locator: tuple[str, ...] = ()
    where: Callable[[pd.Series], str] | None = None


def _describe_rows(frame: pd.DataFrame, index: list, spec: ExpectationSpec, available: list[str],
                   how: FrameSample) -> list[str]:
    rows = frame.loc[index[:SAMPLE_SIZE]]
    value_cols = columns_used(spec, available)
    key_cols = [c for c in how.key_columns if c in frame.columns and c not in value_cols]
    out = []
    for _, row in rows.iterrows():  # at most SAMPLE_SIZE rows
        values = ", ".join(f"{c}={_show(row[c], c in how.pii_columns)}" for c in value_cols)
        keys = [f"{c}={_show(row[c], c in how.pii_columns)}" for c in key_cols]
        if how.where is not None:
            keys.append(how.where(row))
        out.append(values + (f" ({', '.join(keys)})" if keys else ""))
    return out


def _show(value: Any, personal: bool) -> str:
    if value is None or (not isinstance(value, (list, dict)) and pd.isna(value)):
        return "null"
    masked = mask_value(value, personal)
    return repr(masked) if isinstance(masked, str) else str(masked)


def _merge_map(out: Outcome, res: dict, frame: pd.DataFrame, available: list[str],
               how: FrameSample, collect_rows: bool) -> None:
    result = res["result"]
    out.map_result = True
    out.element_count += int(result.get("element_count") or 0)
    out.unexpected_count += int(result.get("unexpected_count") or 0)
    out.missing_count += int(result.get("missing_count") or 0)
    index = result.get("unexpected_index_list") or []
    if index and len(out.sample) < SAMPLE_SIZE:
        out.sample += _describe_rows(frame, index, out.spec, available, how)[:SAMPLE_SIZE - len(out.sample)]
    if index and collect_rows:
        keep = [c for c in (*how.locator, *how.key_columns) if c in frame.columns]
        out.failing_rows.append(frame.loc[index, list(dict.fromkeys(keep))])


def _finish_map(out: Outcome) -> None:
    mostly = out.spec.kwargs.get("mostly")
    evaluated = out.element_count - out.missing_count
    if mostly is None or evaluated == 0:
        out.success = out.unexpected_count == 0
    else:
        out.success = out.unexpected_count / evaluated <= 1 - float(mostly)


class FrameSource:
    """A target as DataFrames. Subclasses read DuckDB queries, Parquet batches or metrics."""

    columns: list[str]

    def chunks(self, columns: list[str]) -> Iterator[pd.DataFrame]:
        """Every row of ``columns``, in chunks of a bounded size."""
        raise NotImplementedError

    def whole(self, columns: list[str]) -> pd.DataFrame:
        """Every row of ``columns`` in one frame (only for the few columns that need it)."""
        parts = list(self.chunks(columns))
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
        return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


class DataFrameSource(FrameSource):
    """A frame already in memory (computed metrics, schema frames)."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self.columns = [str(c) for c in frame.columns]

    def chunks(self, columns: list[str]) -> Iterator[pd.DataFrame]:
        yield self.frame[columns] if columns != self.columns else self.frame


def validate_source(
    specs: list[ExpectationSpec],
    source: FrameSource,
    name: str,
    how: FrameSample = FrameSample(),
    collect_rows: Callable[[ExpectationSpec], bool] = lambda spec: False,
) -> list[Outcome]:
    """Validate every spec against ``source``; one merged :class:`Outcome` per spec.

    Only the columns the expectations use (plus key and row-id columns) are read. An
    expectation on a column the target lacks fails without asking GX.
    """
    available = source.columns
    outcomes = [Outcome(spec) for spec in specs]
    runnable: list[int] = []
    for i, spec in enumerate(specs):
        missing = [c for c in columns_used(spec, available) if c not in available]
        if missing and spec.type != "expect_column_to_exist":
            outcomes[i].success = False
            outcomes[i].exception = f"column {', '.join(missing)} not found"
        else:
            runnable.append(i)
    row_wise = [i for i in runnable if is_chunkable(specs[i])]
    whole = [i for i in runnable if i not in row_wise]
    extra = [c for c in (*how.key_columns, *how.locator) if c in available]

    if row_wise:
        needed = list(dict.fromkeys(
            [c for i in row_wise for c in columns_used(specs[i], available)] + extra))
        for chunk in source.chunks(needed):
            results = run_expectations([specs[i] for i in row_wise], chunk, name)
            for i, res in zip(row_wise, results):
                if res.get("exception"):
                    outcomes[i].exception = res["exception"]
                else:
                    _merge_map(outcomes[i], res, chunk, available, how, collect_rows(specs[i]))
        for i in row_wise:
            if outcomes[i].exception:
                outcomes[i].success = False
            else:
                _finish_map(outcomes[i])

    if whole:
        if any(specs[i].type.startswith("expect_table_column") or specs[i].type == "expect_column_to_exist"
               for i in whole):
            needed = list(available)   # these look at the column list itself
        else:
            needed = list(dict.fromkeys(
                [c for i in whole for c in columns_used(specs[i], available)] + extra))
            needed = needed or available[:1]   # row counts need rows, not columns
        frame = source.whole(needed)
        results = run_expectations([specs[i] for i in whole], frame, name)
        for i, res in zip(whole, results):
            out = outcomes[i]
            if res.get("exception"):
                out.success, out.exception = False, res["exception"]
                continue
            result = res["result"]
            if "unexpected_count" in result and "element_count" in result:
                _merge_map(out, res, frame, available, how, collect_rows(specs[i]))
            else:
                details = result.get("details") or {}
                rest = {k: v for k, v in result.items()
                        if k not in ("observed_value", "details") and v not in (None, [], {})}
                if "mismatched" in details:   # column sets: what is missing says it all
                    mismatched = details["mismatched"]
                    out.observed = ({"missing": mismatched.get("missing", [])}
                                    if not specs[i].kwargs.get("exact_match", True) else mismatched)
                elif details or rest:
                    out.observed = {"observed": result.get("observed_value"), **details, **rest}
                else:
                    out.observed = result.get("observed_value")
            out.success = res["success"]
    return outcomes
