"""Erasure: a person's personal data removed from everywhere the pipeline keeps it.

    result = erase(settings, [ErasureRequest("email", "ann@mail.com")], rebuild=pipeline.rebuild)

Where a person lives, and what happens there:

| place | what is done |
|---|---|
| raw zone, quarantine (Parquet) | files rewritten without their rows (:mod:`.lake_purge`) |
| landing copies (web, POS files) | their lines blanked; manifests updated so nothing reloads |
| warehouse DuckDB | their rows deleted in every table (the SCD2 snapshot and the identity memory included: neither is rebuilt from raw), then rebuilt by dbt and ML from the purged raw zone |
| published DuckDB, Parquet, PostgreSQL | their rows removed at once (a new file renamed into place), then republished from the rebuilt warehouse through the marts gate |
| audience exports | their rows removed |
| DuckDB files | compacted (:func:`.duck_purge.compact`): no freed block keeps a deleted value |
| model artifacts | nothing to do: the models keep aggregates (trees, centroids, item similarities), never training rows; the next training no longer sees the person |
| audit | an erasure row and a chained event: tokens, times, counts; nothing personal |

Daily aggregates (``kpi_daily``) may keep their totals. The CRM itself, and the demo's
simulated sources under ``$C360_HOME/simulation``, are the sources' systems: erasing there is
their job (the CRM signals it with ``archived: true``). A source that sends the person's old
records again (a late file, a redelivery, a re-read of the CRM) is caught by
:func:`returning_requests`: the tokens of erased keys are matched against every new batch.

Two callers: ``c360 erase`` (one request, rebuild and republish now) and the DAG task
:func:`customer360.privacy.tasks.erasure` (archived contacts and returning records of the
day, after extract; the day's own build and publish follow).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from customer360.core import audit, duck
from customer360.privacy import duck_purge, erasure_log, pii
from customer360.privacy.lake_purge import (LakePurge, purge_landing, purge_lake, purge_request_source,
                                            remove_set_aside)
from customer360.ingest.crm_properties import load_property_map
from customer360.ingest.state import StateStore, backup_state, state_db_path
from customer360.warehouse.keep import export_kept, kept_index_path
from customer360.privacy.person import (POS_EMAIL, POS_LOYALTY, POS_PHONE, WEB_EVENT_EMAIL, WEB_EVENT_PHONE,
                                        ErasureRefused, ErasureRequest, PersonKeys, Resolver,
                                        load_key_tables, parquet_sql, raw_files)
from customer360.core.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Resolved:
    erasure_id: str
    request: ErasureRequest
    token: str
    keys: PersonKeys = field(repr=False)


@dataclass
class ErasureResult:
    """What an erasure did, JSON-able and free of personal data (for logs, XComs, the CLI)."""

    erasures: list[dict] = field(default_factory=list)   # erasure_id, reason, kind, token, keys
    refused: list[str] = field(default_factory=list)     # why some requests did nothing
    resumed: list[str] = field(default_factory=list)     # earlier erasures that died mid-purge
    lake: dict = field(default_factory=dict)
    warehouse: dict = field(default_factory=dict)
    published: dict = field(default_factory=dict)
    audiences: dict = field(default_factory=dict)
    postgres: dict | None = None
    rebuild: dict | None = None
    compaction: dict = field(default_factory=dict)
    verification: dict | None = None
    status: str = "nothing to erase"
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"status": self.status, "erasures": self.erasures, "refused": self.refused,
                "resumed": self.resumed,
                "lake": self.lake, "warehouse": self.warehouse, "published": self.published,
                "audiences": self.audiences, "postgres": self.postgres, "rebuild": self.rebuild,
                "compaction": self.compaction, "verification": self.verification,
                "seconds": round(self.seconds, 2)}


# --------------------------------------------------------------------------- requests

def archived_contact_requests(settings: Settings) -> list[ErasureRequest]:
    """A request per CRM contact whose latest landed version is ``archived: true``."""
    files = raw_files(settings.lake_raw, "crm", "contacts")
    if not files:
        return []
    con = duck.connect(settings)
    try:
        rows = con.execute(f"""
            SELECT contact_id FROM (
                SELECT trim(id) AS contact_id, archived,
                       row_number() OVER (PARTITION BY trim(id)
                                          ORDER BY try_cast("updatedAt" AS TIMESTAMPTZ) DESC NULLS LAST,
                                                   _loaded_at DESC) AS version_rank
                FROM {parquet_sql(files)} WHERE id IS NOT NULL)
            WHERE version_rank = 1 AND archived ORDER BY contact_id""").fetchall()
    finally:
        con.close()
    return [ErasureRequest("contact", r[0], reason="archived") for r in rows]


def _today_batches(root: Path, source: str, entity: str, logical_date: dt.date) -> list[Path]:
    return [p for p in raw_files(root, source, entity)
            if p.parent.name == f"load_date={logical_date.isoformat()}"]


# A ticket's or survey answer's contacts: its associations (one row each), or the contact_id
# property of batches landed before associations existed.
_CRM_OWNER = ("trim(unnest(coalesce(json_extract_string(associations, '$.\"contacts\"[*]'), "
              "[json_extract_string(properties, '$.contact_id')])))")


def _returning_keys(settings: Settings) -> dict[tuple[str, str], list[tuple[str, str, str]]]:
    """(source, entity) -> SQL of (key_type, value, record time) rows of a raw batch; CRM
    contact properties by the portal's names (the CRM property map)."""
    prop = load_property_map(settings)["contacts"].sql
    return {
        ("crm", "contacts"): [
            ("contact", "trim(id)", '"updatedAt"'),
            ("email", pii.email_sql(prop("email")), '"updatedAt"'),
            ("phone", pii.phone_sql(prop("phone"), prop("country")), '"updatedAt"'),
            ("phone", pii.phone_sql(prop("mobile_phone"), prop("country")), '"updatedAt"'),
            ("loyalty", pii.loyalty_sql(prop("loyalty_id")), '"updatedAt"')],
        ("crm", "tickets"): [("contact", _CRM_OWNER, '"updatedAt"')],
        ("crm", "feedback_submissions"): [("contact", _CRM_OWNER, '"updatedAt"')],
        **_RETURNING_KEYS,
    }


# (source, entity) -> SQL of (key_type, value, record time) rows of a raw batch (CRM: above)
_RETURNING_KEYS = {
    ("web", "events"): [
        ("contact", 'trim("userId")', '"timestamp"'),
        ("anon", '"anonymousId"', '"timestamp"'),
        ("email", WEB_EVENT_EMAIL, '"timestamp"'),
        ("phone", WEB_EVENT_PHONE, '"timestamp"')],
    ("pos", "transactions"): [
        ("loyalty", POS_LOYALTY, "business_date"),
        ("email", POS_EMAIL, "business_date"),
        ("phone", POS_PHONE, "business_date")],
}


def returning_requests(settings: Settings, logical_date: dt.date,
                       pseudo: pii.Pseudonymizer) -> list[ErasureRequest]:
    """Requests for records landed on ``logical_date`` that carry a key of an erased person
    and date from before that erasure. A key seen only in activity after its erasure does not
    trigger (the person came back: new data); once triggered, the erasure removes whatever
    the key links to, as any erasure does."""
    erased = erasure_log.erased_tokens(settings)
    if erased.empty:
        return []
    con = duck.connect(settings)
    try:
        pii.register(con, pseudo)
        con.register("erased", erased)
        found: set[tuple[str, str]] = set()
        for (source, entity), extractors in _returning_keys(settings).items():
            files = _today_batches(settings.lake_raw, source, entity, logical_date)
            if not files:
                continue
            read = parquet_sql(files)
            if source == "crm":  # batches landed before associations existed lack the column
                columns = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {read}").fetchall()}
                if "associations" not in columns:
                    read = f"(SELECT *, CAST(NULL AS VARCHAR) AS associations FROM {read})"
            selects = " UNION ALL ".join(
                f"SELECT '{kt}' AS key_type, {value} AS value, "
                f"try_cast({when} AS TIMESTAMPTZ) AS record_at FROM {read}"
                for kt, value, when in extractors)
            rows = con.execute(f"""
                WITH keyed AS (SELECT key_type, value, min(record_at) AS first_at FROM ({selects})
                               WHERE value IS NOT NULL GROUP BY key_type, value)
                SELECT DISTINCT k.key_type, k.value
                FROM keyed k JOIN erased e ON e.token = pii_token(k.key_type || ':' || k.value)
                WHERE k.first_at IS NULL OR k.first_at <= e.erased_at""").fetchall()
            found.update(rows)
    finally:
        con.close()
    return [ErasureRequest(kt, v, reason="returning") for kt, v in sorted(found)]


# --------------------------------------------------------------------------- the erasure

def _resolve(settings: Settings, requests: list[ErasureRequest], pseudo: pii.Pseudonymizer,
             force: bool, result: ErasureResult, refusals: list[dict]) -> list[Resolved]:
    resolved: list[Resolved] = []
    seen: set[str] = set()
    con = duck.connect(settings)
    resolver = None
    try:
        pii.register(con, pseudo)
        resolver = Resolver(settings, con)
        for request in requests:
            token = None
            try:
                token = pseudo.token(request.identity_key)
                if request.identity_key in seen:
                    continue  # already part of a person resolved in this batch
                keys = resolver.resolve(request, force=force)
            except ErasureRefused as exc:
                earlier = erasure_log.interrupted(settings, token) if token else None
                if earlier is not None and not earlier.empty:
                    # An erasure of this request died after purging the records that led to
                    # the person: what they named is gone, so purge again by the request's own
                    # key (idempotent where nothing is left), under the interrupted erasure's id.
                    keys = PersonKeys()
                    keys.add_identity_key(request.identity_key)
                    erasure_id = str(earlier["erasure_id"].iloc[0])
                    result.resumed.append(f"{erasure_id} (started {earlier['requested_at'].iloc[0]}, "
                                          "interrupted after its records were purged): resumed by "
                                          "the request's own key")
                    seen.add(request.identity_key)
                    resolved.append(Resolved(erasure_id, request, token, keys))
                    continue
                result.refused.append(f"{request.kind} ({request.reason}): {exc}")
                refusals.append({"request_kind": request.kind, "reason": request.reason,
                                 "request_token": token, "why": str(exc)})
                continue
            seen.update(keys.identity_keys())
            erasure_id = f"er-{uuid.uuid4().hex[:12]}"
            earlier = erasure_log.interrupted(settings, token)
            if not earlier.empty:  # the same request died mid-purge: carry on under its id
                erasure_id = str(earlier["erasure_id"].iloc[0])
                result.resumed.append(f"{erasure_id} (started {earlier['requested_at'].iloc[0]}, "
                                      "interrupted before it finished): resumed")
            resolved.append(Resolved(erasure_id, request, token, keys))
    finally:
        if resolver is not None:
            resolver.close()
        con.close()
    return resolved


def purge(settings: Settings, person: PersonKeys,
          result: ErasureResult) -> dict[tuple[str, str, str], int]:
    """Remove ``person`` from every file: lake, landing, warehouse (in place, compacted),
    publication, audiences, PostgreSQL. Returns the rows removed per raw/quarantine batch."""
    from customer360.privacy import audience

    needles = person.needles()

    def lake_step(step, lake: LakePurge) -> LakePurge:
        con = duck.connect(settings)
        try:
            pii.register(con, pii.pseudonymizer(settings))
            load_key_tables(con, person)
            return step(settings, con, needles, lake)
        finally:
            con.close()

    lake = lake_step(purge_lake, LakePurge())
    purge_landing(settings, needles, lake)
    lake.set_aside_removed = remove_set_aside(settings)
    result.warehouse = duck_purge.purge_warehouse(settings, person, needles)
    if kept_index_path(settings).exists():
        export_kept(settings)  # the copies a rebuild restores must not bring the person back
    result.compaction["warehouse"] = duck_purge.compact(settings.warehouse_path, settings)
    result.published = duck_purge.purge_publication(settings, person)
    result.audiences = audience.purge_audiences(settings, person)
    if settings.publish_postgres_dsn and settings.published_db.exists():
        from customer360.serve.postgres import publish_postgres

        result.postgres = publish_postgres(settings)
    lake_step(purge_request_source, lake)  # last: see lake_purge.REQUEST_SOURCE
    result.lake = lake.as_dict()
    batch_rows = dict(lake.batches)
    if batch_rows and state_db_path(settings).exists():
        # the manifests' checksums follow the rewritten batches (c360 doctor checks them)
        with StateStore(settings, "crm") as store:
            store.refresh_checksums(sorted({batch_id for _, _, batch_id in batch_rows}))
        backup_state(settings)  # a restored copy must not hold the checksums from before
    return batch_rows


def last_published_date(settings: Settings) -> dt.date | None:
    path = settings.publication_path
    if not path.exists():
        return None
    try:
        return dt.date.fromisoformat(json.loads(path.read_text())["logical_date"])
    except (ValueError, KeyError):
        return None


def _key_tokens(pseudo: pii.Pseudonymizer, r: Resolved) -> list[tuple[str, str]]:
    return [(pseudo.token(k), k.split(":", 1)[0]) for k in sorted(r.keys.identity_keys())]


# The rebuild after an erasure, given by the caller: customer360.pipeline.rebuild runs the
# DAG's own stages (privacy sits below the pipeline and never imports it).
Rebuild = Callable[[Settings, dt.date, str], dict]


def erase(settings: Settings, requests: list[ErasureRequest], *, rebuild: Rebuild | None = None,
          as_of: dt.date | None = None, force: bool = False, dry_run: bool = False,
          verify: bool = False, trigger: str = "cli") -> ErasureResult:
    """Erase the people named by ``requests``. With ``rebuild`` (``pipeline.rebuild``) the
    warehouse, ML and publication are rebuilt now (the CLI); without, the day's own stages do it
    (the DAG).
    Returns counts only; raises nothing for a request that names nobody (see ``refused``)."""
    started = time.monotonic()
    requested_at = dt.datetime.now(dt.timezone.utc)
    pseudo = pii.pseudonymizer(settings)
    result = ErasureResult()
    refusals: list[dict] = []
    resolved = _resolve(settings, requests, pseudo, force, result, refusals)
    if not dry_run:
        # a request that erased nothing is on record too (when it came, and why nothing)
        for refusal in refusals:
            audit.log_event(settings, "erasure_refused", refusal)
    result.erasures = [{"erasure_id": r.erasure_id, "reason": r.request.reason,
                        "request_kind": r.request.kind, "request_token": r.token,
                        "keys": r.keys.counts()} for r in resolved]
    if not resolved:
        result.seconds = time.monotonic() - started
        return result
    if dry_run and result.resumed:
        result.resumed = [m + " (a real run would)" for m in result.resumed]
    person = PersonKeys()
    for r in resolved:
        person.merge(r.keys)
    if dry_run:
        result.status = "dry run: nothing changed"
        result.seconds = time.monotonic() - started
        return result

    # On record before anything is purged: a crash from here on leaves a 'started' row (and
    # the tokens that catch the person's records coming back), and a rerun resumes it.
    for r in resolved:
        erasure_log.begin(settings, erasure_id=r.erasure_id, requested_at=requested_at,
                          reason=r.request.reason, request_kind=r.request.kind,
                          request_token=r.token, keys=r.keys.counts(),
                          key_tokens=_key_tokens(pseudo, r))
    batch_rows = purge(settings, person, result)
    result.status = "purged; the next pipeline run rebuilds the warehouse"
    compacted = False
    if rebuild is not None:
        as_of = as_of or last_published_date(settings)
        if as_of is None:
            result.status = "purged; nothing was published yet, so nothing to rebuild"
        else:
            try:
                result.rebuild = rebuild(settings, as_of, f"erasure__{resolved[0].erasure_id}")
                result.status = "complete"
            except Exception as exc:  # the publication was purged in place already
                # the message of a gate or dbt failure is masked/structural, never row data
                result.rebuild = {"failed": f"{type(exc).__name__}: {str(exc)[:300]}"}
                result.status = "purged; the rebuild or republish failed (the publication was purged in place)"
            result.compaction["warehouse_after_rebuild"] = duck_purge.compact(settings.warehouse_path, settings)
            compacted = True
    if verify:
        from customer360.privacy.scan import verify_erased

        result.verification = verify_erased(settings, person)
    purged = {"lake": result.lake, "warehouse": result.warehouse, "published": result.published,
              "audiences": result.audiences,
              "postgres": bool(result.postgres), "rebuilt": result.status == "complete",
              "batch": len(resolved), "trigger": trigger}
    for i, r in enumerate(resolved):
        tokens = _key_tokens(pseudo, r)
        erasure_log.record(settings, erasure_id=r.erasure_id, requested_at=requested_at,
                           reason=r.request.reason, request_kind=r.request.kind,
                           request_token=r.token, status=result.status, keys=r.keys.counts(),
                           purged=purged, key_tokens=tokens,
                           # one purge served the whole batch: its rows are counted once
                           batch_rows=batch_rows if i == 0 else None)
    if compacted:
        erasure_log.mark_compacted(settings, [r.erasure_id for r in resolved],
                                   {"trigger": trigger})
    result.seconds = time.monotonic() - started
    log.info("erasure of %d person(s) (%s): %d raw/quarantine row(s), %d landing line(s), "
             "%d warehouse row(s), %d published row(s) removed; %s",
             len(resolved), trigger, sum(result.lake["raw_rows"].values())
             + sum(result.lake["quarantine_rows"].values()), result.lake["landing_lines"],
             sum(result.warehouse.values()), sum(result.published.get("tables", {}).values()),
             result.status)
    return result
