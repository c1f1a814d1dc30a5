"""CRM extractor: HubSpot's CRM API v3 (docs/sources.md section 1) into the raw zone.

Per object (``contacts``, ``tickets``, ``feedback_submissions``), each run:

1. **First full load** (no state yet): the list endpoint, ``GET /crm/v3/objects/{object}``
   ordered by id, with the explicit property list of the property map
   (:mod:`customer360.ingest.crm_properties`; HubSpot sends only a few default properties
   otherwise). The listing's ``after`` cursor is committed with each batch, so a killed load
   resumes where it stopped. When it ends, the object turns incremental from the latest
   last-modified time it saw (never later than the moment the listing started).
2. **Incremental**: the search endpoint, ``POST /crm/v3/objects/{object}/search``, filtered
   ``last-modified GTE cursor AND LT D+1 00:00 UTC``, sorted ascending on it, ``limit`` 200.
   It never pages with ``after`` (one query stops at 10,000 results): each page restarts the
   query from the last modified time it saw (*keyset* restarts), so a day of any size reads in
   pages of 200 and the few records at the boundary instant are read twice and skipped. A page
   whose records all share one millisecond is *drained* at that instant: that millisecond and
   ``hs_object_id GT`` the last id, sorted by id, until the instant is exhausted (ids strictly
   increase: no loop, skip or duplicate however many records share it), then the cursor moves
   one millisecond on. Search is eventually consistent, so the window starts a lookback
   (``C360_CRM_LOOKBACK_SECONDS``) before the watermark; the versions re-read there are known
   by (id, last-modified ms), remembered for the lookback window with the watermark, and
   skipped. The watermark never passes this host's clock minus the lookback (a CRM clock
   ahead of ours, or a bogus last-modified time, would otherwise make the next search skip
   everything in between); one found past it, left by an earlier run, is brought back.
   A version modified after this host's clock plus ``C360_CRM_FUTURE_TOLERANCE_SECONDS`` is
   landed at once, ``_modified_in_future`` true, counted in the batch's reconciliation note,
   without moving the watermark; one also past the date's end is found by a search of its
   own each run (:meth:`_ObjectExtract._search_future`), never left to a date to come.
3. **Archived records**, every run: the list endpoint with ``archived=true``; each
   (id, archivedAt) not landed before is landed with ``archived`` and ``archivedAt``
   (deleted contacts are how erasure requests arrive, :mod:`customer360.privacy.erasure`).
4. **Associations** of tickets and feedback submissions to contacts: the v4 batch read,
   ``POST /crm/v4/associations/{object}/contacts/batch/read``, up to 1,000 ids a call, for the
   rows of each batch, kept as ``{"contacts": [ids]}`` in the raw ``associations`` column.

Idempotent per logical date D: only versions modified before D+1 00:00 UTC are landed (the
search says so in its filter; the listings skip later ones, which the next date's search
finds), so rerunning D lands nothing new.

HTTP: every request has a timeout; 429 (waiting what ``Retry-After`` says, else 1 s for
search's secondly limit and 10 s for the ten-secondly one), 5xx, timeouts, dropped connections
and bodies cut short are retried with backoff (``C360_CRM_MAX_ATTEMPTS`` in all); 401, 403
and 400 fail at once naming the object, the endpoint and HubSpot's category and message. A
client-side limiter keeps search under ``C360_CRM_SEARCH_PER_SECOND`` and everything else
under ``C360_CRM_REQUESTS_PER_TEN_SECONDS``. Every loop is bounded: a cursor or an id that
does not advance, a record outside the filter asked for, or more than ``C360_CRM_MAX_PAGES``
requests for one object in one run fail the task with :class:`CrmApiError`.

Resumable: every few pages the rows become one raw batch, committed together with the
object's state (watermark, versions seen, cursor) through the state store's write-ahead step
(:mod:`customer360.ingest.state`: pending row -> files -> one transaction moving the state);
a run killed at any point is rolled forward or back on the next start, then continues from
its last committed page.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
import logging
import random
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa
import requests
import tenacity

from customer360.core import duck
from customer360.core.settings import CRM_CONNECTION_ID, CrmConnection, Settings, crm_connection
from customer360.ingest import raw_zone as lake
from customer360.ingest.crm_properties import ObjectProperties, load_property_map
from customer360.ingest.errors import ExtractError
from customer360.ingest.raw_zone import Reconciliation
from customer360.ingest.state import Pending, StateStore, iso_us, source_lock

log = logging.getLogger(__name__)

OBJECTS = ("contacts", "tickets", "feedback_submissions")
SOURCE = "crm"
LIST_MAX_LIMIT = 100  # HubSpot's list endpoint
SEARCH_MAX_LIMIT = 200  # HubSpot's search endpoint
ASSOCIATIONS_MAX_INPUTS = 1000  # HubSpot's v4 batch read
NO_ASSOCIATIONS = "crm.associations.NO_ASSOCIATIONS_FOUND"
RAW_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("createdAt", pa.string()),
    ("updatedAt", pa.string()),
    ("archived", pa.bool_()),
    ("archivedAt", pa.string()),
    ("properties", pa.string()),
    ("associations", pa.string()),
    # The version's last-modified time was later than the extraction's clock allows.
    ("_modified_in_future", pa.bool_()),
    ("_source_file", pa.string()),
    ("_source_line", pa.int64()),
])
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class CrmApiError(RuntimeError):
    """The CRM kept failing after every retry, or misbehaved (a cursor that does not advance,
    pages that never end): the task fails; a later retry may well succeed."""


# --------------------------------------------------------------------------- options

@dataclass(frozen=True)
class CrmExtractOptions:
    """Retry, paging and pacing knobs, from :class:`Settings` (``C360_CRM_*``; defaults and
    meaning in settings.KNOBS): the defaults suit HubSpot, tests shrink the waits."""

    max_attempts: int  # per request, all retryable failures together
    backoff_initial: float  # seconds, doubled each retry (with jitter) up to backoff_max
    backoff_max: float
    max_retry_after: float  # never sleep longer than this on one 429
    pages_per_batch: int  # pages per raw batch (and per commit of the state)
    timeout: float  # read timeout of one request
    list_page_size: int = LIST_MAX_LIMIT
    search_page_size: int = SEARCH_MAX_LIMIT
    lookback_seconds: float = 600.0
    future_tolerance_seconds: float = 300.0
    search_per_second: float = 4.0  # 0: no client-side limit
    requests_per_ten_seconds: float = 90.0  # 0: no client-side limit
    max_pages: int = 100_000  # requests for one object in one run

    @classmethod
    def from_settings(cls, settings: Settings) -> "CrmExtractOptions":
        return cls(
            max_attempts=settings.crm_max_attempts,
            backoff_initial=settings.crm_backoff_seconds,
            backoff_max=settings.crm_backoff_max_seconds,
            max_retry_after=settings.crm_max_retry_after_seconds,
            pages_per_batch=settings.crm_pages_per_batch,
            timeout=settings.crm_timeout_seconds,
            list_page_size=min(settings.crm_page_size, LIST_MAX_LIMIT),
            search_page_size=min(settings.crm_search_page_size, SEARCH_MAX_LIMIT),
            lookback_seconds=settings.crm_lookback_seconds,
            future_tolerance_seconds=settings.crm_future_tolerance_seconds,
            search_per_second=settings.crm_search_per_second,
            requests_per_ten_seconds=settings.crm_requests_per_ten_seconds,
            max_pages=settings.crm_max_pages,
        )

    @property
    def lookback_ms(self) -> int:
        return int(round(self.lookback_seconds * 1000))

    @property
    def future_tolerance_ms(self) -> int:
        return int(round(self.future_tolerance_seconds * 1000))


def wall_clock_ms() -> int:
    """This host's clock: what the watermark and "in the future" are measured against (one
    place, so a test can skew it against the CRM's)."""
    return int(time.time() * 1000)


# --------------------------------------------------------------------------- time

def parse_instant_us(value: Any) -> int | None:
    """An ISO-8601 instant (naive means UTC) in µs; None if unparseable."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return (parsed - _EPOCH) // dt.timedelta(microseconds=1)


def parse_instant_ms(value: Any) -> int | None:
    """An ISO-8601 instant, or epoch milliseconds as text (HubSpot sends both), in ms."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    us = parse_instant_us(value)
    return None if us is None else us // 1000


def format_instant_us(us: int) -> str:
    return iso_us(us)


def format_ms(ms: int | None) -> str:
    return "-" if ms is None else format_instant_us(ms * 1000)


def _day_end_us(logical_date: dt.date) -> int:
    """D+1 00:00 UTC: the first instant that belongs to a later logical date."""
    end = dt.datetime.combine(logical_date + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    return (end - _EPOCH) // dt.timedelta(microseconds=1)


def _id_order(record_id: str) -> tuple[int, int, str]:
    """HubSpot ids are numbers written as text: compare them as numbers."""
    return (0, int(record_id), "") if record_id.isdigit() else (1, 0, record_id)


# --------------------------------------------------------------------------- HTTP

class _RateLimited(Exception):
    def __init__(self, wait: float | None, detail: str) -> None:
        super().__init__(f"429 Too Many Requests ({detail})")
        self.wait = wait


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
    """Sleep what a 429 asks (capped); otherwise the fallback backoff."""

    def __init__(self, fallback: tenacity.wait.wait_base, cap: float) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, _RateLimited) and exc.wait is not None:
            return min(exc.wait, self.cap)
        return self.fallback(retry_state)


class _SlidingLimit:
    """At most ``count`` requests in any ``per`` seconds (0: unlimited); thread-safe."""

    def __init__(self, count: float, per: float) -> None:
        self.count = int(count) if count >= 1 else (1 if count > 0 else 0)
        self.per = per if count >= 1 else (per / count if count > 0 else per)
        self.sent: deque[float] = deque()
        self.lock = threading.Lock()

    def acquire(self) -> None:
        if not self.count:
            return
        with self.lock:
            while True:
                now = time.monotonic()
                while self.sent and now - self.sent[0] >= self.per:
                    self.sent.popleft()
                if len(self.sent) < self.count:
                    self.sent.append(now)
                    return
                time.sleep(self.per - (now - self.sent[0]) + 0.001)


_LIMITS: dict[tuple[str, float, float], _SlidingLimit] = {}
_LIMITS_LOCK = threading.Lock()


def _shared_limit(base_url: str, count: float, per: float) -> _SlidingLimit:
    """One limiter per API and rate in this process: HubSpot counts per account, so clients
    following one another (one task after another) share what was sent."""
    with _LIMITS_LOCK:
        return _LIMITS.setdefault((base_url, count, per), _SlidingLimit(count, per))


def _error_detail(resp: requests.Response) -> str:
    """HubSpot's error body (category, message, correlationId) in one line."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("category", "subCategory") if body.get(k)]
        message = body.get("message")
        text = " ".join(parts) + (f": {message}" if message else "")
        corr = body.get("correlationId") or resp.headers.get("x-hubspot-correlation-id")
        return text + (f" (correlationId {corr})" if corr else "")
    return (resp.text or "").strip()[:200] or "(no body)"


@dataclass
class RequestCounts:
    """Requests this client sent (every attempt), by endpoint kind."""

    list: int = 0
    search: int = 0
    associations: int = 0
    retries: int = 0


class CrmClient:
    """One request at a time, retrying what a retry can fix; the token stays in the session."""

    def __init__(self, conn: CrmConnection, options: CrmExtractOptions) -> None:
        self.conn = conn
        self.options = options
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {conn.token}"
        self.session.headers["Accept"] = "application/json"
        self.search_limit = _shared_limit(conn.base_url, options.search_per_second, 1.0)
        self.other_limit = _shared_limit(conn.base_url, options.requests_per_ten_seconds, 10.0)
        self.counts = RequestCounts()

    def close(self) -> None:
        self.session.close()

    # --- the endpoints -------------------------------------------------------------------
    def list_page(self, obj: str, properties: list[str], *, archived: bool,
                  after: str | None, limit: int) -> dict:
        params: dict[str, Any] = {"limit": limit, "properties": ",".join(properties),
                                  "archived": "true" if archived else "false"}
        if after is not None:
            params["after"] = after
        return self._call("list", obj, "GET", f"/crm/v3/objects/{obj}", params=params)

    def search(self, obj: str, body: dict) -> dict:
        page = self._call("search", obj, "POST", f"/crm/v3/objects/{obj}/search", body=body)
        return page

    def associations(self, obj: str, ids: list[str], to: str = "contacts") -> dict[str, list[str]]:
        """{from id: [to ids]} for ``ids`` (at most 1,000 a call; per-id paging followed)."""
        found: dict[str, list[str]] = {i: [] for i in ids}
        path = f"/crm/v4/associations/{obj}/{to}/batch/read"
        for start in range(0, len(ids), ASSOCIATIONS_MAX_INPUTS):
            inputs: list[dict] = [{"id": i} for i in ids[start:start + ASSOCIATIONS_MAX_INPUTS]]
            rounds = 0
            while inputs:
                rounds += 1
                if rounds > self.options.max_pages:
                    raise CrmApiError(f"HubSpot POST {path} ({obj}): association pages never end "
                                      f"(more than {self.options.max_pages} rounds)")
                payload = self._call("associations", obj, "POST", path, body={"inputs": inputs},
                                     ok=(200, 207))
                asked = {i["id"]: i.get("after") for i in inputs}
                inputs = []
                for result in payload.get("results") or []:
                    from_id = str((result.get("from") or {}).get("id"))
                    if from_id not in asked:
                        raise CrmApiError(f"HubSpot POST {path} ({obj}) answered for id "
                                          f"{from_id!r}, which was not asked for")
                    found[from_id].extend(str(t.get("toObjectId")) for t in result.get("to") or [])
                    after = ((result.get("paging") or {}).get("next") or {}).get("after")
                    if after:
                        if after == asked[from_id]:
                            raise CrmApiError(f"HubSpot POST {path} ({obj}): the association "
                                              f"cursor of id {from_id} did not advance")
                        inputs.append({"id": from_id, "after": after})
                for error in payload.get("errors") or []:
                    if error.get("subCategory") != NO_ASSOCIATIONS:
                        raise ExtractError(
                            f"HubSpot POST {path} ({obj}) failed for some ids: "
                            f"{error.get('category')} {error.get('subCategory') or ''}: "
                            f"{error.get('message')}")
        return {i: sorted(set(v), key=_id_order) for i, v in found.items()}

    # --- one call, retried ---------------------------------------------------------------
    def _call(self, kind: str, obj: str, method: str, path: str, *, params: dict | None = None,
              body: dict | None = None, ok: tuple[int, ...] = (200,)) -> dict:
        opts = self.options
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_RETRYABLE),
            wait=_WaitRetryAfterOr(
                tenacity.wait_exponential_jitter(multiplier=opts.backoff_initial,
                                                 max=opts.backoff_max, jitter=opts.backoff_initial),
                cap=opts.max_retry_after),
            stop=tenacity.stop_after_attempt(opts.max_attempts),
            before_sleep=self._before_sleep(kind, obj),
            reraise=True,
        )
        try:
            return retrying(self._once, kind, obj, method, path, params, body, ok)
        except _RETRYABLE as exc:
            raise CrmApiError(f"HubSpot {method} {path} ({obj}) at {self.conn.base_url} still "
                              f"failing after {opts.max_attempts} attempts: {_describe(exc)}"
                              ) from None

    def _before_sleep(self, kind: str, obj: str):
        def log_retry(rs: tenacity.RetryCallState) -> None:
            self.counts.retries += 1
            log.warning("CRM %s %s: %s; retry %d/%d in %.2fs", kind, obj,
                        _describe(rs.outcome.exception()), rs.attempt_number,
                        self.options.max_attempts - 1, rs.next_action.sleep)
        return log_retry

    def _once(self, kind: str, obj: str, method: str, path: str, params: dict | None,
              body: dict | None, ok: tuple[int, ...]) -> dict:
        (self.search_limit if kind == "search" else self.other_limit).acquire()
        setattr(self.counts, kind, getattr(self.counts, kind) + 1)
        url = f"{self.conn.base_url}{path}"
        timeout = (min(10.0, self.options.timeout), self.options.timeout)
        if method == "GET":
            resp = self.session.get(url, params=params, timeout=timeout)
        else:
            resp = self.session.post(url, json=body, timeout=timeout)
        status = resp.status_code
        where = f"HubSpot {method} {path} ({obj}) at {self.conn.base_url}"
        if status in (401, 403):
            hint = (f"check C360_CRM_TOKEN or the Airflow connection {CRM_CONNECTION_ID} "
                    f"(the token came from the {self.conn.source})" if status == 401 else
                    "the private app lacks a scope this object needs (README, "
                    "\"Connecting a real HubSpot portal\")")
            raise ExtractError(f"{where} answered {status}: {_error_detail(resp)}; {hint}")
        if status == 429:
            raise _RateLimited(self._rate_limit_wait(kind, resp), _error_detail(resp))
        if status >= 500 or status in (408, 423):
            raise _ServerError(f"HTTP {status}")
        if status not in ok:
            raise ExtractError(f"{where} answered {status}: {_error_detail(resp)}")
        try:
            payload = resp.json()
        except ValueError:
            raise _TruncatedPage("the body is not complete JSON") from None
        if not isinstance(payload, dict) or (kind != "associations"
                                             and not isinstance(payload.get("results"), list)):
            raise _TruncatedPage("the body has no results list")
        return payload

    @staticmethod
    def _rate_limit_wait(kind: str, resp: requests.Response) -> float | None:
        """Retry-After when sent; else what HubSpot's own clients wait for the policy."""
        wait = _retry_after_seconds(resp.headers.get("Retry-After"))
        if wait is not None:
            return wait
        try:
            policy = str((resp.json() or {}).get("policyName") or "")
        except (ValueError, AttributeError):
            policy = ""
        if policy.upper() == "TEN_SECONDLY_ROLLING":
            return 10.0
        if kind == "search" or policy.upper() == "SECONDLY":
            return 1.0
        return None  # the backoff


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out (no answer within C360_CRM_TIMEOUT_SECONDS)"
    if isinstance(exc, requests.RequestException):
        return f"{type(exc).__name__}"  # requests' messages can be long; the type says enough
    return str(exc)


# --------------------------------------------------------------------------- state

@dataclass
class WatermarkState:
    """What one object has landed so far, where its extractor stands, and a batch caught
    between its files and this state.

    ``watermark_ms``: the latest last-modified time landed (the next search starts a lookback
    before it). ``seen``: the versions landed with a last-modified time within the lookback
    window below it ({"id@ms"}). ``mode``: ``full`` while the first listing runs (``list_after``
    the cursor to go on from, ``full_started_ms`` when it began), then ``incremental``
    (``search_cursor_ms`` / ``drain_after`` while a search window is under way).
    ``archived_seen``: the (id, archivedAt) pairs landed ({"id@ms"})."""

    object: str
    watermark_ms: int | None = None
    seen: set[str] = field(default_factory=set)
    mode: str | None = None
    list_after: str | None = None
    full_started_ms: int | None = None
    search_cursor_ms: int | None = None
    drain_after: str | None = None
    archived_seen: set[str] = field(default_factory=set)
    pending: dict | None = None
    clock_ms: int | None = None  # the clock of the run that wrote this state


    @property
    def watermark_us(self) -> int | None:
        return None if self.watermark_ms is None else self.watermark_ms * 1000

    @property
    def keys_at_watermark(self) -> set[str]:
        return self.seen

    def cursor(self) -> dict:
        return {"mode": self.mode, "list_after": self.list_after,
                "full_started_ms": self.full_started_ms, "search_cursor_ms": self.search_cursor_ms,
                "drain_after": self.drain_after, "archived_seen": sorted(self.archived_seen),
                "clock_ms": self.clock_ms}

    def saw(self, ms: int, ceiling_ms: int) -> None:
        """A version modified at ``ms`` landed: the watermark moves up to it, never past
        ``ceiling_ms`` (the extraction's clock minus the lookback: what search may still be
        missing, and what a CRM clock ahead of ours would otherwise skip)."""
        ms = min(ms, ceiling_ms)
        if self.watermark_ms is None or ms > self.watermark_ms:
            self.watermark_ms = ms

    def prune(self, lookback_ms: int) -> None:
        """Forget the versions the next search cannot re-read (before watermark - lookback;
        while listing, the watermark the listing will end with is at least the lower of the
        latest time seen so far and the listing's start)."""
        if self.watermark_ms is None:
            return
        mark = self.watermark_ms
        if self.mode == "full" and self.full_started_ms is not None:
            mark = min(mark, self.full_started_ms)
        floor = mark - lookback_ms
        self.seen = {k for k in self.seen if _key_ms(k) >= floor}


def _key(record_id: str, ms: int) -> str:
    return f"{record_id}@{ms}"


def _key_ms(key: str) -> int:
    try:
        return int(key.rsplit("@", 1)[1])
    except (IndexError, ValueError):
        return -1  # a key of an older extractor: never re-read by a search


def _read_state(store: StateStore, obj: str) -> WatermarkState:
    mark = store.watermark(obj)
    pending = store.pending(obj)
    cursor = mark.cursor or {}
    state = WatermarkState(
        obj, None if mark.watermark_us is None else mark.watermark_us // 1000,
        {k for k in mark.keys_at_watermark if "@" in k},
        # a watermark without a cursor was left by the extractor before HubSpot's API: go on
        mode=cursor.get("mode") or ("incremental" if mark.watermark_us is not None else None),
        list_after=cursor.get("list_after"), full_started_ms=cursor.get("full_started_ms"),
        search_cursor_ms=cursor.get("search_cursor_ms"), drain_after=cursor.get("drain_after"),
        archived_seen=set(cursor.get("archived_seen") or ()),
        pending=pending[0].payload | {"batch_id": pending[0].batch_id} if pending else None,
        # states written before the clock was kept: when the store row was written
        clock_ms=cursor.get("clock_ms") or (None if mark.updated_at is None else
                                            parse_instant_ms(mark.updated_at)))
    return state


def load_state(settings: Settings, obj: str) -> WatermarkState:
    """One object's committed state (and a batch left pending), from the state store."""
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
    later: int = 0
    future: int = 0
    pages: int = 0
    first_source_file: str | None = None

    def __bool__(self) -> bool:
        return bool(self.rows or self.quarantine)


class _ObjectExtract:
    """One object's run: the first listing or the search window, then the archived listing."""

    def __init__(self, settings: Settings, client: CrmClient, obj: str, props: ObjectProperties,
                 logical_date: dt.date, options: CrmExtractOptions) -> None:
        self.settings = settings
        self.client = client
        self.obj = obj
        self.props = props
        self.properties = props.request_properties()
        self.lastmod = props.last_modified
        self.logical_date = logical_date
        self.options = options
        self.day_end_ms = _day_end_us(logical_date) // 1000
        # Read once a run: the watermark stays below it by the lookback, and a version
        # modified past it (plus the tolerance for clock skew) is in the future.
        self.now_ms = wall_clock_ms()
        self.ceiling_ms = self.now_ms - options.lookback_ms
        self.future_ms = self.now_ms + options.future_tolerance_ms
        self.recs: list[Reconciliation] = []
        self.requests = 0
        self.moved = False  # state changed since the last commit

    def run(self) -> list[Reconciliation]:
        with source_lock(self.settings.state_dir, SOURCE, self.obj), \
                StateStore(self.settings, SOURCE) as self.store:
            _finish_pending(self.settings, self.store, self.obj)
            state = _read_state(self.store, self.obj)
            start_mark = state.watermark_ms
            self._bring_back(state)
            state.clock_ms = self.now_ms
            if state.mode in (None, "full"):
                self._full_load(state)
            self._search(state)
            self._search_future(state)
            self._archived(state)
            if self.moved:  # nothing landed since the last commit, but the state moved on
                self.store.save_watermark(self.obj, state.watermark_us, state.seen, state.cursor())
        if not self.recs:
            self.recs.append(Reconciliation(
                source=SOURCE, entity=self.obj, batch_id="", load_date=self.logical_date.isoformat(),
                source_file=None, read=0, landed=0, quarantined=0,
                note=f"nothing new since {format_ms(start_mark)} before {format_ms(self.day_end_ms)}"))
        return self.recs

    def _bring_back(self, state: WatermarkState) -> None:
        """A watermark past this run's clock minus the lookback was left by an extractor
        without that ceiling (a version dated in the future moved it): nothing after the
        moment it was written was searched for, so the search starts again from then (less
        the lookback), never from the bogus time."""
        if state.watermark_ms is None or state.watermark_ms <= self.ceiling_ms:
            return
        written = state.clock_ms if state.clock_ms is not None else self.now_ms
        restart = min(self.ceiling_ms, written - self.options.lookback_ms)
        log.warning("CRM %s: watermark %s is past this host's clock minus the lookback; "
                    "searching again from %s", self.obj, format_ms(state.watermark_ms),
                    format_ms(restart))
        state.watermark_ms = restart
        state.search_cursor_ms, state.drain_after = None, None
        self.moved = True

    # --- paging bounds ---------------------------------------------------------------------
    def _count_request(self, what: str) -> None:
        self.requests += 1
        if self.requests > self.options.max_pages:
            raise CrmApiError(
                f"HubSpot {what} ({self.obj}): pages never end: more than "
                f"{self.options.max_pages} requests in one run (C360_CRM_MAX_PAGES)")

    # --- 1. the first full load: the list endpoint ----------------------------------------
    def _full_load(self, state: WatermarkState) -> None:
        if state.mode is None:
            state.mode = "full"
            state.full_started_ms = self.now_ms
            self.moved = True
            log.info("CRM %s: first full load through the list endpoint", self.obj)
        batch = _Batch()
        for page_no, payload, after in self._list_pages(archived=False, after=state.list_after):
            source_file = f"list {self.obj} page {page_no}"
            self._take(state, batch, payload["results"], source_file, listing=True)
            state.list_after = after
            if after is None:  # the listing is done: incremental from now on
                state.mode = "incremental"
                state.list_after = None
                if state.watermark_ms is None:
                    state.watermark_ms = min(state.full_started_ms, self.day_end_ms,
                                             self.ceiling_ms)
                else:
                    state.watermark_ms = min(state.watermark_ms, state.full_started_ms)
                state.full_started_ms = None
            self.moved = True
            if batch.pages >= self.options.pages_per_batch or after is None:
                state.prune(self.options.lookback_ms)
                self._commit(state, batch)
                batch = _Batch()

    def _list_pages(self, *, archived: bool, after: str | None
                    ) -> Iterator[tuple[int, dict, str | None]]:
        """(page number, page, the next cursor or None) of one listing, bounded."""
        what = f"GET /crm/v3/objects/{self.obj}" + (" archived" if archived else "")
        seen_cursors = {after}
        last_id: str | None = None
        page_no = 0
        while True:
            page_no += 1
            self._count_request(what)
            payload = self.client.list_page(self.obj, self.properties, archived=archived,
                                            after=after, limit=self.options.list_page_size)
            for record in payload["results"]:
                rid = _as_text(record.get("id")) if isinstance(record, dict) else None
                if not rid:
                    continue
                if last_id is not None and _id_order(rid) <= _id_order(last_id):
                    raise CrmApiError(f"HubSpot {what}: the cursor did not advance (page "
                                      f"{page_no} went back to id {rid} after id {last_id})")
                last_id = rid
            nxt = ((payload.get("paging") or {}).get("next") or {}).get("after")
            nxt = None if nxt in (None, "") else str(nxt)
            if nxt is not None and nxt in seen_cursors:
                raise CrmApiError(f"HubSpot {what}: the cursor did not advance (page {page_no} "
                                  f"gave after={nxt!r} again)")
            if nxt is not None and not payload["results"]:
                raise CrmApiError(f"HubSpot {what}: pages never end (page {page_no} is empty "
                                  "but has a next cursor)")
            seen_cursors.add(nxt)
            yield page_no, payload, nxt
            if nxt is None:
                return
            after = nxt

    # --- 2. incremental: the search endpoint ----------------------------------------------
    def _search(self, state: WatermarkState) -> None:
        if state.mode != "incremental":
            return
        hi = self.day_end_ms
        if state.search_cursor_ms is None:
            lo = 0 if state.watermark_ms is None else max(0, state.watermark_ms - self.options.lookback_ms)
            if lo >= hi:
                return  # a date already searched past
            state.search_cursor_ms, state.drain_after = lo, None
            self.moved = True
        elif state.search_cursor_ms >= hi:  # a window left by an interrupted later date
            state.search_cursor_ms, state.drain_after = None, None
            self.moved = True
            return
        log.info("CRM %s: searching %s <= %s < %s", self.obj, format_ms(state.search_cursor_ms),
                 self.lastmod, format_ms(hi))
        limit = self.options.search_page_size
        batch = _Batch()
        page_no = 0
        while True:
            page_no += 1
            cursor, drain_after = state.search_cursor_ms, state.drain_after
            what = f"POST /crm/v3/objects/{self.obj}/search"
            self._count_request(what)
            if drain_after is None:
                filters = [{"propertyName": self.lastmod, "operator": "GTE", "value": str(cursor)},
                           {"propertyName": self.lastmod, "operator": "LT", "value": str(hi)}]
                sort = self.lastmod
            else:  # every record of one millisecond, by id (the same operators as above)
                filters = [{"propertyName": self.lastmod, "operator": "GTE", "value": str(cursor)},
                           {"propertyName": self.lastmod, "operator": "LT", "value": str(cursor + 1)}]
                if drain_after:
                    filters.append({"propertyName": "hs_object_id", "operator": "GT",
                                    "value": drain_after})
                sort = "hs_object_id"
            payload = self.client.search(self.obj, {
                "filterGroups": [{"filters": filters}],
                "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
                "properties": self.properties, "limit": limit})
            results = payload["results"]
            more = bool(((payload.get("paging") or {}).get("next") or {}).get("after"))
            stamps = self._check_search_page(results, cursor, hi, drain_after, page_no)
            source_file = f"search {self.obj} {self.logical_date.isoformat()} page {page_no}"
            self._take(state, batch, results, source_file, listing=False)
            if drain_after is not None:
                if more and results:
                    state.drain_after = _as_text(results[-1].get("id"))
                else:  # that millisecond is exhausted
                    state.search_cursor_ms, state.drain_after = cursor + 1, None
            elif not more or not results:
                state.search_cursor_ms, state.drain_after = None, None  # the window is done
            elif stamps[-1] > cursor:
                state.search_cursor_ms = stamps[-1]  # restart there: re-reads only that ms
            else:  # the whole page shares one millisecond: drain it by id
                state.drain_after = ""
            log.info("CRM %s search page %d: %d results of %s, cursor %s%s", self.obj, page_no,
                     len(results), payload.get("total"), format_ms(state.search_cursor_ms),
                     f" (ids after {state.drain_after or '-'})" if state.drain_after is not None else "")
            self.moved = True
            done = state.search_cursor_ms is None or state.search_cursor_ms >= hi
            if done:
                state.search_cursor_ms, state.drain_after = None, None
                state.prune(self.options.lookback_ms)
            if batch.pages >= self.options.pages_per_batch or done:
                self._commit(state, batch)
                batch = _Batch()
            if done:
                return

    def _search_future(self, state: WatermarkState) -> None:
        """Versions modified after both the date's end and this host's clock (plus the
        tolerance): the date windows would leave them to a date that may never be run (a
        CRM clock far ahead, a bad import), so every run lands the ones not landed yet,
        flagged (:meth:`_take`). A short query in practice, so HubSpot's own ``after`` paging
        (a query stops at 10,000 results: past it HubSpot answers 400 and the task fails
        saying so) and no cursor kept: the versions landed are known by their keys."""
        if state.mode != "incremental":
            return
        lo = max(self.day_end_ms, self.future_ms)
        what = f"POST /crm/v3/objects/{self.obj}/search (modified in the future)"
        batch = _Batch()
        after: str | None = None
        page_no = 0
        while True:
            page_no += 1
            self._count_request(what)
            body = {"filterGroups": [{"filters": [
                        {"propertyName": self.lastmod, "operator": "GTE", "value": str(lo)}]}],
                    "sorts": [{"propertyName": self.lastmod, "direction": "ASCENDING"}],
                    "properties": self.properties, "limit": self.options.search_page_size}
            if after is not None:
                body["after"] = after
            payload = self.client.search(self.obj, body)
            results = payload["results"]
            for record in results:
                ms = self._modified_ms(record) if isinstance(record, dict) else None
                if ms is None or ms < lo:
                    raise CrmApiError(f"HubSpot {what} page {page_no}: a result modified at "
                                      f"{format_ms(ms)} is outside the filter (>= "
                                      f"{format_ms(lo)})")
            self._take(state, batch, results,
                       f"search {self.obj} {self.logical_date.isoformat()} future page {page_no}",
                       listing=False)
            nxt = ((payload.get("paging") or {}).get("next") or {}).get("after")
            nxt = None if nxt in (None, "") or not results else str(nxt)
            if nxt is not None and nxt == after:
                raise CrmApiError(f"HubSpot {what}: the cursor did not advance (page {page_no} "
                                  f"gave after={nxt!r} again)")
            after = nxt
            if batch.pages >= self.options.pages_per_batch or after is None:
                self._commit(state, batch)
                batch = _Batch()
            if after is None:
                return

    def _check_search_page(self, results: list, cursor: int, hi: int, drain_after: str | None,
                           page_no: int) -> list[int]:
        """The page's last-modified times; a record outside the filter or the order asked for
        means the server is not doing what it was asked: no way to advance safely."""
        what = f"HubSpot POST /crm/v3/objects/{self.obj}/search page {page_no}"
        stamps: list[int] = []
        prev_id: str | None = drain_after or None
        for record in results:
            ms = self._modified_ms(record) if isinstance(record, dict) else None
            if ms is None:
                raise CrmApiError(f"{what}: a result without {self.lastmod}")
            bad = (ms != cursor) if drain_after is not None else not (cursor <= ms < hi)
            if bad or (stamps and ms < stamps[-1]):
                raise CrmApiError(f"{what}: a result modified at {format_ms(ms)} is outside the "
                                  f"filter or the ascending order asked for (cursor "
                                  f"{format_ms(cursor)}): the cursor did not advance")
            if drain_after is not None:
                rid = _as_text(record.get("id")) or ""
                if prev_id is not None and _id_order(rid) <= _id_order(prev_id):
                    raise CrmApiError(f"{what}: the cursor did not advance (id {rid} after "
                                      f"{prev_id} at {format_ms(cursor)})")
                prev_id = rid
            stamps.append(ms)
        return stamps

    def _modified_ms(self, record: dict) -> int | None:
        """When this version was written: the object's last-modified property, else updatedAt."""
        props = record.get("properties")
        ms = parse_instant_ms(props.get(self.lastmod)) if isinstance(props, dict) else None
        return ms if ms is not None else parse_instant_ms(record.get("updatedAt"))

    # --- 3. archived records: the list endpoint, archived=true ----------------------------
    def _archived(self, state: WatermarkState) -> None:
        listed: set[str] = set()
        batch = _Batch()
        for page_no, payload, after in self._list_pages(archived=True, after=None):
            source_file = f"list {self.obj} archived page {page_no}"
            listed |= self._take(state, batch, payload["results"], source_file, listing=True,
                                 archived_list=True)
            if after is None:
                # Keep the pairs still listed: a restored or purged record is no longer.
                pruned = state.archived_seen & listed
                self.moved = self.moved or pruned != state.archived_seen
                state.archived_seen = pruned
            if batch.pages >= self.options.pages_per_batch or after is None:
                self._commit(state, batch)
                batch = _Batch()

    # --- rows --------------------------------------------------------------------------
    def _take(self, state: WatermarkState, batch: _Batch, results: list, source_file: str, *,
              listing: bool, archived_list: bool = False) -> set[str]:
        """Sort a page's records into rows, quarantine, re-reads and later versions; returns
        the archived keys of the page (archived listing)."""
        batch.pages += 1
        batch.first_source_file = batch.first_source_file or source_file
        keys: set[str] = set()
        for position, record in enumerate(results, start=1):
            raw_text = json.dumps(record, ensure_ascii=False)
            if not isinstance(record, dict):
                batch.quarantine.append(self._reject(source_file, position, None,
                                                     "result is not a JSON object", raw_text))
                continue
            record_id = _as_text(record.get("id"))
            record_id = record_id.strip() if record_id and record_id.strip() else None
            props = record.get("properties")
            ms = self._modified_ms(record)
            archived, archived_ok = _archived(record.get("archived"))
            archived_ms = parse_instant_ms(record.get("archivedAt"))
            # a record without an id is still told apart from the others by its content
            identity = record_id or "raw-md5:" + hashlib.md5(raw_text.encode()).hexdigest()
            if archived_list:
                when = archived_ms if archived_ms is not None else ms
                key = _key(identity, when if when is not None else -1)
                keys.add(key)
                future = when is not None and when >= self.future_ms
                if when is not None and when >= self.day_end_ms and not future:
                    batch.later += 1  # archived after the date: the next date lands it
                    continue
                if key in state.archived_seen:
                    batch.skipped += 1
                    continue
                state.archived_seen.add(key)
                batch.future += future
            else:
                future = ms is not None and ms >= self.future_ms
                if ms is not None and ms >= self.day_end_ms and not future:
                    batch.later += 1  # a later date's version: its search finds it
                    continue
                if ms is not None:
                    key = _key(identity, ms)
                    if key in state.seen:
                        batch.skipped += 1
                        continue
                    state.seen.add(key)
                    if future:
                        # Landed now rather than by a date that may never come; the watermark
                        # does not move for it (it would skip everything in between).
                        batch.future += 1
                    else:
                        state.saw(ms, self.ceiling_ms)
            reason = ("missing id" if record_id is None
                      else f"missing or unparseable {self.lastmod}" if ms is None
                      else None if archived_ok else "archived is not a boolean")
            if reason:
                batch.quarantine.append(self._reject(source_file, position, record_id, reason,
                                                     raw_text))
                continue
            batch.rows.append({
                "id": record_id,
                "createdAt": _as_text(record.get("createdAt")),
                "updatedAt": _as_text(record.get("updatedAt")),
                "archived": bool(archived) or archived_list,
                "archivedAt": _as_text(record.get("archivedAt")),
                "properties": None if props is None else json.dumps(props, ensure_ascii=False),
                "associations": None,
                "_modified_in_future": future,
                "_source_file": source_file,
                "_source_line": position,
            })
        return keys

    @staticmethod
    def _reject(source_file: str, position: int, record_id: str | None, reason: str,
                raw_text: str) -> dict:
        return {"source_file": source_file, "source_line": position, "record_key": record_id,
                "reason": reason, "raw_text": raw_text}

    def _associate(self, rows: list[dict]) -> None:
        """Fill ``associations`` from the v4 batch read (tickets, feedback submissions)."""
        targets = tuple(self.props.associations)
        ids = sorted({r["id"] for r in rows if not r["archived"]}, key=_id_order)
        if not targets or not ids:
            return
        found: dict[str, dict[str, list[str]]] = {i: {} for i in ids}
        for to in targets:
            for start in range(0, len(ids), ASSOCIATIONS_MAX_INPUTS):
                chunk = ids[start:start + ASSOCIATIONS_MAX_INPUTS]
                self._count_request(f"POST /crm/v4/associations/{self.obj}/{to}/batch/read")
                for from_id, to_ids in self.client.associations(self.obj, chunk, to).items():
                    if to_ids:
                        found[from_id][to] = to_ids
        for row in rows:
            links = found.get(row["id"])
            row["associations"] = json.dumps(links, ensure_ascii=False) if links else None

    def _commit(self, state: WatermarkState, batch: _Batch) -> None:
        """Land a batch and move the state: pending state, files, reconciliation, state."""
        if not batch:
            return
        self._associate(batch.rows)
        batch_id = lake.new_batch_id(SOURCE, self.obj)
        rec = Reconciliation(
            source=SOURCE, entity=self.obj, batch_id=batch_id,
            load_date=self.logical_date.isoformat(), source_file=batch.first_source_file,
            read=len(batch.rows) + len(batch.quarantine), landed=len(batch.rows),
            quarantined=len(batch.quarantine),
            note=f"{batch.pages} page(s); {batch.skipped} version(s) landed before skipped; "
                 f"{batch.later} modified after the date left to it"
                 + (f"; {batch.future} modified in the future (after this host's clock + "
                    f"C360_CRM_FUTURE_TOLERANCE_SECONDS) landed flagged _modified_in_future"
                    if batch.future else ""))
        if batch.future:
            log.warning("CRM %s: %d version(s) modified after %s (this host's clock + "
                        "tolerance) landed flagged _modified_in_future", self.obj, batch.future,
                        format_ms(self.future_ms))
        # The in-memory state already includes this batch; the store keeps the old state
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
            "keys_at_watermark": sorted(state.seen), "cursor": state.cursor()})
        lake.write_raw_batch(self.settings, pa.Table.from_pylist(batch.rows, schema=RAW_SCHEMA),
                             source=SOURCE, entity=self.obj, load_date=self.logical_date,
                             batch_id=batch_id)
        lake.write_quarantine(self.settings, batch.quarantine, source=SOURCE, entity=self.obj,
                              load_date=self.logical_date, batch_id=batch_id)
        lake.record_reconciliation(self.settings, rec)
        self.store.commit_watermark(pending)
        self.moved = False
        self.recs.append(rec)
        log.info("CRM %s: committed batch %s (%d landed, %d quarantined), watermark %s",
                 self.obj, batch_id, rec.landed, rec.quarantined, format_ms(state.watermark_ms))


# --------------------------------------------------------------------------- entry points

def extract_crm(settings: Settings, logical_date: dt.date, *, objects: tuple[str, ...] = OBJECTS,
                options: CrmExtractOptions | None = None) -> list[Reconciliation]:
    """Land every CRM object's new versions (and deletions) up to the end of ``logical_date``
    (UTC)."""
    conn = crm_connection()
    options = options or CrmExtractOptions.from_settings(settings)
    property_map = load_property_map(settings)
    client = CrmClient(conn, options)
    log.info("CRM extract for %s from %s (%s)", logical_date, conn.base_url, conn.source)
    try:
        recs: list[Reconciliation] = []
        for obj in objects:
            recs.extend(_ObjectExtract(settings, client, obj, property_map[obj], logical_date,
                                       options).run())
        c = client.counts
        log.info("CRM extract for %s: %d list, %d search, %d association request(s), %d retried",
                 logical_date, c.list, c.search, c.associations, c.retries)
        return recs
    finally:
        client.close()


def read_raw_crm(settings: Settings, obj: str) -> pd.DataFrame:
    """Every row landed for one CRM object, across batches (with ``load_date``)."""
    folder = settings.lake_raw / SOURCE / obj
    if not any(folder.glob("load_date=*/*.parquet")):
        return pd.DataFrame(columns=[*RAW_SCHEMA.names[:-2], *lake.META_COLUMNS, "load_date"])
    con = duck.connect(settings)
    try:
        return con.execute(
            "SELECT * FROM read_parquet(?, hive_partitioning = true, union_by_name = true) "
            "ORDER BY updatedAt, id, _loaded_at",
            [str(folder / "load_date=*" / "*.parquet")],
        ).to_arrow_table().to_pandas()
    finally:
        con.close()
