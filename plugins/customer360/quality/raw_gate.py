"""The raw gate: every batch landed since the last gate run, against its source contract.

Batches are found in the raw zone and compared with the watermark of gated batch ids in the
audit store, so each batch is validated once (a rerun of the same date validates nothing
twice, and a batch that stopped a gate is validated again next time). Batches of one entity
that share a schema are validated together, in chunks.

Row-level failures (scope ``row``, severity ``error``) quarantine the offending rows and the
run goes on: the rows are copied to the quarantine zone with the reason, and their ids are
listed in ``lake/quarantine/_gate_rejects/<batch_id>.parquet`` for staging to anti-join on
(raw batches are immutable and never rewritten). When more than the suite's
``quarantine.max_share`` of a batch fails one expectation, the source has broken its contract
and the gate stops instead. Batch-level failures (schema, volume, reconciliation) stop.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from customer360.core import audit
from customer360.core.files import atomic_path, read_jsonl_lines
from customer360.ingest import raw_zone as lake
from customer360.ingest.crm_properties import load_property_map
from customer360.ingest.landing.pos_amounts import install_amount_macros
from customer360.quality.context import GateContext
from customer360.quality.crm_map import apply_property_map
from customer360.quality.metrics import parquet_row_counts
from customer360.quality.gx_validation import FrameSample, Outcome
from customer360.quality.results import FAIL, QUARANTINE, WARN, ExpectationResult, SuiteResult
from customer360.quality.suite_runner import classify, evaluate, run_metric_suite, to_result
from customer360.quality.suites import Suite
from customer360.quality.targets import QuerySource, describe, quote

log = logging.getLogger(__name__)

# Where a row is: the index of its file in the query's file list and its row in that file.
LOCATOR = ("_file_index", "file_row_number")
REJECTS_DIR = "_gate_rejects"
REJECTS_SCHEMA = pa.schema([
    ("_batch_id", pa.string()), ("_source_file", pa.string()), ("_source_line", pa.int64()),
    ("_record_hash", pa.string()), ("_file_row_number", pa.int64()), ("record_key", pa.string()),
    ("reason", pa.string()), ("run_id", pa.string()), ("rejected_at", pa.timestamp("us", tz="UTC")),
])


@dataclass(frozen=True)
class RawBatch:
    path: Path
    source: str
    entity: str
    load_date: dt.date
    batch_id: str


def discover_batches(settings, through: dt.date) -> list[RawBatch]:
    """Every raw batch file with a load date up to ``through``."""
    found = []
    for path in settings.lake_raw.glob("*/*/load_date=*/*.parquet"):
        if path.name.startswith("."):
            continue  # a write in progress
        try:
            load_date = dt.date.fromisoformat(path.parent.name.split("=", 1)[1])
        except ValueError:
            continue
        if load_date <= through:
            found.append(RawBatch(path, path.parents[2].name, path.parents[1].name, load_date, path.stem))
    return sorted(found, key=lambda b: (b.source, b.entity, b.load_date, b.batch_id))


def load_reconciliation(settings) -> set[str]:
    """Copy new lines of reconciliation.jsonl into audit.reconciliation; their ids."""
    rows = {hashlib.sha256(line.strip().encode()).hexdigest(): json.loads(line)
            for line in read_jsonl_lines(settings.reconciliation_path)}
    if not rows:
        return set()
    with audit.connect(settings, read_only=True) as con:
        known = {r[0] for r in con.execute("SELECT line_sha256 FROM audit.reconciliation").fetchall()}
    new = {h: r for h, r in rows.items() if h not in known}
    now = dt.datetime.now(dt.timezone.utc)
    audit.append(settings, "reconciliation", [{
        "line_sha256": h, "source": r.get("source"), "entity": r.get("entity"),
        "batch_id": r.get("batch_id"), "load_date": r.get("load_date"),
        "source_file": r.get("source_file"), "read": r.get("read"), "landed": r.get("landed"),
        "quarantined": r.get("quarantined"), "duplicates_in_raw": r.get("duplicates_in_raw", 0),
        "note": r.get("note", ""), "recorded_at": r.get("recorded_at"), "loaded_at": now,
    } for h, r in new.items()])
    return set(new)


@dataclass
class Rejects:
    """Rows the gate quarantines, per batch, with the reasons they failed."""

    rows: dict[str, list[pd.DataFrame]] = field(default_factory=lambda: defaultdict(list))

    def add(self, failing: pd.DataFrame, reason: str) -> None:
        for batch_id, part in failing.groupby("_batch_id", sort=False):
            self.rows[str(batch_id)].append(part.assign(reason=reason))

    def count(self) -> int:
        return sum(len(self._collapse(parts)) for parts in self.rows.values())

    @staticmethod
    def _collapse(parts: list[pd.DataFrame]) -> pd.DataFrame:
        frame = pd.concat(parts, ignore_index=True)
        keys = ["_batch_id", "file_row_number"]
        reasons = frame.groupby(keys, sort=False)["reason"].agg(lambda r: "; ".join(dict.fromkeys(r)))
        return frame.drop(columns="reason").drop_duplicates(keys).merge(
            reasons.reset_index(), on=keys)


def _record_key(frame: pd.DataFrame, key_columns: list[str]) -> pd.Series:
    if not key_columns:
        return pd.Series([None] * len(frame), index=frame.index, dtype=object)
    parts = [f"{c}=" + frame[c].astype(str) for c in key_columns]
    out = parts[0]
    for p in parts[1:]:
        out = out + "/" + p
    return out


def _write_parquet_atomically(table: pa.Table, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def rejects_dir(settings) -> Path:
    return settings.quarantine / REJECTS_DIR


def ensure_rejects_schema_file(settings) -> None:
    """An empty file with the rejects schema, so that staging's glob always matches a file."""
    path = rejects_dir(settings) / "_schema.parquet"
    if not path.exists():
        _write_parquet_atomically(REJECTS_SCHEMA.empty_table(), path)


def write_rejects(ctx: GateContext, rejects: Rejects, batches: dict[str, RawBatch],
                  suites: dict[tuple[str, str], Suite]) -> int:
    """Quarantine copies (with the raw record) and the staging exclusion list, per batch."""
    written = 0
    now = dt.datetime.now(dt.timezone.utc)
    for batch_id, parts in rejects.rows.items():
        batch = batches[batch_id]
        suite = suites[(batch.source, batch.entity)]
        failing = Rejects._collapse(parts)[["file_row_number", "reason"]]
        read = f"read_parquet('{batch.path}', file_row_number = true, hive_partitioning = false)"
        columns = describe(ctx.scratch, f"SELECT * FROM {read}")
        source_cols = [c for c in columns if not c.startswith("_") and c != "file_row_number"]
        keys = [c for c in suite.key_columns if c in source_cols]
        packed = ", ".join(f"{quote(c)} := {quote(c)}" for c in source_cols)
        ctx.scratch.register("failing_rows", failing)
        try:
            frame = ctx.scratch.execute(
                f"SELECT r.file_row_number, r._batch_id, r._source_file, r._source_line, r._record_hash, "
                f"CAST(to_json(struct_pack({packed})) AS VARCHAR) AS raw_text, "
                + ("".join(f"r.{quote(k)}, " for k in keys))
                + f"f.reason FROM {read} AS r JOIN failing_rows AS f USING (file_row_number) "
                f"ORDER BY r.file_row_number").df()
        finally:
            ctx.scratch.unregister("failing_rows")
        frame["record_key"] = _record_key(frame, keys)
        lake.write_quarantine(ctx.settings, [{
            "source_file": r["_source_file"],
            "source_line": None if pd.isna(r["_source_line"]) else int(r["_source_line"]),
            "record_key": r["record_key"], "reason": r["reason"], "raw_text": r["raw_text"]}
            for r in frame.to_dict("records")],
            source=batch.source, entity=batch.entity, load_date=batch.load_date,
            batch_id=f"gate-{batch_id}")
        table = pa.table({
            "_batch_id": [batch_id] * len(frame),
            "_source_file": frame["_source_file"].tolist(),
            "_source_line": [None if pd.isna(v) else int(v) for v in frame["_source_line"]],
            "_record_hash": frame["_record_hash"].tolist(),
            "_file_row_number": frame["file_row_number"].astype("int64").tolist(),
            "record_key": frame["record_key"].tolist(),
            "reason": frame["reason"].tolist(),
            "run_id": [ctx.run_id] * len(frame),
            "rejected_at": [now] * len(frame),
        }, schema=REJECTS_SCHEMA)
        _write_parquet_atomically(table, rejects_dir(ctx.settings) / f"{batch_id}.parquet")
        written += len(frame)
    return written


def _batch_rows(con: duckdb.DuckDBPyConnection, batches: list[RawBatch]) -> dict[str, int]:
    per_file = parquet_row_counts(con, [str(b.path) for b in batches])
    return {b.batch_id: per_file.get(str(b.path), 0) for b in batches}


def _schema_groups(con: duckdb.DuckDBPyConnection, batches: list[RawBatch]) -> dict[tuple, list[RawBatch]]:
    """Batches grouped by their Parquet schema, read from the footers in one query (a day of
    POS files is hundreds of batches; describing each one would cost more than checking it)."""
    rows = con.execute(
        "SELECT file_name, list_sort(list(concat_ws(':', name, type, converted_type, logical_type))) "
        "FROM parquet_schema(?) GROUP BY file_name", [[str(b.path) for b in batches]]).fetchall()
    signature = {str(f): tuple(cols) for f, cols in rows}
    groups: dict[tuple, list[RawBatch]] = defaultdict(list)
    for b in batches:
        groups[signature.get(str(b.path), ())].append(b)
    return groups


def _merge(outcomes: list[Outcome]) -> Outcome:
    """One spec's outcomes over several schema groups of batches, as one."""
    if len(outcomes) == 1:
        return outcomes[0]
    merged = Outcome(outcomes[0].spec)
    verdicts = [o.success for o in outcomes]
    merged.success = False if False in verdicts else (None if all(v is None for v in verdicts) else True)
    for o in outcomes:
        merged.element_count += o.element_count
        merged.unexpected_count += o.unexpected_count
        merged.missing_count += o.missing_count
        merged.map_result |= o.map_result
        merged.sample += o.sample[:max(0, 5 - len(merged.sample))]
        merged.failing_rows += o.failing_rows
        merged.exception = merged.exception or (o.exception if o.success is False else None)
        if o.success is False and merged.observed is None:
            merged.observed = o.observed
    if merged.success is not False:
        merged.observed = outcomes[0].observed
    return merged


def run_entity_suite(ctx: GateContext, suite: Suite, batches: list[RawBatch],
                     rejects: Rejects) -> tuple[SuiteResult, set[str]]:
    """Validate one entity's new batches; returns the suite result and the blocked batch ids."""
    started = time.monotonic()
    target = f"raw {suite.target['source']}/{suite.target['entity']}: {len(batches)} new batches"
    result = SuiteResult(suite.name, target)
    if not batches:
        return result, set()
    con = ctx.scratch
    rows = _batch_rows(con, batches)
    groups: dict[tuple, list[RawBatch]] = defaultdict(list)
    for signature, group in _schema_groups(con, batches).items():
        types = describe(con, f"SELECT * FROM read_parquet('{group[0].path}', hive_partitioning = true)")
        groups[tuple(types.items())] += group
    derive = suite.target.get("derive") or {}
    per_group: list[tuple[list[RawBatch], list[Outcome]]] = []
    for signature, group in groups.items():
        files = ", ".join(f"'{b.path}'" for b in group)
        extra = "".join(f", ({expr}) AS {quote(name)}" for name, expr in derive.items())
        sql = (f"SELECT *, file_index AS _file_index{extra} FROM read_parquet([{files}], "
               f"file_row_number = true, hive_partitioning = true, union_by_name = true)")
        how = FrameSample(key_columns=suite.key_columns, pii_columns=suite.pii_columns, locator=LOCATOR,
                          where=lambda row, group=group: (f"batch {group[int(row['_file_index'])].batch_id} "
                                                          f"row {int(row['file_row_number'])}"))
        outcomes = evaluate(
            suite, lambda sql=sql: QuerySource(con, sql, ctx.chunk_rows), dict(signature), how,
            collect_rows=lambda spec: spec.scope == "row" and spec.severity == "error")
        for o in outcomes:
            if o.success is False and o.spec.generated:
                o.sample.append("batches: " + ", ".join(b.batch_id for b in group))
            # name each failing row's batch: file indexes mean nothing outside this query
            batch_ids = [b.batch_id for b in group]
            o.failing_rows = [f.assign(_batch_id=[batch_ids[int(i)] for i in f["_file_index"]])
                              for f in o.failing_rows]
        per_group.append((group, outcomes))

    blocked: set[str] = set()
    for i, spec in enumerate(suite.expectations):
        outs = [outcomes[i] for _, outcomes in per_group]
        failed_batches = {b.batch_id for group, outcomes in per_group
                          if outcomes[i].success is False for b in group}
        out = _merge(outs)
        verdict, note, quarantined = classify(out), "", 0
        unchecked = [b.batch_id for group, outcomes in per_group if outcomes[i].success is None
                     for b in group]
        if unchecked and out.success is not None:
            note = f"not evaluated on {len(unchecked)} batch(es) whose contract failed"
        if verdict == FAIL and spec.scope == "row" and out.failing_rows and not out.exception:
            failing = pd.concat(out.failing_rows, ignore_index=True)
            per_batch = failing["_batch_id"].value_counts()
            limit = {b: max(suite.quarantine_max_share * rows[b], suite.quarantine_min_rows)
                     for b in per_batch.index}
            over = [b for b, n in per_batch.items() if n > limit[b]]
            if over:
                note = "; ".join(
                    f"batch {b}: {per_batch[b]} of {rows[b]} rows fail "
                    f"({per_batch[b] / max(rows[b], 1):.1%}), more than the "
                    f"{suite.quarantine_max_share:.0%} that may be quarantined" for b in over)
                blocked |= set(over)
            else:
                verdict, quarantined = QUARANTINE, len(failing)
                rejects.add(failing, f"{suite.name}: {spec.label()}")
        elif verdict == FAIL:
            blocked |= failed_batches
        result.results.append(to_result(suite, out, verdict, note, quarantined))
    result.rows = sum(rows.values())
    result.seconds = time.monotonic() - started
    return result, blocked


def run(ctx: GateContext, suites: list[Suite]) -> tuple[list[SuiteResult], int]:
    """All raw suites; returns their results and the number of rows quarantined."""
    settings = ctx.settings
    # CRM suites name our columns; the portal's property names and values come from the map.
    if any(s.kind == "raw" and s.target.get("source") == "crm" for s in suites):
        property_map = load_property_map(settings)
        suites = [apply_property_map(s, property_map) for s in suites]
    ctx.new_reconciliation_lines = load_reconciliation(settings)
    # POS suites read amounts by the loader's rule (c360_pos_amount), not a copy of it.
    install_amount_macros(ctx.scratch)
    ensure_rejects_schema_file(settings)
    with audit.connect(settings, read_only=True) as con:
        gated = {r[0] for r in con.execute("SELECT batch_id FROM audit.gated_batches").fetchall()}
    todo = [b for b in discover_batches(settings, ctx.logical_date) if b.batch_id not in gated]
    by_entity: dict[tuple[str, str], list[RawBatch]] = defaultdict(list)
    for b in todo:
        by_entity[(b.source, b.entity)].append(b)
    entity_suites = {(s.target["source"], s.target["entity"]): s for s in suites if s.kind == "raw"}

    results: list[SuiteResult] = []
    blocked: set[str] = set()
    rejects = Rejects()
    for suite in suites:
        if suite.kind == "raw":
            key = (suite.target["source"], suite.target["entity"])
            suite_result, suite_blocked = run_entity_suite(ctx, suite, by_entity.get(key, []), rejects)
            blocked |= suite_blocked
        else:
            suite_result = run_metric_suite(ctx, suite)
        results.append(suite_result)
        log.info("raw suite %s: %d expectations, %d failed (%.2f s)", suite.name,
                 len(suite_result.results), len(suite_result.errors), suite_result.seconds)

    uncovered = sorted(f"{s}/{e}" for s, e in by_entity if (s, e) not in entity_suites)
    if uncovered:
        results.append(SuiteResult("raw.coverage", "raw entities without a suite", [ExpectationResult(
            suite="raw.coverage", expectation="every_raw_entity_has_a_suite",
            label="every_raw_entity_has_a_suite()", column=None, kwargs={}, severity="warn",
            scope="batch", outcome=WARN, success=False,
            observed_value=f"no suite for {', '.join(uncovered)}: their batches pass unchecked")]))

    quarantined = write_rejects(ctx, rejects, {b.batch_id: b for b in todo}, entity_suites)
    rejected_per_batch = {b: len(Rejects._collapse(parts)) for b, parts in rejects.rows.items()}
    now = dt.datetime.now(dt.timezone.utc)
    passed = [b for b in todo if b.batch_id not in blocked]
    if passed:
        rows = _batch_rows(ctx.scratch, passed)
        audit.append(settings, "gated_batches", [{
            "batch_id": b.batch_id, "source": b.source, "entity": b.entity, "load_date": b.load_date,
            "rows": rows[b.batch_id], "rows_rejected": rejected_per_batch.get(b.batch_id, 0),
            "run_id": ctx.run_id, "gated_at": now} for b in passed])
    return results, quarantined
