"""The DAG imports cleanly and has the shape the docs promise; docker-compose.yml is sound."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _dagbag_report(tmp_path) -> dict:
    # A child process: Airflow reads its config (AIRFLOW_HOME) at import time.
    code = f"""
import json, time
import great_expectations  # noqa: F401  (STACK.md: before airflow, or its log floods)
from airflow.dag_processing.dagbag import DagBag
t = time.perf_counter()
bag = DagBag(dag_folder={str(REPO / 'dags')!r})
dag = bag.dags.get('c360_daily')
print(json.dumps({{
  "errors": {{k: str(v) for k, v in bag.import_errors.items()}},
  "dag_ids": sorted(bag.dag_ids),
  "tasks": {{t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}} if dag else {{}},
  "pools": {{t.task_id: t.pool for t in dag.tasks}} if dag else {{}},
  "retries": {{t.task_id: t.retries for t in dag.tasks}} if dag else {{}},
  "timeouts": {{t.task_id: t.execution_timeout.total_seconds() if t.execution_timeout else None
               for t in dag.tasks}} if dag else {{}},
  "max_active_runs": dag.max_active_runs if dag else None,
  "catchup": dag.catchup if dag else None,
  "task_start": min(t.start_date for t in dag.tasks).date().isoformat() if dag else None,
}}))
"""
    env = {"AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "PATH": str(Path(sys.executable).parent), "C360_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])


def test_dagbag_imports_without_errors_and_wires_the_stages(tmp_path):
    rep = _dagbag_report(tmp_path)
    assert rep["errors"] == {}
    assert rep["dag_ids"] == ["c360_daily"]
    t = rep["tasks"]
    assert t["extract.extract_crm"] == [] and t["extract.extract_web"] == [] and t["extract.extract_pos"] == []
    assert t["erasure"] == ["extract.extract_crm", "extract.extract_pos", "extract.extract_web"]
    chain = ["erasure", "gate_raw", "dbt_staging_intermediate", "gate_intermediate", "dbt_marts", "ml",
             "dbt_customer_360", "gate_marts", "publish", "compact_warehouse", "audiences", "report"]
    for upstream, downstream in zip(chain, chain[1:]):
        assert t[downstream] == [upstream]
    # Every task that writes the warehouse DuckDB file shares the one-slot pool.
    for task in chain:
        assert rep["pools"][task] == "c360_warehouse", task
    assert all(rep["retries"][f"extract.extract_{s}"] == 3 for s in ("crm", "web", "pos"))
    assert rep["max_active_runs"] == 1
    # No task can hang forever: each has the execution_timeout its stage declares.
    from customer360 import pipeline

    assert rep["timeouts"] == {st.task_id: st.timeout.total_seconds() for st in pipeline.STAGES}
    assert all(0 < seconds <= 2 * 3600 for seconds in rep["timeouts"].values())
    # A run of a date before a task's start_date runs nothing and still succeeds: every date the
    # project's history can hold (a backfill of years of data) must be after it.
    assert rep["catchup"] is False and rep["task_start"] <= "2000-01-01"


def test_dag_file_imports_no_heavy_library(tmp_path):
    code = f"""
import sys, runpy
runpy.run_path({str(REPO / 'dags' / 'c360_daily.py')!r})
heavy = [m for m in ('duckdb', 'pandas', 'dbt', 'sklearn', 'great_expectations', 'pyarrow') if m in sys.modules]
print(','.join(heavy))
"""
    env = {"AIRFLOW_HOME": str(tmp_path / "airflow"), "PATH": str(Path(sys.executable).parent),
           "C360_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1:] in ([], [""]), out.stdout


def test_docker_compose_structure():
    spec = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = spec["services"]
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                 "airflow-worker", "airflow-db", "redis", "publish-db"):
        assert name in services, name
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        assert "healthcheck" in svc, name
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (REPO / src).exists(), f"{name} mounts missing {src}"
            else:
                assert src in spec.get("volumes", {}), f"{name} uses undeclared volume {src}"
        build = svc.get("build")
        if build:
            assert (REPO / build["context"] / build["dockerfile"]).exists()
    mounted = {v.split(":")[0] for v in services["airflow-scheduler"]["volumes"]}
    assert {"./dags", "./plugins", "./dbt_project", "./expectations", "./models"} <= mounted
    assert services["airflow-worker"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_docker_compose_runs_the_configuration_the_celery_test_starts():
    """docker-compose.yml and tests/airflow_cluster.py are one configuration: the same
    processes, and the same AIRFLOW__* settings for each of them."""
    import re

    spec = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = spec["services"]
    commands = {name: svc.get("command") for name, svc in services.items()}
    assert commands["airflow-apiserver"] == ["airflow", "api-server"]
    assert commands["airflow-scheduler"] == ["airflow", "scheduler"]
    assert commands["airflow-dag-processor"] == ["airflow", "dag-processor"]
    assert commands["airflow-worker"][:3] == ["airflow", "celery", "worker"]
    airflow_services = [n for n, svc in services.items() if "build" in svc]
    env = services["airflow-worker"]["environment"]
    for name in airflow_services:  # one configuration for every component
        assert services[name]["environment"].items() >= env.items(), name
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
    assert "@airflow-db/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    # a secret every component must share comes from .env, never generated per container
    for shared in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY"):
        assert re.fullmatch(r"\$\{AIRFLOW_\w+:\?[^}]*\}", env[shared]), shared
    assert int(env["AIRFLOW__CORE__PARALLELISM"]) <= 8
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    # the settings the test gives its processes are the ones compose gives its containers
    started = (REPO / "tests" / "airflow_cluster.py").read_text()
    for name in ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL",
                 "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CELERY__WORKER_CONCURRENCY",
                 "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW__API_AUTH__JWT_SECRET",
                 "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__CORE__PARALLELISM"):
        assert name in env, name
        assert f'"{name}"' in started, f"tests/airflow_cluster.py does not set {name}"
    assert env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "2"
    assert '"api-server"' in started and '"dag-processor"' in started and '"scheduler"' in started
