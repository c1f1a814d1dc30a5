"""The stages of the daily pipeline, in the one order the DAG, the CLI, the erasure's rebuild
and the benchmarks all use (:data:`STAGES`).

Each stage is a plain function of (logical date, run id, settings) returning a small JSON-able
dict that Airflow keeps as the task's XCom and the run report reads back. ``dags/c360_daily.py``
makes one task a stage from this list and nothing else. Heavy imports (duckdb, dbt, Great
Expectations, scikit-learn) happen inside the functions: the DAG file must parse in well under a
second.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Callable

from customer360.core import layers
from customer360.core.logical_date import check_logical_date
from customer360.core.settings import Settings, get_settings

log = logging.getLogger(__name__)

DBT_LAYERS = layers.DBT_LAYERS


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


def gate(name: str, logical_date: dt.date, run_id: str, settings: Settings | None = None) -> dict:
    """Run a quality gate (one of ``layers.GATES``); raises GateFailed (stopping the DAG) on an
    error."""
    from customer360.quality.gates import run_gate

    result = run_gate(_settings(settings), name, logical_date, run_id=run_id)
    log.info(result.summary_line())
    return {"stage": name, "summary": result.summary_line(), "ok": result.ok}


def build_layer(layer: str, logical_date: dt.date, settings: Settings | None = None,
                env: dict[str, str] | None = None) -> dict:
    """One dbt invocation for a whole layer (not one Airflow task a model); run_layer keeps its
    run results where the gates and the report read them."""
    from customer360.warehouse import dbt_runner

    s = _settings(settings)
    started = time.monotonic()
    results = dbt_runner.run_layer(s, layer, logical_date=logical_date, env=env)
    out = {"layer": layer, "counts": results.counts(), "dbt_seconds": round(results.elapsed_seconds, 2),
           "seconds": round(time.monotonic() - started, 2),
           "slowest": [n.name for n in results.slowest(3)]}
    log.info("dbt %s: %s in %.1f s", layer, out["counts"], out["seconds"])
    return out


def machine_learning(logical_date: dt.date, settings: Settings | None = None) -> dict:
    """The dbt ``ml`` layer (point-in-time features), then training, scoring and recording."""
    from customer360.ml.pipeline import run_ml, training_due_any

    s = _settings(settings)
    # Training needs the labelled point-in-time snapshots; a scoring-only day (6 of 7 at the
    # specs' weekly cadence) needs the scoring snapshot alone, a fraction of the work.
    due = training_due_any(s, logical_date)
    features = build_layer(layers.ML, logical_date, s,
                           env={"C360_ML_SCORING_ONLY": "0" if due else "1"})
    features["scoring_only"] = not due
    out = run_ml(s, logical_date)
    out["features"] = features
    return out


def publish(logical_date: dt.date, settings: Settings | None = None) -> dict:
    from customer360.core import audit
    from customer360.serve.publish import publish as do_publish

    s = _settings(settings)
    pub = do_publish(s, logical_date)
    out = {"database": pub.database, "version": pub.version,
           "tables": {f"{t.schema}.{t.name}": t.rows for t in pub.tables},
           "parquet_reused": sorted(f"{t.schema}.{t.name}" for t in pub.tables if t.reused)}
    if s.publish_postgres_dsn:
        from customer360.serve.postgres import publish_postgres

        out["postgres"] = publish_postgres(s)
    audit.log_event(s, "publication", {"logical_date": logical_date.isoformat(), "version": pub.version,
                                       "tables": out["tables"], "postgres": "postgres" in out})
    audit.anchor(s, f"publication {pub.version} of {logical_date.isoformat()}")
    out["kept"] = keep_for_recovery(s)
    return out


def keep_for_recovery(settings: Settings) -> dict:
    """After a good publication: copy what a rebuild of the warehouse cannot derive, and the
    state store, to where ``c360 rebuild-warehouse`` and ``c360 doctor --repair state`` find
    them (the audit store's copy is made at each anchor)."""
    from customer360.ingest.state import backup_state
    from customer360.warehouse.keep import export_kept

    index = export_kept(settings)
    state = backup_state(settings)
    return {"tables": sorted(index.get("tables", {})), "state": str(state) if state else None}


def report(logical_date: dt.date, run_id: str, settings: Settings | None = None) -> dict:
    from customer360.serve.report import build_report
    from customer360.warehouse.dbt_runner import generate_docs

    s = _settings(settings)
    docs = None
    try:  # lineage for the report's readers; a docs failure must not fail a published run
        docs = generate_docs(s) / "index.html"
    except Exception as exc:
        log.warning("dbt docs generate failed (%s); the report links no lineage", exc)
    path = build_report(s, logical_date, run_id=run_id, dbt_docs=docs)
    return {"report": str(path), "dbt_docs": str(docs) if docs else None}


def _privacy(step: str) -> Callable[[dt.date, Settings], dict]:
    def run(logical_date: dt.date, settings: Settings) -> dict:
        from customer360.privacy import tasks

        return getattr(tasks, step)(logical_date, settings)
    return run


# --- the one ordered list ----------------------------------------------------------------------

StageFn = Callable[[dt.date, str, Settings], dict]


@dataclass(frozen=True)
class Stage:
    """One step of the daily run (one Airflow task)."""

    name: str                     # the task id, the CLI's and the benchmarks' name for it
    run: StageFn                  # (logical date, run id, settings) -> JSON-able summary
    layer: str | None = None      # the layer it builds or gates (core.layers)
    group: str | None = None      # consecutive stages of one group run in parallel
    source: bool = False          # reads a source system: Airflow retries it with backoff
    writes_warehouse: bool = True  # takes the one warehouse slot (the DuckDB file has one writer)
    publishes: bool = False       # updates what BI tools read (an Airflow Asset)
    rebuild: bool = False         # part of the rebuild after an erasure
    # Airflow's execution_timeout: a stage that hangs (a source that never answers, a stuck
    # lock) fails with a clear error and an alert instead of holding the run lock forever.
    # Generous next to the measured stage times (BENCHMARKS.md: the slowest, ML on a training
    # day at 100k x 365, took 147 s), so only a hang reaches it.
    timeout: dt.timedelta = dt.timedelta(hours=2)

    @property
    def task_id(self) -> str:
        return f"{self.group}.{self.name}" if self.group else self.name


def _extract_stage(source: str) -> Stage:
    return Stage(f"extract_{source}", lambda d, r, s: extract(source, d, s), layer=layers.RAW,
                 group="extract", source=True, writes_warehouse=False, timeout=dt.timedelta(hours=1))


def _dbt_stage(layer: str) -> Stage:
    return Stage(f"dbt_{layer}", lambda d, r, s: build_layer(layer, d, s), layer=layer, rebuild=True)


def _gate_stage(name: str, rebuild: bool = True) -> Stage:
    return Stage(f"gate_{name}", lambda d, r, s: gate(name, d, r, s), layer=name, rebuild=rebuild,
                 timeout=dt.timedelta(minutes=30))


STAGES: tuple[Stage, ...] = (
    _extract_stage("crm"),
    _extract_stage("web"),
    _extract_stage("pos"),
    # archived CRM contacts (erasure requests) are purged before anything is built
    Stage("erasure", lambda d, r, s: _privacy("erasure")(d, s)),
    _gate_stage(layers.RAW, rebuild=False),  # after an erasure the raw zone has nothing new
    # staging and intermediate in one dbt build: no gate sits between them (core.layers.COMBINED)
    _dbt_stage("staging_intermediate"),
    _gate_stage(layers.INTERMEDIATE),
    _dbt_stage(layers.MARTS),
    Stage("ml", lambda d, r, s: machine_learning(d, s), layer=layers.ML, rebuild=True),
    _dbt_stage(layers.CUSTOMER_360),
    _gate_stage(layers.MARTS),
    Stage("publish", lambda d, r, s: publish(d, s), publishes=True, rebuild=True),
    Stage("compact_warehouse", lambda d, r, s: _privacy("compact")(d, s)),
    Stage("audiences", lambda d, r, s: _privacy("audiences")(d, s)),
    # dbt docs generate reads the warehouse catalog, hence the warehouse slot
    Stage("report", lambda d, r, s: report(d, r, s), timeout=dt.timedelta(minutes=20)),
)

STAGE_NAMES = tuple(stage.name for stage in STAGES)


def stage(name: str) -> Stage:
    for candidate in STAGES:
        if candidate.name == name:
            return candidate
    raise ValueError(f"unknown stage {name!r}; expected one of {', '.join(STAGE_NAMES)}")


def run_stage(name: str, logical_date: dt.date, run_id: str, settings: Settings | None = None,
              wait: bool = False) -> dict:
    """Run one stage by name: what each Airflow task and ``c360 stage`` call. Under the run
    lock, however the task was scheduled (inside ``c360 run`` it is the run's own lock; a
    scheduler's task waits for it with ``wait=True``)."""
    from customer360.pipeline.airflow import run_lock
    from customer360.pipeline.progress import stage_events

    s = _settings(settings)
    day = check_logical_date(logical_date)
    chosen = stage(name)
    with run_lock(s, wait=wait), stage_events(s, day, name, run_id):
        return chosen.run(day, run_id, s)


def rebuild(settings: Settings, as_of: dt.date, run_id: str) -> dict:
    """After an erasure: warehouse, ML and publication again from the purged raw zone, through
    the same stages and gates as the DAG, in the DAG's order (the stages marked ``rebuild``)."""
    steps: dict = {}
    for st in STAGES:
        if st.rebuild:
            out = st.run(as_of, run_id, settings)
            steps[st.name] = out.get("counts") or out.get("summary") or out.get("tables") or "ok"
    return steps
