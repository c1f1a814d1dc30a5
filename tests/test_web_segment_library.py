"""Web landing files made by Segment's own library, through the loader, staging and the marts.

``segment-analytics-python`` (the official library, a test-only dependency) posts its batches
to a loopback collector written here. The collector does what Segment's API does with a
batch (docs/sources.md section 2): it stamps ``receivedAt`` with its own clock, copies the
batch's ``sentAt`` onto each message, keeps the library's ``timestamp`` as
``originalTimestamp`` and sets ``timestamp`` to receivedAt - (sentAt - originalTimestamp),
Segment's clock-skew correction; then it writes the day's part file in the landing layout.

One day of traffic, every call type: an anonymous browser who logs in and orders (products by
product_id only and by sku only, Chinese names), a server-side Order Completed with only a
userId, an app whose screen views are aliased to the customer, an alias merging an old
contact id into a new one, a group call, Experiment Viewed, consent, a device with a skewed
clock and a redelivered message. The CRM contacts and the product reference are landed in
the raw zone directly (tests/warehouse_fixtures.py); one dbt build (with its tests) and the
ml layer follow, module-scoped.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import threading
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from customer360.ingest.landing.validate import validate_landing
from customer360.ingest.web import load_web
from customer360.warehouse.dbt_runner import build_warehouse, run_layer
from tests import warehouse_fixtures as wf

segment = pytest.importorskip("segment.analytics")
from segment.analytics import request as segment_request  # noqa: E402
from segment.analytics.client import Client  # noqa: E402

DAY = dt.date(2026, 3, 2)
UTC = dt.timezone.utc
WRITE_KEY = "test-write-key-0123456789"


def at(hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(DAY.year, DAY.month, DAY.day, hour, minute, second, tzinfo=UTC)


def _parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def _iso(ts: dt.datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


# ---------------------------------------------------------------- the loopback collector

@dataclass
class Collector:
    """Segment's tracking API in miniature: POST /v1/batch, messages kept in arrival order."""

    messages: list[dict] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    clock_offset: dt.timedelta = dt.timedelta(0)   # the test sets the server's true time

    def receive(self, body: dict, client_ip: str) -> None:
        received = dt.datetime.now(UTC) + self.clock_offset
        batch_sent_at = body.get("sentAt")
        with self.lock:
            self.requests += 1
            for msg in body.get("batch", []):
                msg = dict(msg)
                # The write key authenticates the batch: a secret, never stored with events.
                msg.pop("writeKey", None)
                msg.setdefault("messageId", str(uuid.uuid4()))
                msg["receivedAt"] = _iso(received)
                sent_at = msg.get("sentAt") or batch_sent_at
                if sent_at:
                    msg["sentAt"] = sent_at
                if "originalTimestamp" not in msg and msg.get("timestamp"):
                    msg["originalTimestamp"] = msg.pop("timestamp")
                if msg.get("originalTimestamp") and sent_at:
                    skew = _parse(sent_at) - _parse(msg["originalTimestamp"])
                    msg["timestamp"] = _iso(received - skew)
                else:
                    msg["timestamp"] = msg.get("originalTimestamp") or msg["receivedAt"]
                msg.setdefault("context", {}).setdefault("ip", client_ip)
                self.messages.append(msg)

    def write_day(self, landing: Path, day: dt.date, part: int = 0) -> Path:
        """The day's NDJSON part file, as Segment's S3/file destinations deliver it."""
        path = landing / "web" / "events" / f"date={day.isoformat()}" / f"part-{part:04d}.jsonl.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            text = "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in self.messages)
        path.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
        return path


def _handler(collector: Collector):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            if self.path != "/v1/batch":
                self.send_error(404)
                return
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            collector.receive(json.loads(raw), self.client_address[0])
            body = b'{"success": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # keep request lines out of the test output
            pass

    return Handler


@pytest.fixture(scope="module")
def collector():
    col = Collector()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(col))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    col.host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield col
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- one day of Segment traffic

BROWSER, APP, SKEWED = "web-anon-7f3a", "app-dev-91c2", "web-anon-skew"
LI, SERVER_BUYER, OLD_ID, NEW_ID = "2001", "2002", "2003", "2004"
CONSENT = {"consent": {"categoryPreferences": {"Advertising": False, "Analytics": True}}}


def send_day(collector: Collector) -> None:
    """What a shop's site, app and back end send in a day, through Segment's library."""
    host = collector.host
    client = Client(WRITE_KEY, host=host, gzip=True, upload_size=5, max_retries=1,
                    on_error=lambda e, batch: pytest.fail(f"segment library error: {e}"))
    # the browser: anonymous first; page fields in properties, as the server libraries send them
    client.page(anonymous_id=BROWSER, category="Shop", name="Home", timestamp=at(10),
                properties={"url": "https://shop.example/?utm_source=wechat", "path": "/",
                            "title": "首页 | Lumen", "referrer": "https://weixin.qq.com/",
                            "search": "?utm_source=wechat"})
    client.track(anonymous_id=BROWSER, event="Product Viewed", timestamp=at(10, 2),
                 properties={"product_id": "D", "name": "绿茶 礼盒", "category": "茶",
                             "price": 50.0, "currency": "CNY"})
    client.track(anonymous_id=BROWSER, event="Experiment Viewed", timestamp=at(10, 3),
                 properties={"experiment_id": "exp-checkout", "experiment_name": "一页结账",
                             "variation_id": "B", "variation_name": "one page"})
    client.identify(user_id=LI, anonymous_id=BROWSER, timestamp=at(10, 5),
                    traits={"email": " Li.Wei@Example.com ", "name": "李伟"}, context=CONSENT)
    client.track(user_id=LI, anonymous_id=BROWSER, event="Product Added", timestamp=at(10, 6),
                 properties={"sku": "A", "name": "青瓷茶具", "quantity": 1, "price": 99.0})
    client.track(user_id=LI, anonymous_id=BROWSER, event="Checkout Started", timestamp=at(10, 8),
                 properties={"revenue": 199.0, "currency": "CNY"})
    client.track(user_id=LI, anonymous_id=BROWSER, event="Order Completed", timestamp=at(10, 10),
                 properties={"order_id": "WEB-1", "revenue": 199.0, "currency": "CNY",
                             "products": [{"product_id": "D", "name": "绿茶 礼盒", "quantity": 2,
                                           "price": 50.0},
                                          {"sku": "A", "name": "青瓷茶具", "quantity": 1,
                                           "price": 99.0}]},
                 context=CONSENT)
    client.group(user_id=LI, group_id="acct-lumen", timestamp=at(10, 12),
                 traits={"name": "绿叶贸易有限公司", "plan": "enterprise"})
    # the app: anonymous screens, then the app's signed-in user is aliased to the device
    client.screen(anonymous_id=APP, name="Home", category="App", timestamp=at(13))
    client.screen(anonymous_id=APP, name="Product", timestamp=at(13, 1),
                  properties={"product_id": "E"})
    client.screen(anonymous_id=APP, name="Cart", timestamp=at(13, 4))
    client.alias(previous_id=APP, user_id=LI, timestamp=at(13, 5))
    # the back end: server-side calls carry only the userId
    client.track(user_id=SERVER_BUYER, event="Order Completed", timestamp=at(15),
                 properties={"order_id": "SRV-509", "revenue": 509.0, "currency": "CNY",
                             "products": [{"sku": "B", "name": "马克杯", "quantity": 1,
                                           "price": 509.0}]})
    # a customer's old account id now belongs to their new one
    client.alias(previous_id=OLD_ID, user_id=NEW_ID, timestamp=at(16))
    client.flush()
    client.join()

    # A device whose clock runs 2 hours fast (what the library cannot fake: its own clock),
    # through the library's request code, received at 17:00:05 true time; then a retry of the
    # same message (at-least-once delivery).
    fast = dt.timedelta(hours=2)
    collector.clock_offset = at(17, 0, 5) - dt.datetime.now(UTC)
    skewed = {"type": "page", "anonymousId": SKEWED, "messageId": "skewed-page-1",
              "timestamp": (at(17) + fast).isoformat(), "name": "Home",
              "properties": {"path": "/sale"}, "context": {"library": {"name": "analytics.js"}},
              "integrations": {}}
    try:
        for _ in range(2):
            segment_request.post(WRITE_KEY, host, batch=[dict(skewed)],
                                 sentAt=(at(17, 0, 5) + fast).isoformat())
    finally:
        collector.clock_offset = dt.timedelta(0)


# ---------------------------------------------------------------- the pipeline on that day

@dataclass
class Day:
    settings: object
    collector: Collector
    recs: list
    report: object
    db: Path


def land_crm_and_products(settings) -> None:
    lander = wf.Lander(settings, DAY, dt.datetime(2026, 3, 3, 1, 0, tzinfo=UTC))
    lander.reference()
    lander.crm("contacts", [
        wf.contact(LI, "2026-01-05T08:00:00Z", email="li.wei@example.com", firstname="伟",
                   lastname="李", country="China", city="Shanghai", marketing_consent="true"),
        wf.contact(SERVER_BUYER, "2026-01-06T08:00:00Z", email="buyer@example.com",
                   country="CN", city="Beijing", marketing_consent="true"),
        wf.contact(OLD_ID, "2026-01-07T08:00:00Z", email="old.account@example.com",
                   country="CN", city="Hangzhou"),
        wf.contact(NEW_ID, "2026-02-07T08:00:00Z", email="new.account@example.com",
                   country="CN", city="Hangzhou"),
    ])


@pytest.fixture(scope="module")
def day(tmp_path_factory, collector) -> Day:
    home = tmp_path_factory.mktemp("c360_segment")
    with pytest.MonkeyPatch.context() as mp:
        settings = wf.use_home(mp, home)
        send_day(collector)
        collector.write_day(settings.landing, DAY)
        report = validate_landing(settings.landing)
        recs = load_web(settings, DAY)
        land_crm_and_products(settings)
        results = build_warehouse(settings, logical_date=DAY)
        assert results.success, [n for n in results.nodes if n.status not in ("success", "pass")]
        run_layer(settings, "ml", logical_date=DAY)
        yield Day(settings, collector, recs, report, settings.warehouse_path)


def q(day: Day, sql: str, params: list | None = None) -> list[tuple]:
    return wf.query(day.db, sql, params)


def customer(day: Day, contact_id: str) -> str:
    return wf.scalar(day.db, "select customer_id from intermediate.int_identity__clusters "
                             "where identity_key = ?", [f"contact:{contact_id}"])


# ---------------------------------------------------------------- what the collector wrote

def test_the_collector_stamps_what_segments_api_stamps(day):
    msgs = day.collector.messages
    assert {m["type"] for m in msgs} == {"page", "track", "identify", "group", "screen", "alias"}
    for m in msgs:
        assert {"messageId", "timestamp", "originalTimestamp", "sentAt", "receivedAt"} <= set(m)
        assert "writeKey" not in m
    library = {m["context"]["library"]["name"] for m in msgs if m["messageId"] != "skewed-page-1"}
    assert library == {"analytics-python"}
    server_side = next(m for m in msgs if m.get("properties", {}).get("order_id") == "SRV-509")
    assert server_side.get("anonymousId") is None and server_side["userId"] == SERVER_BUYER


# ---------------------------------------------------------------- landing and loading

def test_the_day_validates_and_every_line_lands(day):
    assert day.report.errors == []
    (rec,) = day.recs
    sent = len(day.collector.messages)
    assert (rec.read, rec.landed, rec.quarantined) == (sent, sent, 0)
    assert rec.duplicates_in_raw == 1   # the retried skewed page
    print(f"\nSegment day {DAY}: {day.collector.requests} POSTs to /v1/batch, lines read "
          f"{rec.read}, landed {rec.landed}, quarantined {rec.quarantined}, duplicate "
          f"messageIds {rec.duplicates_in_raw}")


def test_unknown_fields_are_kept_and_segment_fields_are_columns(day):
    from tests.landing_fixtures import read_raw

    rows = read_raw(day.settings, "web", "events")
    alias = next(r for r in rows if r["type"] == "alias" and r["userId"] == NEW_ID)
    assert alias["previousId"] == OLD_ID
    assert json.loads(alias["_extra"]) == {"integrations": {}}
    group = next(r for r in rows if r["type"] == "group")
    assert group["groupId"] == "acct-lumen"
    screen = next(r for r in rows if r["type"] == "screen" and r["name"] == "Home")
    assert screen["category"] == "App"


# ---------------------------------------------------------------- staging

def test_staging_holds_every_call_type_once_with_segments_timestamp(day):
    types = dict(q(day, "select event_type, count(*) from staging.stg_web__events group by 1"))
    assert types == {"page": 2, "track": 6, "identify": 1, "group": 1, "screen": 3, "alias": 2}
    # the skewed device: its clock said 19:00; Segment's correction gives the true 17:00
    (event_at, original_at), = q(day, "select event_at, original_at from staging.stg_web__events "
                                      "where message_id = 'skewed-page-1'")
    assert original_at == at(19).replace(tzinfo=None)
    assert abs(event_at - at(17).replace(tzinfo=None)) < dt.timedelta(seconds=1)
    # library calls with a historical timestamp keep it (the client clock was right)
    (added_at,), = q(day, "select event_at from staging.stg_web__events "
                          "where event_name = 'Product Added'")
    assert abs(added_at - at(10, 6).replace(tzinfo=None)) < dt.timedelta(seconds=2)


def test_page_fields_come_from_properties_when_context_has_no_page(day):
    row = q(day, "select page_url, page_path, page_title, page_referrer, page_search, page_name, "
                 "page_category from staging.stg_web__events "
                 "where event_type = 'page' and anonymous_id = ?", [BROWSER])
    assert row == [("https://shop.example/?utm_source=wechat", "/", "首页 | Lumen",
                    "https://weixin.qq.com/", "?utm_source=wechat", "Home", "Shop")]


def test_consent_experiment_and_group_fields_are_staged(day):
    consent = q(day, "select consent_preferences from staging.stg_web__events "
                     "where consent_preferences is not null")
    assert [json.loads(c) for (c,) in consent] == [CONSENT["consent"]["categoryPreferences"]] * 2
    assert q(day, "select experiment_id, variation_id from staging.stg_web__events "
                  "where event_name = 'Experiment Viewed'") == [("exp-checkout", "B")]
    assert q(day, "select member_type, member_id, group_id, group_name "
                  "from intermediate.int_web__group_memberships") == [
        ("contact", LI, "acct-lumen", "绿叶贸易有限公司")]


# ---------------------------------------------------------------- identity

def test_alias_links_the_app_device_and_merges_an_old_id_into_the_new_one(day):
    li = customer(day, LI)
    assert wf.scalar(day.db, "select customer_id from intermediate.int_identity__clusters "
                             "where identity_key = ?", [f"anon:{APP}"]) == li
    assert customer(day, OLD_ID) == customer(day, NEW_ID) != li
    merged = q(day, "select crm_contact_ids from marts.customer_360 where customer_id = ?",
               [customer(day, NEW_ID)])
    assert merged == [([OLD_ID, NEW_ID],)]
    kinds = {r for (r,) in q(day, "select record_type from intermediate.int_identity__observations "
                                  "where record_type = 'web_alias' and identity_key = ?",
                             [f"contact:{OLD_ID}"])}
    assert kinds == {"web_alias"}   # the old id became a contact key, not a device key


# ---------------------------------------------------------------- marts

def test_the_server_side_order_counts_with_its_revenue_and_customer(day):
    order = q(day, "select customer_id, channel, net_amount, item_count from marts.fct_orders "
                   "where order_id = 'SRV-509'")
    assert order == [(customer(day, SERVER_BUYER), "web", Decimal("509.00"), 1)]


def test_order_lines_map_product_id_to_the_catalogue_sku(day):
    lines = q(day, "select line_no, sku, product_id, quantity, line_amount from marts.fct_order_lines "
                   "where order_id = 'WEB-1' order by line_no")
    assert lines == [(1, "D", "D", 2, Decimal("100.00")), (2, "A", None, 1, Decimal("99.00"))]
    assert q(day, "select customer_id, net_amount from marts.fct_orders where order_id = 'WEB-1'") == [
        (customer(day, LI), Decimal("199.00"))]


def test_product_views_get_the_sku_of_a_product_id(day):
    views = q(day, "select event_name, sku, customer_id from ml.ml_product_views order by event_at")
    assert views == [("Product Viewed", "D", customer(day, LI)),
                     ("Product Added", "A", customer(day, LI))]


def test_screen_views_count_as_page_views_of_the_app_session(day):
    app = q(day, "select customer_id, page_views, events, landing_path "
                 "from marts.fct_web_sessions where anonymous_id = ?", [APP])
    # three screens; the alias call carries no anonymousId, so it is in no session
    assert app == [(customer(day, LI), 3, 3, "Home")]
    web = q(day, "select page_views, landing_path, converted from marts.fct_web_sessions "
                 "where anonymous_id = ?", [BROWSER])
    assert web == [(1, "/", True)]


def test_customer_360_carries_accounts_and_the_latest_web_consent(day):
    li = q(day, "select account_ids, web_consent_denied, marketing_consent, web_orders_count "
                "from marts.customer_360 where customer_id = ?", [customer(day, LI)])
    assert li == [(["acct-lumen"], ["advertising"], True, 1)]
    buyer = q(day, "select account_ids, web_consent_denied, net_revenue from marts.customer_360 "
                   "where customer_id = ?", [customer(day, SERVER_BUYER)])
    assert buyer == [([], [], Decimal("509.00"))]
    summary = q(day, "select count(*), sum(orders_count), sum(net_revenue) from marts.customer_360")
    sessions = q(day, "select count(*), sum(page_views) from marts.fct_web_sessions")
    print(f"\nmarts: customers, orders, net revenue {summary[0]}; sessions, page views {sessions[0]}")
