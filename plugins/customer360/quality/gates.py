"""Quality gates between the pipeline's stages: ``run_gate(settings, stage, date, run_id=...)``.

Three gates, each a folder of suites under ``expectations/``:

- ``raw``: the batches landed by this run against their source contract, the volume of each
  source against recent days, and the extractors' reconciliation counts;
- ``core``: staging and identity in the warehouse (after dbt's staging and intermediate);
- ``marts``: marts and ML outputs, before they are published.

Every result is appended to the audit store (``audit.gate_results``), the gate's summary to
its hash-chained event log, and a Data Docs page is written under
``$C360_HOME/artifacts/data_docs/``. An error-severity failure raises :class:`GateFailed`,
so that nothing downstream runs and the last publication stays as it is.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path

from customer360.core import audit, duck
from customer360.quality import raw_gate, warehouse_gate
from customer360.quality.context import GateContext
from customer360.quality.data_docs import write_gate_page
from customer360.quality.results import ExpectationResult, GateFailed, GateResult, SuiteResult
from customer360.quality.suites import STAGES, load_suites
from customer360.core.settings import Settings

__all__ = ["run_gate", "GateFailed", "GateResult", "SuiteResult", "ExpectationResult", "STAGES"]

log = logging.getLogger(__name__)


def run_gate(
    settings: Settings,
    stage: str,
    logical_date: dt.date | str,
    *,
    run_id: str,
    dbt_results: str | Path | list[str | Path] | None = None,
    expectations_dir: Path | None = None,
    chunk_rows: int | None = None,
) -> GateResult:
    """Run every suite of ``stage`` for ``logical_date``; raise :class:`GateFailed` on an error.

    ``dbt_results``: run_results.json paths or globs to read instead of the default places
    (``$C360_HOME/artifacts/dbt/<layer>/`` and ``.../dbt/target/``).
    """
    if stage not in STAGES:
        raise ValueError(f"unknown gate stage {stage!r}: expected one of {', '.join(STAGES)}")
    if isinstance(logical_date, str):
        logical_date = dt.date.fromisoformat(logical_date)
    started = time.monotonic()
    suites = load_suites(stage, expectations_dir or settings.expectations_dir)
    if dbt_results is None:
        results_paths = []
    elif isinstance(dbt_results, (str, Path)):
        results_paths = [str(dbt_results)]
    else:
        results_paths = [str(p) for p in dbt_results]
    ctx = GateContext(settings=settings, stage=stage, logical_date=logical_date, run_id=run_id,
                      chunk_rows=chunk_rows or settings.gate_chunk_rows, dbt_results=results_paths,
                      scratch=duck.connect(settings))
    try:
        if stage == "raw":
            suite_results, quarantined = raw_gate.run(ctx, suites)
        else:
            suite_results, quarantined = warehouse_gate.run(ctx, suites), 0
    except Exception as exc:
        audit.log_event(settings, "gate", {"stage": stage, "logical_date": logical_date.isoformat(),
                                           "run_id": run_id, "ok": False,
                                           "crashed": f"{type(exc).__name__}: {exc}"[:500]})
        raise
    finally:
        ctx.scratch.close()
    result = GateResult(stage=stage, logical_date=logical_date, run_id=run_id,
                        suites=suite_results, rows_quarantined=quarantined,
                        seconds=time.monotonic() - started)
    result.docs_path = str(write_gate_page(settings, result))
    record(settings, result)
    log.info(result.summary_line())
    if not result.ok:
        raise GateFailed(result)
    return result


def record(settings: Settings, result: GateResult) -> None:
    """Every expectation's result, the run's summary, and a chained event for the gate."""
    now = dt.datetime.now(dt.timezone.utc)
    audit.append(settings, "gate_results", result.audit_rows(now))
    summary = result.as_dict()
    audit.append(settings, "gate_runs", [{
        "run_id": result.run_id, "stage": result.stage, "logical_date": result.logical_date,
        "ok": result.ok, "suites": summary["suites"], "expectations": summary["expectations"],
        "errors": summary["errors"], "warnings": summary["warnings"],
        "rows_quarantined": result.rows_quarantined, "seconds": summary["seconds"],
        "summary": summary["summary"], "docs_path": result.docs_path, "finished_at": now}])
    audit.log_event(settings, "gate", summary)
