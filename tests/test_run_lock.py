"""The run lock covers every writer of a home: the CLI's stage, extract and audience commands
and each DAG task (run by a scheduler, not under `c360 run`) as well as runs and erase; it is
re-entrant for the child processes of its holder (the tasks `c360 run` starts) only."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from customer360.cli import app
from customer360.core.settings import get_settings
from customer360.pipeline import run_stage
from customer360.pipeline.airflow import RunLockedError, run_lock

HOLDER = """
import sys, time
from pathlib import Path
from customer360.pipeline.airflow import run_lock
from customer360.core.settings import get_settings
with run_lock(get_settings()):
    print('held', flush=True)
    sys.stdin.readline()                        # until the test says so
    Path(sys.argv[1]).write_text('released')    # written while still holding the lock
"""

TAKER = """
import sys
from pathlib import Path
from customer360.pipeline.airflow import RunLockedError, run_lock
from customer360.core.settings import get_settings
try:
    with run_lock(get_settings(), wait=sys.argv[1] == 'wait'):
        marker = Path(sys.argv[2])
        print('inside', marker.read_text() if marker.exists() else 'before release', flush=True)
except RunLockedError as exc:
    print('refused', exc, flush=True)
"""


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("C360_PII_KEY", "unit-test-pii-key-000000000000")
    monkeypatch.delenv("C360_RUN_LOCK_TOKEN", raising=False)
    return get_settings()


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "C360_RUN_LOCK_TOKEN"}
    return {**env, **extra}


@pytest.fixture
def held_elsewhere(settings, tmp_path):
    """Another process (a scheduler's task, a CLI writer) holds the home's run lock."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "marker")], env=_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.stdin.close()
    proc.wait(timeout=60)


@pytest.mark.parametrize("args", [
    ["stage", "publish", "--date", "2026-01-05"],
    ["extract", "web", "--date", "2026-01-05"],
    ["audience", "--all"],
    ["erase", "--contact-id", "199901"],
])
def test_every_writer_command_is_refused_while_another_holds_the_home(settings, held_elsewhere, args):
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 3, out.output
    assert f"pid {held_elsewhere.pid}" in out.output and "another pipeline run" in out.output
    assert "token" not in out.output


def test_a_task_run_by_a_scheduler_waits_for_the_lock(settings, held_elsewhere, tmp_path):
    """What the DAG's tasks do (run_stage with wait=True): queue behind the holder and start
    only once it has let go, never alongside it."""
    with pytest.raises(RunLockedError):
        run_stage("publish", __import__("datetime").date(2026, 1, 5), "r1", settings)
    waiter = subprocess.Popen([sys.executable, "-c", TAKER, "wait", str(tmp_path / "marker")],
                              env=_env(), stdout=subprocess.PIPE, text=True)
    held_elsewhere.stdin.write("go\n")
    held_elsewhere.stdin.flush()
    assert waiter.communicate(timeout=60)[0].strip() == "inside released"


def test_the_dag_tasks_wait_for_the_lock():
    """The DAG file's tasks go through run_stage with wait=True (a scheduled task queues
    behind a CLI writer instead of failing)."""
    import ast
    from pathlib import Path

    from customer360.core.settings import REPO_ROOT

    tree = ast.parse(Path(REPO_ROOT / "dags" / "c360_daily.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "run_stage"]
    assert calls and all(any(k.arg == "wait" and getattr(k.value, "value", None) is True
                             for k in c.keywords) for c in calls)


def test_the_lock_is_reentrant_for_its_children_only(settings, tmp_path):
    with run_lock(settings):
        with pytest.raises(RunLockedError):  # nested in the holder itself: a mistake, refused
            with run_lock(get_settings()):  # (even with the token in its environment)
                pass
        # `c360 run` holds it while Airflow's child processes run the tasks: they inherit it
        child = subprocess.run([sys.executable, "-c", TAKER, "nowait", str(tmp_path / "none")],
                               env=dict(os.environ), capture_output=True, text=True, timeout=60)
        assert child.stdout.strip() == "inside before release", child.stderr
        # a process that did not inherit the token is refused
        other = subprocess.run([sys.executable, "-c", TAKER, "nowait", str(tmp_path / "none")],
                               env=_env(), capture_output=True, text=True, timeout=60)
        assert other.stdout.startswith("refused another pipeline run is in progress")
        # nor does a made-up token open it
        forged = subprocess.run([sys.executable, "-c", TAKER, "nowait", str(tmp_path / "none")],
                                env=_env(C360_RUN_LOCK_TOKEN="0" * 32), capture_output=True,
                                text=True, timeout=60)
        assert forged.stdout.startswith("refused")
    assert "C360_RUN_LOCK_TOKEN" not in os.environ  # put back as it was
    with run_lock(settings):  # and free again
        pass
