"""The stages of the daily pipeline as plain functions of (settings, logical date).

The Airflow DAG (``dags/c360_daily.py``) wires these together and the CLI calls the same
functions, so there is one code path. Heavy imports (duckdb, dbt, Great Expectations,
scikit-learn) happen inside the functions: the DAG file must parse in well under a second.
Every function returns a small JSON-able dict that Airflow keeps as the task's XCom and the
run report reads back.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from customer360.settings import Settings, get_settings

log = logging.getLogger(__name__)

DBT_LAYERS = ("staging", "intermediate", "marts")


def _settings(settings: Settings | None) -> Settings:
    return settings or get_settings()


def extract(source: str, logical_date: dt.date, settings: Settings | None = None) -> dict:
    from customer360.extract import run_extract

    s = _settings(settings)
    started = time.monotonic()
    recs = run_extract(source, s, logical_date)
    out = {
        "source": source,
        "batches": len(recs),
        "read": sum(r.read for r in recs),
        "landed": sum(r.landed for r in recs),
        "quarantined": sum(r.quarantined for r in recs),
        "duplicates_in_raw": sum(r.duplicates_in_raw for r in recs),
        "seconds": round(time.monotonic() - started, 2),
    }
    log.info("extract %s %s: read %d, landed %d, quarantined %d, duplicate ids %d",
             source, logical_date, out["read"], out["landed"], out["quarantined"],
             out["duplicates_in_raw"])
    return out


def gate(stage: str, logical_date: dt.date, run_id: str, settings: Settings | None = None) -> dict:
    """Run the quality gate of a stage; raises GateFailed (stopping the DAG) on an error."""
    from customer360.quality.gates import run_gate

    result = run_gate(_settings(settings), stage, logical_date, run_id=run_id)
    log.info(result.summary_line())
    return {"stage": stage, "summary": result.summary_line(), "ok": result.ok}


def build_layer(layer: str, logical_date: dt.date, settings: Settings | None = None) -> dict:
    """One dbt invocation for a whole layer (not one Airflow task a model)."""
    from customer360.warehouse import run_layer

    s = _settings(settings)
    started = time.monotonic()
    summary = run_layer(s, layer, logical_date=logical_date)
    summary = dict(summary) if isinstance(summary, dict) else {"result": str(summary)}
    summary["seconds"] = round(time.monotonic() - started, 2)
    return summary


def machine_learning(logical_date: dt.date, settings: Settings | None = None) -> dict:
    from customer360.ml.pipeline import run_ml

    return run_ml(_settings(settings), logical_date)


def publish(logical_date: dt.date, settings: Settings | None = None) -> dict:
    from customer360.publish import publish as do_publish

    s = _settings(settings)
    pub = do_publish(s, logical_date)
    out = {"database": pub.database, "tables": {f"{t.schema}.{t.name}": t.rows for t in pub.tables}}
    if s.publish_postgres_dsn:
        from customer360.publish_postgres import publish_postgres

        out["postgres"] = publish_postgres(s)
    return out


def report(logical_date: dt.date, run_id: str, settings: Settings | None = None) -> dict:
    from customer360.report import build_report

    path = build_report(_settings(settings), logical_date, run_id=run_id)
    return {"report": str(path)}
