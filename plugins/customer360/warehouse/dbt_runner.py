"""Builds the warehouse (``$C360_HOME/warehouse/c360.duckdb``) with the dbt project in
``dbt_project/``, one layer at a time, so a quality gate can run between layers.

The CLI and the DAG call :func:`run_layer`; everything dbt needs comes from
:class:`~customer360.core.settings.Settings` through :func:`build_env` (profiles.yml reads only
environment variables). dbt runs in-process through its programmatic runner; its artifacts
(run_results.json, manifest, docs) and logs go under ``$C360_HOME/artifacts/dbt/`` so two
homes never share a target folder.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

from customer360.core import files
from customer360.core.layers import check_dbt_layer, covered_layers
from customer360.core.settings import Settings, get_settings, scoped_environment
from customer360.ingest import crm_properties

_FAILED = {"error", "fail", "runtime error"}


class WarehouseBuildError(RuntimeError):
    """dbt failed: a node errored, a test failed, or dbt itself could not run."""

    def __init__(self, message: str, results: "RunResults | None" = None):
        super().__init__(message)
        self.results = results


@dataclass(frozen=True)
class NodeResult:
    unique_id: str
    resource_type: str  # model, test, unit_test, seed, snapshot
    name: str
    status: str  # success, pass, warn, error, fail, skipped
    execution_time: float
    failures: int | None  # rows returned by a failing test
    message: str | None

    @property
    def failed(self) -> bool:
        return self.status in _FAILED


@dataclass
class RunResults:
    """The summary of one dbt invocation, parsed from its target/run_results.json."""

    args: list[str]
    elapsed_seconds: float
    nodes: list[NodeResult] = field(default_factory=list)

    @property
    def failed(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.failed]

    @property
    def warned(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.status == "warn"]

    @property
    def success(self) -> bool:
        return not self.failed

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for node in self.nodes:
            out[node.status] = out.get(node.status, 0) + 1
        return out

    def slowest(self, n: int = 5) -> list[NodeResult]:
        return sorted(self.nodes, key=lambda r: r.execution_time, reverse=True)[:n]


def project_dir(settings: Settings | None = None) -> Path:
    """The dbt project: ``Settings.dbt_project_dir`` (``$C360_DBT_PROJECT_DIR`` or
    ``dbt_project/`` of this repository)."""
    return (settings or get_settings()).dbt_project_dir


def target_dir(settings: Settings) -> Path:
    return settings.dbt_target_dir


def build_env(settings: Settings) -> dict[str, str]:
    """The environment profiles.yml and dbt_project.yml read, from ``settings``.

    Secrets are not in it: ``C360_PII_KEY`` reaches the dbt plugin through the process
    environment, so this dict can be logged.
    """
    return {
        "C360_HOME": str(settings.home),
        "C360_REPORTING_CURRENCY": settings.reporting_currency,
        "C360_DUCKDB_MEMORY_LIMIT": settings.duckdb_memory_limit,
        "C360_DUCKDB_THREADS": str(settings.duckdb_threads),
        "C360_DUCKDB_TEMP_DIR": str(settings.duckdb_temp_dir),
        "C360_DBT_THREADS": str(settings.dbt_threads),
        "C360_ENGINE": settings.engine,
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        # Full point-in-time history unless the ML task asks for the scoring snapshot only.
        "C360_ML_SCORING_ONLY": "1" if settings.ml_scoring_only else "0",
        # The CRM property map (config/crm_properties.yml), read by macros/crm_properties.sql.
        "C360_CRM_PROPERTY_MAP": crm_properties.to_json(crm_properties.load_property_map(settings)),
    }


def dbt_target(settings: Settings) -> str:
    """The profiles.yml target of ``settings.engine``."""
    return {"duckdb": "local", "spark": "spark"}[settings.engine]


def run_dbt(settings: Settings, args: list[str], env: dict[str, str] | None = None):
    """Run one dbt command (``["build", "--select", "x"]``) against the warehouse.

    Returns dbt's ``dbtRunnerResult`` (``.success``, ``.result``, ``.exception``). The
    project, profile, target and log folders are added here; ``env`` overrides entries of
    :func:`build_env` for this command.
    """
    from dbt.cli.main import dbtRunner

    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    settings.duckdb_temp_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir(settings)
    target.mkdir(parents=True, exist_ok=True)
    proj = project_dir(settings)
    _forget_parse_of_another_project(target, proj)
    full_args = [*args,
                 "--project-dir", str(proj),
                 "--profiles-dir", str(proj),
                 "--target", dbt_target(settings),
                 "--target-path", str(target),
                 "--log-path", str(settings.dbt_logs_dir)]
    import sys

    if settings.engine == "spark":
        # dbt-spark's session method takes the process's active session: start ours first.
        from customer360.warehouse.spark_session import spark_session

        spark_session(settings)
    saved_argv = sys.argv
    # dbt records the process command line in dbt.log and run_results.json; the caller's
    # (e.g. `c360 erase --email ...`) must not end up there.
    sys.argv = ["dbt", *args]
    # dbt runs in this process and reads the environment: set for the call only.
    with scoped_environment({**build_env(settings), **(env or {})}):
        try:
            return dbtRunner().invoke(full_args)
        finally:
            sys.argv = saved_argv
            if settings.engine == "duckdb":
                _release_duckdb()


# dbt's message when an incremental model's columns differ from its table (on_schema_change
# 'fail'): a new version of the project added or changed columns of a table built by an older one.
_SCHEMA_OUT_OF_SYNC = "schemas on this incremental model are out of sync"


def _schema_change_hint(failed) -> str:
    """What to do when the failure is an incremental table built by an older version."""
    stale = sorted(n.name for n in failed if n.message and _SCHEMA_OUT_OF_SYNC in " ".join(n.message.split()))
    if not stale:
        return ""
    return (f"\n{', '.join(stale)}: the table was built by an earlier version of the project, whose "
            "columns differ; rebuild it from the raw zone once with `c360 rebuild-warehouse`")


def _forget_parse_of_another_project(target: Path, proj: Path) -> None:
    """Drop dbt's saved parse when it was made from a project at another path.

    dbt's partial parsing checks the project's files, vars and profile but not where the
    project lives, and keeps absolute paths (a seed's file): after an upgrade into another
    virtualenv, or a home moved between checkouts, it would read the old checkout's files, or
    fail on a seed that is no longer there. The project's path is stamped beside the parse.
    """
    stamp = target / ".c360_project_dir"
    here = str(proj.resolve())
    try:
        before = stamp.read_text(encoding="utf-8").strip()
    except OSError:
        before = None
    if before == here:
        return
    (target / "partial_parse.msgpack").unlink(missing_ok=True)
    stamp.write_text(here + "\n", encoding="utf-8")


def _release_duckdb() -> None:
    """Close the DuckDB connection dbt-duckdb keeps in this process after a command.

    dbt-duckdb holds one DuckDB instance per process and may keep it open after dbt returns;
    DuckDB then refuses any other connection to the file with another configuration
    (read_only for the gates, the publisher, the tests). dbt-duckdb has no public way to close
    it, so this uses its connection manager's environment directly.
    """
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        env = DuckDBConnectionManager._ENV
        DuckDBConnectionManager.close_all_connections()
        if env is not None:
            env.close()


def read_run_results(settings: Settings, args: list[str] | None = None) -> RunResults:
    """Parse ``run_results.json`` of the last dbt command on this home (``args``: that
    command's arguments, for the summary)."""
    path = target_dir(settings) / "run_results.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    nodes = []
    for r in data.get("results", []):
        uid = r["unique_id"]
        parts = uid.split(".")
        nodes.append(NodeResult(
            unique_id=uid,
            resource_type=parts[0],
            name=parts[-1] if parts[0] != "test" else parts[2],
            status=str(r.get("status")),
            execution_time=float(r.get("execution_time") or 0.0),
            failures=r.get("failures"),
            message=r.get("message"),
        ))
    return RunResults(args=list(args or []), elapsed_seconds=float(data.get("elapsed_time") or 0.0),
                      nodes=nodes)


def _date_env(logical_date: dt.date | None) -> dict[str, str]:
    """The run's logical date for dbt (macros/as_of.sql), as ``C360_AS_OF_DATE``; empty when
    there is none (the warehouse is then as of its last day with data).

    Not ``--vars``: dbt hashes the vars into its partial-parsing state, so a new date each day
    made every dbt command of the run re-parse the whole project (about 3 s a command on this
    machine, whatever the data size); the macro reads the variable at execution time only.
    """
    return {"C360_AS_OF_DATE": logical_date.isoformat() if logical_date is not None else ""}


def run_layer(settings: Settings, layer: str, full_refresh: bool = False,
              logical_date: dt.date | None = None, env: dict[str, str] | None = None) -> RunResults:
    """``dbt build`` one layer of ``core.layers.DBT_LAYERS`` (or the layers of a
    ``core.layers.COMBINED`` name at once): its models, seeds, snapshots, unit tests and data
    tests. ``logical_date``: the run's (it dates snapshot versions and is
    customer_360's as_of_date). ``full_refresh`` rebuilds incremental models from the raw zone
    (customer ids stay: their memory is never reset). ``env`` as in :func:`run_dbt`.

    The layer's run_results.json is kept at ``Settings.dbt_results_path(layer)``, where the
    gates and the report read it (the next command overwrites dbt's target folder). Returns
    the per-node summary; raises :class:`WarehouseBuildError` naming every failing node when
    anything errors or a test fails. On Spark the same, without the unit tests (DuckDB SQL
    fixtures: docs/engines.md).
    """
    args = ["build", "--selector", check_dbt_layer(layer)]
    if settings.engine == "spark":
        # dbt's unit tests are DuckDB SQL fixtures (docs/engines.md); the data tests run.
        args += ["--exclude-resource-type", "unit_test"]
    if full_refresh:
        args.append("--full-refresh")
    results = _invoke_checked(settings, args, what=f"dbt build of layer {layer!r}",
                              env={**_date_env(logical_date), **(env or {})})
    data = (target_dir(settings) / "run_results.json").read_bytes()
    for covered in covered_layers(layer):  # a combined build's results are each layer's
        files.write_bytes(settings.dbt_results_path(covered), data)
    return results


def build_warehouse(settings: Settings, full_refresh: bool = False,
                    logical_date: dt.date | None = None, tests: bool = True) -> RunResults:
    """All three layers in one ``dbt build`` (one dbt start-up instead of three): for the
    CLI's rebuild, backfills and tests. ``tests=False`` builds models, seeds and snapshots
    only. Raises :class:`WarehouseBuildError` like :func:`run_layer`. On Spark the build is
    :func:`customer360.warehouse.spark_engine.build_warehouse` (which calls this module)."""
    if settings.engine != "duckdb":
        raise WarehouseBuildError(f"C360_ENGINE={settings.engine}: build with "
                                  f"customer360.warehouse.spark_engine.build_warehouse")
    args = ["build", "--selector", "warehouse"]
    if full_refresh:
        args.append("--full-refresh")
    if not tests:
        args += ["--exclude-resource-type", "test", "--exclude-resource-type", "unit_test"]
    return _invoke_checked(settings, args, what="dbt build of the warehouse",
                           env=_date_env(logical_date))


def contract_types(settings: Settings) -> dict[tuple[str, str], dict[str, str]]:
    """{(schema, table): {column: type}} of every model with an enforced contract, from the
    manifest of the last dbt command on this home (empty without one). The types are DuckDB's
    names on both engines (docs/engines.md), so a table read back from Spark can be given
    the types its contract publishes."""
    path = target_dir(settings) / "manifest.json"
    if not path.is_file():
        return {}
    nodes = json.loads(path.read_text(encoding="utf-8")).get("nodes", {})
    return {(n["schema"], n.get("alias") or n["name"]):
            {c: col["data_type"] for c, col in n.get("columns", {}).items() if col.get("data_type")}
            for n in nodes.values()
            if n.get("resource_type") == "model" and n.get("config", {}).get("contract", {}).get("enforced")}


def generate_docs(settings: Settings) -> Path:
    """``dbt docs generate``; returns the folder holding index.html, manifest and catalog."""
    _invoke_checked(settings, ["docs", "generate"], what="dbt docs generate", results=False)
    return target_dir(settings)


def _first_lines(message: str, n: int = 2) -> str:
    """The headline of a dbt message: "Runtime Error in model x" alone says nothing."""
    return " | ".join([line.strip() for line in message.splitlines() if line.strip()][:n])


def _invoke_checked(settings: Settings, args: list[str], *, what: str,
                    results: bool = True, env: dict[str, str] | None = None) -> RunResults:
    stale = target_dir(settings) / "run_results.json"
    stale.unlink(missing_ok=True)  # never report an earlier command's results as this one's
    outcome = run_dbt(settings, args, env)
    if outcome.exception is not None:
        raise WarehouseBuildError(f"{what} could not run: {outcome.exception}") from outcome.exception
    if not results:
        if not outcome.success:
            raise WarehouseBuildError(f"{what} failed; see {settings.dbt_logs_dir}")
        return RunResults(args=args, elapsed_seconds=0.0)
    if not stale.exists():
        raise WarehouseBuildError(f"{what} wrote no run results; see {settings.dbt_logs_dir}")
    summary = read_run_results(settings, args)
    if summary.failed or not outcome.success:
        lines = [f"  {n.resource_type} {n.name}: {n.status}"
                 + (f" ({n.failures} failing rows)" if n.failures else "")
                 + (f" - {_first_lines(n.message)}" if n.message else "")
                 for n in summary.failed]
        skipped = sum(1 for n in summary.nodes if n.status == "skipped")
        raise WarehouseBuildError(
            f"{what} failed: {len(summary.failed)} failing node(s), {skipped} skipped\n"
            + "\n".join(lines) + _schema_change_hint(summary.failed), summary)
    return summary
