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
    except (SettingsError, extract_mod.ExtractError) as exc:
        console.print(f"[red]extract {source} failed:[/red] {exc}")
        raise typer.Exit(1) from None
    print_reconciliation(recs)


if __name__ == "__main__":  # pragma: no cover
    app()
