"""c360_daily on Airflow past one process: CeleryExecutor, Redis broker, PostgreSQL metadata
database; the api-server, scheduler, dag-processor and a Celery worker really started as
processes (tests/airflow_cluster.py), one run triggered as a user would, every task executed
by the worker, and the published result the same as `c360 run` gives for that date."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from customer360 import pipeline as stages
from customer360.pipeline.airflow import DAG_ID, run_dag
from tests.airflow_cluster import celery_airflow
from tests.e2e import pipeline_env, published_checksums

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

RUN_TIMEOUT_S = 900  # hard limit on the whole DAG run; a healthy run takes a fraction of it


@pytest.fixture(scope="module")
def celery_run(tmp_path_factory, postgres_session):
    """One small simulated home; its last day run once by the Celery cluster. Yields what the
    test needs after the processes are gone (the metadata DB outlives them)."""
    root = tmp_path_factory.mktemp("celery")
    with pipeline_env(root / "home", people=120, days=10) as (settings, server, last):
        with celery_airflow(settings, postgres_session, root / "cluster") as cluster:
            run_id = f"celery__{last.isoformat()}"
            triggered = dt.datetime.now(dt.timezone.utc)
            started = time.monotonic()
            cluster.airflow("dags", "trigger", DAG_ID, "--logical-date",
                            f"{last.isoformat()}T00:00:00+00:00", "--run-id", run_id)
            state = None
            while time.monotonic() - started < RUN_TIMEOUT_S:
                rows = cluster.query("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s",
                                     (DAG_ID, run_id))
                state = rows[0][0] if rows else None
                if state in ("success", "failed"):
                    break
                time.sleep(2)
                for name, proc in cluster.procs.items():
                    assert proc.poll() is None, f"{name} died mid-run\n{cluster.diagnostics()}"
            waited = time.monotonic() - started
            diagnostics = cluster.diagnostics()
            assert state == "success", f"run ended {state!r} after {waited:.0f} s\n{diagnostics}"
            worker_log = cluster.logs["worker"].read_text(errors="replace")
            metadata_dsn = cluster.metadata_dsn
        # the processes are stopped; the warehouse is now the CLI's to compare against
        celery_published = published_checksums(settings)
        yield {"settings": settings, "last": last, "run_id": run_id, "dsn": metadata_dsn,
               "triggered": triggered, "waited": waited, "worker_log": worker_log,
               "published": celery_published, "diagnostics": diagnostics}


def _query(dsn: str, sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(dsn) as con:
        return con.execute(sql, params).fetchall()


def test_every_task_succeeded_on_the_celery_worker(celery_run):
    run = celery_run
    print(f"Celery DAG run: {run['waited']:.0f} s from trigger to success")
    tis = _query(run["dsn"], "SELECT task_id, state, queue, hostname, external_executor_id, try_number "
                             "FROM task_instance WHERE dag_id = %s AND run_id = %s", (DAG_ID, run["run_id"]))
    assert sorted(t[0] for t in tis) == sorted(st.task_id for st in stages.STAGES)
    assert {t[1] for t in tis} == {"success"}, [t[:2] for t in tis if t[1] != "success"]
    # The CeleryExecutor gives each task instance its Celery task id before sending it; the
    # worker records each task it ran in Celery's result table (the database result backend).
    celery_ids = {t[4] for t in tis}
    assert None not in celery_ids and len(celery_ids) == len(tis)
    done = dict(_query(run["dsn"], "SELECT task_id, status FROM celery_taskmeta"))
    assert {cid: done.get(cid) for cid in celery_ids} == {cid: "SUCCESS" for cid in celery_ids}
    assert {t[2] for t in tis} == {"default"}  # the queue the worker consumes
    assert all(t[3] for t in tis)  # each ran somewhere that recorded its host
    # ... and the worker process itself received every one of them
    for cid in celery_ids:
        assert cid in run["worker_log"], f"celery task {cid} not in the worker's log"


def test_the_run_records_its_true_duration(celery_run):
    run = celery_run
    (start, end, logical), = _query(run["dsn"], "SELECT start_date, end_date, logical_date FROM dag_run "
                                                "WHERE dag_id = %s AND run_id = %s", (DAG_ID, run["run_id"]))
    assert logical.date() == run["last"]
    assert run["triggered"] <= start <= end
    assert (end - start).total_seconds() <= run["waited"]  # not months: at most our wait


def test_celery_publishes_what_the_cli_publishes(celery_run):
    run = celery_run
    assert {"marts.customer_360", "marts.fct_orders", "ml.ml_churn_scores"} <= set(run["published"])
    # the same date through `c360 run` (embedded dags test) on the same home
    cli = run_dag(run["settings"], run["last"])
    assert cli.success, cli.log_path.read_text()[-5000:]
    assert published_checksums(run["settings"]) == run["published"]
