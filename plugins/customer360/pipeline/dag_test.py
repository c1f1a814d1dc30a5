"""The child process of ``c360 run``: ``airflow dags test`` with the run's start the wall clock.

Airflow 3.3's ``DAG.test()`` creates the run with ``start_date=logical_date`` (upstream
apache/airflow#66127, open; the fix PRs were not merged), so the UI showed a run for
2026-03-14 executed today as lasting since March. Airflow offers no option for it, so we
wrap the one helper ``DAG.test()`` calls to create its run and give it the time the run
really began; ``logical_date``, ``run_after`` and the data interval stay Airflow's.
``tests/test_dag_run.py`` checks the recorded start, so an Airflow change that bypasses the
wrapper fails there instead of silently bringing back months-long runs.

Usage (what :func:`customer360.pipeline.airflow.run_dag` spawns)::

    python -m customer360.pipeline.dag_test <dag_id> <logical date>
"""

from __future__ import annotations

import functools
import inspect
import sys


def _start_runs_at_the_wall_clock() -> None:
    import airflow.models.dagrun as dagrun_module
    from airflow.utils import timezone

    original = dagrun_module.get_or_create_dagrun
    if "start_date" not in inspect.signature(original).parameters:
        return  # Airflow changed the helper (perhaps fixed upstream); the test will say which

    @functools.wraps(original)
    def create_run(**kwargs):
        kwargs["start_date"] = timezone.utcnow()
        return original(**kwargs)

    # DAG.test() imports the helper from the module at each call, so this is what it gets
    dagrun_module.get_or_create_dagrun = create_run


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python -m customer360.pipeline.dag_test <dag_id> <logical date>")
    _start_runs_at_the_wall_clock()
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", "dags", "test", *argv]
    airflow_main()


if __name__ == "__main__":
    main(sys.argv[1:])
