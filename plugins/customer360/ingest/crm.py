"""CRM extractor: pages the CRM REST API (docs/sources.md section 1) into the raw zone, incrementally.

Per object (``contacts``, ``tickets``, ``feedback_submissions``) a watermark remembers the
latest ``updatedAt`` landed and which records were landed at exactly that instant. The next
request asks ``updatedAfter=<watermark>`` (inclusive, so a record sharing the watermark's
instant but not yet seen is never lost) and skips the ones already landed (so none is
duplicated). Every version a run sees is landed: the raw zone keeps history, and
``archived: true`` versions are the erasure signals staging acts on.

Idempotent per logical date D: only records with ``updatedAt`` < D+1 00:00 UTC are landed and
paging stops at the first one past that bound (results come ordered), so rerunning D lands
nothing new and the next date picks up the rest.

Resumable: every few pages the rows become one raw batch, committed together with the
watermark through the state store's write-ahead step (:mod:`customer360.ingest.state`:
pending row -> files -> one transaction moving the watermark); a run killed at any point is
rolled forward or back on the next start, then continues from its last committed page.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode

import pandas as pd
import pyarrow as pa
import requests
import tenacity

from customer360.core import duck
from customer360.ingest import raw_zone as lake
from customer360.ingest.errors import ExtractError
from customer360.ingest.raw_zone import Reconciliation
from customer360.ingest.state import Pending, StateStore, source_lock
from customer360.core.settings import CRM_CONNECTION_ID, CrmConnection, Settings, crm_connection

log = logging.getLogger(__name__)

OBJECTS = ("contacts", "tickets", "feedback_submissions")
SOURCE = "crm"
RAW_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("createdAt", pa.string()),
    ("updatedAt", pa.string()),
    ("archived", pa.bool_()),
    ("properties", pa.string()),
    ("_source_file", pa.string()),
    ("_source_line", pa.int64()),
])
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class CrmApiError(RuntimeError):
    """The CRM kept failing after every retry (a later task retry may well succeed)."""


# --------------------------------------------------------------------------- options

@dataclass(frozen=True)
class CrmExtractOptions:
    """Retry and batching knobs, from :class:`Settings` (``C360_CRM_*``; defaults and meaning
    in settings.KNOBS): the defaults suit a real API, tests shrink the waits."""

    max_attempts: int  # per request, all retryable failures together
    backoff_initial: float  # seconds, doubled each retry (with jitter) up to backoff_max
    backoff_max: float
    max_retry_after: float  # never sleep longer than this on one Retry-After
    pages_per_batch: int  # pages per raw batch (and per commit of the watermark)
    timeout: float  # read timeout of one request

    @classmethod
    def from_settings(cls, settings: Settings) -> "CrmExtractOptions":
        return cls(
            max_attempts=settings.crm_max_attempts,
            backoff_initial=settings.crm_backoff_seconds,
            backoff_max=settings.crm_backoff_max_seconds,
            max_retry_after=settings.crm_max_retry_after_seconds,
            pages_per_batch=settings.crm_pages_per_batch,
            timeout=settings.crm_timeout_seconds,
        )


# --------------------------------------------------------------------------- time

def parse_instant_us(value: Any) -> int | None:
    """An ISO-8601 instant (naive means UTC, as the contract says) in µs; None if unparseable."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return (parsed - _EPOCH) // dt.timedelta(microseconds=1)


def format_instant_us(us: int) -> str:
    value = _EPOCH + dt.timedelta(microseconds=us)
    spec = "milliseconds" if us % 1000 == 0 else "microseconds"
    return value.isoformat(timespec=spec).replace("+00:00", "Z")


def _day_end_us(logical_date: dt.date) -> int:
    """D+1 00:00 UTC: the first instant that belongs to a later logical date."""
    end = dt.datetime.combine(logical_date + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    return (end - _EPOCH) // dt.timedelta(microseconds=1)


# --------------------------------------------------------------------------- HTTP

class _RateLimited(Exception):
    def __init__(self, retry_after: float | None) -> None:
        super().__init__(f"429 Too Many Requests (Retry-After {retry_after})")
        self.retry_after = retry_after


class _ServerError(Exception):
    pass


class _TruncatedPage(Exception):
    pass


_RETRYABLE = (_RateLimited, _ServerError, _TruncatedPage, requests.ConnectionError,
              requests.Timeout, requests.exceptions.ChunkedEncodingError)


def _retry_after_seconds(header: str | None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date (RFC 9110)."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


class _WaitRetryAfterOr(tenacity.wait.wait_base):
    """Sleep what a 429's Retry-After asks (capped); otherwise the fallback backoff."""

    def __init__(self, fallback: tenacity.wait.wait_base, cap: float) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, _RateLimited) and exc.retry_after is not None:
            return min(exc.retry_after, self.cap)
        return self.fallback(retry_state)


class CrmClient:
    """GETs one page at a time, retrying what a retry can fix; the token stays in the session."""

    def __init__(self, conn: CrmConnection, options: CrmExtractOptions) -> None:
        self.conn = conn
        self.options = options
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {conn.token}"
        self.session.headers["Accept"] = "application/json"

    def close(self) -> None:
        self.session.close()

    def get_page(self, obj: str, params: dict[str, Any]) -> dict:
        opts = self.options
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_RETRYABLE),
            wait=_WaitRetryAfterOr(
                tenacity.wait_exponential_jitter(multiplier=opts.backoff_initial,
                                                 max=opts.backoff_max, jitter=opts.backoff_initial),
                cap=opts.max_retry_after),
            stop=tenacity.stop_after_attempt(opts.max_attempts),
            before_sleep=lambda rs: log.warning(
                "CRM %s: %s; retry %d/%d in %.2fs", obj, _describe(rs.outcome.exception()),
                rs.attempt_number, opts.max_attempts - 1, rs.next_action.sleep),
            reraise=True,
        )
        try:
            return retrying(self._get_once, obj, params)
        except _RETRYABLE as exc:
            raise CrmApiError(f"CRM API at {self.conn.base_url} still failing for {obj} after "
                              f"{opts.max_attempts} attempts: {_describe(exc)}") from None

    def _get_once(self, obj: str, params: dict[str, Any]) -> dict:
        resp = self.session.get(f"{self.conn.base_url}/crm/v3/objects/{obj}", params=params,
                                timeout=(10, self.options.timeout))
        status = resp.status_code
        if status == 401:
            raise ExtractError(
                f"CRM API at {self.conn.base_url} rejected the token from {self.conn.source} "
                f"(401); check C360_CRM_TOKEN or the Airflow connection {CRM_CONNECTION_ID}")
        if status == 429:
            raise _RateLimited(_retry_after_seconds(resp.headers.get("Retry-After")))
        if status >= 500 or status == 408:
            raise _ServerError(f"HTTP {status}")
        if status != 200:
            raise ExtractError(f"CRM API at {self.conn.base_url} answered {status} for {obj}: "
                               f"{resp.text[:200]}")
        try:
            payload = resp.json()
        except ValueError:
            raise _TruncatedPage("page body is not complete JSON") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
            raise ExtractError(f"CRM API at {self.conn.base_url} sent a {obj} page without a "
                               "results list")
        return payload


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, requests.RequestException):
        return f"{type(exc).__name__}"  # requests' messages can be long; the type says enough
    return str(exc)


# --------------------------------------------------------------------------- state

@dataclass
class WatermarkState:
    """What one object has landed so far, and a batch caught between its files and this state."""

    object: str
    watermark_us: int | None = None
    keys_at_watermark: set[str] = field(default_factory=set)
    pending: dict | None = None

    def advance(self, ts_us: int, key: str) -> None:
        if self.watermark_us is None or ts_us > self.watermark_us:
            self.watermark_us = ts_us
            self.keys_at_watermark = {key}
        elif ts_us == self.watermark_us:
            self.keys_at_watermark.add(key)

    def already_landed(self, ts_us: int, key: str) -> bool:
        return ts_us == self.watermark_us and key in self.keys_at_watermark


def _read_state(store: StateStore, obj: str) -> WatermarkState:
    mark = store.watermark(obj)
    pending = store.pending(obj)
    return WatermarkState(obj, mark.watermark_us, set(mark.keys_at_watermark),
                          pending=pending[0].payload | {"batch_id": pending[0].batch_id}
                          if pending else None)


def load_state(settings: Settings, obj: str) -> WatermarkState:
    """One object's committed watermark (and a batch left pending), from the state store."""
    with StateStore(settings, SOURCE) as store:
        return _read_state(store, obj)


def _finish_pending(settings: Settings, store: StateStore, obj: str) -> None:
    """Complete or undo a batch a killed run left between its files and its state."""
    for pending in store.pending(obj):
        if pending.outputs_exist():
            if not any(r.get("batch_id") == pending.batch_id
                       for r in lake.read_reconciliation(settings)):
                lake.record_reconciliation(settings,
                                           Reconciliation(**pending.payload["reconciliation"]))
            store.commit_watermark(pending)
            log.warning("CRM %s: completed batch %s left by an interrupted run",
                        obj, pending.batch_id)
        else:
            store.discard(pending)
            log.warning("CRM %s: discarded batch %s left half-written by an interrupted run",
                        obj, pending.batch_id)


# --------------------------------------------------------------------------- records

def _record_key(record_id: str | None, raw_text: str) -> str:
    # A record without an id still needs a key so an inclusive re-read does not quarantine it twice.
    return record_id if record_id else "raw-md5:" + hashlib.md5(raw_text.encode()).hexdigest()


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _archived(value: Any) -> tuple[bool | None, bool]:
    """(value, ok): booleans as sent; "true"/"false" strings tolerated."""
    if value is None or isinstance(value, bool):
        return value, True
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true", True
    return None, False


@dataclass
class _Batch:
    """Rows of the pages since the last commit."""

    rows: list[dict] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)
    skipped: int = 0
    pages: int = 0
    first_source_file: str | None = None

    def __bool__(self) -> bool:
        return bool(self.rows or self.quarantine)


class _ObjectExtract:
    """Pages one object from its watermark to the end of the logical date."""

    def __init__(self, settings: Settings, client: CrmClient, obj: str, logical_date: dt.date,
                 options: CrmExtractOptions) -> None:
        self.settings = settings
        self.client = client
        self.obj = obj
        self.logical_date = logical_date
        self.options = options
        self.bound_us = _day_end_us(logical_date)
        self.recs: list[Reconciliation] = []

    def run(self) -> list[Reconciliation]:
        with source_lock(self.settings.state_dir, SOURCE, self.obj), \
                StateStore(self.settings, SOURCE) as self.store:
            _finish_pending(self.settings, self.store, self.obj)
            state = _read_state(self.store, self.obj)
            self._page_through(state)
        if not self.recs:
            since = "the beginning" if state.watermark_us is None else format_instant_us(state.watermark_us)
            self.recs.append(Reconciliation(
                source=SOURCE, entity=self.obj, batch_id="", load_date=self.logical_date.isoformat(),
                source_file=None, read=0, landed=0, quarantined=0,
                note=f"nothing new since {since} before {format_instant_us(self.bound_us)}"))
        return self.recs

    def _page_through(self, state: WatermarkState) -> None:
        params: dict[str, Any] = {"limit": self.settings.crm_page_size}
        if state.watermark_us is not None:
            params["updatedAfter"] = format_instant_us(state.watermark_us)
        batch = _Batch()
        page_no = 0
        while True:
            page_no += 1
            source_file = f"{SOURCE}:{self.obj}"
            query = {k: params[k] for k in ("updatedAfter", "after") if k in params}
            if query:
                source_file += "?" + urlencode(query)
            payload = self.client.get_page(self.obj, params)
            results = payload["results"]
            past_bound = self._take_page(state, batch, results, source_file)
            batch.pages += 1
            batch.first_source_file = batch.first_source_file or source_file
            after = ((payload.get("paging") or {}).get("next") or {}).get("after")
            log.info("CRM %s page %d: %d results, %d new so far in this batch, watermark %s",
                     self.obj, page_no, len(results), len(batch.rows) + len(batch.quarantine),
                     "-" if state.watermark_us is None else format_instant_us(state.watermark_us))
            if past_bound or not after:
                break
            if batch.pages >= self.options.pages_per_batch:
                self._commit(state, batch)
                batch = _Batch()
            params["after"] = after
        self._commit(state, batch)

    def _take_page(self, state: WatermarkState, batch: _Batch, results: list, source_file: str) -> bool:
        """Sort a page's records into rows, quarantine and re-reads; True once past the date."""
        for position, record in enumerate(results, start=1):
            raw_text = json.dumps(record, ensure_ascii=False)
            if not isinstance(record, dict):
                batch.quarantine.append(self._reject(source_file, position, None,
                                                     "result is not a JSON object", raw_text))
                continue
            record_id = _as_text(record.get("id"))
            record_id = record_id.strip() if record_id and record_id.strip() else None
            ts_us = parse_instant_us(record.get("updatedAt"))
            if ts_us is not None and ts_us >= self.bound_us:
                return True  # ordered by updatedAt: the rest belongs to later dates
            key = _record_key(record_id, raw_text)
            if ts_us is not None and state.already_landed(ts_us, key):
                batch.skipped += 1
                continue
            archived, archived_ok = _archived(record.get("archived"))
            reason = ("missing id" if record_id is None
                      else "missing or unparseable updatedAt" if ts_us is None
                      else None if archived_ok else "archived is not a boolean")
            if reason:
                batch.quarantine.append(self._reject(source_file, position, record_id, reason, raw_text))
            else:
                batch.rows.append({
                    "id": record_id,
                    "createdAt": _as_text(record.get("createdAt")),
                    "updatedAt": record.get("updatedAt"),
                    "archived": archived,
                    "properties": None if record.get("properties") is None
                    else json.dumps(record["properties"], ensure_ascii=False),
                    "_source_file": source_file,
                    "_source_line": position,
                })
            if ts_us is not None:
                state.advance(ts_us, key)
        return False

    @staticmethod
    def _reject(source_file: str, position: int, record_id: str | None, reason: str,
                raw_text: str) -> dict:
        return {"source_file": source_file, "source_line": position, "record_key": record_id,
                "reason": reason, "raw_text": raw_text}

    def _commit(self, state: WatermarkState, batch: _Batch) -> None:
        """Land a batch and move the watermark: pending state, files, reconciliation, state."""
        if not batch:
            return
        batch_id = lake.new_batch_id(SOURCE, self.obj)
        rec = Reconciliation(
            source=SOURCE, entity=self.obj, batch_id=batch_id,
            load_date=self.logical_date.isoformat(), source_file=batch.first_source_file,
            read=len(batch.rows) + len(batch.quarantine), landed=len(batch.rows),
            quarantined=len(batch.quarantine),
            note=f"{batch.pages} page(s); {batch.skipped} re-read at the watermark skipped")
        # The in-memory state already includes this batch; the store keeps the old watermark
        # until the batch's files exist, with the new one in the batch's pending row.
        outputs = {}
        if rec.landed:
            outputs["raw"] = lake.batch_path(self.settings.lake_raw, SOURCE, self.obj,
                                             self.logical_date, batch_id)
        if rec.quarantined:
            outputs["quarantine"] = lake.batch_path(self.settings.quarantine, SOURCE, self.obj,
                                                    self.logical_date, batch_id)
        pending: Pending = self.store.begin(batch_id, self.obj, outputs, {
            "load_date": rec.load_date, "landed": rec.landed, "quarantined": rec.quarantined,
            "reconciliation": asdict(rec), "watermark_us": state.watermark_us,
            "keys_at_watermark": sorted(state.keys_at_watermark)})
        lake.write_raw_batch(self.settings, pa.Table.from_pylist(batch.rows, schema=RAW_SCHEMA),
                             source=SOURCE, entity=self.obj, load_date=self.logical_date,
                             batch_id=batch_id)
        lake.write_quarantine(self.settings, batch.quarantine, source=SOURCE, entity=self.obj,
                              load_date=self.logical_date, batch_id=batch_id)
        lake.record_reconciliation(self.settings, rec)
        self.store.commit_watermark(pending)
        self.recs.append(rec)
        log.info("CRM %s: committed batch %s (%d landed, %d quarantined), watermark %s",
                 self.obj, batch_id, rec.landed, rec.quarantined,
                 format_instant_us(state.watermark_us) if state.watermark_us is not None else "-")


# --------------------------------------------------------------------------- entry points

def extract_crm(settings: Settings, logical_date: dt.date, *, objects: tuple[str, ...] = OBJECTS,
                options: CrmExtractOptions | None = None) -> list[Reconciliation]:
    """Land every CRM object's new versions up to the end of ``logical_date`` (UTC)."""
    conn = crm_connection()
    options = options or CrmExtractOptions.from_settings(settings)
    client = CrmClient(conn, options)
    log.info("CRM extract for %s from %s (%s)", logical_date, conn.base_url, conn.source)
    try:
        recs: list[Reconciliation] = []
        for obj in objects:
            recs.extend(_ObjectExtract(settings, client, obj, logical_date, options).run())
        return recs
    finally:
        client.close()


def read_raw_crm(settings: Settings, obj: str) -> pd.DataFrame:
    """Every row landed for one CRM object, across batches (with ``load_date``)."""
    folder = settings.lake_raw / SOURCE / obj
    if not any(folder.glob("load_date=*/*.parquet")):
        return pd.DataFrame(columns=["id", "createdAt", "updatedAt", "archived", "properties",
                                     *lake.META_COLUMNS, "load_date"])
    con = duck.connect(settings)
    try:
        return con.execute(
            "SELECT * FROM read_parquet(?, hive_partitioning = true, union_by_name = true) "
            "ORDER BY updatedAt, id, _loaded_at",
            [str(folder / "load_date=*" / "*.parquet")],
        ).to_arrow_table().to_pandas()
    finally:
        con.close()
