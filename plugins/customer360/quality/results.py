"""What a gate run produces: one result per expectation, grouped by suite, and the gate's
verdict with its one-line summary and the error raised when it stops the pipeline."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field

# outcome of one expectation
PASS, WARN, QUARANTINE, FAIL, SKIPPED = "pass", "warn", "quarantine", "fail", "skipped"


@dataclass
class ExpectationResult:
    suite: str
    expectation: str            # the GX expectation type, e.g. expect_column_values_to_be_in_set
    label: str                  # type(kwargs...) as shown to people
    column: str | None
    kwargs: dict
    severity: str               # error | warn
    scope: str                  # row | batch
    outcome: str                # pass | warn | quarantine | fail | skipped
    success: bool | None
    observed_value: str
    unexpected_count: int | None = None
    element_count: int | None = None
    sample: list[str] = field(default_factory=list)   # masked
    note: str = ""              # why it failed beyond the counts (e.g. which batch broke)
    rows_quarantined: int = 0

    def describe(self) -> str:
        text = f"suite {self.suite}, expectation {self.label}: {self.observed_value}"
        if self.note:
            text += f"; {self.note}"
        if self.sample:
            text += f"; sample: {'; '.join(self.sample)}"
        return text


@dataclass
class SuiteResult:
    suite: str
    target: str
    results: list[ExpectationResult] = field(default_factory=list)
    rows: int = 0
    seconds: float = 0.0

    @property
    def errors(self) -> list[ExpectationResult]:
        return [r for r in self.results if r.outcome == FAIL]

    @property
    def warnings(self) -> list[ExpectationResult]:
        return [r for r in self.results if r.outcome == WARN]


@dataclass
class GateResult:
    stage: str
    logical_date: dt.date
    run_id: str
    suites: list[SuiteResult] = field(default_factory=list)
    rows_quarantined: int = 0
    seconds: float = 0.0
    docs_path: str | None = None

    @property
    def results(self) -> list[ExpectationResult]:
        return [r for s in self.suites for r in s.results]

    @property
    def errors(self) -> list[ExpectationResult]:
        return [r for r in self.results if r.outcome == FAIL]

    @property
    def warnings(self) -> list[ExpectationResult]:
        return [r for r in self.results if r.outcome == WARN]

    @property
    def expectations(self) -> int:
        return len(self.results)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary_line(self) -> str:
        return (f"gate {self.stage}: {len(self.suites)} suites, {self.expectations} expectations, "
                f"{len(self.errors)} errors, {len(self.warnings)} warnings, "
                f"{self.rows_quarantined} rows quarantined ({self.seconds:.1f} s)")

    def failure_message(self, limit: int = 5) -> str:
        errors = self.errors
        lines = [f"gate {self.stage} stopped the run for {self.logical_date} "
                 f"(run {self.run_id}): {len(errors)} error{'s' if len(errors) != 1 else ''}"]
        lines += [f"- {r.describe()}" for r in errors[:limit]]
        if len(errors) > limit:
            lines.append(f"- ... and {len(errors) - limit} more (see the audit store)")
        if self.docs_path:
            lines.append(f"Data Docs: {self.docs_path}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"stage": self.stage, "logical_date": self.logical_date.isoformat(),
                "run_id": self.run_id, "ok": self.ok, "summary": self.summary_line(),
                "suites": len(self.suites), "expectations": self.expectations,
                "errors": len(self.errors), "warnings": len(self.warnings),
                "rows_quarantined": self.rows_quarantined, "seconds": round(self.seconds, 2),
                "docs_path": self.docs_path,
                "failed": [f"{r.suite}: {r.label}" for r in self.errors]}

    def audit_rows(self, checked_at: dt.datetime) -> list[dict]:
        return [{
            "run_id": self.run_id, "stage": self.stage, "logical_date": self.logical_date,
            "suite": r.suite, "expectation": r.expectation, "column_name": r.column,
            "kwargs": json.dumps(r.kwargs, default=str, ensure_ascii=False, sort_keys=True),
            "severity": r.severity, "scope": r.scope, "outcome": r.outcome,
            "success": r.success, "observed_value": r.observed_value + (f"; {r.note}" if r.note else ""),
            "unexpected_count": r.unexpected_count, "element_count": r.element_count,
            "sample": json.dumps(r.sample, ensure_ascii=False), "checked_at": checked_at,
        } for r in self.results]


class GateFailed(RuntimeError):
    """An error-severity expectation failed: the stage and everything after it must not run.

    The message names each failing suite and expectation, how many rows, and a masked sample
    of offending values; ``result`` is the full :class:`GateResult`.
    """

    def __init__(self, result: GateResult):
        super().__init__(result.failure_message())
        self.result = result

    def __reduce__(self):  # picklable across processes (task runners, multiprocessing)
        return (GateFailed, (self.result,))


def to_json(result: GateResult) -> str:
    return json.dumps({**result.as_dict(), "results": [asdict(r) for r in result.results]},
                      default=str, ensure_ascii=False)
