"""c360_daily: the customer 360 airflow DAG for one logical date (wiring only).

One task a stage of ``customer360.pipeline.STAGES``, in that order: extract (CRM, web, POS in
parallel) -> erasure of archived contacts -> raw gate -> dbt staging and intermediate (one build) ->
intermediate gate -> dbt marts -> ML -> dbt customer_360 -> marts gate -> publish -> compact the
warehouse -> consent-aware audiences -> report. All logic lives in customer360.pipeline; this
file only wires it, so it parses in milliseconds.
"""

from __future__ import annotations

import datetime as dt
from itertools import groupby

import pendulum
from airflow.sdk import Asset, CronDataIntervalTimetable, TaskGroup, dag, task

from customer360 import pipeline
from customer360.core.alerts import on_task_failure

WAREHOUSE_POOL = "c360_warehouse"  # one slot: every task that writes the warehouse DuckDB file
PUBLISHED_MARTS = Asset("file:///c360/published/marts", group="c360")

default_args = {
    "owner": "customer360",
    "retries": 0,
    "on_failure_callback": on_task_failure,
}
source_retries = {
    "retries": 3,
    "retry_delay": dt.timedelta(seconds=10),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": dt.timedelta(minutes=5),
}


def _stage_task(stage: pipeline.Stage):
    options: dict = dict(source_retries) if stage.source else {}
    options["execution_timeout"] = stage.timeout
    if stage.writes_warehouse:
        options["pool"] = WAREHOUSE_POOL
    if stage.publishes:
        options["outlets"] = [PUBLISHED_MARTS]

    @task(task_id=stage.name, **options)
    def run_stage(**ctx):
        # wait for the run lock (a CLI writer may hold it); execution_timeout bounds the wait
        return pipeline.run_stage(stage.name, dt.date.fromisoformat(ctx["ds"]), ctx["run_id"],
                                  wait=True)

    return run_stage()


@dag(
    dag_id="c360_daily",
    # Data-interval timetable: the run for day D has logical date D and processes D's data.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    # Early on purpose: a run of a date before start_date is created with no task to run and
    # "succeeds" having done nothing, so `c360 run --date` or a backfill of an older day would
    # be a silent no-op. catchup=False keeps the scheduler from filling the years since.
    start_date=pendulum.datetime(2000, 1, 1, tz="UTC"),
    catchup=False,  # backfills run explicitly (`c360 backfill`); max_active_runs keeps them serial
    max_active_runs=1,
    default_args=default_args,
    tags=["customer360"],
    doc_md=__doc__,
)
def c360_daily():
    upstream = None
    for group, stages in groupby(pipeline.STAGES, key=lambda s: s.group):
        if group:
            with TaskGroup(group_id=group):
                current = [_stage_task(s) for s in stages]
        else:
            current = [_stage_task(s) for s in stages]
        for task_ref in current if not group else [current]:
            if upstream is not None:
                upstream >> task_ref
            upstream = task_ref


c360_daily()
