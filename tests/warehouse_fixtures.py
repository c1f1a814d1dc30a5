"""Hand-made raw zone batches for the dbt tests: a few people whose every number is known.

Batches are written with :func:`customer360.ingest.raw_zone.write_raw_batch` in the raw zone schemas of
docs/CONTRACTS.md, so the models read exactly what the loaders write. Two loads:

- load 1 (load_date 2026-03-08, landed 2026-03-09 01:00 UTC): everything up to 2026-03-08;
- load 2 (load_date 2026-03-10, landed 2026-03-11 01:00 UTC): a contact update and an erasure,
  new answers and tickets, a duplicate web delivery and a late event, a corrected POS file,
  and new keys that merge two known clusters and give a phone-only customer a contact.

The people (ground truth person ids in ``PEOPLE``) and the cases they carry:

- ann: two CRM contacts (1001, 1002: same email in another case); web device anon-ann logs
  in as 1001; POS loyalty card typed "ly 0001 2345" in Shanghai (S01) and a return typed
  with her phone without country code.
- bob: contact 1003 (US phone); New York store S02 either side of the DST switch; USD.
- ann and bob share the device anon-family (both log in on it): it must not merge them.
- carol: contact 1004; not logged in, identifies with her email on anon-carol, then orders.
- dan: contact 1005 only. erased: contact 1006, archived in load 2.
- eve: POS phone only in load 1; signs up (contact 1007, same phone) in load 2.
- frank: contact 1008 (email) and a separate loyalty card LY-F-77 in load 1; a POS sale
  carrying both in load 2 merges the two clusters.
- walk-ins (no key) and anon-ghost (never identified) belong to nobody.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from customer360.ingest.raw_zone import write_raw_batch
from customer360.core.settings import Settings, get_settings

UTC = dt.timezone.utc
LOAD_1 = dt.date(2026, 3, 8)
LOAD_2 = dt.date(2026, 3, 10)
LANDED_1 = dt.datetime(2026, 3, 9, 1, 0, tzinfo=UTC)
LANDED_2 = dt.datetime(2026, 3, 11, 1, 0, tzinfo=UTC)

# The raw zone shape of a CRM object (docs/sources.md section 1): HubSpot's record with every
# property under its internal name ("" kept as ""), archivedAt, and the associations as JSON.
CRM_SCHEMA = pa.schema([
    ("id", pa.string()), ("createdAt", pa.string()), ("updatedAt", pa.string()),
    ("archived", pa.bool_()), ("archivedAt", pa.string()), ("properties", pa.string()),
    ("associations", pa.string()),
    ("_source_file", pa.string()), ("_source_line", pa.int64()),
])
# Our values -> the portal's (the default property map, config/crm_properties.yml).
TICKET_STAGE = {"open": "1", "pending": "2", "closed": "4"}
TICKET_CATEGORY = {"billing": "BILLING_ISSUE", "delivery": "DELIVERY_ISSUE", "product": "PRODUCT_ISSUE",
                   "account": "ACCOUNT_ISSUE", "other": "GENERAL_INQUIRY"}
WEB_SCHEMA = pa.schema([
    ("messageId", pa.string()), ("type", pa.string()), ("event", pa.string()),
    ("anonymousId", pa.string()), ("userId", pa.string()), ("timestamp", pa.string()),
    ("receivedAt", pa.string()), ("context", pa.string()), ("properties", pa.string()),
    ("traits", pa.string()), ("_folder_date", pa.date32()),
    ("_source_file", pa.string()), ("_source_line", pa.int64()),
])
POS_COLUMNS = ("transaction_id", "line_no", "store_id", "business_date", "txn_ts", "txn_type",
               "loyalty_id", "customer_phone", "customer_email", "sku", "quantity",
               "unit_price", "discount_amount", "line_amount", "currency", "payment_method")
POS_SCHEMA = pa.schema([(c, pa.string()) for c in POS_COLUMNS] + [
    ("_store_timezone", pa.string()), ("_store_country", pa.string()),
    ("_file_encoding", pa.string()), ("_folder_date", pa.date32()),
    ("_source_file", pa.string()), ("_source_line", pa.int64()),
])
STORE_COLUMNS = ("store_id", "name", "city", "region", "country", "timezone", "file_encoding",
                 "opened_on")
PRODUCT_COLUMNS = ("sku", "name", "category", "brand", "list_price")

STORES = {
    "S01": {"name": "上海南京路店", "city": "Shanghai", "region": "East", "country": "CN",
            "timezone": "Asia/Shanghai", "file_encoding": "gb18030", "opened_on": "2020-05-01"},
    "S02": {"name": "New York 5th Ave", "city": "New York", "region": "US East", "country": "US",
            "timezone": "America/New_York", "file_encoding": "utf-8", "opened_on": "2021-09-01"},
}
PRODUCTS = [("A", "Tea set", "home", "Brand1", "50.00"), ("B", "Mug", "home", "Brand1", "30.00"),
            ("C", "Spoon", "home", "Brand2", "20.00"), ("D", "Kettle", "home", "Brand2", "50.00"),
            ("E", "Cup", "home", "Brand3", "10.00")]

# person -> the keys the ground truth knows them by (simulation/ground_truth/keys.parquet).
PEOPLE = {
    "ann": {"crm_contact_id": ["1001", "1002"], "web_user_id": ["1001"],
            "anonymous_id": ["anon-ann"], "email": ["ann@mail.com"],
            "phone": ["+8613800138000"], "loyalty_id": ["LY00012345"],
            "pos_transaction_id": ["T-1001", "T-1002"], "web_order_id": ["W-5001"]},
    "bob": {"crm_contact_id": ["1003"], "web_user_id": ["1003"], "email": ["bob@example.com"],
            "phone": ["+12125550101"], "loyalty_id": ["LY00099999"],
            "pos_transaction_id": ["T-2001", "T-2002", "T-2003"], "web_order_id": ["W-5004"]},
    "carol": {"crm_contact_id": ["1004"], "anonymous_id": ["anon-carol"],
              "email": ["carol@example.com"], "web_order_id": ["W-5002"]},
    "dan": {"crm_contact_id": ["1005"], "email": ["dan@example.com"], "phone": ["+442079460018"]},
    "erased": {"crm_contact_id": ["1006"]},
    "eve": {"crm_contact_id": ["1007"], "phone": ["+8613912345678"],
            "pos_transaction_id": ["T-1004", "T-1005"]},
    "frank": {"crm_contact_id": ["1008"], "email": ["frank@example.com"],
              "loyalty_id": ["LYF77"], "pos_transaction_id": ["T-1006", "T-1007"]},
    "walkin1": {"pos_transaction_id": ["T-3001"]},
    "walkin2": {"pos_transaction_id": ["T-1003"]},
    "ghost": {"anonymous_id": ["anon-ghost"], "web_order_id": ["W-5003"]},
}


PII_KEY = "test-pii-key-0123456789abcdef"


# ---------------------------------------------------------------- environment and queries

def use_home(mp: pytest.MonkeyPatch, home: Path) -> Settings:
    """Point the pipeline at ``home`` (small DuckDB limits, a test PII key)."""
    mp.setenv("C360_HOME", str(home))
    mp.setenv("C360_PII_KEY", PII_KEY)
    mp.setenv("C360_DUCKDB_MEMORY_LIMIT", "1GB")
    mp.setenv("C360_DUCKDB_THREADS", "1")
    for name in ("C360_LANDING", "C360_REPORTING_CURRENCY", "C360_DBT_THREADS"):
        mp.delenv(name, raising=False)
    return get_settings()


def query(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def scalar(db: Path, sql: str, params: list | None = None):
    rows = query(db, sql, params)
    assert len(rows) == 1, f"expected one row from {sql!r}, got {rows}"
    return rows[0][0]


def copy_warehouse(settings: Settings, dest: Path) -> Path:
    """A copy of the warehouse file as it is now (dbt has closed it)."""
    shutil.copyfile(settings.warehouse_path, dest)
    wal = settings.warehouse_path.with_name(settings.warehouse_path.name + ".wal")
    if wal.exists():
        shutil.copyfile(wal, dest.with_name(dest.name + ".wal"))
    return dest


def fx_rate(currency: str, day: dt.date) -> float:
    """The seed's CNY rate for ``currency`` in force on ``day`` (latest dated rate before)."""
    seed = Path(__file__).resolve().parents[1] / "dbt_project" / "seeds" / "fx_rates.csv"
    rows = [line.split(",") for line in seed.read_text().splitlines()[1:]]
    dated = sorted((dt.date.fromisoformat(d), float(r)) for d, c, r in rows
                   if c == currency and dt.date.fromisoformat(d) <= day)
    return dated[-1][1]


# ---------------------------------------------------------------- record builders

def crm_record(record_id: str, created: str, updated: str, archived: bool = False, *,
               last_modified: str = "hs_lastmodifieddate", contacts: list[str] | None = None,
               **properties: str | None) -> dict:
    """One record version as the extractor lands it: HubSpot's createdate, last-modified and
    hs_object_id properties, archivedAt when archived, the contact ids as associations."""
    props = {"hs_object_id": record_id, "createdate": created, last_modified: updated, **properties}
    return {"id": record_id, "createdAt": created, "updatedAt": updated, "archived": archived,
            "archivedAt": updated if archived else None,
            "properties": json.dumps(props, ensure_ascii=False),
            "associations": json.dumps({"contacts": contacts}) if contacts is not None else None}


def contact(cid: str, created: str, updated: str | None = None, archived: bool = False,
            **props: str | None) -> dict:
    # HubSpot sends "" for a property that is defined but empty.
    base = {"email": "", "firstname": "", "lastname": "", "phone": "", "mobilephone": "",
            "gender": "", "date_of_birth": "", "city": "", "country": "", "loyalty_id": "",
            "lifecyclestage": "customer", "marketing_consent": "false",
            "signup_channel": "web"}
    base.update(props)
    return crm_record(cid, created, updated or created, archived, last_modified="lastmodifieddate", **base)


def ticket(tid: str, contact_id: str, created: str, updated: str | None = None, *,
           status: str = "open", closed_at: str | None = None, category: str = "delivery",
           priority: str = "medium") -> dict:
    return crm_record(tid, created, updated or created, False, contacts=[contact_id],
                      subject="Where is my parcel", content="包裹还没到", hs_pipeline="0",
                      hs_pipeline_stage=TICKET_STAGE[status],
                      hs_ticket_category=TICKET_CATEGORY[category],
                      hs_ticket_priority=priority.upper(), closed_date=closed_at or "")


def feedback(fid: str, contact_id: str, survey: str, score: int, submitted: str) -> dict:
    return crm_record(fid, submitted, submitted, False, contacts=[contact_id], hs_survey_type=survey,
                      hs_value=str(score), hs_content="很好", hs_submission_timestamp=submitted)


def web_event(message_id: str, when: str, anon: str, *, user: str | None = None,
              kind: str = "page", event: str | None = None, properties: dict | None = None,
              traits: dict | None = None, path: str = "/", locale: str = "zh-CN") -> dict:
    context = {"page": {"url": f"https://shop.example{path}", "path": path, "referrer": None,
                        "title": "Shop"},
               "campaign": {"source": None, "medium": None, "name": None},
               "userAgent": "Mozilla/5.0", "ip": "203.0.113.7", "locale": locale}
    return {"messageId": message_id, "type": kind, "event": event, "anonymousId": anon,
            "userId": user, "timestamp": when, "receivedAt": when,
            "context": json.dumps(context),
            "properties": json.dumps(properties or {}),
            "traits": None if traits is None else json.dumps(traits)}


def order_completed(message_id: str, when: str, anon: str, order_id: str,
                    products: list[tuple[str, int, float]], *, user: str | None = None,
                    currency: str = "CNY") -> dict:
    items = [{"sku": s, "quantity": q, "price": p} for s, q, p in products]
    revenue = round(sum(q * p for _, q, p in products), 2)
    return web_event(message_id, when, anon, user=user, kind="track", event="Order Completed",
                     properties={"order_id": order_id, "revenue": revenue, "currency": currency,
                                 "products": items}, path="/checkout")


def pos_line(txn: str, line_no: int, ts: str, txn_type: str, sku: str, qty: int, price: str,
             *, loyalty: str = "", phone: str = "", email: str = "", discount: str = "0.00",
             currency: str = "CNY", payment: str = "支付宝") -> dict:
    amount = f"{qty * float(price) - float(discount):.2f}"
    return {"transaction_id": txn, "line_no": str(line_no), "txn_ts": ts, "txn_type": txn_type,
            "loyalty_id": loyalty, "customer_phone": phone, "customer_email": email, "sku": sku,
            "quantity": str(qty), "unit_price": price, "discount_amount": discount,
            "line_amount": amount, "currency": currency, "payment_method": payment}


# ---------------------------------------------------------------- landing helpers

@dataclass
class Lander:
    """Writes raw batches for one load (one load_date, one landing time)."""

    settings: Settings
    load_date: dt.date
    loaded_at: dt.datetime
    _seq: int = 0

    def _batch_id(self, source: str, entity: str) -> str:
        self._seq += 1
        return f"{source}-{entity}-{self.loaded_at:%Y%m%dT%H%M%S}-{self._seq:04d}"

    def _write(self, rows: list[dict], schema: pa.Schema, source: str, entity: str) -> Path | None:
        table = pa.Table.from_pylist(rows, schema=schema)
        return write_raw_batch(self.settings, table, source=source, entity=entity,
                               load_date=self.load_date, batch_id=self._batch_id(source, entity),
                               loaded_at=self.loaded_at)

    def crm(self, obj: str, records: list[dict]) -> None:
        source_file = f"search {obj} {self.load_date.isoformat()} page 1"
        rows = [r | {"_source_file": source_file, "_source_line": i}
                for i, r in enumerate(records, 1)]
        self._write(rows, CRM_SCHEMA, "crm", obj)

    def web_part(self, folder: dt.date, part: int, events: list[dict]) -> None:
        source_file = f"web/events/date={folder.isoformat()}/part-{part:04d}.jsonl.gz"
        rows = [e | {"_folder_date": folder, "_source_file": source_file, "_source_line": i}
                for i, e in enumerate(events, 1)]
        self._write(rows, WEB_SCHEMA, "web", "events")
        self._write([{"source_file": source_file, "size": 1000, "sha256": "0" * 64,
                      "folder_date": folder, "status": "loaded", "rows_read": len(events),
                      "rows_landed": len(events), "rows_quarantined": 0,
                      "duplicate_message_ids": 0}], WEB_FILES_SCHEMA, "web", "files")

    def pos_file(self, store: str, business_date: dt.date, lines: list[dict]) -> None:
        info = STORES[store]
        source_file = f"pos/date={business_date.isoformat()}/store_{store}.csv"
        rows = [ln | {"store_id": store, "business_date": business_date.isoformat(),
                      "_store_timezone": info["timezone"], "_store_country": info["country"],
                      "_file_encoding": info["file_encoding"], "_folder_date": business_date,
                      "_source_file": source_file, "_source_line": i}
                for i, ln in enumerate(lines, 2)]  # line 1 is the header
        self._write(rows, POS_SCHEMA, "pos", "transactions")
        self._write([{"source_file": source_file, "store_id": store,
                      "business_date": business_date.isoformat(), "size": 500,
                      "sha256": "1" * 64, "status": "loaded", "rows_read": len(lines),
                      "rows_landed": len(lines), "rows_quarantined": 0,
                      "supersedes_batch_id": None}], POS_FILES_SCHEMA, "pos", "files")

    def reference(self) -> None:
        stores = [{"store_id": sid, **info, "_source_file": "pos/reference/stores.csv",
                   "_source_line": i} for i, (sid, info) in enumerate(STORES.items(), 2)]
        self._write(stores, pa.schema([(c, pa.string()) for c in STORE_COLUMNS]
                                      + [("_source_file", pa.string()),
                                         ("_source_line", pa.int64())]), "pos", "stores")
        products = [dict(zip(PRODUCT_COLUMNS, p)) | {"_source_file": "pos/reference/products.csv",
                                                     "_source_line": i}
                    for i, p in enumerate(PRODUCTS, 2)]
        self._write(products, pa.schema([(c, pa.string()) for c in PRODUCT_COLUMNS]
                                        + [("_source_file", pa.string()),
                                           ("_source_line", pa.int64())]), "pos", "products")


WEB_FILES_SCHEMA = pa.schema([
    ("source_file", pa.string()), ("size", pa.int64()), ("sha256", pa.string()),
    ("folder_date", pa.date32()), ("status", pa.string()), ("rows_read", pa.int64()),
    ("rows_landed", pa.int64()), ("rows_quarantined", pa.int64()),
    ("duplicate_message_ids", pa.int64()),
])
POS_FILES_SCHEMA = pa.schema([
    ("source_file", pa.string()), ("store_id", pa.string()), ("business_date", pa.string()),
    ("size", pa.int64()), ("sha256", pa.string()), ("status", pa.string()),
    ("rows_read", pa.int64()), ("rows_landed", pa.int64()), ("rows_quarantined", pa.int64()),
    ("supersedes_batch_id", pa.string()),
])


# ---------------------------------------------------------------- the two loads

def d(day: int) -> dt.date:
    return dt.date(2026, 3, day)


# S01's 2026-03-01 file: first version, then the corrected one (load 2) that adds the walk-in
# T-1003 and drops T-1009, a till test sale that should never have been sent.
S01_DAY1_V1 = [
    pos_line("T-1001", 1, "2026-03-01 10:00:00", "SALE", "A", 2, "50.00", loyalty=" ly 0001 2345 "),
    pos_line("T-1001", 2, "2026-03-01 10:00:00", "SALE", "B", 1, "30.00", loyalty=" ly 0001 2345 "),
    pos_line("T-1001", 3, "2026-03-01 10:00:00", "VOID", "C", 1, "20.00", loyalty=" ly 0001 2345 "),
    pos_line("T-1009", 1, "2026-03-01 18:00:00", "SALE", "E", 1, "10.00"),
]
S01_DAY1_V2 = S01_DAY1_V1[:3] + [pos_line("T-1003", 1, "2026-03-01 11:00:00", "SALE", "E", 1, "10.00")]


def land_first_load(settings: Settings) -> None:
    lander = Lander(settings, LOAD_1, LANDED_1)
    lander.reference()
    lander.crm("contacts", [
        contact("1001", "2026-01-05T08:00:00Z", email=" Ann@Mail.com ", phone="+86 138-0013-8000",
                firstname="Ann", lastname="Li", country="China", city="Shanghai",
                loyalty_id="LY0001-2345", gender="female", date_of_birth="1990-04-02",
                marketing_consent="true", signup_channel="store"),
        # the portal's own lifecycle stage, mapped to ours (lead) through the property map
        contact("1002", "2026-02-10T08:00:00Z", email="ann@mail.com ", firstname="Ann",
                lastname="Li", country="CN", city="Shanghai", signup_channel="web",
                lifecyclestage="marketingqualifiedlead"),
        contact("1003", "2026-01-06T08:00:00Z", email="bob@example.com", phone="(212) 555-0101",
                firstname="Bob", lastname="Smith", country="US", city="New York"),
        contact("1004", "2026-01-07T08:00:00Z", email="carol@example.com", firstname="Carol",
                country="UK", city="London", marketing_consent="true"),
        # a national number read with the contact's free-text country
        contact("1005", "2026-01-08T08:00:00Z", email="dan@example.com", phone="020 7946 0018",
                firstname="Dan", country="United Kingdom", city="London"),
        contact("1006", "2026-01-09T08:00:00Z", email="erased@example.com", firstname="Erin",
                country="CN", city="Beijing"),
        # a phone that cannot be a full number: no phone key, flagged phone_unparsed (counted)
        contact("1008", "2026-02-01T08:00:00Z", email="Frank@Example.com", firstname="Frank",
                country="CN", city="Shanghai", phone="12345"),
    ])
    lander.crm("tickets", [
        ticket("T1", "1001", "2026-03-01T09:00:00Z"),
        ticket("T1", "1001", "2026-03-01T09:00:00Z", "2026-03-02T15:30:00Z", status="closed",
               closed_at="2026-03-02T15:30:00Z"),
    ])
    lander.crm("feedback_submissions", [
        feedback("F1", "1001", "NPS", 9, "2026-03-03T12:00:00Z"),
        feedback("F2", "1003", "NPS", 6, "2026-03-04T12:00:00Z"),
        feedback("F3", "1004", "NPS", 7, "2026-03-04T13:00:00Z"),
        feedback("F4", "1001", "CSAT", 4, "2026-03-04T14:00:00Z"),
    ])
    # Ann's day on the web: 10:00, 10:20 (login), 10:49 -> one session (gaps under 30 min);
    # 11:20 opens a second (31 min gap), the 12:00 order a third (40 min gap).
    lander.web_part(d(2), 1, [
        web_event("m-ann-1", "2026-03-02T10:00:00Z", "anon-ann"),
        web_event("m-ann-2", "2026-03-02T10:20:00Z", "anon-ann", user="1001", kind="identify",
                  traits={"email": "ANN@mail.com", "phone": "138 0013 8000"}),
        web_event("m-ann-3", "2026-03-02T10:49:00Z", "anon-ann", user="1001", path="/tea"),
        web_event("m-ann-4", "2026-03-02T11:20:00Z", "anon-ann", user="1001", path="/mugs"),
        order_completed("m-ann-5", "2026-03-02T12:00:00Z", "anon-ann", "W-5001",
                        [("A", 1, 99.0), ("D", 2, 50.0)], user="1001"),
    ])
    lander.web_part(d(3), 1, [
        web_event("m-carol-1", "2026-03-03T09:00:00Z", "anon-carol", kind="identify",
                  traits={"email": " Carol@Example.com"}, locale="en-GB"),
        order_completed("m-carol-2", "2026-03-03T09:05:00Z", "anon-carol", "W-5002",
                        [("E", 3, 10.0)]),
    ])
    lander.web_part(d(4), 1, [
        order_completed("m-ghost-1", "2026-03-04T20:00:00Z", "anon-ghost", "W-5003",
                        [("C", 1, 20.0)]),
    ])
    lander.web_part(d(6), 1, [
        web_event("m-fam-1", "2026-03-06T09:00:00Z", "anon-family", user="1001"),
        web_event("m-fam-2", "2026-03-06T09:10:00Z", "anon-family"),
        web_event("m-fam-3", "2026-03-06T20:00:00Z", "anon-family", user="1003", locale="en-US"),
        # nobody logged in: a session on a shared device that belongs to no one
        web_event("m-fam-4", "2026-03-06T14:00:00Z", "anon-family"),
    ])
    lander.pos_file("S01", d(1), S01_DAY1_V1)
    lander.pos_file("S01", d(5), [
        # Ann returns the mug; the till only has her phone, typed without +86.
        pos_line("T-1002", 1, "2026-03-05 15:00:00", "RETURN", "B", -1, "30.00", phone="13800138000"),
        # Eve is known by her phone only; Frank by a loyalty card only.
        pos_line("T-1004", 1, "2026-03-05 16:00:00", "SALE", "D", 1, "50.00", phone="139-1234-5678"),
        pos_line("T-1006", 1, "2026-03-05 17:00:00", "SALE", "A", 1, "50.00", loyalty="LY-F-77"),
    ])
    lander.pos_file("S02", d(7), [
        # 10:00 EST (UTC-5) -> 15:00 UTC.
        pos_line("T-2002", 1, "2026-03-07 10:00:00", "SALE", "A", 1, "20.00", email=" BOB@example.com",
                 currency="USD", payment="card"),
    ])
    lander.pos_file("S02", d(8), [
        # 03:30 EDT (UTC-4; clocks jumped from 02:00 to 03:00 that night) -> 07:30 UTC.
        pos_line("T-2001", 1, "2026-03-08 03:30:00", "SALE", "D", 2, "50.00", phone="212-555-0101",
                 discount="10.00", currency="USD", payment="card"),
        pos_line("T-3001", 1, "2026-03-08 12:00:00", "SALE", "E", 2, "10.00", currency="USD",
                 payment="cash"),
    ])


def land_second_load(settings: Settings) -> None:
    lander = Lander(settings, LOAD_2, LANDED_2)
    lander.crm("contacts", [
        contact("1001", "2026-01-05T08:00:00Z", "2026-03-09T10:00:00Z", email=" Ann@Mail.com ",
                phone="+86 138-0013-8000", firstname="Ann", lastname="Li", country="CN",
                city="Hangzhou", loyalty_id="LY0001-2345", gender="female",
                date_of_birth="1990-04-02", marketing_consent="true", signup_channel="store"),
        contact("1006", "2026-01-09T08:00:00Z", "2026-03-09T11:00:00Z", archived=True,
                email="erased@example.com", firstname="Erin", country="CN", city="Beijing"),
        contact("1007", "2026-03-09T12:00:00Z", email="eve@example.com", phone="13912345678",
                firstname="Eve", country="中国", city="Shanghai", signup_channel="store"),
    ])
    lander.crm("tickets", [ticket("T2", "1004", "2026-03-09T08:00:00Z", priority="high")])
    lander.crm("feedback_submissions", [feedback("F5", "1001", "NPS", 10, "2026-03-09T12:00:00Z")])
    lander.web_part(d(9), 1, [
        # m-ann-3 delivered a second time (at-least-once delivery).
        web_event("m-ann-3", "2026-03-02T10:49:00Z", "anon-ann", user="1001", path="/tea"),
        order_completed("m-bob-1", "2026-03-09T14:00:00Z", "anon-bob", "W-5004",
                        [("B", 2, 12.5)], user="1003", currency="USD"),
    ])
    # A late part file in an already-read folder: an event of Ann's first session.
    lander.web_part(d(5), 2, [
        web_event("m-ann-6", "2026-03-02T10:35:00Z", "anon-ann", user="1001", path="/cups"),
    ])
    lander.pos_file("S01", d(1), S01_DAY1_V2)
    lander.pos_file("S01", d(9), [
        pos_line("T-1005", 1, "2026-03-09 09:00:00", "SALE", "E", 1, "10.00", phone="+86 139 1234 5678"),
        # Frank shows his card and gives his email: the two clusters become one.
        pos_line("T-1007", 1, "2026-03-09 10:00:00", "SALE", "B", 1, "30.00", loyalty="lyf77",
                 email="frank@example.com"),
    ])
    lander.pos_file("S02", d(9), [
        pos_line("T-2003", 1, "2026-03-09 18:00:00", "SALE", "C", 1, "20.00", loyalty="LY-0009-9999",
                 phone="+1 212 555 0101", currency="USD", payment="card"),
    ])


def write_ground_truth(settings: Settings) -> Path:
    """simulation/ground_truth/keys.parquet as the simulator writes it."""
    rows = [{"key_type": kt, "key_value": kv, "person_id": person}
            for person, keys in PEOPLE.items() for kt, values in keys.items() for kv in values]
    path = settings.simulation_dir / "ground_truth" / "keys.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path
