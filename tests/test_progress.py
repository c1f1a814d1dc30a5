"""Progress and ETA of a DAG run (customer360.pipeline.progress), without Airflow: the events
the stages write, the ETA from earlier runs, and what the watcher reports."""

from __future__ import annotations

import datetime as dt
import json
import subprocess

import pytest

from customer360.core.settings import get_settings
from customer360.pipeline import airflow as airflow_mod
from customer360.pipeline import progress, stages

DAY = dt.date(2026, 3, 10)


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("C360_HOME", str(tmp_path))
    monkeypatch.delenv("C360_RUN_LOCK_TOKEN", raising=False)
    return get_settings()


def _write(settings, day, events):
    path = progress.events_path(settings, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e) + "\n" for e in events))


def test_a_stage_run_records_its_start_and_end_and_a_failure_as_failed(settings, monkeypatch):
    calls = iter([{"ok": 1}, RuntimeError("boom")])

    def fake_run(day, run_id, s):
        outcome = next(calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    monkeypatch.setattr(stages, "stage", lambda name: stages.Stage(name, fake_run))
    assert stages.run_stage("publish", DAY, "r1", settings) == {"ok": 1}
    with pytest.raises(RuntimeError, match="boom"):
        stages.run_stage("report", DAY, "r1", settings)
    events = progress.read_events(progress.events_path(settings, DAY))
    assert [(e["stage"], e["event"]) for e in events] == [
        ("publish", "start"), ("publish", "done"), ("report", "start"), ("report", "failed")]
    snap = progress.Snapshot.of(events)
    assert set(snap.done) == {"publish"} and set(snap.failed) == {"report"} and not snap.running


def test_the_eta_is_the_typical_time_of_what_is_left_less_what_the_running_stage_spent(settings):
    # two earlier dates: medians a=10, b=20 (c never ran)
    _write(settings, DAY - dt.timedelta(days=2), [{"stage": "a", "event": "done", "seconds": 8},
                                                 {"stage": "b", "event": "done", "seconds": 30}])
    _write(settings, DAY - dt.timedelta(days=1), [{"stage": "a", "event": "done", "seconds": 12},
                                                 {"stage": "b", "event": "done", "seconds": 10},
                                                 {"stage": "b", "event": "failed", "seconds": 99}])
    # this date's own earlier events are not history (start_run drops them anyway)
    _write(settings, DAY, [{"stage": "a", "event": "done", "seconds": 1000}])
    typical = progress.history(settings, exclude=DAY)
    assert typical == {"a": 10.0, "b": 20.0}
    snap = progress.Snapshot.of([{"stage": "a", "event": "start", "at": 100.0},
                                 {"stage": "a", "event": "done", "seconds": 9},
                                 {"stage": "b", "event": "start", "at": 105.0}])
    assert progress.eta_seconds(("a", "b"), snap, typical, now=111.0) == (14.0, 0)
    # past its typical time a running stage counts 0, and an untimed stage is counted apart
    assert progress.eta_seconds(("a", "b", "c"), snap, typical, now=200.0) == (0.0, 1)
    assert progress.eta_text(0.0, 1) == "ETA unknown (no earlier run)"
    assert progress.eta_text(75.0, 1) == "ETA 1m15s + 1 stage(s) never timed"


def test_the_watcher_reports_each_finished_task_once_with_the_eta(settings):
    _write(settings, DAY - dt.timedelta(days=1), [{"stage": "a", "event": "done", "seconds": 5},
                                                 {"stage": "b", "event": "done", "seconds": 40}])
    lines, statuses = [], []
    now = [1000.0]
    watcher = progress.RunWatcher(settings, DAY, ("a", "b"), lines.append, statuses.append,
                                  clock=lambda: now[0])
    progress.start_run(settings, DAY)
    _write(settings, DAY, [{"stage": "a", "event": "start", "at": 1000.0},
                           {"stage": "a", "event": "done", "seconds": 4.0},
                           {"stage": "b", "event": "start", "at": 1004.0}])
    now[0] = 1014.0
    watcher.poll()
    watcher.poll()
    assert lines == ["[1/2] a done in 4.0 s - ETA 30s"]
    assert statuses[-1] == "1/2 tasks; running: b 10s; elapsed 14s; ETA 30s"


def test_run_dag_starts_a_fresh_event_file_and_holds_the_watch_while_airflow_runs(settings, monkeypatch):
    _write(settings, DAY, [{"stage": "a", "event": "done", "seconds": 1}])  # an earlier run's
    seen = []

    def fake_child(s, argv, log_path=None, check=True):  # the DAG run (pipeline.dag_test)
        seen.append(("airflow", progress.events_path(s, DAY).exists(), list(watching)))
        return subprocess.CompletedProcess(argv, 0)

    watching: list[dt.date] = []

    from contextlib import contextmanager

    @contextmanager
    def watch(day):
        watching.append(day)
        yield
        watching.remove(day)
    monkeypatch.setattr(airflow_mod, "ensure_airflow", lambda s: None)
    monkeypatch.setattr(airflow_mod, "_child", fake_child)
    result = airflow_mod.run_dag(settings, DAY, watch=watch)
    assert result.success
    assert seen == [("airflow", False, [DAY])] and watching == []
