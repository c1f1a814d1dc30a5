"""Airflow past one process, on this machine: Debian's redis-server as the Celery broker, a
PostgreSQL metadata database, and api-server + scheduler + dag-processor + Celery worker as
separate processes, configured as docker-compose.yml configures its containers (same
AIRFLOW__* names). Each process runs in its own process group, and every group is killed
when the block ends, however it ends."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from customer360.core.settings import Settings
from customer360.pipeline.airflow import WAREHOUSE_POOL, airflow_env
from tests.pg_server import _free_port


def _airflow_bin() -> str:
    return shutil.which("airflow", path=str(Path(sys.executable).parent)) or "airflow"


@contextmanager
def _process_group(argv: list[str], log: Path, env: dict[str, str] | None = None,
                   cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """Start ``argv`` as the leader of a new process group (a Celery worker's pool, the
    api-server's workers and each task's supervisor are its descendants) and end the whole
    group afterwards: SIGTERM, then SIGKILL for whatever is still there after 20 s."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield proc
    finally:
        for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                proc.poll()
                try:
                    os.killpg(proc.pid, 0)  # anyone left in the group?
                except ProcessLookupError:
                    break
                time.sleep(0.2)
        proc.poll()


def _wait_for(what: str, ready, timeout: float, procs: dict[str, subprocess.Popen],
              logs: dict[str, Path]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n"
                                   + tail(logs[name]))
        try:
            if ready():
                return
        except Exception:  # not up yet: connection refused and the like
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s:\n"
                               + "\n".join(f"--- {n}\n{tail(p)}" for n, p in logs.items()))
        time.sleep(0.5)


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return f"({path} not written)"


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """Debian's redis-server on a free loopback port, in the foreground, persisting nothing;
    yields the broker URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (.ci/run installs Debian's redis-server)")
    import redis

    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
            "--save", "", "--appendonly", "no", "--daemonize", "no"]
    log = workdir / "redis.log"
    with _process_group(argv, log) as proc:
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
        _wait_for("redis", client.ping, 20, {"redis": proc}, {"redis": log})
        client.close()
        yield f"redis://127.0.0.1:{port}/0"


@dataclass
class AirflowCluster:
    env: dict[str, str]
    metadata_dsn: str            # libpq form, for psycopg
    logs: dict[str, Path] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def airflow(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        out = subprocess.run([_airflow_bin(), *args], env=self.env, capture_output=True,
                             text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        return out

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.metadata_dsn) as con:
            return con.execute(sql, params).fetchall()

    def wait_for(self, what: str, ready, timeout: float) -> None:
        _wait_for(what, ready, timeout, self.procs, self.logs)

    def diagnostics(self) -> str:
        return "\n".join(f"--- {name}\n{tail(path)}" for name, path in self.logs.items())


@contextmanager
def celery_airflow(settings: Settings, pg: dict, workdir: Path,
                   concurrency: int = 2) -> Iterator[AirflowCluster]:
    """The four Airflow processes of docker-compose.yml on this machine, sharing one
    configuration: a fresh database in the session's PostgreSQL, a Redis broker, one JWT
    secret. Yields when the worker answers and the DAG is serialized."""
    import psycopg
    from cryptography.fernet import Fernet

    db = "airflow_celery_" + secrets.token_hex(4)
    with psycopg.connect(pg["dsn"], autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{db}"')
    auth = f"c360_super:{pg['password']}@{pg['host']}:{pg['port']}/{db}"
    api_port = _free_port()
    with ExitStack() as stack:
        broker = stack.enter_context(redis_server(workdir / "redis"))
        env = airflow_env(settings) | {
            # its own AIRFLOW_HOME: $C360_HOME/airflow keeps the CLI's embedded SQLite set-up
            "AIRFLOW_HOME": str(workdir / "airflow"),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{auth}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{auth}",
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__WORKERS": "1",
            # the worker's log server, on a port of its own (8793 may be another test's)
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
            # one secret for every component: the scheduler signs each task's token with it and
            # the api-server checks it when the worker's task calls the Execution API
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            # only the run the test triggers: no run of the cron schedule for yesterday
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        }
        cluster = AirflowCluster(env=env, metadata_dsn=f"postgresql://{auth}")
        logs = workdir / "logs"
        for step, args in (("db-migrate", ("db", "migrate")),
                           ("pools", ("pools", "set", WAREHOUSE_POOL, "1",
                                      "Serializes every task that writes the warehouse DuckDB file"))):
            out = cluster.airflow(*args, timeout=300)
            (logs / f"{step}.log").parent.mkdir(parents=True, exist_ok=True)
            (logs / f"{step}.log").write_text(out.stdout + out.stderr)
        for name, args in (("api-server", ("api-server",)),
                           ("scheduler", ("scheduler",)),
                           ("dag-processor", ("dag-processor",)),
                           ("worker", ("celery", "worker", "--concurrency", str(concurrency),
                                       "--celery-hostname", "c360-worker@%h"))):
            log = logs / f"{name}.log"
            cluster.logs[name] = log
            cluster.procs[name] = stack.enter_context(
                _process_group([_airflow_bin(), *args], log, env=env, cwd=workdir))
        import requests

        cluster.wait_for("api-server", lambda: requests.get(
            f"http://127.0.0.1:{api_port}/api/v2/version", timeout=2).ok, 180)
        cluster.wait_for("dag c360_daily serialized", lambda: cluster.query(
            "SELECT 1 FROM serialized_dag WHERE dag_id = 'c360_daily'"), 180)
        cluster.wait_for("celery worker", lambda: "ready." in tail(cluster.logs["worker"], 100000), 120)
        yield cluster
