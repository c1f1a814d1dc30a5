"""Progress of a pipeline run, task by task, with an ETA, for ``c360 run``, ``backfill`` and
``demo`` (issue 19: the terminal was silent for minutes while the DAG ran).

Every stage, however it is scheduled (an Airflow task, ``c360 stage``, a benchmark), appends a
``start`` and a ``done``/``failed`` event to ``$C360_HOME/airflow/runs/<date>.progress.jsonl``
(:func:`stage_events`). The CLI watches that file while Airflow runs the DAG in its child
process (:class:`RunWatcher`) and shows what is running, what finished and in how long. The
events are written by our own stage code rather than read from Airflow's metadata database:
its tables are Airflow's internals, and the stage knows best when its work starts and ends.

The ETA is what the stages not yet finished took in earlier runs (the median of their last
:data:`HISTORY_RUNS` durations in the other dates' event files), less the time the running ones
have spent already. A stage never seen before has no estimate; the ETA then says so.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from customer360.core import files
from customer360.core.settings import Settings

HISTORY_RUNS = 5
POLL_SECONDS = 0.5


def events_path(settings: Settings, logical_date: dt.date) -> Path:
    return settings.airflow_home / "runs" / f"{logical_date.isoformat()}.progress.jsonl"


def _append(path: Path, event: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    files.append_jsonl(path, [json.dumps(event)])


def start_run(settings: Settings, logical_date: dt.date) -> None:
    """A new run of ``logical_date`` starts (its owner holds the run lock): the events of an
    earlier run of that date are dropped, so they are neither shown as this run's nor counted
    twice in the history."""
    events_path(settings, logical_date).unlink(missing_ok=True)


@contextmanager
def stage_events(settings: Settings, logical_date: dt.date, stage: str, run_id: str) -> Iterator[None]:
    path = events_path(settings, logical_date)
    started = time.time()
    _append(path, {"stage": stage, "event": "start", "at": started, "run_id": run_id})
    outcome = "failed"
    try:
        yield
        outcome = "done"
    finally:
        _append(path, {"stage": stage, "event": outcome, "at": time.time(),
                       "seconds": round(time.time() - started, 3), "run_id": run_id})


def read_events(path: Path) -> list[dict]:
    out = []
    for line in files.read_jsonl_lines(path):
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # not ours to repair; a display must not stop the run
    return out


def history(settings: Settings, exclude: dt.date | None = None) -> dict[str, float]:
    """Stage -> the median of its last :data:`HISTORY_RUNS` successful durations, from the event
    files of the other dates (newest files first)."""
    folder = settings.airflow_home / "runs"
    if not folder.is_dir():
        return {}
    skip = f"{exclude.isoformat()}.progress.jsonl" if exclude else None
    seen: dict[str, list[float]] = {}
    for path in sorted(folder.glob("*.progress.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True):
        if path.name == skip:
            continue
        for event in read_events(path):
            if event.get("event") == "done" and isinstance(event.get("seconds"), (int, float)):
                runs = seen.setdefault(event["stage"], [])
                if len(runs) < HISTORY_RUNS:
                    runs.append(float(event["seconds"]))
    return {stage: statistics.median(runs) for stage, runs in seen.items() if runs}


@dataclass
class Snapshot:
    """Where a run stands, from its events."""

    done: dict[str, float] = field(default_factory=dict)      # stage -> seconds
    failed: dict[str, float] = field(default_factory=dict)
    running: dict[str, float] = field(default_factory=dict)   # stage -> started at (epoch s)

    @classmethod
    def of(cls, events: list[dict]) -> "Snapshot":
        snap = cls()
        for event in events:
            name, kind = event.get("stage"), event.get("event")
            if kind == "start":
                snap.running[name] = float(event.get("at", time.time()))
                snap.done.pop(name, None)
                snap.failed.pop(name, None)
            elif kind in ("done", "failed"):
                snap.running.pop(name, None)
                (snap.done if kind == "done" else snap.failed)[name] = float(event.get("seconds", 0.0))
        return snap


def eta_seconds(stages: tuple[str, ...], snap: Snapshot, typical: dict[str, float],
                now: float) -> tuple[float, int]:
    """Seconds still expected, and how many unfinished stages have no estimate. A running stage
    that has passed its typical time counts as about to end (0 s), not as negative."""
    left, unknown = 0.0, 0
    for name in stages:
        if name in snap.done or name in snap.failed:
            continue
        if name not in typical:
            unknown += 1
            continue
        spent = now - snap.running[name] if name in snap.running else 0.0
        left += max(typical[name] - spent, 0.0)
    return left, unknown


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def eta_text(left: float, unknown: int) -> str:
    if unknown and not left:
        return "ETA unknown (no earlier run)"
    text = f"ETA {_clock(left)}"
    return text + f" + {unknown} stage(s) never timed" if unknown else text


class RunWatcher:
    """Follows one DAG run's events in a thread and reports them: one line a finished or
    failed task (``line``), and a status (``status``) every :data:`POLL_SECONDS`."""

    def __init__(self, settings: Settings, logical_date: dt.date, stages: tuple[str, ...],
                 line: Callable[[str], None], status: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time):
        self.path = events_path(settings, logical_date)
        self.stages = stages
        self.typical = history(settings, exclude=logical_date)
        self.line, self.status, self.clock = line, status, clock
        self.started = clock()
        self._reported: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> Snapshot:
        snap = Snapshot.of(read_events(self.path))
        now = self.clock()
        finished = len(snap.done) + len(snap.failed)
        for name, seconds in list(snap.done.items()) + list(snap.failed.items()):
            kind = "failed" if name in snap.failed else "done"
            if (name, kind) not in self._reported:
                self._reported.add((name, kind))
                left, unknown = eta_seconds(self.stages, snap, self.typical, now)
                self.line(f"[{finished}/{len(self.stages)}] {name} {kind} in {seconds:.1f} s"
                          f" - {eta_text(left, unknown)}")
        if self.status is not None:
            left, unknown = eta_seconds(self.stages, snap, self.typical, now)
            running = ", ".join(f"{n} {now - t:.0f}s" for n, t in snap.running.items()) or "waiting"
            self.status(f"{finished}/{len(self.stages)} tasks; running: {running}; "
                        f"elapsed {_clock(now - self.started)}; {eta_text(left, unknown)}")
        return snap

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.poll()

    def __enter__(self) -> "RunWatcher":
        self._thread = threading.Thread(target=self._loop, name="c360-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()  # the last events, written just before the run ended


def console_watch(settings: Settings, console, stages: tuple[str, ...], *,
                  days: tuple[dt.date, dt.date] | None = None):
    """For ``run_dag``'s ``watch``: a rich status line (what runs, elapsed, ETA) and one printed
    line a finished task, on ``console``. ``stages``: the DAG's (``pipeline.STAGE_NAMES``; given
    by the caller, since the stages module imports this one). ``days`` (first, last) of a
    backfill adds the day's place in it and an ETA for the remaining days (their runs timed
    like the ones done)."""
    from customer360.core.terminal import plain

    runs: list[float] = []

    @contextmanager
    def watch(logical_date: dt.date) -> Iterator[None]:
        label, tail = "", ""
        if days is not None:
            first, last = days
            index, total = (logical_date - first).days + 1, (last - first).days + 1
            label = f"day {index}/{total} "
            if runs:
                tail = f"; backfill ETA after this day {_clock(statistics.mean(runs) * (total - index))}"
        started = time.monotonic()
        with console.status(plain(f"{label}c360_daily {logical_date}: starting Airflow")) as shown:
            with RunWatcher(settings, logical_date, stages,
                            line=lambda text: console.print(plain(label + text)),
                            status=lambda text: shown.update(plain(label + text + tail))):
                yield
        runs.append(time.monotonic() - started)

    return watch
