"""The ``c360`` command line. Each command is a thin shell over a package function that the
Airflow tasks call too (one code path)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from customer360.settings import SettingsError, get_settings

app = typer.Typer(
    help="customer360: build a customer 360 warehouse from a CRM API, web events and POS files.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"expected YYYY-MM-DD, got {value!r}") from None


def _settings():
    try:
        return get_settings()
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def print_reconciliation(recs) -> None:
    table = Table(title="reconciliation (read = landed + quarantined)")
    for col in ("source", "entity", "file / request", "read", "landed", "quarantined", "dup ids"):
        table.add_column(col, justify="right" if col in ("read", "landed", "quarantined", "dup ids") else "left")
    for r in recs:
        table.add_row(r.source, r.entity, (r.source_file or "")[-60:], str(r.read), str(r.landed),
                      str(r.quarantined), str(r.duplicates_in_raw))
    console.print(table)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level.")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def simulate(
    people: int = typer.Option(2000, help="Number of simulated people."),
    days: int = typer.Option(60, help="Number of simulated days."),
    start: str = typer.Option("2026-01-01", help="First simulated day (YYYY-MM-DD)."),
    seed: int = typer.Option(42, help="Random seed; the same seed gives the same files."),
    knob: list[str] = typer.Option([], "--knob", help="Override a messiness knob: NAME=VALUE "
                                   "(see `c360 simulate-knobs`)."),
    deliver_all: bool = typer.Option(True, "--deliver-all/--no-deliver",
                                     help="Copy every file to the landing folder now (default), "
                                     "or leave them in the outbox for a day-by-day replay."),
) -> None:
    """Simulate the three sources for a population of people with latent behaviour."""
    from customer360.demo.simulator import SimulationConfig, simulate as run_simulation

    s = _settings()
    cfg = SimulationConfig.from_overrides(people=people, days=days, start=_date(start), seed=seed,
                                          overrides=knob)
    summary = run_simulation(cfg, landing=s.landing, sim_dir=s.simulation_dir, progress=True,
                             deliver_all=deliver_all)
    console.print(summary.as_table())
    console.print(f"landing folder: [bold]{s.landing}[/bold]\nCRM store and ground truth: "
                  f"[bold]{s.simulation_dir}[/bold]")


@app.command("simulate-knobs")
def simulate_knobs() -> None:
    """List the simulator's messiness knobs and their defaults."""
    from customer360.demo.simulator import SimulationConfig

    table = Table(title="simulator knobs")
    table.add_column("knob")
    table.add_column("default", justify="right")
    table.add_column("what it does")
    for name, default, doc in SimulationConfig.knob_docs():
        table.add_row(name, str(default), doc)
    console.print(table)


@app.command("crm-server")
def crm_server(
    port: int = typer.Option(8765, help="Port on 127.0.0.1."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder with <object>.jsonl.gz "
                                            "(default: $C360_HOME/simulation/crm)."),
    rate_429: float = typer.Option(0.0, help="Share of requests answered 429 with Retry-After."),
    rate_5xx: float = typer.Option(0.0, help="Share of requests answered 500/502/503."),
    rate_cut: float = typer.Option(0.0, help="Share of pages cut short mid-body."),
) -> None:
    """Serve the simulated CRM over HTTP on 127.0.0.1 (HubSpot v3 shape). Token: C360_CRM_TOKEN."""
    import os

    from customer360.demo.crm_server import FaultConfig, serve

    s = _settings()
    token = os.environ.get("C360_CRM_TOKEN")
    if not token:
        console.print("[red]configuration error:[/red] C360_CRM_TOKEN is not set: the server "
                      "needs the bearer token clients must send")
        raise typer.Exit(2)
    serve(data_dir or s.simulation_dir / "crm", port=port, token=token,
          faults=FaultConfig(rate_429=rate_429, rate_5xx=rate_5xx, rate_cut=rate_cut))


@app.command("validate-landing")
def validate_landing_cmd(
    path: Optional[Path] = typer.Argument(None, help="Landing folder (default: $C360_LANDING)."),
    through: Optional[str] = typer.Option(None, help="Only date= folders up to this date."),
) -> None:
    """Check a landing folder against SOURCES.md; report each problem with file, line and reason."""
    from customer360.landing.validate import validate_landing

    s = _settings()
    report = validate_landing(path or s.landing, through=_date(through) if through else None)
    console.print(report.as_table())
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def extract(
    source: str = typer.Argument(..., help="crm, web or pos"),
    date: str = typer.Option(..., "--date", help="Logical date (YYYY-MM-DD)."),
) -> None:
    """Land one source into the raw zone for a logical date (incremental, idempotent)."""
    from customer360 import extract as extract_mod

    s = _settings()
    try:
        recs = extract_mod.run_extract(source, s, _date(date))
    except (SettingsError, extract_mod.ExtractError, RuntimeError) as exc:
        # RuntimeError covers retries exhausted (CrmApiError): worth retrying later.
        console.print(f"[red]extract {source} failed:[/red] {exc}")
        raise typer.Exit(1) from None
    print_reconciliation(recs)


if __name__ == "__main__":  # pragma: no cover
    app()


def _print_dag_result(result) -> None:
    status = "[green]success[/green]" if result.success else "[red]failed[/red]"
    console.print(f"DAG c360_daily for {result.logical_date}: {status} in {result.seconds:.0f} s "
                  f"(Airflow log: {result.log_path})")


@app.command()
def run(
    date: str = typer.Option(..., "--date", help="Logical date (YYYY-MM-DD)."),
    wait: bool = typer.Option(False, help="Wait for a run already in progress instead of refusing."),
) -> None:
    """Run the c360_daily DAG for one logical date through Airflow (embedded SQLite metadata DB)."""
    from customer360.airflow_runner import RunLockedError, run_dag

    s = _settings()
    try:
        result = run_dag(s, _date(date), wait=wait)
    except RunLockedError as exc:
        console.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(3) from None
    _print_dag_result(result)
    raise typer.Exit(0 if result.success else 1)


@app.command()
def backfill(
    start: str = typer.Option(..., "--start", help="First logical date (YYYY-MM-DD)."),
    end: str = typer.Option(..., "--end", help="Last logical date (YYYY-MM-DD), inclusive."),
    wait: bool = typer.Option(False, help="Wait for a run already in progress instead of refusing."),
) -> None:
    """Run the DAG for every date from START to END in order, through Airflow."""
    from customer360.airflow_runner import RunLockedError, backfill as do_backfill

    s = _settings()
    try:
        results = do_backfill(s, _date(start), _date(end), wait=wait)
    except RunLockedError as exc:
        console.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(3) from None
    for result in results:
        _print_dag_result(result)
    raise typer.Exit(0 if results and all(r.success for r in results) else 1)


@app.command()
def airflow(port: int = typer.Option(8080, help="Port of the Airflow UI on 127.0.0.1.")) -> None:
    """Start Airflow (api-server, scheduler, dag-processor, triggerer) locally to watch the DAG."""
    import subprocess

    from customer360.airflow_runner import airflow_env, ensure_airflow

    s = _settings()
    ensure_airflow(s)
    env = airflow_env(s) | {"AIRFLOW__API__PORT": str(port), "AIRFLOW__API__HOST": "127.0.0.1"}
    console.print(f"Airflow UI on http://127.0.0.1:{port} (user admin; password in "
                  f"{s.airflow_home / 'simple_auth_manager_passwords.json.generated'})")
    subprocess.run(["airflow", "standalone"], env=env, check=False)


@app.command()
def publish_now(date: str = typer.Option(..., "--date", help="Logical date recorded with the publication.")) -> None:
    """Publish the current warehouse marts (normally the DAG's publish task does this)."""
    from customer360 import pipeline

    out = pipeline.publish(_date(date), _settings())
    console.print(out)


@app.command()
def demo(
    people: int = typer.Option(1500, help="Simulated people."),
    days: int = typer.Option(60, help="Simulated days."),
    start: str = typer.Option("2026-01-01", help="First simulated day."),
    seed: int = typer.Option(42, help="Random seed."),
) -> None:
    """The whole job on one machine: simulate, serve the mock CRM, run the DAG through Airflow,
    publish, and print a summary with the paths of the published database and the report."""
    from customer360.demo.runner import run_demo

    code = run_demo(people=people, days=days, start=_date(start), seed=seed, console=console)
    raise typer.Exit(code)
