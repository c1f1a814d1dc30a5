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

from customer360.core.settings import Settings, get_settings

log = logging.getLogger(__name__)

DBT_LAYERS = ("staging", "intermediate", "marts")


def _settings(settings: Settings | None) -> Settings:
    return settings or get_settings()


def extract(source: str, logical_date: dt.date, settings: Settings | None = None) -> dict:
    from customer360.ingest.extract import run_extract

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


def _summarize_dbt(results, layer: str, settings: Settings, seconds: float) -> dict:
    """Keep this layer's run_results.json next to the others (the gates and report read them)."""
    import shutil

    from customer360.warehouse.dbt_runner.dbt_runner import target_dir

    src = target_dir(settings) / "run_results.json"
    dest = settings.artifacts / "dbt" / "run_results" / f"{layer}.json"
    if src.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    return {"layer": layer, "counts": results.counts(), "dbt_seconds": round(results.elapsed_seconds, 2),
            "seconds": round(seconds, 2), "slowest": [n.name for n in results.slowest(3)]}


def build_layer(layer: str, logical_date: dt.date, settings: Settings | None = None,
                env: dict[str, str] | None = None) -> dict:
    """One dbt invocation for a whole layer (not one Airflow task a model)."""
    from customer360.warehouse.dbt_runner import dbt_runner as warehouse

    s = _settings(settings)
    started = time.monotonic()
    if layer in DBT_LAYERS:
        results = warehouse.run_layer(s, layer, as_of=logical_date, env=env)
    else:  # ml features, or customer_360 again once the ML scores exist
        select = {"ml_features": "path:models/ml", "customer_360": "customer_360"}[layer]
        results = warehouse.build_select(s, select, as_of=logical_date, env=env)
    out = _summarize_dbt(results, layer, s, time.monotonic() - started)
    log.info("dbt %s: %s in %.1f s", layer, out["counts"], out["seconds"])
    return out


def machine_learning(logical_date: dt.date, settings: Settings | None = None) -> dict:
    from customer360.ml.pipeline import run_ml, training_due_any

    s = _settings(settings)
    # Training needs the labelled point-in-time snapshots; a scoring-only day (6 of 7 at the
    # specs' weekly cadence) needs the scoring snapshot alone, a fraction of the work.
    due = training_due_any(s, logical_date)
    features = build_layer("ml_features", logical_date, s,
                           env={"C360_ML_SCORING_ONLY": "0" if due else "1"})
    features["scoring_only"] = not due
    out = run_ml(s, logical_date)
    out["features"] = features
    return out


def publish(logical_date: dt.date, settings: Settings | None = None) -> dict:
    from customer360.serve.publish import publish as do_publish

    s = _settings(settings)
    pub = do_publish(s, logical_date)
    out = {"database": pub.database, "tables": {f"{t.schema}.{t.name}": t.rows for t in pub.tables}}
    if s.publish_postgres_dsn:
        from customer360.serve.postgres import publish_postgres

        out["postgres"] = publish_postgres(s)
    from customer360.core import audit

    audit.log_event(s, "publication", {"logical_date": logical_date.isoformat(),
                                       "tables": out["tables"], "postgres": "postgres" in out})
    return out


def report(logical_date: dt.date, run_id: str, settings: Settings | None = None) -> dict:
    from customer360.serve.report import build_report
    from customer360.warehouse.dbt_runner.dbt_runner import generate_docs

    s = _settings(settings)
    docs = None
    try:  # lineage for the report's readers; a docs failure must not fail a published run
        docs = generate_docs(s) / "index.html"
    except Exception as exc:
        log.warning("dbt docs generate failed (%s); the report links no lineage", exc)
    path = build_report(s, logical_date, run_id=run_id, dbt_docs=docs)
    return {"report": str(path), "dbt_docs": str(docs) if docs else None}
