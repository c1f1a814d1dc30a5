"""Checks Great Expectations has no expectation for, computed as small DataFrames that the
suites then assert with ordinary expectations (so every check has one result format).

A suite names one with ``target: {metric: <name>, ...params}``:

- ``raw_volume``: rows landed today per source/entity against recent days (same weekday first).
- ``reconciliation``: read = landed + quarantined for every batch recorded by the extractors.
- ``loader_quarantine``: the share of each new batch its loader quarantined, with the files
  and reasons behind it.
- ``trend``: a number computed in SQL against its own recent history (kept in the audit store).
- ``dbt_results``: the data tests dbt ran for the stage's layers (run_results.json).
- ``pii_scan``: emails and phone numbers in every string column of every published table.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import statistics
from pathlib import Path
from typing import Callable

import duckdb
import pandas as pd

from customer360.core import audit
from customer360.core.duck import sql_str
from customer360.quality.context import GateContext
from customer360.core.masking import (SQL_EMAIL_PATTERN, SQL_PHONE_PATTERN, mask_email,
                                         mask_phone, mask_text)
from customer360.quality.targets import quote, type_family

MetricFn = Callable[[GateContext, dict], pd.DataFrame]
REGISTRY: dict[str, MetricFn] = {}


def metric(name: str):
    def register(fn: MetricFn) -> MetricFn:
        REGISTRY[name] = fn
        return fn
    return register


def compute(ctx: GateContext, target: dict) -> pd.DataFrame:
    name = target["metric"]
    if name not in REGISTRY:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(sorted(REGISTRY))}")
    params = {k: v for k, v in target.items() if k != "metric"}
    return REGISTRY[name](ctx, params)


# ---------------------------------------------------------------- raw zone

# The day a raw record belongs to. Counting by the data's own day rather than by load date
# keeps a catch-up load (weeks of history landed in one run) from looking like one huge day
# that then makes every ordinary day afterwards look like a collapse.
RECORD_DAY = {
    "web": '"_folder_date"',
    "pos": '"_folder_date"',
    "crm": 'TRY_CAST(substr("updatedAt", 1, 10) AS DATE)',
}


def raw_row_counts(con: duckdb.DuckDBPyConnection, settings, source: str, entity: str,
                   since: dt.date, through: dt.date) -> dict[dt.date, int]:
    """Rows per record day of one raw entity (see RECORD_DAY), between since and through."""
    files = sorted(str(p) for p in (settings.lake_raw / source / entity).glob("load_date=*/*.parquet"))
    if not files:
        return {}
    day_expr = RECORD_DAY.get(source)
    if day_expr is None:  # reference data: the load date is the only day there is
        per_file = parquet_row_counts(con, files)
        counts: dict[dt.date, int] = {}
        for f in files:
            day = dt.date.fromisoformat(Path(f).parent.name.split("=", 1)[1])
            if since <= day <= through:
                counts[day] = counts.get(day, 0) + int(per_file.get(f, 0))
        return counts
    rows = con.execute(
        f"SELECT day, count(*) FROM (SELECT {day_expr} AS day FROM read_parquet(?, union_by_name = true)) "
        "WHERE day BETWEEN ? AND ? GROUP BY 1", [files, since, through]).fetchall()
    return {d: int(n) for d, n in rows}


def parquet_row_counts(con: duckdb.DuckDBPyConnection, files: list[str]) -> dict[str, int]:
    """Rows of each Parquet file, from its footer."""
    if not files:
        return {}
    rows = con.execute(
        "SELECT file_name, sum(num_rows) FROM (SELECT DISTINCT file_name, row_group_id, "
        "row_group_num_rows AS num_rows FROM parquet_metadata(?)) GROUP BY 1", [files]).fetchall()
    return {str(f): int(n) for f, n in rows}


def batch_files(root: Path, source: str, entity: str, batch_id: str) -> list[str]:
    """The Parquet file(s) of one batch under a zone (raw or quarantine), whatever its load date."""
    return sorted(str(p) for p in (root / source / entity).glob(f"load_date=*/{batch_id}.parquet"))


@metric("raw_volume")
def raw_volume(ctx: GateContext, params: dict) -> pd.DataFrame:
    """One row: for each entity, today's rows, the baseline and their ratio.

    The baseline is the median of the same weekday over the last ``history_days`` when at
    least ``min_same_weekday`` such days exist (retail traffic has a weekly rhythm), else the
    median of every earlier day when there are ``min_days`` of them, else none (the ratio is
    then null, which the between-expectations do not count as a failure).
    """
    day = ctx.logical_date
    history_days = int(params.get("history_days", 35))
    row: dict[str, object] = {"logical_date": day.isoformat(), "weekday": day.strftime("%a")}
    for item in params["entities"]:
        source, entity = item.split("/")
        counts = raw_row_counts(ctx.scratch, ctx.settings, source, entity,
                                day - dt.timedelta(days=history_days), day)
        today = counts.pop(day, 0)
        same = [n for d, n in counts.items() if d.weekday() == day.weekday()]
        if len(same) >= int(params.get("min_same_weekday", 2)):
            baseline = statistics.median(same)
        elif len(counts) >= int(params.get("min_days", 3)):
            baseline = statistics.median(counts.values())
        else:
            baseline = None
        if baseline is not None and baseline < float(params.get("min_baseline_rows", 0)):
            # A handful of rows a day swings by chance (Poisson): a ratio of small counts
            # would stop good runs, so volume is judged only once the baseline is meaningful.
            baseline = None
        key = f"{source}_{entity}"
        row[f"{key}_rows"] = today
        row[f"{key}_baseline"] = baseline
        row[f"{key}_ratio"] = (today / baseline) if baseline else None
    return pd.DataFrame([row])


def _run_reconciliation(ctx: GateContext) -> pd.DataFrame:
    """The extractors' reconciliation rows this gate run judges: those of its logical date and
    those recorded since the last gate run (a rerun of a date judges its batches again)."""
    with audit.connect(ctx.settings, read_only=True) as con:
        frame = con.execute(
            "SELECT line_sha256, source, entity, batch_id, CAST(load_date AS VARCHAR) AS load_date, "
            "source_file, \"read\", landed, quarantined FROM audit.reconciliation "
            "WHERE load_date = ? OR list_contains(?, line_sha256) ORDER BY source, entity, batch_id",
            [ctx.logical_date, sorted(ctx.new_reconciliation_lines)]).df()
        # An erasure removes rows from batch files after the fact: the batch then holds fewer
        # rows than it landed, and a rerun of its date must not call that a loss.
        erased = {}
        if con.execute("SELECT 1 FROM duckdb_tables() WHERE database_name = current_database() "
                       "AND schema_name = 'audit' AND table_name = 'erased_rows'").fetchone():
            erased = dict(con.execute("SELECT batch_id, sum(\"rows\") FROM audit.erased_rows "
                                      "WHERE zone = 'raw' GROUP BY batch_id").fetchall())
    frame["source_entity"] = frame["source"] + "/" + frame["entity"]
    frame["erased"] = frame["batch_id"].map(erased).fillna(0).astype("int64")
    return frame


@metric("reconciliation")
def reconciliation(ctx: GateContext, params: dict) -> pd.DataFrame:
    """Reconciliation rows of this logical date or loaded by this run, with their imbalance and
    how the landed count compares with the rows actually in the batch's Parquet file."""
    frame = _run_reconciliation(ctx)
    frame["imbalance"] = frame["read"] - frame["landed"] - frame["quarantined"]
    # erased rows counted once per batch (a batch's several reconciliation lines share them)
    landed_per_batch = (frame.groupby("batch_id")["landed"].transform("sum")
                        - frame.groupby("batch_id")["erased"].transform("max"))
    batch_rows = {}
    for (source, entity, batch_id) in frame[["source", "entity", "batch_id"]].drop_duplicates().itertuples(index=False):
        if not batch_id:
            continue
        found = batch_files(ctx.settings.lake_raw, source, entity, batch_id)
        if found:
            batch_rows[batch_id] = sum(parquet_row_counts(ctx.scratch, found).values())
    frame["batch_rows"] = frame["batch_id"].map(batch_rows)
    frame["landed_minus_batch_rows"] = (landed_per_batch - frame["batch_rows"]).where(
        frame["batch_rows"].notna())
    return frame.drop(columns=["line_sha256"])


# A reason's kind: its first reason with what varies from record to record blanked (the values
# it quotes, the transaction and line it names, dates and times), so "quantity is not a number:
# '1,2x'" on a thousand lines is one kind, and nothing a record held (an email typed into a
# wrong field) reaches a message. Other words stay: "declared GB18030 but ... UTF-8" must read.
_VARYING = ((r"'[^']*'", "…"),                                          # a quoted value
            (r"\btransaction [^\s:;,]+ quarantined", "transaction … quarantined"),  # which
            (r"\b(line|lines) \d[\d, ]*", "\\1 …"),                                  # record
            (r"\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?)?", "…"))  # a date, a time


def _reason_kind(expr: str) -> str:
    out = f"split_part({expr}, '; ', 1)"
    for pattern, replacement in _VARYING:
        out = f"regexp_replace({out}, {sql_str(pattern)}, {sql_str(replacement)}, 'g')"
    return out


def _quarantine_limits(ctx: GateContext, params: dict, source_entity: str) -> tuple[float, float, int]:
    """(warn_share, error_share, min_rows) of an entity: the suite's, the entity's own in the
    suite, and C360_QUARANTINE_*_SHARE over both (an operator's choice for one run)."""
    own = {**params, **((params.get("entities") or {}).get(source_entity) or {})}
    warn, error = float(own.get("warn_share", 0.02)), float(own.get("error_share", 0.25))
    s = ctx.settings
    warn = s.quarantine_warn_share if s.quarantine_warn_share is not None else warn
    error = s.quarantine_error_share if s.quarantine_error_share is not None else error
    return warn, error, int(own.get("min_rows", 20))


def _top_reasons(con: duckdb.DuckDBPyConnection, files: list[str], limit: int = 3) -> str:
    if not files:
        return ""
    kinds = con.execute(
        f"SELECT {_reason_kind('reason')} AS kind, count(*) AS n "
        f"FROM read_parquet(?, union_by_name = true) GROUP BY kind ORDER BY n DESC, kind LIMIT ?",
        [files, limit]).fetchall()
    return mask_text("; ".join(f"{kind} ({n})" for kind, n in kinds))


def _top_files(con: duckdb.DuckDBPyConnection, files: list[str], limit: int = 3) -> tuple[str, int]:
    """The files of a batch that lost most, and how many were quarantined whole."""
    if not files:
        return "", 0
    rows = con.execute(
        f"SELECT source_file, status, rows_read, rows_quarantined, {_reason_kind('reason')} "
        f"FROM read_parquet(?, union_by_name = true) WHERE rows_quarantined > 0 "
        f"ORDER BY status = 'quarantined' DESC, "
        f"rows_quarantined::DOUBLE / greatest(rows_read, 1) DESC, rows_quarantined DESC, source_file",
        [files]).fetchall()
    shown = [f"{rel}: quarantined whole ({why})" if status == "quarantined"
             else f"{rel}: {q} of {n} ({q / max(n, 1):.0%})"
             for rel, status, n, q, why in rows[:limit]]
    if len(rows) > limit:
        shown.append(f"and {len(rows) - limit} more")
    return mask_text("; ".join(shown)), sum(1 for r in rows if r[1] == "quarantined")


_LOADER_QUARANTINE_COLUMNS = [
    "source_entity", "batch_id", "load_date", "read", "landed", "quarantined", "quarantine_share",
    "warn_share", "error_share", "warning_headroom", "error_headroom", "files_quarantined_whole",
    "top_files", "top_reasons"]


@metric("loader_quarantine")
def loader_quarantine(ctx: GateContext, params: dict) -> pd.DataFrame:
    """One row a batch the extractors landed for this run: the share of its records they
    quarantined against the entity's warning and error shares, the files that lost most and
    the commonest reasons. ``*_headroom`` is the threshold minus the share (negative: over
    it); the error headroom is null for a batch of fewer than ``min_rows`` records, too few to
    tell a broken source from a few bad records."""
    rows = []
    for r in _run_reconciliation(ctx).itertuples(index=False):
        warn, error, min_rows = _quarantine_limits(ctx, params, r.source_entity)
        read, quarantined = int(r.read), int(r.quarantined)
        share = quarantined / read if read else None
        top_files, whole = ("", 0)
        top_reasons = ""
        if quarantined:
            top_files, whole = _top_files(ctx.scratch, batch_files(
                ctx.settings.lake_raw, r.source, "files", r.batch_id))
            top_reasons = _top_reasons(ctx.scratch, batch_files(
                ctx.settings.quarantine, r.source, r.entity, r.batch_id))
        rows.append({
            "source_entity": r.source_entity, "batch_id": r.batch_id, "load_date": r.load_date,
            "read": read, "landed": int(r.landed), "quarantined": quarantined,
            "quarantine_share": share, "warn_share": warn, "error_share": error,
            "warning_headroom": None if share is None else warn - share,
            "error_headroom": None if share is None or read < min_rows else error - share,
            "files_quarantined_whole": whole, "top_files": top_files, "top_reasons": top_reasons,
        })
    frame = pd.DataFrame(rows, columns=_LOADER_QUARANTINE_COLUMNS)
    for c in ("quarantine_share", "warning_headroom", "error_headroom"):
        frame[c] = frame[c].astype("float64")
    return frame


# ---------------------------------------------------------------- warehouse

@metric("trend")
def trend(ctx: GateContext, params: dict) -> pd.DataFrame:
    """A number from SQL (``sql`` returns one row, column ``value``) next to the median of its
    last ``history_runs`` values on earlier logical dates; today's value is recorded."""
    name = params["name"]
    value = ctx.warehouse.execute(params["sql"]).fetchone()[0]
    value = None if value is None else float(value)
    with audit.connect(ctx.settings, read_only=True) as con:
        history = [r[0] for r in con.execute(
            "SELECT value FROM audit.gate_metrics WHERE stage = ? AND metric = ? AND logical_date < ? "
            "AND value IS NOT NULL ORDER BY logical_date DESC LIMIT ?",
            [ctx.stage, name, ctx.logical_date, int(params.get("history_runs", 7))]).fetchall()]
    baseline = statistics.median(history) if len(history) >= int(params.get("min_history", 3)) else None
    audit.append(ctx.settings, "gate_metrics", [{
        "logical_date": ctx.logical_date, "stage": ctx.stage, "metric": name, "value": value,
        "run_id": ctx.run_id, "recorded_at": dt.datetime.now(dt.timezone.utc)}])
    ratio = value / baseline if (value is not None and baseline) else None
    return pd.DataFrame([{"metric": name, "value": value, "baseline": baseline,
                          "ratio_to_baseline": ratio, "history_runs": len(history)}])


def _given_dbt_results(ctx: GateContext) -> list[str]:
    """run_results paths or globs given instead of the layers' kept results (the gate's
    argument, C360_DBT_RESULTS)."""
    return [*ctx.dbt_results, *ctx.settings.dbt_results]


def _dbt_result_files(ctx: GateContext, layers: list[str]) -> list[Path]:
    patterns = _given_dbt_results(ctx)
    if not patterns:  # where the pipeline keeps each layer's results (pipeline.build_layer)
        patterns = [str(ctx.settings.dbt_results_path(layer)) for layer in layers]
    found: list[Path] = []
    for pattern in patterns:
        found += [Path(p) for p in sorted(glob.glob(pattern))]
    return list(dict.fromkeys(found))


@metric("dbt_results")
def dbt_results(ctx: GateContext, params: dict) -> pd.DataFrame:
    """One row per dbt node result (tests first of all). dbt marks a failing test whose
    severity is ``error`` as ``fail`` and one whose severity is ``warn`` as ``warn``. When no
    run_results.json is found, one row with status ``missing`` says so."""
    layers = list(params.get("layers", []))
    rows, latest = [], {}
    for path in _dbt_result_files(ctx, layers):
        data = json.loads(path.read_text(encoding="utf-8"))
        generated = (data.get("metadata") or {}).get("generated_at", "")
        for r in data.get("results", []):
            uid = r["unique_id"]
            if uid in latest and latest[uid] >= generated:
                continue
            latest[uid] = generated
            rows.append({"unique_id": uid, "resource_type": uid.split(".")[0],
                         "status": str(r.get("status")), "failures": r.get("failures"),
                         "message": mask_text(str(r.get("message") or ""))[:300],
                         "results_file": str(path), "generated_at": generated})
    if not _given_dbt_results(ctx):  # a layer that left no results is reported, never skipped silently
        for layer in layers:
            path = ctx.settings.dbt_results_path(layer)
            if not path.exists():
                rows.append({"unique_id": f"(no dbt results for layer {layer})", "resource_type": "none",
                             "status": "missing", "failures": None, "message": f"expected at {path}",
                             "results_file": "", "generated_at": ""})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame([{"unique_id": "(no dbt run_results.json found)", "resource_type": "none",
                              "status": "missing", "failures": None, "message": "",
                              "results_file": "", "generated_at": ""}])
    # several files can hold the same node: keep its newest result
    frame = frame.sort_values("generated_at").drop_duplicates("unique_id", keep="last")
    resource_types = params.get("resource_types")
    if resource_types:
        frame = frame[frame["resource_type"].isin(resource_types)]
    return frame.reset_index(drop=True)


def published_tables(con: duckdb.DuckDBPyConnection, schemas: list[str]) -> list[tuple[str, str]]:
    """The tables publish would copy (customer360.warehouse.published)."""
    from customer360.warehouse.published import list_publishable_tables

    catalog = con.execute("SELECT current_database()").fetchone()[0]
    return [(s, t) for s, t in list_publishable_tables(con, catalog) if s in schemas]


@metric("pii_scan")
def pii_scan(ctx: GateContext, params: dict) -> pd.DataFrame:
    """One row per column of every published table: how many values hold an email address or
    a phone number, with one masked example. Text, JSON, lists and structs are all scanned as
    text; hashes (hex) do not match the phone pattern because it needs non-alphanumeric edges.

    Every value is matched once against both patterns together; only a column with a match
    is scanned again to tell emails from phones and pick an example (a clean run reads each
    value once, which halves the scan)."""
    con = ctx.warehouse
    schemas = list(params.get("schemas", ["marts", "ml"]))
    either = f"({SQL_EMAIL_PATTERN})|{SQL_PHONE_PATTERN}"
    rows = []
    for schema, table in published_tables(con, schemas):
        relation = f"{quote(schema)}.{quote(table)}"
        cols = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ? "
            "ORDER BY ordinal_position", [schema, table]).fetchall()
        scanned = [c for c, t in cols if type_family(t) in ("string", "json", "list", "struct", "other")]
        hits = dict(zip(scanned, con.execute("SELECT " + ", ".join(
            f"count(*) FILTER (WHERE regexp_matches(CAST({quote(c)} AS VARCHAR), '{either}'))"
            for c in scanned) + f" FROM {relation}").fetchone())) if scanned else {}
        for c, t in cols:
            emails = phones = example = None
            if c in hits:
                emails = phones = 0
            if hits.get(c):
                text = f"CAST({quote(c)} AS VARCHAR)"
                emails, phones, ex_email, ex_phone = con.execute(
                    f"SELECT count(*) FILTER (WHERE regexp_matches({text}, '{SQL_EMAIL_PATTERN}')), "
                    f"count(*) FILTER (WHERE regexp_matches({text}, '{SQL_PHONE_PATTERN}')), "
                    f"any_value(regexp_extract({text}, '{SQL_EMAIL_PATTERN}')) "
                    f"FILTER (WHERE regexp_matches({text}, '{SQL_EMAIL_PATTERN}')), "
                    f"any_value(regexp_extract({text}, '{SQL_PHONE_PATTERN}', 2)) "
                    f"FILTER (WHERE regexp_matches({text}, '{SQL_PHONE_PATTERN}')) FROM {relation}").fetchone()
                # masked here: nothing personal leaves this function
                example = mask_email(ex_email) if ex_email else mask_phone(ex_phone) if ex_phone else None
            rows.append({"table_name": f"{schema}.{table}", "column_name": c, "data_type": t,
                         "email_values": emails, "phone_values": phones, "example": example})
    frame = pd.DataFrame(rows, columns=["table_name", "column_name", "data_type", "email_values",
                                        "phone_values", "example"])
    # counts stay integers with gaps (columns that are not text are not counted)
    return frame.astype({"email_values": "Int64", "phone_values": "Int64"})
