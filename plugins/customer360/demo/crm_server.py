"""A mock CRM REST API (HubSpot v3 shape, docs/sources.md section 1) served over real HTTP on 127.0.0.1.

It serves the simulated CRM store, ``<data_dir>/<object>.jsonl.gz`` (every version of every
record, docs/CONTRACTS.md): for each id the latest version whose ``updatedAt`` is at or before
the server clock (no clock: the latest version), filtered by ``updatedAfter`` (inclusive),
ordered by (updatedAt, id) with numeric ids compared as numbers, paged by an opaque cursor that
encodes the last position, so a page boundary never moves when records change.

Fault knobs (:class:`FaultConfig`) make it behave like a real API on a bad day: 429 with
``Retry-After``, 500/502/503, and a page cut short mid-body (the connection closes before
``Content-Length`` bytes were sent). ``scripted`` faults are consumed one per data request
before the random ones, so tests can be deterministic.

Control endpoints (same bearer token) let tests and the demo steer it::

    POST /_mock/clock   {"as_of": "2026-03-05T00:00:00Z" | null}
    POST /_mock/faults  {FaultConfig fields}          replaces the fault settings
    GET  /_mock/stats   request counts by status      POST /_mock/stats/reset
    GET  /_mock/health

``serve`` blocks (the ``c360 crm-server`` command); ``start_server`` runs it in a background
thread and returns a :class:`RunningServer`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import json
import logging
import random
import socket
import threading
import time
import uuid
from bisect import bisect_left, bisect_right
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import duckdb
import requests

from customer360.core import duck

log = logging.getLogger(__name__)

OBJECTS = ("contacts", "tickets", "feedback_submissions")
MAX_LIMIT = 100  # as HubSpot
API_PREFIX = "/crm/v3/objects/"
SCRIPTED_FAULTS = ("ok", "429", "500", "502", "503", "cut")

# The sort key of a served record: (updatedAt in µs, 0 for numeric ids / 1 for others,
# numeric value, id text, line in the file). The line only separates id-less records.
Key = tuple[int, int, int, str, int]


# --------------------------------------------------------------------------- faults

@dataclass
class FaultConfig:
    """How often the server misbehaves. Rates are shares of data requests (0..1, summing to <= 1)."""

    rate_429: float = 0.0
    retry_after_seconds: int = 1
    rate_5xx: float = 0.0
    rate_cut: float = 0.0
    delay_seconds: float = 0.0  # added before every data response: a slow API
    seed: int | None = None  # same seed, same sequence of random faults
    scripted: list[str] = field(default_factory=list)  # consumed by the next data requests

    def __post_init__(self) -> None:
        for name in ("rate_429", "rate_5xx", "rate_cut"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.rate_429 + self.rate_5xx + self.rate_cut > 1.0:
            raise ValueError("rate_429 + rate_5xx + rate_cut must not exceed 1")
        if self.retry_after_seconds < 0 or self.delay_seconds < 0:
            raise ValueError("retry_after_seconds and delay_seconds must be >= 0")
        self.scripted = [str(f) for f in self.scripted]
        unknown = [f for f in self.scripted if f not in SCRIPTED_FAULTS]
        if unknown:
            raise ValueError(f"unknown scripted faults {unknown}; expected any of {SCRIPTED_FAULTS}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FaultConfig":
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
            draw = self._rng.random()
            if draw < c.rate_429:
                return "429"
            if draw < c.rate_429 + c.rate_5xx:
                return self._rng.choice(("500", "502", "503"))
            if draw < c.rate_429 + c.rate_5xx + c.rate_cut:
                return "cut"
            return None

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return asdict(self.config) | {"scripted": list(self._scripted)}


# --------------------------------------------------------------------------- data

def parse_instant(text: str) -> int:
    """ISO-8601 (``Z``, an offset, or naive meaning UTC) to microseconds since the epoch."""
    value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return (value - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)


def _format_instant(us: int) -> str:
    value = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=us)
    return value.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _sort_key(ts_us: int, record_id: str, line: int) -> Key:
    if record_id.isascii() and record_id.isdigit():
        return (ts_us, 0, int(record_id), record_id, line)
    return (ts_us, 1, 0, record_id, line)


def encode_cursor(key: Key) -> str:
    raw = json.dumps([key[0], key[3], key[4]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> Key:
    try:
        ts_us, record_id, line = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return _sort_key(int(ts_us), str(record_id), int(line))
    except (ValueError, TypeError, binascii.Error):
        raise ValueError(f"invalid paging cursor {token!r}") from None


@dataclass(frozen=True)
class _View:
    """The records one clock sees, in serving order: ``keys[i]`` sorts ``bodies[i]``."""

    keys: list[Key]
    bodies: list[str]


class _ObjectFile:
    """One object's versions, loaded once and reloaded when the file changes (mtime/size)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._signature: tuple | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._views: dict[int | None, _View] = {}
        self.versions = 0

    def _current_signature(self) -> tuple | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> None:
        con = duck.connect()
        # Raw lines are served as written (extra fields included); only the sort columns are
        # parsed. A version without a parseable updatedAt sorts at its createdAt so that a
        # client still gets to see (and quarantine) it.
        con.execute(
            """
            CREATE TABLE versions AS
            WITH lines AS (
                SELECT json::VARCHAR AS body, row_number() OVER () AS line
                FROM read_ndjson_objects(?, ignore_errors = true)
            )
            SELECT body, line,
                   coalesce(nullif(trim(body->>'id'), ''), '') AS id,
                   coalesce(epoch_us(try_cast(body->>'updatedAt' AS TIMESTAMPTZ)),
                            epoch_us(try_cast(body->>'createdAt' AS TIMESTAMPTZ)), 0) AS ts_us
            FROM lines WHERE body IS NOT NULL
            """,
            [str(self.path)],
        )
        if self._con is not None:
            self._con.close()
        self._con = con
        self._views = {}
        self.versions = con.execute("SELECT count(*) FROM versions").fetchone()[0]

    def _build_view(self, clock_us: int | None) -> _View:
        assert self._con is not None
        rows = self._con.execute(
            """
            SELECT body, id, ts_us, line FROM versions
            WHERE ? IS NULL OR ts_us <= ?
            QUALIFY row_number() OVER (
                PARTITION BY CASE WHEN id = '' THEN 'line:' || line ELSE id END
                ORDER BY ts_us DESC, line DESC) = 1
            """,
            [clock_us, clock_us],
        ).fetchall()
        # Sorted in Python so that the order is exactly the one bisect uses on the keys.
        keyed = sorted((_sort_key(ts, rid, line), body) for body, rid, ts, line in rows)
        return _View([k for k, _ in keyed], [b for _, b in keyed])

    def view(self, clock_us: int | None) -> _View:
        with self._lock:
            signature = self._current_signature()
            if signature is None:
                return _View([], [])
            if signature != self._signature:
                try:
                    self._load()
                except duckdb.Error as exc:
                    # Half-written by a re-simulation: keep serving what we had until it settles.
                    log.warning("could not (re)load %s: %s", self.path.name, exc)
                    if self._con is None:
                        return _View([], [])
                else:
                    self._signature = signature
                    log.info("loaded %s: %d versions", self.path.name, self.versions)
            view = self._views.get(clock_us)
            if view is None:
                self._views = {clock_us: self._build_view(clock_us)}  # only the live clock
                view = self._views[clock_us]
            return view


class UnknownObject(LookupError):
    pass


class CrmStore:
    """Every object of the simulated CRM, with the server clock."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._files: dict[str, _ObjectFile] = {}
        self._lock = threading.Lock()
        self.clock_us: int | None = None

    def _file(self, name: str) -> _ObjectFile:
        with self._lock:
            if name not in self._files:
                path = self.data_dir / f"{name}.jsonl.gz"
                if name not in OBJECTS and not path.exists():
                    raise UnknownObject(name)
                self._files[name] = _ObjectFile(path)
            return self._files[name]

    def preload(self) -> dict[str, int]:
        names = set(OBJECTS) | {p.name.removesuffix(".jsonl.gz") for p in self.data_dir.glob("*.jsonl.gz")}
        return {name: len(self._file(name).view(self.clock_us).keys) for name in sorted(names)}

    def page(self, name: str, *, updated_after_us: int | None, after: Key | None,
             limit: int) -> tuple[list[str], Key | None]:
        """Bodies of one page and the key of its last record when more follow."""
        view = self._file(name).view(self.clock_us)
        start = 0
        if updated_after_us is not None:
            start = bisect_left(view.keys, (updated_after_us,))
        if after is not None:
            start = max(start, bisect_right(view.keys, after))
        end = min(start + limit, len(view.keys))
        more = end < len(view.keys)
        return view.bodies[start:end], (view.keys[end - 1] if more else None)

    def counts(self) -> dict[str, int]:
        with self._lock:
            files = dict(self._files)
        return {name: f.versions for name, f in sorted(files.items())}


# --------------------------------------------------------------------------- HTTP

class _Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_status: Counter[str] = Counter()
        self.cut = 0
        self.recent: deque[dict] = deque(maxlen=500)

    def reset(self) -> None:
        with self._lock:
            self.by_status.clear()
            self.cut = 0
            self.recent.clear()

    def record(self, status: int, path: str, query: str, cut: bool = False) -> None:
        with self._lock:
            self.by_status[str(status)] += 1
            self.cut += int(cut)
            self.recent.append({"at": time.time(), "status": status, "path": path,
                                "query": query, "cut": cut})

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": sum(self.by_status.values()), "by_status": dict(self.by_status),
                    "cut": self.cut, "recent": list(self.recent)}


class _CrmHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, store: CrmStore, token: str, faults: FaultConfig) -> None:
        self.store = store
        self.token = token
        self.faults = _FaultPlan(faults)
        self.stats = _Stats()
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def track(self, sock: socket.socket, opened: bool) -> None:
        with self._open_lock:
            (self._open.add if opened else self._open.discard)(sock)

    def drop_connections(self) -> None:
        """Close kept-alive connections too, so a stopped server really stops answering."""
        with self._open_lock:
            for sock in list(self._open):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients with a session expect
    server_version = "c360-mock-crm/1"
    timeout = 30  # an idle kept-alive connection frees its thread
    disable_nagle_algorithm = True  # headers and body leave at once, no delayed-ACK stall
    server: _CrmHTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)  # request line only, no headers

    # -- plumbing

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None,
                   cut: bool = False) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8") if not isinstance(payload, bytes) else payload
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=utf-8")
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
               headers: dict[str, str] | None = None) -> None:
        self._send_json(status, {"status": "error", "message": message, "category": category,
                                 "correlationId": str(uuid.uuid4())}, headers)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode(), self.server.token.encode())

    def _read_json_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw.strip() else {}

    # -- routing

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        is_api = url.path.startswith(API_PREFIX)
        if not self._authorized():
            if is_api:
                self.server.stats.record(401, url.path, url.query)
            self._error(401, "Authentication credentials not found or invalid.",
                        "INVALID_AUTHENTICATION", {"WWW-Authenticate": 'Bearer realm="crm"'})
            return
        if is_api and method == "GET":
            self._objects(url.path[len(API_PREFIX):], url.query)
        elif url.path.startswith("/_mock/"):
            self._control(method, url.path)
        else:
            self._error(404, f"no route {method} {url.path}", "OBJECT_NOT_FOUND")

    def _control(self, method: str, path: str) -> None:
        srv = self.server
        try:
            if (method, path) == ("GET", "/_mock/health"):
                self._send_json(200, {"status": "ok", "versions": srv.store.counts(),
                                      "clock": self._clock_text()})
            elif (method, path) == ("GET", "/_mock/stats"):
                self._send_json(200, srv.stats.as_dict())
            elif (method, path) == ("POST", "/_mock/stats/reset"):
                srv.stats.reset()
                self._send_json(200, srv.stats.as_dict())
            elif (method, path) == ("POST", "/_mock/clock"):
                as_of = self._read_json_body().get("as_of")
                srv.store.clock_us = None if as_of is None else parse_instant(str(as_of))
                self._send_json(200, {"as_of": self._clock_text()})
            elif (method, path) == ("POST", "/_mock/faults"):
                srv.faults.replace(FaultConfig.from_dict(self._read_json_body()))
                self._send_json(200, srv.faults.as_dict())
            else:
                self._error(404, f"no route {method} {path}", "OBJECT_NOT_FOUND")
        except (ValueError, TypeError, AttributeError) as exc:
            self._error(400, str(exc), "VALIDATION_ERROR")

    def _clock_text(self) -> str | None:
        clock = self.server.store.clock_us
        return None if clock is None else _format_instant(clock)

    def _objects(self, name: str, query: str) -> None:
        srv = self.server
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        try:
            limit = int(params.get("limit") or MAX_LIMIT)
            if limit < 1:
                raise ValueError("limit must be a positive integer")
            limit = min(limit, MAX_LIMIT)
            updated_after = params.get("updatedAfter")
            updated_after_us = parse_instant(updated_after) if updated_after else None
            after = decode_cursor(params["after"]) if params.get("after") else None
        except ValueError as exc:
            srv.stats.record(400, name, query)
            self._error(400, str(exc), "VALIDATION_ERROR")
            return
        try:
            bodies, last_key = srv.store.page(name, updated_after_us=updated_after_us,
                                              after=after, limit=limit)
        except UnknownObject:
            srv.stats.record(404, name, query)
            self._error(404, f"Unable to infer object type from: {name}", "OBJECT_NOT_FOUND")
            return

        config = srv.faults.config
        if config.delay_seconds:
            time.sleep(config.delay_seconds)
        fault = srv.faults.next_fault()
        if fault == "429":
            srv.stats.record(429, name, query)
            self._error(429, "You have reached your secondly limit.", "RATE_LIMITS",
                        {"Retry-After": str(config.retry_after_seconds)})
            return
        if fault in ("500", "502", "503"):
            srv.stats.record(int(fault), name, query)
            self._error(int(fault), "Internal error (injected)", "INTERNAL_ERROR")
            return
        body = '{"results":[' + ",".join(bodies) + "]"
        if last_key is not None:
            body += ',"paging":{"next":{"after":' + json.dumps(encode_cursor(last_key)) + "}}"
        body += "}"
        srv.stats.record(200, name, query, cut=fault == "cut")
        self._send_json(200, body.encode("utf-8"), cut=fault == "cut")


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
        config = faults or FaultConfig(**fields_)
        return self._call("POST", "/_mock/faults", asdict(config))

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
    print(f"mock CRM API on http://{host}:{bound}/crm/v3/objects/{{object}} "
          f"(data: {data_dir}; Ctrl-C to stop)", flush=True)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
