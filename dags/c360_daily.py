"""c360_daily: the customer 360 airflow DAG for one logical date (wiring only).

extract (CRM, web, POS in parallel) -> erasure of archived contacts -> raw gate -> dbt staging
-> dbt intermediate -> core gate -> dbt marts -> ML -> customer_360 with scores -> marts gate
-> publish -> compact the warehouse -> consent-aware audiences -> report. All logic lives in customer360.pipeline.stages;
this file only wires it, so it parses in milliseconds.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import Asset, CronDataIntervalTimetable, dag, task, task_group

from customer360.core.alerts import on_task_failure

WAREHOUSE_POOL = "c360_warehouse"  # one slot: every task that writes the warehouse DuckDB file
PUBLISHED_MARTS = Asset("file:///c360/published/marts", group="c360")

default_args = {
    "owner": "customer360",
    "retries": 0,
    "on_failure_callback": on_task_failure,
}
extract_retries = {
    "retries": 3,
    "retry_delay": dt.timedelta(seconds=10),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": dt.timedelta(minutes=5),
}


def _day(ctx) -> dt.date:
    return dt.date.fromisoformat(ctx["ds"])


@dag(
    dag_id="c360_daily",
    # Data-interval timetable: the run for day D has logical date D and processes D's data.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,  # backfills run explicitly (`c360 backfill`); max_active_runs keeps them serial
    max_active_runs=1,
    default_args=default_args,
    tags=["customer360"],
    doc_md=__doc__,
)
def c360_daily():
    from customer360 import pipeline

    @task_group(group_id="extract")
    def extract_group():
        @task(**extract_retries)
        def extract_crm(**ctx):
            return pipeline.extract("crm", _day(ctx))

        @task(**extract_retries)
        def extract_web(**ctx):
            return pipeline.extract("web", _day(ctx))

        @task(**extract_retries)
        def extract_pos(**ctx):
            return pipeline.extract("pos", _day(ctx))

        return [extract_crm(), extract_web(), extract_pos()]

    @task(pool=WAREHOUSE_POOL)
    def erasure(**ctx):
        """Archived CRM contacts (erasure requests) are purged before anything is built."""
        from customer360.privacy import tasks as privacy

        return privacy.erasure(_day(ctx))

    @task(pool=WAREHOUSE_POOL)
    def gate_raw(**ctx):
        return pipeline.gate("raw", _day(ctx), ctx["run_id"])

    @task(pool=WAREHOUSE_POOL)
    def dbt_staging(**ctx):
        return pipeline.build_layer("staging", _day(ctx))

    @task(pool=WAREHOUSE_POOL)
    def dbt_intermediate(**ctx):
        return pipeline.build_layer("intermediate", _day(ctx))

    @task(pool=WAREHOUSE_POOL)
    def gate_core(**ctx):
        return pipeline.gate("core", _day(ctx), ctx["run_id"])

    @task(pool=WAREHOUSE_POOL)
    def dbt_marts(**ctx):
        return pipeline.build_layer("marts", _day(ctx))

    @task(pool=WAREHOUSE_POOL)
    def ml(**ctx):
        return pipeline.machine_learning(_day(ctx))

    @task(pool=WAREHOUSE_POOL)
    def dbt_customer_360(**ctx):
        return pipeline.build_layer("customer_360", _day(ctx))

    @task(pool=WAREHOUSE_POOL)
    def gate_marts(**ctx):
        return pipeline.gate("marts", _day(ctx), ctx["run_id"])

    @task(pool=WAREHOUSE_POOL, outlets=[PUBLISHED_MARTS])
    def publish(**ctx):
        return pipeline.publish(_day(ctx))

    @task(pool=WAREHOUSE_POOL)
    def compact_warehouse(**ctx):
        from customer360.privacy import tasks as privacy

        return privacy.compact(_day(ctx))

    @task(pool=WAREHOUSE_POOL)
    def audiences(**ctx):
        from customer360.privacy import tasks as privacy

        return privacy.audiences(_day(ctx))

    @task(pool=WAREHOUSE_POOL)  # dbt docs generate reads the warehouse catalog
    def report(**ctx):
        return pipeline.report(_day(ctx), ctx["run_id"])

    (
        extract_group()
        >> erasure()
        >> gate_raw()
        >> dbt_staging()
        >> dbt_intermediate()
        >> gate_core()
        >> dbt_marts()
        >> ml()
        >> dbt_customer_360()
        >> gate_marts()
        >> publish()
        >> compact_warehouse()
        >> audiences()
        >> report()
    )


c360_daily()
