"""A mock of HubSpot's CRM API v3 (docs/sources.md, section 1), served over real HTTP on 127.0.0.1.

It serves the simulated CRM store, ``<data_dir>/<object>.jsonl.gz``: one JSON line a record
*version* ``{"id", "properties", "createdAt", "updatedAt", "archived", "archivedAt",
"associations"?}``. For each id it serves the latest version whose ``updatedAt`` is at or
before the server clock (no clock: the latest version), the way HubSpot would have answered at
that moment. What it reproduces of HubSpot (each point checked against HubSpot's docs, its
OpenAPI spec and its official Python client, see tests/test_crm_hubspot_client.py):

``GET /crm/v3/objects/{object}`` (the list; ``contacts``, ``tickets``, ``feedback_submissions``
or the type ids ``0-1``, ``0-5``, ``0-19``)
    Ordered by numeric id with no time filter; ``limit`` 1..100 (default 10, more is 400);
    ``after`` is the id of the next record (treat it as opaque); ``paging.next = {after, link}``
    and no ``paging`` on the last page. Only the object's default properties come back unless
    ``properties`` names them (comma-separated or repeated; names the portal does not have are
    ignored, names it has but the record lacks come back ``null``; the create and last-modified
    properties and ``hs_object_id`` always come too). ``archived=true`` (any case) lists only
    archived records, with ``archivedAt``. ``associations=contacts`` adds
    ``{"associations": {"contacts": {"results": [{"id", "type"}]}}}`` (omitted when empty).

``POST /crm/v3/objects/{object}/search``
    ``filterGroups`` (groups ORed, filters ANDed; at most 5 groups, 6 filters a group, 18 in
    all) with EQ, NEQ, LT, LTE, GT, GTE, BETWEEN, IN, NOT_IN, HAS_PROPERTY, NOT_HAS_PROPERTY,
    CONTAINS_TOKEN, NOT_CONTAINS_TOKEN on any property (datetimes as epoch-ms strings, ISO
    accepted, compared at ms resolution); one sort (``{"propertyName", "direction"}``, or
    ``"prop"`` / ``"-prop"``), ties broken by id ascending, default creation order;
    ``properties``; ``limit`` <= 200 (default 10); ``after`` an offset. Answers ``{total,
    results, paging}``; ``after + limit`` past 10,000 is 400 ``VALIDATION_ERROR``. Archived
    records are never returned. With ``index_lag_seconds`` search sees the store as it was that
    long before the clock (a write is invisible to search, not to the list, until then; a
    record archived within the lag is still found as its last live version until it passes).

``POST /crm/v4/associations/{from}/{to}/batch/read``, ``GET /crm/v4/objects/{from}/{id}/associations/{to}``
    v4 associations (typeIds 16 ticket->contact, 98 feedback->contact and the reverses);
    200, or 207 with ``NO_ASSOCIATIONS_FOUND`` errors for ids that have none (with ``links``
    and ``errors`` so that the client's strict models accept it).

``GET /crm/v3/pipelines/tickets``
    The default pipeline ``0`` (stages 1 New, 2 Waiting on contact, 3 Waiting on us, 4 Closed
    with ``metadata.ticketState``) and one custom pipeline.

Errors are HubSpot's bodies ``{"status": "error", "message", "correlationId", "category"}``
with an ``x-hubspot-correlation-id`` header: 401 ``INVALID_AUTHENTICATION`` (or
``EXPIRED_AUTHENTICATION``), 400 ``VALIDATION_ERROR``, 429 ``RATE_LIMITS`` with Retry-After.

Knobs (:class:`FaultConfig`, all off by default): a ten-second burst limit for everything but
search and a per-second limit for search; random or scripted 429, 500, 502 (also as an HTML
page), 503, 504, a body cut short mid-way, a request that hangs (bounded: the handler gives up
after ``hang_seconds`` and drops the connection); a list/search cursor that never advances;
pages that never end; the index lag; an expired token; the association page size.

Control endpoints (same bearer token) let tests and the demo steer it::

    POST /_mock/clock   {"as_of": "2026-03-05T00:00:00Z" | null}
    POST /_mock/faults  {FaultConfig fields}          replaces the fault settings
    GET  /_mock/stats   request counts by status and endpoint kind    POST /_mock/stats/reset
    GET  /_mock/health

``serve`` blocks (the ``c360 crm-server`` command); ``start_server`` runs it in a background
thread and returns a :class:`RunningServer`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import fnmatch
import hmac
import json
import logging
import math
import random
import re
import socket
import threading
import time
import uuid
from bisect import bisect_left, bisect_right
from collections import Counter, OrderedDict, deque
from dataclasses import asdict, dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlencode, urlsplit

import duckdb
import requests

from customer360.core import duck

log = logging.getLogger(__name__)

OBJECTS = ("contacts", "tickets", "feedback_submissions")
TYPE_IDS = {"0-1": "contacts", "0-5": "tickets", "0-19": "feedback_submissions"}
LIST_MAX_LIMIT = 100
LIST_DEFAULT_LIMIT = 10
SEARCH_MAX_LIMIT = 200
SEARCH_DEFAULT_LIMIT = 10
SEARCH_MAX_RESULTS = 10_000
SEARCH_MAX_BODY = 3_000
SEARCH_MAX_GROUPS, SEARCH_MAX_GROUP_FILTERS, SEARCH_MAX_FILTERS = 5, 6, 18
BATCH_MAX_INPUTS = 1_000
MAX_HANG_SECONDS = 300.0
MAX_LIMIT = LIST_MAX_LIMIT  # kept for callers of the old module
SCRIPTED_FAULTS = ("ok", "429", "500", "502", "502html", "503", "504", "cut", "hang")

LAST_MODIFIED = {"contacts": "lastmodifieddate"}  # every other object: hs_lastmodifieddate
# What HubSpot sends when no ``properties`` are asked for (the docs' examples and search table).
DEFAULT_PROPERTIES = {
    "contacts": ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"),
    "tickets": ("content", "createdate", "hs_lastmodifieddate", "hs_object_id", "hs_pipeline",
                "hs_pipeline_stage", "hs_ticket_category", "hs_ticket_priority", "subject"),
    "feedback_submissions": ("hs_createdate", "hs_lastmodifieddate", "hs_object_id"),
}
# Always returned alongside requested properties (when the portal has them).
ALWAYS_PROPERTIES = ("createdate", "hs_createdate", "lastmodifieddate", "hs_lastmodifieddate", "hs_object_id")
DATETIME_PROPERTIES = frozenset({
    "createdate", "hs_createdate", "lastmodifieddate", "hs_lastmodifieddate", "closed_date",
    "hs_submission_timestamp", "date_of_birth", "closedate", "hs_lastactivitydate",
    "notes_last_updated", "first_contact_createdate", "hs_date_entered_customer"})
NUMBER_PROPERTIES = frozenset({"hs_object_id", "hs_value", "num_notes", "hs_num_times_contacted"})
OPERATORS = ("EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN", "HAS_PROPERTY",
             "NOT_HAS_PROPERTY", "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN")
SINGULAR = {"contacts": "contact", "tickets": "ticket", "feedback_submissions": "feedback_submission"}
# (from, to) -> (v3 association type name, v4 HUBSPOT_DEFINED typeId)
ASSOCIATION_TYPES = {
    ("tickets", "contacts"): ("ticket_to_contact", 16),
    ("contacts", "tickets"): ("contact_to_ticket", 15),
    ("feedback_submissions", "contacts"): ("feedback_submission_to_contact", 98),
    ("contacts", "feedback_submissions"): ("contact_to_feedback_submission", 97),
}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_PIPELINES_CREATED = "2026-01-01T00:00:00.000Z"

# The serving key of a record: (0, numeric id, id) for numeric ids, (1, 0, id) for the others.
Key = tuple[int, int, str]


class ApiError(Exception):
    """An error answer in HubSpot's shape."""

    def __init__(self, status: int, message: str, category: str = "VALIDATION_ERROR",
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.category = status, message, category
        self.headers = headers or {}
        self.extra = extra


# --------------------------------------------------------------------------- faults and knobs

@dataclass
class FaultConfig:
    """How the server misbehaves (and HubSpot's limits). Rates are shares of API requests (0..1, summing to <= 1)."""

    rate_429: float = 0.0  # 1.0: every request is a 429 (endless 429s)
    retry_after_seconds: int = 1  # Retry-After of the injected 429s
    rate_5xx: float = 0.0  # 500, 502, 503, 504 in equal parts
    rate_cut: float = 0.0
    rate_hang: float = 0.0
    hang_seconds: float = 5.0  # a hanging request is silent this long, then dropped unanswered
    delay_seconds: float = 0.0  # added before every API response: a slow API
    seed: int | None = None  # same seed, same sequence of random faults
    scripted: list[str] = field(default_factory=list)  # consumed by the next API requests
    cursor_loop: bool = False  # paging.next.after repeats the request's own cursor
    endless_pages: bool = False  # paging.next is always present, past the last record too
    index_lag_seconds: float = 0.0  # search sees the store as it was this long before the clock
    burst_per_10s: int = 0  # HubSpot: 100 (Free/Starter) or 190; 0 = no limit. Search is exempt
    search_per_second: int = 0  # HubSpot: 5; 0 = no limit
    rate_limit_retry_after: bool = True  # send Retry-After with the rate-limit 429s
    expired_token: bool = False  # the right token is answered 401 EXPIRED_AUTHENTICATION
    assoc_page_size: int = 500  # associations per record before they page

    def __post_init__(self) -> None:
        rates = ("rate_429", "rate_5xx", "rate_cut", "rate_hang")
        for name in rates:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if sum(getattr(self, n) for n in rates) > 1.0:
            raise ValueError("rate_429 + rate_5xx + rate_cut + rate_hang must not exceed 1")
        for name in ("retry_after_seconds", "delay_seconds", "index_lag_seconds", "burst_per_10s",
                     "search_per_second"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not 0.0 <= self.hang_seconds <= MAX_HANG_SECONDS:
            raise ValueError(f"hang_seconds must be between 0 and {MAX_HANG_SECONDS:g}")
        if self.assoc_page_size < 1:
            raise ValueError("assoc_page_size must be >= 1")
        self.scripted = [str(f) for f in self.scripted]
        unknown = [f for f in self.scripted if f not in SCRIPTED_FAULTS]
        if unknown:
            raise ValueError(f"unknown scripted faults {unknown}; expected any of {SCRIPTED_FAULTS}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FaultConfig":
        if not isinstance(data, dict):
            raise ValueError("fault settings must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault settings {sorted(unknown)}; expected {sorted(known)}")
        return cls(**data)


class _FaultPlan:
    """Decides, request by request, which fault (if any) to inject."""

    def __init__(self, config: FaultConfig) -> None:
        self._lock = threading.Lock()
        self.replace(config)

    def replace(self, config: FaultConfig) -> None:
        with self._lock:
            self.config = config
            self._scripted = deque(config.scripted)
            self._rng = random.Random(config.seed)

    def next_fault(self) -> str | None:
        with self._lock:
            if self._scripted:
                fault = self._scripted.popleft()
                return None if fault == "ok" else fault
            c = self.config
            if not (c.rate_429 or c.rate_5xx or c.rate_cut or c.rate_hang):
                return None
            draw = self._rng.random()
            edge = c.rate_429
            if draw < edge:
                return "429"
            edge += c.rate_5xx
            if draw < edge:
                return self._rng.choice(("500", "502", "503", "504"))
            edge += c.rate_cut
            if draw < edge:
                return "cut"
            if draw < edge + c.rate_hang:
                return "hang"
            return None

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return asdict(self.config) | {"scripted": list(self._scripted)}


class _Window:
    """A rolling request counter: at most ``limit`` requests in any ``seconds``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._times: deque[float] = deque()

    def take(self, limit: int, seconds: float) -> tuple[bool, float, int]:
        """(allowed, seconds until a slot frees, remaining after this one)."""
        if not limit:
            return True, 0.0, 0
        now = time.monotonic()
        with self._lock:
            while self._times and self._times[0] <= now - seconds:
                self._times.popleft()
            if len(self._times) >= limit:
                return False, self._times[0] + seconds - now, 0
            self._times.append(now)
            return True, 0.0, max(0, limit - len(self._times))

    def reset(self) -> None:
        with self._lock:
            self._times.clear()


# --------------------------------------------------------------------------- values

def parse_instant(text: str) -> int:
    """ISO-8601 (``Z``, an offset, naive meaning UTC, or a bare date) to microseconds since the epoch."""
    text = text.strip()
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return (value - _EPOCH) // dt.timedelta(microseconds=1)


def _format_instant(us: int) -> str:
    value = _EPOCH + dt.timedelta(microseconds=us)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now_iso() -> str:
    return _format_instant(int(time.time() * 1_000_000))


def _to_ms(value: Any) -> int | None:
    """A datetime property value (ISO text, or epoch ms as text/number) to epoch ms; None if unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        return parse_instant(text) // 1000
    except ValueError:
        return None


def _to_number(value: Any) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _key(record_id: str) -> Key:
    if record_id.isascii() and record_id.isdigit():
        return (0, int(record_id), record_id)
    return (1, 0, record_id)


def encode_after(record_id: str) -> str:
    """The list cursor: the next record's id (non-numeric ids, which HubSpot never has, are encoded)."""
    if record_id.isascii() and record_id.isdigit():
        return record_id
    return "~" + base64.urlsafe_b64encode(record_id.encode()).decode().rstrip("=")


def decode_after(token: str) -> Key:
    token = token.strip()
    if token.isascii() and token.isdigit():
        return (0, int(token), token)
    if token.startswith("~"):
        try:
            raw = base64.urlsafe_b64decode(token[1:] + "=" * (-len(token[1:]) % 4)).decode()
            return (1, 0, raw)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            pass
    raise ApiError(400, f"Invalid input: 'after' must be a paging cursor returned by this endpoint, got {token!r}")


def _kind(prop: str) -> str:
    if prop in DATETIME_PROPERTIES:
        return "datetime"
    if prop in NUMBER_PROPERTIES:
        return "number"
    return "string"


def _last_modified(obj: str) -> str:
    return LAST_MODIFIED.get(obj, "hs_lastmodifieddate")


def _object_name(name: str) -> str:
    return TYPE_IDS.get(name, name)


# --------------------------------------------------------------------------- store

class _Rec:
    """One served record version, parsed."""

    __slots__ = ("id", "key", "props", "created_at", "updated_at", "archived", "archived_at",
                 "assoc", "_cache")

    def __init__(self, body: dict, record_id: str) -> None:
        self.id = record_id
        self.key = _key(record_id)
        props = body.get("properties")
        self.props: dict[str, Any] = props if isinstance(props, dict) else {}
        self.created_at = body.get("createdAt")
        self.updated_at = body.get("updatedAt")
        self.archived = bool(body.get("archived"))
        self.archived_at = body.get("archivedAt") or (self.updated_at if self.archived else None)
        assoc = body.get("associations")
        self.assoc: dict[str, list[str]] = {}
        if isinstance(assoc, dict):
            for to, ids in assoc.items():
                if isinstance(ids, (list, tuple)):
                    self.assoc[_object_name(str(to))] = [str(i) for i in ids if i is not None and str(i) != ""]
        self._cache: dict[str, Any] = {}

    def value(self, prop: str) -> Any:
        if prop == "hs_object_id":
            return self.props.get(prop) or self.id
        return self.props.get(prop)

    def comparable(self, prop: str) -> Any:
        """The value as search compares it (ms for datetimes, float for numbers, lower text)."""
        if prop in self._cache:
            return self._cache[prop]
        raw = self.value(prop)
        kind = _kind(prop)
        if raw is None or raw == "":
            out = None
        elif kind == "datetime":
            out = _to_ms(raw)
        elif kind == "number":
            out = _to_number(raw)
        else:
            out = str(raw).lower()
        self._cache[prop] = out
        return out


class _View:
    """The records one clock sees, ordered by id: live ones and archived ones apart."""

    def __init__(self, records: list[_Rec]) -> None:
        records.sort(key=lambda r: r.key)
        self.live = [r for r in records if not r.archived]
        self.archived = [r for r in records if r.archived]
        self.live_keys = [r.key for r in self.live]
        self.archived_keys = [r.key for r in self.archived]
        self.by_id = {r.id: r for r in self.live}
        self._lock = threading.Lock()
        self._indexes: dict[str, tuple[list, list[int]]] = {}
        self._reverse: dict[str, dict[str, list[str]]] = {}

    def index(self, prop: str) -> tuple[list, list[int]]:
        """Live records sorted by a datetime/number property: (values, positions)."""
        with self._lock:
            if prop not in self._indexes:
                pairs = sorted((v, i) for i, r in enumerate(self.live)
                               if (v := r.comparable(prop)) is not None)
                self._indexes[prop] = ([v for v, _ in pairs], [i for _, i in pairs])
            return self._indexes[prop]

    def reverse(self, to: str) -> dict[str, list[str]]:
        """Associated id -> ids of this view's records that name it (contacts -> tickets)."""
        with self._lock:
            if to not in self._reverse:
                out: dict[str, list[str]] = {}
                for r in self.live:
                    for other in r.assoc.get(to, ()):
                        out.setdefault(other, []).append(r.id)
                self._reverse[to] = out
            return self._reverse[to]


class _ObjectFile:
    """One object's versions, loaded once and reloaded when the file changes (mtime/size)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._signature: tuple | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._views: OrderedDict[Any, _View] = OrderedDict()
        self._parsed: dict[int, _Rec] = {}
        self._times: list[int] = []
        self.schema: frozenset[str] = frozenset()
        self.versions = 0
        self.generation = 0

    def _current_signature(self) -> tuple | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> None:
        con = duck.connect()
        # A version without a parseable updatedAt counts at its createdAt, so that a client
        # still gets to see (and quarantine) it.
        con.execute(
            """
            CREATE TABLE versions AS
            WITH lines AS (
                SELECT json::VARCHAR AS body, row_number() OVER () AS line
                FROM read_ndjson_objects(?, ignore_errors = true)
            )
            SELECT body, line,
                   coalesce(trim(body->>'id'), '') AS id,
                   coalesce(epoch_us(try_cast(body->>'updatedAt' AS TIMESTAMPTZ)),
                            epoch_us(try_cast(body->>'createdAt' AS TIMESTAMPTZ)), 0) AS ts_us
            FROM lines WHERE body IS NOT NULL
            """,
            [str(self.path)],
        )
        times = [t for (t,) in con.execute("SELECT DISTINCT ts_us FROM versions ORDER BY 1").fetchall()]
        schema = {k for (k,) in con.execute(
            """SELECT DISTINCT unnest(json_keys(body::JSON->'properties')) FROM versions
               WHERE json_type(body::JSON->'properties') = 'OBJECT'""").fetchall()}
        if self._con is not None:
            self._con.close()
        self._con = con
        self._views = OrderedDict()
        self._parsed = {}
        self._times = times
        self.schema = frozenset(schema | {"hs_object_id"})
        self.versions = con.execute("SELECT count(*) FROM versions").fetchone()[0]
        self.generation += 1

    def _view_key(self, clock_us: int | None) -> Any:
        """Clocks that see the same versions share one view: the last version time at or before the clock."""
        if clock_us is None or not self._times or clock_us >= self._times[-1]:
            return "latest"
        i = bisect_right(self._times, clock_us)
        return self._times[i - 1] if i else "empty"

    def _build_view(self, view_key: Any) -> _View:
        assert self._con is not None
        if view_key == "empty":
            return _View([])
        clock = None if view_key == "latest" else view_key
        rows = self._con.execute(
            """
            SELECT body, id, line FROM versions
            WHERE id <> '' AND (? IS NULL OR ts_us <= ?)
            QUALIFY row_number() OVER (PARTITION BY id ORDER BY ts_us DESC, line DESC) = 1
            """,
            [clock, clock],
        ).fetchall()
        records = []
        for body, record_id, line in rows:
            rec = self._parsed.get(line)
            if rec is None:
                try:
                    parsed = json.loads(body)
                except ValueError:
                    continue
                rec = self._parsed[line] = _Rec(parsed, record_id)
            records.append(rec)
        return _View(records)

    def view(self, clock_us: int | None) -> tuple[_View, Any]:
        with self._lock:
            signature = self._current_signature()
            if signature is None:
                return _View([]), ("missing",)
            if signature != self._signature:
                try:
                    self._load()
                except duckdb.Error as exc:
                    # Half-written by a re-simulation: keep serving what we had until it settles.
                    log.warning("could not (re)load %s: %s", self.path.name, exc)
                    if self._con is None:
                        return _View([]), ("missing",)
                else:
                    self._signature = signature
                    log.info("loaded %s: %d versions", self.path.name, self.versions)
            key = self._view_key(clock_us)
            view = self._views.get(key)
            if view is None:
                view = self._views[key] = self._build_view(key)
                while len(self._views) > 4:  # the list clock, the search clock, a few old ones
                    self._views.popitem(last=False)
            else:
                self._views.move_to_end(key)
            return view, (self.generation, key)


class UnknownObject(LookupError):
    pass


class CrmStore:
    """Every object of the simulated CRM, with the server clock."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._files: dict[str, _ObjectFile] = {}
        self._lock = threading.Lock()
        self.clock_us: int | None = None

    def file(self, name: str) -> _ObjectFile:
        name = _object_name(name)
        with self._lock:
            if name not in self._files:
                path = self.data_dir / f"{name}.jsonl.gz"
                if name not in OBJECTS and (not re.fullmatch(r"[a-z][a-z0-9_]*", name) or not path.exists()):
                    raise UnknownObject(name)
                self._files[name] = _ObjectFile(path)
            return self._files[name]

    def now_us(self) -> int:
        return self.clock_us if self.clock_us is not None else int(time.time() * 1_000_000)

    def view(self, name: str, lag_seconds: float = 0.0) -> tuple[_View, Any]:
        clock = self.clock_us
        if lag_seconds:
            clock = self.now_us() - int(lag_seconds * 1_000_000)
        return self.file(name).view(clock)

    def preload(self) -> dict[str, int]:
        names = set(OBJECTS) | {p.name.removesuffix(".jsonl.gz") for p in self.data_dir.glob("*.jsonl.gz")}
        out = {}
        for name in sorted(names):
            try:
                view, _ = self.view(name)
            except UnknownObject:
                continue
            out[name] = len(view.live) + len(view.archived)
        return out

    def associated(self, obj: str, rec: _Rec, to: str, lag_seconds: float = 0.0) -> list[str]:
        """Ids of ``to`` records associated with ``rec`` (from its own associations, or the reverse)."""
        if to in rec.assoc:
            return rec.assoc[to]
        if to != obj and to in OBJECTS:
            try:
                other, _ = self.view(to, lag_seconds)
            except UnknownObject:
                return []
            ids = other.reverse(obj).get(rec.id)
            if ids:
                return sorted(ids, key=_key)
        return []

    def counts(self) -> dict[str, int]:
        with self._lock:
            files = dict(self._files)
        return {name: f.versions for name, f in sorted(files.items())}


# --------------------------------------------------------------------------- rendering

def _split_list(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for value in values or []:
        for part in str(value).split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


def _property_names(obj: str, schema: frozenset[str], requested: list[str] | None) -> list[str]:
    """The properties a response carries: requested (known to the portal) plus the always-sent, or the defaults."""
    if requested:
        names = [p for p in requested if p in schema]
        names += [p for p in ALWAYS_PROPERTIES if p in schema and p not in names]
    else:
        if obj in ("contacts", "tickets"):  # standard properties every portal has
            names = list(DEFAULT_PROPERTIES[obj])
        else:  # feedback submissions (and any other object): the defaults the portal has
            defaults = DEFAULT_PROPERTIES.get(obj, ())
            names = [p for p in (*defaults, *ALWAYS_PROPERTIES) if p in schema]
    return sorted(set(names))


def _render(rec: _Rec, names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": rec.id, "properties": {p: rec.value(p) for p in names},
                           "createdAt": rec.created_at, "updatedAt": rec.updated_at,
                           "archived": rec.archived}
    if rec.archived:
        out["archivedAt"] = rec.archived_at
    return out


def _assoc_type(obj: str, to: str) -> tuple[str, int]:
    return ASSOCIATION_TYPES.get((obj, to), (f"{SINGULAR.get(obj, obj)}_to_{SINGULAR.get(to, to)}", 1))


def _offset(after: Any, what: str = "after") -> int:
    if after is None or after == "":
        return 0
    text = str(after).strip()
    if not re.fullmatch(r"\d+", text):
        raise ApiError(400, f"Invalid input: '{what}' must be an integer, got {after!r}",
                       errors=[{"message": f"{what} must be an integer", "code": "INVALID_INTEGER"}])
    return int(text)


# --------------------------------------------------------------------------- search

class _Filter:
    def __init__(self, raw: Any, schema: frozenset[str]) -> None:
        if not isinstance(raw, dict):
            raise ApiError(400, "Invalid input: each filter must be an object")
        self.prop = str(raw.get("propertyName") or "")
        self.op = str(raw.get("operator") or "").upper()
        if not self.prop:
            raise ApiError(400, "Invalid input: a filter needs a propertyName")
        if self.op not in OPERATORS:
            raise ApiError(400, f"Invalid input: unknown operator {raw.get('operator')!r}; expected one of {list(OPERATORS)}")
        if schema - {"hs_object_id"} and self.prop not in schema and self.prop not in ALWAYS_PROPERTIES:
            raise ApiError(400, f"There was a problem with the request: property {self.prop!r} does not exist",
                           context={"propertyName": [self.prop]})
        self.kind = _kind(self.prop)
        needs = {"BETWEEN": ("value", "highValue"), "IN": ("values",), "NOT_IN": ("values",)}.get(
            self.op, () if self.op in ("HAS_PROPERTY", "NOT_HAS_PROPERTY") else ("value",))
        for name in needs:
            if raw.get(name) is None:
                raise ApiError(400, f"Invalid input: operator {self.op} needs {name!r} (property {self.prop})")
        self.value = self._coerce(raw.get("value")) if "value" in needs else None
        self.high = self._coerce(raw.get("highValue")) if "highValue" in needs else None
        self.values = None
        if "values" in needs:
            if not isinstance(raw["values"], list):
                raise ApiError(400, f"Invalid input: 'values' of {self.prop} must be a list")
            self.values = {self._coerce(v) for v in raw["values"]}
        self.token = str(raw.get("value") or "").lower() if self.op.endswith("CONTAINS_TOKEN") else None

    def _coerce(self, value: Any) -> Any:
        if self.kind == "datetime":
            out = _to_ms(value)
            if out is None:
                raise ApiError(400, f"Invalid input: {value!r} is not a valid datetime for {self.prop} "
                                    "(epoch milliseconds expected)", context={"propertyName": [self.prop]})
            return out
        if self.kind == "number":
            out = _to_number(value)
            if out is None:
                raise ApiError(400, f"Invalid input: {value!r} is not a number for {self.prop}",
                               errors=[{"message": "not a number", "code": "INVALID_INTEGER"}])
            return out
        return str(value).lower()

    def bounds(self) -> tuple[Any, bool, Any, bool] | None:
        """(low, low inclusive, high, high inclusive) for an index scan, or None."""
        if self.kind == "string":
            return None
        return {"EQ": (self.value, True, self.value, True), "GT": (self.value, False, None, True),
                "GTE": (self.value, True, None, True), "LT": (None, True, self.value, False),
                "LTE": (None, True, self.value, True), "BETWEEN": (self.value, True, self.high, True),
                }.get(self.op)

    def matches(self, rec: _Rec) -> bool:
        v = rec.comparable(self.prop)
        op = self.op
        if op == "HAS_PROPERTY":
            return v is not None
        if op == "NOT_HAS_PROPERTY":
            return v is None
        if op in ("NEQ", "NOT_IN", "NOT_CONTAINS_TOKEN") and v is None:
            return True
        if v is None:
            return False
        if self.kind == "string" and op in ("LT", "LTE", "GT", "GTE", "BETWEEN"):
            a, b, c = _to_number(v), _to_number(self.value), _to_number(self.high) if self.high is not None else None
            if a is not None and b is not None and (op != "BETWEEN" or c is not None):
                v, value, high = a, b, c
            else:
                value, high = self.value, self.high
        else:
            value, high = self.value, self.high
        try:
            if op == "EQ":
                return v == value
            if op == "NEQ":
                return v != value
            if op == "LT":
                return v < value
            if op == "LTE":
                return v <= value
            if op == "GT":
                return v > value
            if op == "GTE":
                return v >= value
            if op == "BETWEEN":
                return value <= v <= high
            if op == "IN":
                return v in self.values
            if op == "NOT_IN":
                return v not in self.values
        except TypeError:
            return False
        tokens = re.split(r"[^\w@.*-]+", str(v).lower())
        found = any(fnmatch.fnmatchcase(t, self.token) for t in tokens if t)
        return found if op == "CONTAINS_TOKEN" else not found


def _search_request(raw_body: bytes) -> dict[str, Any]:
    if len(raw_body) > SEARCH_MAX_BODY:
        raise ApiError(400, f"Invalid input: the request body is {len(raw_body)} characters; the "
                            f"limit is {SEARCH_MAX_BODY}")
    try:
        body = json.loads(raw_body or b"{}")
    except ValueError as exc:
        raise ApiError(400, f"Invalid input JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid input JSON: the body must be an object")
    return body


def _search(store: CrmStore, obj: str, body: dict, lag: float,
            cache: "OrderedDict[Any, list[_Rec]]", cache_lock: threading.Lock) -> tuple[list[_Rec], int, int, frozenset]:
    """Returns (the page of records, total, offset, schema)."""
    file = store.file(obj)
    view, view_id = store.view(obj, lag)
    schema = file.schema
    groups = body.get("filterGroups") or []
    if not isinstance(groups, list) or len(groups) > SEARCH_MAX_GROUPS:
        raise ApiError(400, f"Invalid input: at most {SEARCH_MAX_GROUPS} filterGroups are allowed")
    parsed_groups: list[list[_Filter]] = []
    for group in groups:
        filters = group.get("filters") if isinstance(group, dict) else None
        if not isinstance(filters, list):
            raise ApiError(400, "Invalid input: each filterGroup needs a list of filters")
        if len(filters) > SEARCH_MAX_GROUP_FILTERS:
            raise ApiError(400, f"Invalid input: at most {SEARCH_MAX_GROUP_FILTERS} filters are allowed in a filterGroup")
        parsed_groups.append([_Filter(f, schema) for f in filters])
    if sum(len(g) for g in parsed_groups) > SEARCH_MAX_FILTERS:
        raise ApiError(400, f"Invalid input: at most {SEARCH_MAX_FILTERS} filters are allowed in all")
    sorts = body.get("sorts") or []
    if not isinstance(sorts, list) or len(sorts) > 1:
        raise ApiError(400, "Invalid input: only one sorting rule can be applied to a search")
    sort_prop, descending = None, False
    if sorts:
        s = sorts[0]
        if isinstance(s, str):
            sort_prop, descending = s.lstrip("-"), s.startswith("-")
        elif isinstance(s, dict) and s.get("propertyName"):
            sort_prop = str(s["propertyName"])
            direction = str(s.get("direction") or "ASCENDING").upper()
            if direction not in ("ASCENDING", "DESCENDING"):
                raise ApiError(400, f"Invalid input: sort direction {s.get('direction')!r}")
            descending = direction == "DESCENDING"
        else:
            raise ApiError(400, "Invalid input: a sort needs a propertyName")
    query = body.get("query")
    if query is not None and not isinstance(query, str):
        raise ApiError(400, "Invalid input: 'query' must be a string")
    raw_limit = body.get("limit", SEARCH_DEFAULT_LIMIT)
    if isinstance(raw_limit, bool) or not re.fullmatch(r"\d+", str(raw_limit).strip()):
        raise ApiError(400, f"Invalid input: 'limit' must be an integer, got {raw_limit!r}")
    limit = int(str(raw_limit).strip())
    if limit > SEARCH_MAX_LIMIT:
        raise ApiError(400, f"Invalid input: limit {limit} is above the maximum of {SEARCH_MAX_LIMIT}")
    offset = _offset(body.get("after"))
    if offset + limit > SEARCH_MAX_RESULTS:
        raise ApiError(400, f"Invalid input: paging past {SEARCH_MAX_RESULTS} results is not supported "
                            f"(after {offset} + limit {limit}); a query returns at most "
                            f"{SEARCH_MAX_RESULTS} results, narrow it instead")
    props = body.get("properties") or []
    if not isinstance(props, list):
        raise ApiError(400, "Invalid input: 'properties' must be a list")

    fast = _range_scan(view, parsed_groups, sort_prop, descending, query)
    if fast is not None:  # the extractor's query: a window on one property, sorted on it
        values_pos, start, end = fast
        chosen = values_pos[start + offset:min(end, start + offset + limit)]
        return [view.live[i] for i in chosen], end - start, offset, schema

    cache_key = (id(file), view_id, json.dumps([groups, sorts, query], sort_keys=True, default=str))
    with cache_lock:
        matched = cache.get(cache_key)
        if matched is not None:
            cache.move_to_end(cache_key)
    if matched is None:
        matched = _match(view, parsed_groups, query)
        if sort_prop:
            matched.sort(key=lambda r: r.key)
            present = [r for r in matched if r.comparable(sort_prop) is not None]
            missing = [r for r in matched if r.comparable(sort_prop) is None]
            present.sort(key=lambda r: r.comparable(sort_prop), reverse=descending)  # stable: ids stay ascending
            matched = present + missing
        else:  # creation order, oldest first
            matched.sort(key=lambda r: (_to_ms(r.created_at) or 0, r.key))
        with cache_lock:
            cache[cache_key] = matched
            while len(cache) > 16:
                cache.popitem(last=False)
    return matched[offset:offset + limit], len(matched), offset, schema


def _range_scan(view: _View, groups: list[list[_Filter]], sort_prop: str | None, descending: bool,
                query: str | None) -> tuple[list[int], int, int] | None:
    """One group of range filters on one datetime/number property, sorted ascending on it: the
    answer is a slice of that property's index, already ordered by (value, id). None when the
    query is anything else (then every candidate is checked and sorted)."""
    if len(groups) != 1 or not groups[0] or query or descending:
        return None
    prop = groups[0][0].prop
    bounds = [f.bounds() for f in groups[0]]
    if any(f.prop != prop for f in groups[0]) or any(b is None for b in bounds):
        return None
    if sort_prop != prop:
        return None
    values, pos = view.index(prop)
    start, end = 0, len(values)
    for lo, lo_inc, hi, hi_inc in bounds:
        if lo is not None:
            start = max(start, (bisect_left if lo_inc else bisect_right)(values, lo))
        if hi is not None:
            end = min(end, (bisect_right if hi_inc else bisect_left)(values, hi))
    return pos, start, max(start, end)


def _match(view: _View, groups: list[list[_Filter]], query: str | None) -> list[_Rec]:
    live = view.live
    if not groups:
        chosen = list(range(len(live)))
    else:
        positions: set[int] = set()
        for group in groups:
            candidates: Any = range(len(live))
            for f in group:
                bounds = f.bounds()
                if bounds is not None:
                    values, pos = view.index(f.prop)
                    lo, lo_inc, hi, hi_inc = bounds
                    start = 0 if lo is None else (bisect_left if lo_inc else bisect_right)(values, lo)
                    end = len(values) if hi is None else (bisect_right if hi_inc else bisect_left)(values, hi)
                    candidates = pos[start:end]
                    break
            positions.update(i for i in candidates if all(f.matches(live[i]) for f in group))
        chosen = sorted(positions)
    records = [live[i] for i in chosen]
    if query:
        words = [w for w in re.split(r"\s+", query.strip().lower()) if w]
        records = [r for r in records
                   if all(any(w in str(v).lower() for v in r.props.values() if v) for w in words)]
    return records


# --------------------------------------------------------------------------- pipelines

def _pipelines() -> list[dict[str, Any]]:
    def stage(sid: str, label: str, order: int, state: str) -> dict[str, Any]:
        return {"id": sid, "label": label, "displayOrder": order, "archived": False,
                "createdAt": _PIPELINES_CREATED, "updatedAt": _PIPELINES_CREATED,
                "metadata": {"ticketState": state, "isClosed": str(state == "CLOSED").lower()},
                "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT"}

    default = [("1", "New", "OPEN"), ("2", "Waiting on contact", "OPEN"),
               ("3", "Waiting on us", "OPEN"), ("4", "Closed", "CLOSED")]
    returns = [("1062417", "Return requested", "OPEN"), ("1062418", "Parcel received", "OPEN"),
               ("1062419", "Refunded", "CLOSED")]
    return [
        {"id": "0", "label": "Support Pipeline", "displayOrder": 0, "archived": False,
         "createdAt": _PIPELINES_CREATED, "updatedAt": _PIPELINES_CREATED,
         "stages": [stage(s, label, i, st) for i, (s, label, st) in enumerate(default)]},
        {"id": "5873051", "label": "Returns", "displayOrder": 1, "archived": False,
         "createdAt": _PIPELINES_CREATED, "updatedAt": _PIPELINES_CREATED,
         "stages": [stage(s, label, i, st) for i, (s, label, st) in enumerate(returns)]},
    ]


# --------------------------------------------------------------------------- HTTP

class _Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_status: Counter[str] = Counter()
        self.by_kind: dict[str, Counter[str]] = {}
        self.cut = 0
        self.hung = 0
        self.recent: deque[dict] = deque(maxlen=500)

    def reset(self) -> None:
        with self._lock:
            self.by_status.clear()
            self.by_kind.clear()
            self.cut = self.hung = 0
            self.recent.clear()

    def record(self, status: int | None, path: str, query: str, cut: bool = False,
               kind: str = "other") -> None:
        with self._lock:
            label = "hang" if status is None else str(status)
            if status is None:
                self.hung += 1
            else:
                self.by_status[label] += 1
            self.by_kind.setdefault(kind, Counter())[label] += 1
            self.cut += int(cut)
            self.recent.append({"at": time.time(), "status": status, "kind": kind, "path": path,
                                "query": query, "cut": cut})

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": sum(self.by_status.values()) + self.hung,
                    "by_status": dict(self.by_status),
                    "by_kind": {k: dict(v) for k, v in self.by_kind.items()},
                    "cut": self.cut, "hung": self.hung, "recent": list(self.recent)}


class _CrmHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, store: CrmStore, token: str, faults: FaultConfig) -> None:
        self.store = store
        self.token = token
        self.faults = _FaultPlan(faults)
        self.stats = _Stats()
        self.burst = _Window()
        self.search_window = _Window()
        self.search_cache: OrderedDict[Any, list[_Rec]] = OrderedDict()
        self.search_cache_lock = threading.Lock()
        self.stopping = threading.Event()
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def track(self, sock: socket.socket, opened: bool) -> None:
        with self._open_lock:
            (self._open.add if opened else self._open.discard)(sock)

    def drop_connections(self) -> None:
        """Close kept-alive connections too, so a stopped server really stops answering."""
        self.stopping.set()
        with self._open_lock:
            for sock in list(self._open):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


_ROUTES: list[tuple[str, re.Pattern, str]] = [
    ("GET", re.compile(r"/crm/v3/objects/(?P<obj>[^/]+)/?"), "list"),
    ("POST", re.compile(r"/crm/v3/objects/(?P<obj>[^/]+)/search/?"), "search"),
    ("GET", re.compile(r"/crm/v3/objects/(?P<obj>[^/]+)/(?P<id>[^/]+)/?"), "read"),
    ("POST", re.compile(r"/crm/v4/associations/(?P<obj>[^/]+)/(?P<to>[^/]+)/batch/read/?"), "assoc"),
    ("GET", re.compile(r"/crm/v4/objects/(?P<obj>[^/]+)/(?P<id>[^/]+)/associations/(?P<to>[^/]+)/?"), "assoc"),
    ("GET", re.compile(r"/crm/v3/pipelines/(?P<obj>[^/]+)/?"), "pipelines"),
]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients with a session expect
    server_version = "c360-mock-crm/2"
    timeout = 30  # an idle kept-alive connection frees its thread
    disable_nagle_algorithm = True  # headers and body leave at once, no delayed-ACK stall
    server: _CrmHTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)  # request line only, no headers

    # -- plumbing

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None,
              cut: bool = False, content_type: str = "application/json;charset=utf-8") -> None:
        if isinstance(payload, bytes):
            body = payload
        else:
            body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if cut:
            # A dropped connection: the promised length never arrives.
            self.wfile.write(body[: max(1, len(body) // 2)])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            self.wfile.write(body)

    def _error(self, status: int, message: str, category: str,
               headers: dict[str, str] | None = None, cut: bool = False, **extra: Any) -> None:
        correlation = str(uuid.uuid4())
        self._send(status, {"status": "error", "message": message, "correlationId": correlation,
                            "category": category, **extra},
                   {"x-hubspot-correlation-id": correlation, **(headers or {})}, cut=cut)

    def _auth_error(self) -> tuple[str, str, dict] | None:
        header = self.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if not header:
            return ("Authentication credentials not found. This API supports OAuth 2.0 authentication "
                    "and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                    "INVALID_AUTHENTICATION", {})
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                presented.strip().encode(), self.server.token.encode()):
            return ("The access token provided is invalid or has been revoked.", "INVALID_AUTHENTICATION", {})
        if self.server.faults.config.expired_token:
            return ("The OAuth token used to make this call expired 1 day(s) ago.", "EXPIRED_AUTHENTICATION",
                    {"context": {"expire time": [_now_iso()]}})
        return None

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _base_url(self) -> str:
        return f"http://{self.headers.get('Host') or '127.0.0.1:%d' % self.server.server_address[1]}"

    # -- routing

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _route(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        for m, pattern, kind in _ROUTES:
            match = pattern.fullmatch(path)
            if m == method and match:
                return kind, match.groupdict()
        return None

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        body = self._read_body() if method == "POST" else b""
        route = None if url.path.startswith("/_mock/") else self._route(method, url.path)
        is_api = url.path.startswith("/crm/")
        kind = route[0] if route else "other"
        srv = self.server
        denied = self._auth_error()
        if denied is not None:
            if is_api:
                srv.stats.record(401, url.path, url.query, kind=kind)
            message, category, extra = denied
            self._error(401, message, category, {"WWW-Authenticate": 'Bearer realm="crm"'}, **extra)
            return
        if url.path.startswith("/_mock/"):
            self._control(method, url.path, body)
            return
        if route is None:
            if is_api:
                srv.stats.record(404, url.path, url.query, kind=kind)
            self._error(404, f"no route {method} {url.path}", "OBJECT_NOT_FOUND")
            return
        self._api(kind, route[1], url.path, url.query, body)

    def _api(self, kind: str, args: dict[str, str], path: str, query: str, body: bytes) -> None:
        srv = self.server
        config = srv.faults.config

        def record(status: int | None, cut: bool = False) -> None:
            srv.stats.record(status, path, query, cut=cut, kind=kind)

        # HubSpot's limits first: a limited request is not processed.
        if kind == "search":
            ok, wait, _ = srv.search_window.take(config.search_per_second, 1.0)
            if not ok:
                record(429)
                self._error(429, "You have reached your secondly limit.", "RATE_LIMITS",
                            {"Retry-After": "1"} if config.rate_limit_retry_after else {},
                            errorType="RATE_LIMIT", policyName="SECONDLY")
                return
            limit_headers: dict[str, str] = {}
        else:
            ok, wait, remaining = srv.burst.take(config.burst_per_10s, 10.0)
            limit_headers = {"X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
                             "X-HubSpot-RateLimit-Max": str(config.burst_per_10s or 100),
                             "X-HubSpot-RateLimit-Remaining": str(remaining if config.burst_per_10s else 99)}
            if not ok:
                record(429)
                headers = dict(limit_headers)
                if config.rate_limit_retry_after:
                    headers["Retry-After"] = str(max(1, math.ceil(wait)))
                self._error(429, "You have reached your ten_secondly_rolling limit.", "RATE_LIMITS", headers,
                            errorType="RATE_LIMIT", policyName="TEN_SECONDLY_ROLLING", groupName="publicapi")
                return

        fault = srv.faults.next_fault()
        if fault == "hang":
            # Silent for hang_seconds (bounded, so tests finish), then dropped without an answer.
            srv.stopping.wait(min(config.hang_seconds, MAX_HANG_SECONDS))
            record(None)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if config.delay_seconds:
            srv.stopping.wait(config.delay_seconds)
        if fault == "429":
            record(429)
            self._error(429, "You have reached your ten_secondly_rolling limit.", "RATE_LIMITS",
                        {"Retry-After": str(config.retry_after_seconds)},
                        errorType="RATE_LIMIT", policyName="TEN_SECONDLY_ROLLING", groupName="publicapi")
            return
        if fault == "502html":
            record(502)
            self._send(502, b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>"
                            b"502 Bad Gateway</h1></center><hr><center>cloudflare</center></body></html>",
                       {"cf-ray": uuid.uuid4().hex[:16] + "-FRA"}, content_type="text/html")
            return
        if fault in ("500", "502", "503", "504"):
            record(int(fault))
            self._error(int(fault), "Internal error (injected)", "INTERNAL_ERROR")
            return
        cut = fault == "cut"
        try:
            handler: Callable[..., tuple[int, Any]] = getattr(self, f"_api_{kind}")
            status, payload = handler(args, query, body)
        except UnknownObject as exc:
            record(404, cut)
            self._error(404, f"Unable to infer object type from: {exc.args[0]}", "OBJECT_NOT_FOUND", cut=cut)
            return
        except ApiError as exc:
            record(exc.status, cut)
            self._error(exc.status, exc.message, exc.category, exc.headers, cut=cut, **exc.extra)
            return
        record(status, cut)
        self._send(status, payload, limit_headers, cut=cut)

    # -- the endpoints

    def _api_list(self, args: dict[str, str], query: str, body: bytes) -> tuple[int, Any]:
        srv = self.server
        obj = _object_name(args["obj"])
        params = parse_qs(query, keep_blank_values=True)
        last = {k: v[-1] for k, v in params.items()}
        file = srv.store.file(obj)
        raw_limit = last.get("limit") or str(LIST_DEFAULT_LIMIT)
        if not re.fullmatch(r"\d+", raw_limit.strip()):
            raise ApiError(400, f"Invalid input: 'limit' must be an integer, got {raw_limit!r}",
                           errors=[{"message": "limit must be an integer", "code": "INVALID_INTEGER"}])
        limit = int(raw_limit)
        if not 1 <= limit <= LIST_MAX_LIMIT:
            raise ApiError(400, f"Invalid input: limit must be between 1 and {LIST_MAX_LIMIT}, got {limit}")
        archived_text = (last.get("archived") or "false").strip().lower()
        if archived_text not in ("true", "false"):
            raise ApiError(400, f"Invalid input: 'archived' must be true or false, got {last.get('archived')!r}")
        archived = archived_text == "true"
        after_text = last.get("after") or ""
        after = decode_after(after_text) if after_text else None
        view, _ = srv.store.view(obj)
        keys, records = (view.archived_keys, view.archived) if archived else (view.live_keys, view.live)
        start = bisect_left(keys, after) if after is not None else 0
        end = min(start + limit, len(records))
        names = _property_names(obj, file.schema, _split_list(params.get("properties")))
        assoc_to = [_object_name(a) for a in _split_list(params.get("associations"))]
        config = srv.faults.config
        results = []
        for rec in records[start:end]:
            out = _render(rec, names)
            block = {}
            for to in assoc_to:
                ids = srv.store.associated(obj, rec, to)
                if ids:
                    type_name = _assoc_type(obj, to)[0]
                    entry: dict[str, Any] = {"results": [{"id": i, "type": type_name}
                                                         for i in ids[:config.assoc_page_size]]}
                    if len(ids) > config.assoc_page_size:
                        nxt = str(config.assoc_page_size)
                        entry["paging"] = {"next": {"after": nxt, "link": (
                            f"{self._base_url()}/crm/v4/objects/{obj}/{rec.id}/associations/{to}?after={nxt}")}}
                    block[to] = entry
            if block:
                out["associations"] = block
            results.append(out)
        payload: dict[str, Any] = {"results": results}
        next_after = None
        if end < len(records):
            next_after = encode_after(records[end].id)
        elif config.endless_pages:
            # Pages that never end: always one more (empty) page, with a cursor that moves on.
            if after is not None and after[0] == 0:
                next_after = str(after[1] + limit)
            elif records:
                tail = records[-1].key
                next_after = str(tail[1] + 1) if tail[0] == 0 else encode_after(tail[2] + "~")
            else:
                next_after = "1"
        if config.cursor_loop and after_text and next_after is not None:
            next_after = after_text  # the cursor that never advances
        if next_after is not None:
            pairs = [(k, v) for k, vs in params.items() if k != "after" for v in vs] + [("after", next_after)]
            payload["paging"] = {"next": {"after": next_after, "link": (
                f"{self._base_url()}/crm/v3/objects/{args['obj']}?{urlencode(pairs)}")}}
        return 200, payload

    def _api_read(self, args: dict[str, str], query: str, body: bytes) -> tuple[int, Any]:
        srv = self.server
        obj = _object_name(args["obj"])
        params = parse_qs(query, keep_blank_values=True)
        file = srv.store.file(obj)
        view, _ = srv.store.view(obj)
        archived = (params.get("archived", ["false"])[-1] or "false").lower() == "true"
        pool = view.archived if archived else view.live
        rec = next((r for r in pool if r.id == args["id"]), None) if archived else view.by_id.get(args["id"])
        if rec is None:
            raise ApiError(404, "Object not found.", "OBJECT_NOT_FOUND")
        out = _render(rec, _property_names(obj, file.schema, _split_list(params.get("properties"))))
        block = {}
        for to in (_object_name(a) for a in _split_list(params.get("associations"))):
            ids = srv.store.associated(obj, rec, to)
            if ids:
                block[to] = {"results": [{"id": i, "type": _assoc_type(obj, to)[0]} for i in ids]}
        if block:
            out["associations"] = block
        return 200, out

    def _api_search(self, args: dict[str, str], query: str, body: bytes) -> tuple[int, Any]:
        srv = self.server
        obj = _object_name(args["obj"])
        request = _search_request(body)
        config = srv.faults.config
        page, total, offset, schema = _search(srv.store, obj, request, config.index_lag_seconds,
                                              srv.search_cache, srv.search_cache_lock)
        requested = [str(p) for p in request.get("properties") or []]
        names = _property_names(obj, schema, requested)
        payload: dict[str, Any] = {"total": total, "results": [_render(r, names) for r in page]}
        limit = int(str(request.get("limit", SEARCH_DEFAULT_LIMIT)).strip())
        next_offset = offset + limit
        if limit and (next_offset < total or config.endless_pages):
            after = str(offset) if config.cursor_loop else str(next_offset)
            payload["paging"] = {"next": {"after": after}}
        return 200, payload

    def _api_assoc(self, args: dict[str, str], query: str, body: bytes) -> tuple[int, Any]:
        srv = self.server
        obj, to = _object_name(args["obj"]), _object_name(args["to"])
        srv.store.file(obj)
        srv.store.file(to)
        view, _ = srv.store.view(obj)
        page_size = srv.faults.config.assoc_page_size
        type_id = _assoc_type(obj, to)[1]
        started = _now_iso()

        def one(record_id: str, after: Any, limit: int) -> tuple[list[dict], str | None]:
            rec = view.by_id.get(record_id)
            ids = srv.store.associated(obj, rec, to) if rec is not None else []
            start = _offset(after)
            chunk = ids[start:start + limit]
            targets = [{"toObjectId": int(i) if i.isdigit() else i,
                        "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": None}]}
                       for i in chunk]
            return targets, (str(start + limit) if start + limit < len(ids) else None)

        if "id" in args:  # GET /crm/v4/objects/{from}/{id}/associations/{to}
            params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
            raw_limit = params.get("limit") or "500"
            if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 500:
                raise ApiError(400, f"Invalid input: limit must be between 1 and 500, got {raw_limit!r}")
            targets, nxt = one(args["id"], params.get("after"), min(int(raw_limit), page_size))
            payload: dict[str, Any] = {"results": targets}
            if nxt is not None:
                payload["paging"] = {"next": {"after": nxt, "link": (
                    f"{self._base_url()}/crm/v4/objects/{args['obj']}/{args['id']}/associations/{args['to']}?after={nxt}")}}
            return 200, payload

        try:
            request = json.loads(body or b"{}")
        except ValueError as exc:
            raise ApiError(400, f"Invalid input JSON: {exc}") from None
        inputs = request.get("inputs") if isinstance(request, dict) else None
        if not isinstance(inputs, list):
            raise ApiError(400, "Invalid input: 'inputs' must be a list")
        if len(inputs) > BATCH_MAX_INPUTS:
            raise ApiError(400, f"Invalid input: at most {BATCH_MAX_INPUTS} inputs are allowed, got {len(inputs)}")
        results, errors = [], []
        for item in inputs:
            if not isinstance(item, dict) or item.get("id") in (None, ""):
                raise ApiError(400, "Invalid input: each input needs an 'id'")
            record_id = str(item["id"])
            targets, nxt = one(record_id, item.get("after"), page_size)
            if not targets:
                errors.append({"status": "error", "category": "OBJECT_NOT_FOUND",
                               "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                               "message": f"No {SINGULAR.get(to, to)} is associated with "
                                          f"{SINGULAR.get(obj, obj)} {record_id}.",
                               "context": {"fromObjectId": [record_id]}, "links": {}, "errors": []})
                continue
            result: dict[str, Any] = {"from": {"id": record_id}, "to": targets}
            if nxt is not None:
                result["paging"] = {"next": {"after": nxt}}
            results.append(result)
        payload = {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": _now_iso()}
        if errors:
            payload |= {"numErrors": len(errors), "errors": errors}
            return 207, payload
        return 200, payload

    def _api_pipelines(self, args: dict[str, str], query: str, body: bytes) -> tuple[int, Any]:
        if _object_name(args["obj"]) != "tickets":
            raise ApiError(400, f"Unable to find pipelines for object type {args['obj']!r}; this portal "
                                "has ticket pipelines only")
        return 200, {"results": _pipelines()}

    # -- control

    def _control(self, method: str, path: str, body: bytes) -> None:
        srv = self.server
        try:
            payload = json.loads(body) if body.strip() else {}
            if (method, path) == ("GET", "/_mock/health"):
                self._send(200, {"status": "ok", "versions": srv.store.counts(),
                                 "clock": self._clock_text()})
            elif (method, path) == ("GET", "/_mock/stats"):
                self._send(200, srv.stats.as_dict())
            elif (method, path) == ("POST", "/_mock/stats/reset"):
                srv.stats.reset()
                self._send(200, srv.stats.as_dict())
            elif (method, path) == ("POST", "/_mock/clock"):
                as_of = payload.get("as_of")
                srv.store.clock_us = None if as_of is None else parse_instant(str(as_of))
                self._send(200, {"as_of": self._clock_text()})
            elif (method, path) == ("POST", "/_mock/faults"):
                srv.faults.replace(FaultConfig.from_dict(payload))
                srv.burst.reset()
                srv.search_window.reset()
                self._send(200, srv.faults.as_dict())
            elif (method, path) == ("GET", "/_mock/faults"):
                self._send(200, srv.faults.as_dict())
            else:
                self._error(404, f"no route {method} {path}", "OBJECT_NOT_FOUND")
        except (ValueError, TypeError, AttributeError) as exc:
            self._error(400, str(exc), "VALIDATION_ERROR")

    def _clock_text(self) -> str | None:
        clock = self.server.store.clock_us
        return None if clock is None else _format_instant(clock)


# --------------------------------------------------------------------------- running it

class CrmMockClient:
    """Steers a running mock server (in this process or another) through its control endpoints."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, payload: Any = None) -> dict:
        resp = self._session.request(method, f"{self.base_url}{path}", json=payload, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def set_clock(self, as_of: str | dt.datetime | None) -> dict:
        if isinstance(as_of, dt.datetime):
            as_of = as_of.isoformat()
        return self._call("POST", "/_mock/clock", {"as_of": as_of})

    def set_faults(self, faults: FaultConfig | None = None, **fields_: Any) -> dict:
        """Replace every knob: the ones not given go back to their defaults."""
        config = faults or FaultConfig(**fields_)
        return self._call("POST", "/_mock/faults", asdict(config))

    def faults(self) -> dict:
        return self._call("GET", "/_mock/faults")

    def stats(self) -> dict:
        return self._call("GET", "/_mock/stats")

    def reset_stats(self) -> dict:
        return self._call("POST", "/_mock/stats/reset")

    def health(self) -> dict:
        return self._call("GET", "/_mock/health")

    def close(self) -> None:
        self._session.close()


class RunningServer(CrmMockClient):
    """A mock server running in a background thread of this process; stop() it (or use ``with``)."""

    def __init__(self, httpd: _CrmHTTPServer, thread: threading.Thread, data_dir: Path, token: str) -> None:
        self._httpd = httpd
        self._thread = thread
        self.data_dir = data_dir
        self.token = token
        self.port = httpd.server_address[1]
        super().__init__(f"http://127.0.0.1:{self.port}", token)

    def stop(self) -> None:
        self._httpd.stopping.set()  # hanging handlers give up at once
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.drop_connections()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        self.close()

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:  # never show the token
        return f"RunningServer(base_url={self.base_url!r}, data_dir={str(self.data_dir)!r})"


def _make_server(data_dir: Path, port: int, token: str, faults: FaultConfig | None) -> _CrmHTTPServer:
    if not token:
        raise ValueError("the mock CRM server needs a bearer token")
    store = CrmStore(Path(data_dir))
    counts = store.preload()
    log.info("mock CRM records served from %s: %s", data_dir,
             ", ".join(f"{k}={v}" for k, v in counts.items()))
    return _CrmHTTPServer(port, store, token, faults or FaultConfig())


def start_server(data_dir: Path, token: str, port: int = 0,
                 faults: FaultConfig | None = None) -> RunningServer:
    """Serve in a daemon thread on 127.0.0.1 (port 0: any free port); returns once listening."""
    httpd = _make_server(data_dir, port, token, faults)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"mock-crm-{httpd.server_address[1]}", daemon=True)
    thread.start()
    return RunningServer(httpd, thread, Path(data_dir), token)


def serve(data_dir: Path, port: int = 8765, token: str = "", faults: FaultConfig | None = None) -> None:
    """Serve until interrupted (Ctrl-C). Used by ``c360 crm-server``."""
    httpd = _make_server(data_dir, port, token, faults)
    host, bound = httpd.server_address[:2]
    print(f"mock CRM API (HubSpot CRM v3) on http://{host}:{bound}/crm/v3/objects/{{object}} "
          f"(data: {data_dir}; Ctrl-C to stop)", flush=True)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.stopping.set()
        httpd.server_close()
