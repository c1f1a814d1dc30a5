"""The ``c360`` command line. Each command is a thin shell over a package function that the
Airflow tasks call too (one code path)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from customer360.core.settings import SettingsError, get_settings
from customer360.core.terminal import labelled, plain

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


def _logical_date(value: str) -> dt.date:
    """A run's logical date: a date, and not one in the future."""
    from customer360.core.logical_date import FutureDateError, check_logical_date

    try:
        return check_logical_date(_date(value))
    except FutureDateError as exc:
        raise typer.BadParameter(str(exc)) from None


def _settings():
    try:
        return get_settings()
    except SettingsError as exc:
        console.print(labelled("configuration error:", "red", exc))
        raise typer.Exit(2) from None


def print_reconciliation(recs) -> None:
    table = Table(title="reconciliation (read = landed + quarantined)")
    for col in ("source", "entity", "file / request", "read", "landed", "quarantined", "dup ids"):
        table.add_column(col, justify="right" if col in ("read", "landed", "quarantined", "dup ids") else "left")
    for r in recs:
        table.add_row(r.source, r.entity, plain((r.source_file or "")[-60:]), str(r.read), str(r.landed),
                      str(r.quarantined), str(r.duplicates_in_raw))
    console.print(table)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level.")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command("check-config")
def check_config(
    require_pii_key: bool = typer.Option(True, "--require-pii-key/--no-require-pii-key",
                                         help="Fail when C360_PII_KEY is unset (a deployment needs it)."),
) -> None:
    """Check the configuration as a service does at start: every knob valid, no secret left at
    a placeholder (deploy/.env.example's values are refused). Exit 2 naming the variable,
    never its value."""
    from customer360.core.settings import check_secrets

    s = _settings()
    try:
        configured = check_secrets()
        if require_pii_key or "C360_PII_KEY" in configured:
            s.pii_key()
        s.audit_key()
    except SettingsError as exc:
        console.print(labelled("configuration error:", "red", exc))
        raise typer.Exit(2) from None
    console.print(f"[green]configuration ok:[/green] secrets set: {', '.join(configured) or 'none'}")


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
    console.print(f"landing folder: [bold]{escape(str(s.landing))}[/bold]\nCRM store and ground "
                  f"truth: [bold]{escape(str(s.simulation_dir))}[/bold]")


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
    burst_per_10s: int = typer.Option(100, help="HubSpot's ten-second burst limit for list, v4 and "
                                      "pipeline calls (0: none)."),
    search_per_second: int = typer.Option(5, help="HubSpot's per-second search limit (0: none)."),
    index_lag_seconds: float = typer.Option(0.0, help="Writes this recent are not yet visible to search."),
) -> None:
    """Serve the simulated CRM over HTTP on 127.0.0.1 as HubSpot's CRM API v3. Token: C360_CRM_TOKEN."""
    from customer360.demo.crm_server import FaultConfig, serve

    s = _settings()
    try:
        token = s.crm_token()
    except SettingsError:
        console.print("[red]configuration error:[/red] C360_CRM_TOKEN is not set: the server "
                      "needs the bearer token clients must send")
        raise typer.Exit(2) from None
    serve(data_dir or s.simulation_dir / "crm", port=port, token=token,
          faults=FaultConfig(rate_429=rate_429, rate_5xx=rate_5xx, rate_cut=rate_cut,
                             burst_per_10s=burst_per_10s, search_per_second=search_per_second,
                             index_lag_seconds=index_lag_seconds))


@app.command("validate-landing")
def validate_landing_cmd(
    path: Optional[Path] = typer.Argument(None, help="Landing folder (default: $C360_LANDING)."),
    through: Optional[str] = typer.Option(None, help="Only date= folders up to this date."),
) -> None:
    """Check a landing folder against docs/sources.md; report each problem with file, line and reason."""
    from customer360.ingest.landing.validate import validate_landing

    s = _settings()
    report = validate_landing(path or s.landing, through=_date(through) if through else None)
    console.print(report.as_table())
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def extract(
    source: str = typer.Argument(..., help="crm, web or pos"),
    date: str = typer.Option(..., "--date", help="Logical date (YYYY-MM-DD)."),
    wait: bool = typer.Option(False, help="Wait for a pipeline run in progress instead of refusing."),
) -> None:
    """Land one source into the raw zone for a logical date (incremental, idempotent)."""
    from customer360.ingest import extract as extract_mod
    from customer360.pipeline.airflow import RunLockedError, run_lock

    s = _settings()
    try:
        with run_lock(s, wait=wait):
            recs = extract_mod.run_extract(source, s, _logical_date(date))
    except RunLockedError as exc:
        console.print(labelled("refused:", "red", exc))
        raise typer.Exit(3) from None
    except (SettingsError, extract_mod.ExtractError, RuntimeError, OSError) as exc:
        # RuntimeError covers retries exhausted (CrmApiError), OSError a full or read-only
        # disk: both worth retrying once fixed, neither a bug to show as a traceback.
        console.print(labelled(f"extract {source} failed:", "red", exc))
        raise typer.Exit(1) from None
    print_reconciliation(recs)



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
    from customer360.pipeline.airflow import RunLockedError, run_dag
    from customer360.pipeline import STAGE_NAMES
    from customer360.pipeline.progress import console_watch

    s = _settings()
    try:
        result = run_dag(s, _logical_date(date), wait=wait, watch=console_watch(s, console, STAGE_NAMES))
    except RunLockedError as exc:
        console.print(labelled("refused:", "red", exc))
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
    from customer360.pipeline.airflow import RunLockedError, backfill as do_backfill
    from customer360.pipeline import STAGE_NAMES
    from customer360.pipeline.progress import console_watch

    s = _settings()
    first, last = _logical_date(start), _logical_date(end)
    try:
        results = do_backfill(s, first, last, wait=wait,
                              watch=console_watch(s, console, STAGE_NAMES, days=(first, last)))
    except RunLockedError as exc:
        console.print(labelled("refused:", "red", exc))
        raise typer.Exit(3) from None
    for result in results:
        _print_dag_result(result)
    raise typer.Exit(0 if results and all(r.success for r in results) else 1)


@app.command()
def airflow(port: int = typer.Option(8080, help="Port of the Airflow UI on 127.0.0.1.")) -> None:
    """Start Airflow (api-server, scheduler, dag-processor, triggerer) locally to watch the DAG."""
    import subprocess

    from customer360.pipeline.airflow import airflow_env, ensure_airflow

    s = _settings()
    ensure_airflow(s)
    env = airflow_env(s) | {"AIRFLOW__API__PORT": str(port), "AIRFLOW__API__HOST": "127.0.0.1"}
    console.print(f"Airflow UI on http://127.0.0.1:{port} (user admin; password in "
                  f"{s.airflow_home / 'simple_auth_manager_passwords.json.generated'})")
    subprocess.run(["airflow", "standalone"], env=env, check=False)


@app.command()
def stages() -> None:
    """The pipeline's stages in their order (what the DAG runs, one task a stage)."""
    from customer360 import pipeline

    table = Table("#", "stage", "Airflow task", "layer", "runs on")
    for i, st in enumerate(pipeline.STAGES, 1):
        table.add_row(str(i), st.name, st.task_id, st.layer or "",
                      "retried source" if st.source else ("warehouse slot" if st.writes_warehouse else ""))
    console.print(table)


@app.command()
def stage(
    name: str = typer.Argument(..., help="A stage of `c360 stages`, e.g. dbt_marts or publish."),
    date: str = typer.Option(..., "--date", help="Logical date (YYYY-MM-DD)."),
    run_id: str = typer.Option("cli", "--run-id", help="Run id recorded with gate results."),
    wait: bool = typer.Option(False, help="Wait for a pipeline run in progress instead of refusing."),
) -> None:
    """Run one stage outside Airflow, exactly as its DAG task does (for debugging a run)."""
    import json

    import duckdb

    from customer360 import pipeline
    from customer360.pipeline.airflow import RunLockedError

    try:
        pipeline.stage(name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        out = pipeline.run_stage(name, _logical_date(date), run_id, _settings(), wait=wait)
    except RunLockedError as exc:
        console.print(labelled("refused:", "red", exc))
        raise typer.Exit(3) from None
    except (RuntimeError, OSError, duckdb.Error) as exc:
        # The pipeline's own errors (a failed gate or dbt build, an unreadable store, retries
        # exhausted) and a full disk: each message names what failed; a traceback adds nothing.
        console.print(labelled(f"stage {name} failed:", "red", f"{type(exc).__name__}: {exc}"))
        raise typer.Exit(1) from None
    console.print_json(json.dumps(out, default=str))


@app.command()
def demo(
    people: int = typer.Option(1500, help="Simulated people."),
    days: int = typer.Option(150, help="Simulated days (churn training needs more than 90 + 30)."),
    start: str = typer.Option("2026-01-01", help="First simulated day."),
    seed: int = typer.Option(42, help="Random seed."),
) -> None:
    """The whole job on one machine: simulate, serve the mock CRM, run the DAG through Airflow,
    publish, and print a summary with the paths of the published database and the report."""
    from customer360.demo.runner import run_demo

    code = run_demo(people=people, days=days, start=_date(start), seed=seed, console=console)
    raise typer.Exit(code)


# --------------------------------------------------------------------------- privacy (issue 9)

def _redact_argv(*values: Optional[str]) -> None:
    """Take personal values out of this process's command line: dbt, which the rebuild runs
    in this process, writes ``sys.argv`` into its log and run_results.json."""
    import sys

    for i, arg in enumerate(sys.argv):
        for value in values:
            if value and value in arg:
                sys.argv[i] = arg = arg.replace(value, "<redacted>")


def _secret_arg(value: Optional[str], what: str) -> Optional[str]:
    """``-`` reads the value from standard input: it then stays out of the shell history and
    of the process list, where a command-line argument is visible to every local user."""
    if value != "-":
        return value
    line = typer.get_text_stream("stdin").readline().strip()
    if not line:
        raise typer.BadParameter(f"no {what} on standard input")
    return line


@app.command()
def erase(
    email: Optional[str] = typer.Option(None, "--email", help="The person's email ('-': read it from stdin)."),
    phone: Optional[str] = typer.Option(None, "--phone", help="The person's phone ('-': read it from stdin)."),
    contact_id: Optional[str] = typer.Option(None, "--contact-id", help="The person's CRM contact id."),
    country: Optional[str] = typer.Option(None, "--country", help="ISO country code to read a phone "
                                          "typed without its country code."),
    archived: bool = typer.Option(False, "--archived", help="Erase every contact the CRM archived "
                                  "(what the DAG's erasure task does each day)."),
    date: Optional[str] = typer.Option(None, "--date", help="Logical date to rebuild and republish "
                                       "as (default: the current publication's)."),
    rebuild: bool = typer.Option(True, "--rebuild/--no-rebuild", help="Rebuild the warehouse and "
                                 "republish now (default), or leave it to the next pipeline run."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what the request resolves to."),
    force: bool = typer.Option(False, "--force", help="Erase even when the key links several customers."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Search every file under "
                                "C360_HOME for the person afterwards."),
    wait: bool = typer.Option(False, help="Wait for a pipeline run in progress instead of refusing."),
) -> None:
    """Erase a person's personal data everywhere the pipeline keeps it (raw zone, landing
    copies, quarantine, warehouse, snapshots, publication, audiences) and log it, without
    anything personal, in the audit trail. Prints counts, never the person's data."""
    import duckdb

    from customer360 import pipeline
    from customer360.core.audit import AuditError
    from customer360.pipeline.airflow import RunLockedError, run_lock
    from customer360.privacy.erasure import archived_contact_requests, erase as do_erase
    from customer360.privacy.person import ErasureRequest

    _redact_argv(email, phone, contact_id)
    given = [(k, v) for k, v in (("email", _secret_arg(email, "email")),
                                 ("phone", _secret_arg(phone, "phone")),
                                 ("contact", contact_id)) if v]
    if len(given) + int(archived) != 1:
        console.print("[red]give exactly one of --email, --phone, --contact-id, --archived[/red]")
        raise typer.Exit(2)
    s = _settings()
    try:
        with run_lock(s, wait=wait):
            requests = (archived_contact_requests(s) if archived
                        else [ErasureRequest(given[0][0], given[0][1], country=country)])
            result = do_erase(s, requests, rebuild=pipeline.rebuild if rebuild else None, as_of=_date(date) if date else None,
                              force=force, dry_run=dry_run, verify=verify and not dry_run)
    except RunLockedError as exc:
        console.print(labelled("refused:", "red", exc))
        raise typer.Exit(3) from None
    except SettingsError as exc:
        console.print(labelled("configuration error:", "red", exc))
        raise typer.Exit(2) from None
    except AuditError as exc:  # nothing is erased unless it can be on record first
        console.print(labelled("audit store unusable:", "red", exc))
        raise typer.Exit(2) from None
    except (duckdb.Error, OSError) as exc:
        console.print(labelled("erasure failed:", "red", f"{exc} (an erasure that had started is on "
                                                         "record and resumes when the command is run again)"))
        raise typer.Exit(1) from None
    for reason in result.refused:
        console.print(labelled("nothing erased:", "yellow", reason))
    for note in result.resumed:
        console.print(labelled("an earlier erasure died mid-purge:", "yellow", note))
    table = Table(title=f"erasure: {result.status}")
    table.add_column("where")
    table.add_column("removed", justify="right")
    if dry_run:
        console.print("[yellow]dry run: nothing was changed or logged[/yellow]")
    for e in result.erasures:
        console.print(f"erasure {e['erasure_id']} ({escape(e['reason'])}, {e['request_kind']}; request token "
                      f"{e['request_token'][:16]}...): " + ", ".join(f"{k} {v}" for k, v in e["keys"].items() if v))
    for name, rows in {**{f"raw {k}": v for k, v in result.lake.get("raw_rows", {}).items()},
                       **{f"quarantine {k}": v for k, v in result.lake.get("quarantine_rows", {}).items()},
                       "landing lines": result.lake.get("landing_lines", 0),
                       "set-aside copies (files)": result.lake.get("set_aside_removed", 0),
                       "warehouse rows": sum(result.warehouse.values()),
                       "published rows": sum(result.published.get("tables", {}).values()),
                       "audience rows": sum(result.audiences.values())}.items():
        table.add_row(name, str(rows))
    if result.erasures and not dry_run:
        console.print(table)
    for path, why in (result.lake or {}).get("unreadable", {}).items():
        console.print(labelled("not purged, unreadable:", "yellow",
                               f"{path} ({why}); `c360 doctor --repair raw` sets it aside"))
    if result.rebuild and "failed" in result.rebuild:
        console.print(labelled("rebuild/republish failed:", "red", result.rebuild['failed']))
    if result.verification is not None:
        v = result.verification
        colour = "green" if v["hits"] == 0 else "red"
        console.print(f"[{colour}]verification: {v['hits']} trace(s) of the person in {v['files']} "
                      f"files[/{colour}]" + "".join(f"\n  {w}" for w in v["where"]))
    if not result.erasures:
        raise typer.Exit(4)
    failed = (result.rebuild and "failed" in result.rebuild) or (result.verification or {}).get("hits")
    raise typer.Exit(1 if failed else 0)


@app.command()
def audience(
    segment: Optional[str] = typer.Option(None, "--segment", help="Segment to export (see --list)."),
    all_segments: bool = typer.Option(False, "--all", help="Export every segment."),
    list_segments: bool = typer.Option(False, "--list", help="List the segments and exit."),
    platform_match_keys: bool = typer.Option(False, "--platform-match-keys", help="Add the unkeyed "
                                             "SHA-256 of email and phone ad platforms match on "
                                             "(reversible by dictionary: an upload file, not a keyed export)."),
    wait: bool = typer.Option(False, help="Wait for a pipeline run in progress instead of refusing."),
) -> None:
    """Export a marketing audience (CSV + JSON under published/audiences/): the segment's
    customers with marketing consent, with keyed hashes (and, if asked, the platform's keys)."""
    from customer360.privacy.audience import SEGMENTS, AudienceError, export_audience

    if list_segments:
        table = Table(title="audience segments (consenting customers only)")
        table.add_column("segment")
        table.add_column("who")
        for seg in SEGMENTS.values():
            table.add_row(seg.name, seg.description)
        console.print(table)
        return
    names = sorted(SEGMENTS) if all_segments else [segment] if segment else []
    if not names:
        console.print("[red]give --segment NAME, --all or --list[/red]")
        raise typer.Exit(2)
    from customer360.pipeline.airflow import RunLockedError, run_lock

    s = _settings()
    try:
        with run_lock(s, wait=wait):
            for name in names:
                out = export_audience(s, name, platform_match_keys=platform_match_keys)
                console.print(f"{name}: {out.members} customer(s) exported of {out.in_segment} in the "
                              f"segment ({out.without_consent} without marketing consent left out) -> "
                              f"{out.csv_path}, {out.json_path.name}")
    except RunLockedError as exc:
        console.print(labelled("refused:", "red", exc))
        raise typer.Exit(3) from None
    except (AudienceError, SettingsError) as exc:
        console.print(labelled("audience export failed:", "red", exc))
        raise typer.Exit(1) from None


audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit event log: its hash chain (keyed), the heads anchored at every
    publication and erasure, and that every erasure the erased-keys copy knows is in it.
    Reports every break (exit 1 if any)."""
    from customer360.pipeline.doctor import verify_audit

    s = _settings()
    try:
        report, breaks = verify_audit(s)
    except SettingsError as exc:
        console.print(labelled("configuration error:", "red", exc))
        raise typer.Exit(2) from None
    except Exception as exc:  # the store itself does not open (truncated, overwritten)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if s.audit_db.name not in first:
            first = f"{s.audit_db}: {first}"
        console.print(labelled("audit store unreadable:", "red",
                               f"{first}; `c360 doctor --repair audit` puts back its last good copy"))
        raise typer.Exit(2) from None
    if report.unkeyed:
        why = ("written by an older version or with no key configured" if report.key_configured
               else "neither C360_AUDIT_KEY nor C360_PII_KEY is set")
        console.print(labelled("not keyed:", "yellow",
                               f"{report.unkeyed} of {report.entries} entries carry a plain SHA-256 "
                               f"({why}): they prove order, not that the pipeline wrote them"))
    if breaks:
        console.print(f"[red]audit log tampered with: {len(breaks)} break(s) in {report.entries} entries[/red]")
        for b in breaks:
            console.print(f"  {escape(str(b))}")
        raise typer.Exit(1)
    console.print(f"[green]audit log intact:[/green] {report.entries} entries, hash chain verified "
                  f"({report.keyed} keyed), {report.anchors} anchor(s) matched")


# --------------------------------------------------------------------------- recovery (issue 18)

_STATUS_STYLE = {"ok": "green", "warn": "yellow", "problem": "red"}


@app.command()
def doctor(
    as_json: bool = typer.Option(False, "--json", help="One JSON document for machines."),
    repair: list[str] = typer.Option([], "--repair", help="Repair a store (warehouse, raw, state, "
                                     "audit, published, airflow, leftovers); repeatable. Takes the "
                                     "run lock; moves broken files aside, never deletes them."),
    date: Optional[str] = typer.Option(None, "--date", help="Logical date a warehouse or "
                                       "publication repair rebuilds as of (default: the last published)."),
    wait: bool = typer.Option(False, help="Wait for a run in progress before repairing."),
) -> None:
    """Check every store of the home (warehouse, kept copies, state and manifests, raw batches,
    logs, audit, publication, Airflow DB, leftovers) without changing anything: one line a store
    with the path, the reason and the command that repairs it. Exit 1 when a problem is found."""
    import json

    from customer360.pipeline import doctor as doc
    from customer360.pipeline.airflow import RunLockedError, run_lock

    s = _settings()
    if repair:
        unknown = [r for r in repair if r not in doc.REPAIRS]
        if unknown:
            raise typer.BadParameter(f"unknown store {', '.join(unknown)}; expected {', '.join(doc.REPAIRS)}")
        try:
            with run_lock(s, wait=wait):
                for store in repair:
                    out = doc.repair(s, store, _date(date) if date else None)
                    console.print(f"[green]repaired {store}:[/green] " + escape(json.dumps(out, default=str)))
        except RunLockedError as exc:
            console.print(labelled("refused:", "red", exc))
            raise typer.Exit(3) from None
        except Exception as exc:  # a repair that cannot run says why, without a traceback
            console.print(labelled("repair failed:", "red", f"{type(exc).__name__}: {exc}"))
            raise typer.Exit(1) from None
    diagnosis = doc.diagnose(s)
    if as_json:
        typer.echo(json.dumps(diagnosis.as_dict(), indent=2, default=str))
    else:
        for f in diagnosis.findings:
            style = _STATUS_STYLE[f.status]
            line = f"[{style}]{f.status:<7}[/{style}] {f.store:<10} {escape(f.path)}: {escape(f.detail)}"
            if f.repair:
                line += f" [bold]-> {escape(f.repair)}[/bold]"
            console.print(line, soft_wrap=True)
        if diagnosis.ok:
            console.print("[green]no problems found[/green]")
        else:
            console.print(f"[red]{len(diagnosis.problems)} problem(s).[/red] Repair, in this order: "
                          + "; ".join(diagnosis.repairs()))
    raise typer.Exit(0 if diagnosis.ok else 1)


@app.command("rebuild-warehouse")
def rebuild_warehouse_cmd(
    date: Optional[str] = typer.Option(None, "--date", help="Logical date to rebuild as of "
                                       "(default: the last published)."),
    wait: bool = typer.Option(False, help="Wait for a run in progress instead of refusing."),
) -> None:
    """Rebuild the warehouse from the raw zone: the old file is moved aside (kept), the id
    memory, snapshot history and ML run history are put back (from the old file where it still
    opens, else from the copies kept at each publication), dbt builds every layer with its
    gates, ML scores, and the result is published."""
    import json

    from customer360.pipeline.airflow import RunLockedError, run_lock
    from customer360.pipeline.doctor import rebuild_warehouse

    s = _settings()
    try:
        with run_lock(s, wait=wait):
            out = rebuild_warehouse(s, _logical_date(date) if date else None)
    except RunLockedError as exc:
        console.print(labelled("refused:", "red", exc))
        raise typer.Exit(3) from None
    except Exception as exc:
        console.print(labelled("rebuild failed:", "red", f"{type(exc).__name__}: {str(exc)[:2000]}"))
        raise typer.Exit(1) from None
    console.print(f"[green]warehouse rebuilt as of {out['as_of']}[/green]; old file kept at "
                  f"{escape(str(out['moved_aside']))}; restored: "
                  + escape(json.dumps(out["restored"])))


if __name__ == "__main__":  # pragma: no cover
    app()
