"""``c360 demo``: the whole pipeline on one machine with nothing to set up by hand.

1. simulate the sources into an outbox (``$C360_HOME/simulation``);
2. deliver the landing files as they stood on the day before the last, serve the mock CRM
   on 127.0.0.1 with its clock at the end of that day, and run the DAG through Airflow: the
   extractors pick up the whole history (they read every ``date=`` folder up to the logical date);
3. deliver the last day (with the late web files and corrected POS files that arrive after a
   first read), move the CRM clock on, and run the DAG again: the incremental day;
4. print a summary from the *published* database and where everything is.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from customer360.core import duck
from customer360.core.settings import Settings, get_settings


def _demo_secrets(settings: Settings) -> dict[str, str]:
    """Generated once per C360_HOME for the demo, kept in a 0600 file, never printed."""
    path = settings.demo_env_path
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                values[k] = v
    changed = False
    for name in ("C360_CRM_TOKEN", "C360_PII_KEY"):
        if name not in values:
            values[name] = secrets.token_urlsafe(32)
            changed = True
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(f"{k}={v}\n" for k, v in values.items()))
    return values


def end_of_day(day: dt.date) -> str:
    return (dt.datetime.combine(day + dt.timedelta(days=1), dt.time()) - dt.timedelta(milliseconds=1)
            ).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def summarize(published_db: Path) -> list[tuple[str, str]]:
    import duckdb

    con = duck.connect(path=published_db, read_only=True)
    try:
        def one(sql: str):
            try:
                return con.execute(sql).fetchone()[0]
            except duckdb.Error:
                return None

        rows = [
            ("customers", one("SELECT count(*) FROM marts.customer_360")),
            ("orders", one("SELECT count(*) FROM marts.fct_orders")),
            ("net revenue", one("SELECT round(sum(net_amount), 2) FROM marts.fct_orders")),
            ("web sessions", one("SELECT count(*) FROM marts.fct_web_sessions")),
            ("tickets", one("SELECT count(*) FROM marts.fct_tickets")),
            ("lifecycle stages", one("SELECT string_agg(lifecycle_stage || ' ' || n, ', ' ORDER BY n DESC) "
                                     "FROM (SELECT lifecycle_stage, count(*) n FROM marts.customer_360 GROUP BY 1)")),
            ("segments", one("SELECT string_agg(segment_name || ' ' || n, ', ' ORDER BY n DESC) FROM "
                             "(SELECT segment_name, count(*) n FROM ml.ml_customer_segments GROUP BY 1)")),
            ("churn risk bands", one("SELECT string_agg(risk_band || ' ' || n, ', ' ORDER BY n DESC) FROM "
                                     "(SELECT risk_band, count(*) n FROM ml.ml_churn_scores GROUP BY 1)")),
        ]
    finally:
        con.close()
    return [(k, "n/a" if v is None else str(v)) for k, v in rows]


def run_demo(people: int, days: int, start: dt.date, seed: int, console: Console) -> int:
    from customer360.pipeline.airflow import run_dag
    from customer360.pipeline import STAGE_NAMES
    from customer360.pipeline.progress import console_watch
    from customer360.demo.crm_server import start_server
    from customer360.demo.simulator import SimulationConfig, deliver, simulate

    settings = get_settings()
    # The processes the demo starts (Airflow's) read the secrets from the environment.
    os.environ.update(_demo_secrets(settings))
    t0 = time.monotonic()
    last = start + dt.timedelta(days=days - 1)
    first_run = last - dt.timedelta(days=1)

    console.rule("1. simulate the sources")
    cfg = SimulationConfig.from_overrides(people=people, days=days, start=start, seed=seed, overrides=[])
    summary = simulate(cfg, landing=settings.landing, sim_dir=settings.simulation_dir,
                       progress=True, deliver_all=False)
    console.print(summary.as_table())

    runs = []
    with start_server(settings.simulation_dir / "crm", token=settings.crm_token()) as server:
        os.environ["C360_CRM_BASE_URL"] = server.base_url
        console.print(f"mock CRM API serving on {server.base_url}")
        for day, what in ((first_run, "history up to the day before the last"),
                          (last, "the last day, incrementally")):
            console.rule(f"2. run the DAG through Airflow for {day} ({what})")
            changed = deliver(settings.simulation_dir, settings.landing, through=day)
            server.set_clock(end_of_day(day))
            console.print(f"delivered {len(changed)} landing files; CRM clock at {end_of_day(day)}")
            result = run_dag(settings, day, watch=console_watch(settings, console, STAGE_NAMES))
            runs.append(result)
            status = "[green]success[/green]" if result.success else "[red]failed[/red]"
            console.print(f"c360_daily {day}: {status} in {result.seconds:.0f} s  (log: {result.log_path})")
            if not result.success:
                console.print(f"[red]The run failed; see {result.log_path} and "
                              f"{settings.alerts_dir}[/red]")
                return 1

    console.rule("3. what was published")
    published = settings.published_db
    table = Table(title=f"published {published}")
    table.add_column("measure")
    table.add_column("value")
    for k, v in summarize(published):
        table.add_row(k, v)
    console.print(table)
    from customer360.core import audit

    gate_runs = audit.read(settings, "gate_runs", "logical_date = ?", [last])
    if len(gate_runs):
        latest = gate_runs[gate_runs.run_id == gate_runs.sort_values("finished_at").run_id.iloc[-1]]
        for line in latest.sort_values("finished_at").summary:
            console.print(line)
    reports = sorted(settings.reports_dir.glob("*.html"))
    console.print(f"published database: [bold]{published}[/bold]")
    console.print(f"published Parquet:  [bold]{settings.published_marts_dir}[/bold]")
    from customer360.serve.publish import current_version_dir

    # the two paths above are stable links; this is the folder they lead to right now
    console.print(f"current version:    [bold]{current_version_dir(settings)}[/bold] "
                  "(read several files from one version under it)")
    if reports:
        console.print(f"run report:         [bold]{reports[-1]}[/bold]")
    console.print(f"demo wall time: {time.monotonic() - t0:.0f} s")
    return 0
