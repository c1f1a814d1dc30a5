"""Run the ``c360_daily`` DAG through Airflow itself on an embedded SQLite metadata DB.

``c360 run``/``backfill``/``demo`` and the tests all go through here, so the CLI runs the
very DAG a scheduler would (one code path). Each run is ``airflow dags test`` in a child
process (:mod:`customer360.pipeline.dag_test`, which records the run's true start) with
``AIRFLOW_HOME=$C360_HOME/airflow``; a lock file refuses a second concurrent
run on the same ``C360_HOME`` instead of letting two writers corrupt the warehouse.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterator

from customer360.core.settings import (CRM_CONNECTION_ID, RUN_LOCK_TOKEN_VAR, Settings,
                                       child_environment, crm_configured, crm_connection,
                                       scoped_environment)

log = logging.getLogger(__name__)

DAG_ID = "c360_daily"
WAREHOUSE_POOL = "c360_warehouse"


class RunLockedError(RuntimeError):
    """Another pipeline run holds this C360_HOME."""


@dataclass
class DagRunResult:
    logical_date: dt.date
    success: bool
    seconds: float
    log_path: Path
    returncode: int


def airflow_env(settings: Settings) -> dict[str, str]:
    """This process's environment, with what Airflow's child processes need from ``settings``."""
    env = child_environment()
    bin_dir = str(Path(sys.executable).parent)
    env.update({
        "AIRFLOW_HOME": str(settings.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": env.get("AIRFLOW__CORE__PARALLELISM", "4"),
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "60",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": env.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
        "C360_HOME": str(settings.home),
        "C360_LANDING": str(settings.landing),
        "PATH": bin_dir + os.pathsep + env.get("PATH", ""),
    })
    # The DAG reads the CRM from the Airflow connection crm_api; outside a deployment we
    # define it from the environment (Airflow's documented AIRFLOW_CONN_* form).
    conn_var = f"AIRFLOW_CONN_{CRM_CONNECTION_ID.upper()}"
    if conn_var not in env and crm_configured():
        crm = crm_connection()
        env[conn_var] = json.dumps({"conn_type": "http", "host": crm.base_url,
                                    "password": crm.token})
    return env


def _airflow(settings: Settings, *args: str, log_path: Path | None = None,
             check: bool = True) -> subprocess.CompletedProcess:
    airflow_bin = shutil.which("airflow", path=str(Path(sys.executable).parent)) or "airflow"
    return _child(settings, [airflow_bin, *args], log_path=log_path, check=check)


def _child(settings: Settings, argv: list[str], log_path: Path | None = None,
           check: bool = True) -> subprocess.CompletedProcess:
    if log_path is None:
        return subprocess.run(argv, env=airflow_env(settings), check=check,
                              capture_output=True, text=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as fh:
        return subprocess.run(argv, env=airflow_env(settings), check=check,
                              stdout=fh, stderr=subprocess.STDOUT, text=True)


def _set_aside_if_corrupt(db: Path, stamp: Path) -> None:
    """A metadata DB SQLite cannot read (a crash or a full disk mid-write) is moved aside, kept
    for a look, and the run starts a fresh one: it holds Airflow's run history only (every
    state the pipeline needs lives under the lake and the audit store), so nothing is lost,
    and the alternative is every run failing deep inside Airflow with a raw SQLite error."""
    if not db.exists():
        return
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            ok = con.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        finally:
            con.close()
    except sqlite3.DatabaseError:
        ok = False
    if ok:
        return
    aside = db.with_name(f"{db.name}.corrupt-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}")
    db.rename(aside)
    stamp.unlink(missing_ok=True)
    log.warning("the Airflow metadata DB %s is corrupt: moved to %s, a new one is created "
                "(it held Airflow's run history only)", db, aside.name)


def ensure_airflow(settings: Settings) -> None:
    """Create the metadata DB and the warehouse pool once (a no-op when current)."""
    home = settings.airflow_home
    home.mkdir(parents=True, exist_ok=True)
    stamp = home / ".c360-initialized"
    _set_aside_if_corrupt(home / "airflow.db", stamp)
    if stamp.exists():
        return
    _airflow(settings, "db", "migrate", log_path=home / "logs" / "db-migrate.log")
    _airflow(settings, "pools", "set", WAREHOUSE_POOL, "1",
             "Serializes every task that writes the warehouse DuckDB file",
             log_path=home / "logs" / "pools.log")
    stamp.write_text(dt.datetime.now(dt.timezone.utc).isoformat())


def _holder(fh) -> str:
    fh.seek(0)
    return fh.read().strip()


@contextmanager
def run_lock(settings: Settings, wait: bool = False) -> Iterator[None]:
    """Hold ``$C360_HOME/.run.lock`` for the block: the one lock every writer of a home takes
    (runs and backfills, each DAG task however it was scheduled, erase, publish, audiences,
    extracts), so that two never write at once. ``wait=False`` refuses at once with
    :class:`RunLockedError` naming the holder; ``wait=True`` queues (an Airflow task: its
    ``execution_timeout`` bounds the wait).

    Re-entrant for the holder's child processes only (``c360 run`` holds it while Airflow runs
    the tasks, which take it too): they inherit its token in ``C360_RUN_LOCK_TOKEN`` and find
    it in the lock file while the lock is held. A second take in the holding process itself is
    refused like any other (it is a nesting mistake, and waiting would deadlock)."""
    path = settings.run_lock_path
    settings.home.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        inherited = settings.run_lock_token
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fh)
            if (inherited and holder.endswith(f"token {inherited}")
                    and not holder.startswith(f"pid {os.getpid()} ")):
                yield  # our parent process holds it for us
                return
            if not wait:
                shown = holder.rsplit(" token ", 1)[0] or "another process"
                raise RunLockedError(
                    f"another pipeline run is in progress on {settings.home} ({shown}); "
                    "wait for it to finish or pass --wait") from None
            fcntl.flock(fh, fcntl.LOCK_EX)
        token = uuid.uuid4().hex
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ} "
                 f"token {token}")
        fh.flush()
        try:
            # for the child processes (Airflow's task runs), through their environment
            with scoped_environment({RUN_LOCK_TOKEN_VAR: token}):
                yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


Watch = Callable[[dt.date], ContextManager]


def run_dag(settings: Settings, logical_date: dt.date, wait: bool = False,
            watch: Watch | None = None) -> DagRunResult:
    """Run the DAG for one logical date through Airflow; returns when the run has ended.
    ``watch(logical_date)`` is held while Airflow runs (progress reporting, e.g.
    :func:`customer360.pipeline.progress.console_watch`)."""
    from customer360.pipeline import progress

    with run_lock(settings, wait=wait):
        ensure_airflow(settings)
        progress.start_run(settings, logical_date)
        log_path = settings.airflow_home / "runs" / f"{logical_date.isoformat()}.log"
        started = time.monotonic()
        with watch(logical_date) if watch else nullcontext():
            proc = _child(settings, [sys.executable, "-m", "customer360.pipeline.dag_test",
                                     DAG_ID, logical_date.isoformat()],
                          log_path=log_path, check=False)
        return DagRunResult(logical_date, proc.returncode == 0, time.monotonic() - started,
                            log_path, proc.returncode)


def backfill(settings: Settings, start: dt.date, end: dt.date, wait: bool = False,
             watch: Watch | None = None) -> list[DagRunResult]:
    """Run each date from start to end in order; stop at the first failed date."""
    if end < start:
        raise ValueError(f"backfill end {end} is before start {start}")
    results = []
    day = start
    while day <= end:
        result = run_dag(settings, day, wait=wait, watch=watch)
        results.append(result)
        if not result.success:
            break
        day += dt.timedelta(days=1)
    return results
