"""The landing validator: a clean folder passes; each defect docs/sources.md rules out is found with
its file, line and reason; what it calls an error is exactly what the loaders quarantine."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path
from typing import Callable

import pytest

from customer360.ingest.landing.validate import validate_landing
from customer360.core.settings import get_settings
from customer360.ingest.pos import load_pos
from customer360.ingest.web import load_web
from tests.landing_fixtures import (POS_COLUMNS, PRODUCTS, STORES, event, order_completed,
                                    pos_path, pos_row, read_quarantine, web_part_path,
                                    write_corrupt_web_part, write_pos_file, write_reference,
                                    write_truncated_web_part, write_web_part)

D1 = dt.date(2026, 3, 10)
D2 = D1 + dt.timedelta(days=1)
WEB_NEW = "web/events/date=2026-03-10/part-0002.jsonl.gz"  # the file each web case adds
SH01 = "pos/date=2026-03-10/store_SH01.csv"
LN01 = "pos/date=2026-03-10/store_LN01.csv"
STORES_CSV = "pos/reference/stores.csv"


def write_clean_landing(landing: Path) -> int:
    """Files that follow docs/sources.md to the letter; returns how many records they hold."""
    write_web_part(landing, D1, 0, [
        event("w1", D1), order_completed("w2", D1),
        event("w3", D1, type="identify", userId="1042", traits={"email": "a@b.cn"}),
        event("w4", D1, type="track", event="Product Viewed", properties={"sku": "SKU-1"})])
    write_web_part(landing, D1, 1, [event("w5", D1 - dt.timedelta(days=3), hour=0)])  # late
    write_web_part(landing, D2, 0, [event("w6", D2), event("w6", D2)])  # redelivered
    write_reference(landing)
    write_pos_file(landing, D1, "SH01", [
        pos_row("SH01", D1, "T1", customer_phone="+86 138-0013-8000", payment_method="支付宝"),
        pos_row("SH01", D1, "T2", txn_type="RETURN", quantity="-1", line_amount="-25.00"),
        pos_row("SH01", D1, "T3", txn_type="VOID", customer_email='"quoted", name')],
        encoding="gb18030")
    write_pos_file(landing, D1, "LN01", [pos_row("LN01", D1, "L1", currency="GBP")])
    write_pos_file(landing, D2, "LN01", [pos_row("LN01", D2, "L2", currency="GBP")])
    return 7 + len(STORES) + len(PRODUCTS) + 5


def _web_case(*lines) -> Callable[[Path], None]:
    return lambda landing: write_web_part(landing, D1, 2, [event("ok", D1), *lines])


def _pos_case(*rows, store="SH01", encoding="gb18030", **kw) -> Callable[[Path], None]:
    return lambda landing: write_pos_file(landing, D1, store,
                                          [pos_row(store, D1, "T0"), *rows],
                                          encoding=encoding, **kw)


def _raw_web_lines(data: bytes) -> Callable[[Path], None]:
    def write(landing: Path) -> None:
        path = web_part_path(landing, D1, 2)
        path.write_bytes(gzip.compress(data))
    return write


def _stores_row(**fields) -> Callable[[Path], None]:
    row = {"store_id": "XX01", "name": "x", "city": "x", "region": "x", "country": "CN",
           "timezone": "Asia/Shanghai", "file_encoding": "UTF-8", "opened_on": "2020-01-01"}
    return lambda landing: write_reference(landing, stores=STORES + [row | fields])


ERR, WARN = "error", "warn"
# (case id, how to break the clean landing, the problems expected: file, line, reason start)
CASES = [
    ("web: invalid JSON", _web_case('{"messageId": "x", "type": '),
     [(WEB_NEW, 2, "line is not valid JSON", ERR)]),
    ("web: not an object", _web_case("[1, 2, 3]"),
     [(WEB_NEW, 2, "line is not a JSON object", ERR)]),
    ("web: not UTF-8", _raw_web_lines(json.dumps(event("ok", D1)).encode() + b"\n"
                                      + b'{"messageId": "\xff\xfe"}\n'),
     [(WEB_NEW, 2, "line is not valid UTF-8", ERR)]),
    ("web: no messageId", _web_case(event("", D1)), [(WEB_NEW, 2, "missing messageId", ERR)]),
    ("web: bad type", _web_case(event("x", D1, type="pageview")),
     [(WEB_NEW, 2, "type must be identify, track, page, screen, group or alias, got 'pageview'",
       ERR)]),
    ("web: neither anonymousId nor userId", _web_case(event("x", D1, anonymousId=None)),
     [(WEB_NEW, 2, "missing both anonymousId and userId", ERR)]),
    ("web: alias without previousId", _web_case(event("x", D1, type="alias", userId="1042")),
     [(WEB_NEW, 2, "alias call without previousId", ERR)]),
    ("web: group without groupId", _web_case(event("x", D1, type="group")),
     [(WEB_NEW, 2, "group call without groupId", ERR)]),
    ("web: no time at all", _web_case(event("x", D1, timestamp=None, receivedAt=None)),
     [(WEB_NEW, 2, "missing timestamp, and no originalTimestamp or receivedAt to take it from",
       ERR)]),
    ("web: timestamp without zone", _web_case(event("x", D1, timestamp="2026-03-10 10:00:00")),
     [(WEB_NEW, 2, "timestamp is not an ISO-8601 UTC time: '2026-03-10 10:00:00'", ERR)]),
    ("web: bad receivedAt", _web_case(event("x", D1, receivedAt="yesterday")),
     [(WEB_NEW, 2, "receivedAt is not an ISO-8601 UTC time", ERR)]),
    ("web: track without event", _web_case(event("x", D1, type="track", event=None)),
     [(WEB_NEW, 2, "track call without event", ERR)]),
    ("web: order without order_id",
     _web_case(order_completed("x", D1) | {"properties": {"revenue": 5, "products": []}}),
     [(WEB_NEW, 2, "Order Completed without properties.order_id", ERR)]),
    ("web: order revenue not a number",
     _web_case(order_completed("x", D1) | {"properties": {"order_id": "o", "revenue": "lots",
                                                         "products": []}}),
     [(WEB_NEW, 2, "Order Completed without a numeric properties.revenue", ERR)]),
    ("web: order without products",
     _web_case(order_completed("x", D1) | {"properties": {"order_id": "o", "revenue": 5}}),
     [(WEB_NEW, 2, "Order Completed without a properties.products list", ERR)]),
    ("web: event from the future", _web_case(event("x", D2, hour=0)),
     [(WEB_NEW, 2, "timestamp 2026-03-11T00:00:00.000Z is after its folder's day", ERR)]),
    ("web: later than the contract allows", _web_case(event("x", D1 - dt.timedelta(days=4))),
     [(WEB_NEW, 2, "timestamp 2026-03-06T10:00:00.000Z is more than 3 days before", WARN)]),
    ("web: corrupt gzip", lambda landing: write_corrupt_web_part(landing, D1, 2),
     [(WEB_NEW, None, "corrupt gzip file", ERR)]),
    ("web: truncated gzip",
     lambda landing: write_truncated_web_part(landing, D1, 2, [event(f"t{i}", D1)
                                                               for i in range(300)]),
     [(WEB_NEW, None, "truncated gzip file", ERR)]),
    ("web: no events", lambda landing: write_web_part(landing, D1, 2, []),
     [(WEB_NEW, None, "file holds no events", WARN)]),
    ("layout: impossible folder date",
     lambda landing: write_web_part(landing, dt.date(2026, 2, 28), 0, [event("x", D1)]).parent
     .rename(landing / "web" / "events" / "date=2026-02-30"),
     [("web/events/date=2026-02-30", None, "folder name has an invalid date", ERR)]),
    ("layout: stray file",
     lambda landing: (landing / "web/events/date=2026-03-10/README.txt").write_text("hi"),
     [("web/events/date=2026-03-10/README.txt", None, "unexpected entry", WARN)]),
    ("layout: no products.csv", lambda landing: (landing / "pos/reference/products.csv").unlink(),
     [("pos/reference/products.csv", None, "reference file is missing", ERR)]),
    ("pos: wrong field count", _pos_case("T9,1,SH01"),
     [(SH01, 3, "expected 16 fields as in the header, found 3", ERR)]),
    ("pos: malformed quoting", _pos_case('T9,1,SH01,"2026-03-10,x'),
     [(SH01, 3, "malformed CSV quoting", ERR)]),
    ("pos: txn_type", _pos_case(pos_row("SH01", D1, "T9", txn_type="REFUND")),
     [(SH01, 3, "txn_type must be SALE, RETURN or VOID, got 'REFUND'", ERR)]),
    ("pos: numbers", _pos_case(pos_row("SH01", D1, "T9", unit_price="", line_amount="1,5")),
     [(SH01, 3, "unit_price is not a number: ''; line_amount is not a number: '1,5'", ERR)]),
    ("pos: txn_ts", _pos_case(pos_row("SH01", D1, "T9", txn_ts="2026-03-10 25:61:00")),
     [(SH01, 3, "txn_ts is not a local time YYYY-MM-DD HH:MM:SS: '2026-03-10 25:61:00'", ERR)]),
    ("pos: store_id", _pos_case(pos_row("SH01", D1, "T9") | {"store_id": "LN01"}),
     [(SH01, 3, "store_id 'LN01' does not match the file name store_SH01.csv", ERR)]),
    ("pos: business_date", _pos_case(pos_row("SH01", D1, "T9", business_date="2026-03-09")),
     [(SH01, 3, "business_date '2026-03-09' does not match its folder date=2026-03-10", ERR)]),
    ("pos: unknown store",
     lambda landing: write_pos_file(landing, D1, "ZZ01", [pos_row("ZZ01", D1, "Z1")]),
     [("pos/date=2026-03-10/store_ZZ01.csv", None, "store ZZ01 has no valid row", ERR)]),
    ("pos: header lacks a column",
     _pos_case(columns=[c for c in POS_COLUMNS if c != "payment_method"]),
     [(SH01, 1, "header lacks column(s) payment_method", ERR),
      (SH01, 2, "header lacks column(s) payment_method", ERR)]),
    ("pos: unknown column", _pos_case(columns=POS_COLUMNS + ["till_no"]),
     [(SH01, 1, "column(s) not in the contract: till_no", WARN)]),
    ("pos: not GB18030",
     lambda landing: pos_path(landing, D1, "SH01").write_bytes(
         ",".join(POS_COLUMNS).encode() + b"\n" + b"T1,1,SH01,\x81\x30\xff\xff\n"),
     [(SH01, 2, "line is not valid GB18030", ERR)]),
    ("pos: header repeats an unknown column", _pos_case(columns=POS_COLUMNS + ["till", "till"]),
     [(SH01, 1, "header repeats column(s) till", ERR),
      (SH01, 1, "column(s) not in the contract: till", WARN),
      (SH01, 2, "header repeats column(s) till", ERR)]),
    ("pos: header repeats a known column", _pos_case(columns=POS_COLUMNS + ["currency"]),
     [(SH01, 1, "header repeats column(s) currency", ERR),
      (SH01, 2, "header repeats column(s) currency", ERR)]),
    ("pos: a bad line takes its transaction",
     _pos_case(pos_row("SH01", D1, "T9"), pos_row("SH01", D1, "T9", line_no=2, quantity="x")),
     [(SH01, 3, "transaction T9 quarantined whole: line 4: quantity is not a number: 'x'", ERR),
      (SH01, 4, "quantity is not a number: 'x'", ERR)]),
    ("pos: amounts with separators and signs",
     _pos_case(pos_row("SH01", D1, "T9", unit_price="¥1,299.00", line_amount="2,598.00")), []),
    ("pos: a currency sign against the currency",
     _pos_case(pos_row("SH01", D1, "T9", unit_price="£25.00")),
     [(SH01, 3, "unit_price has the currency sign '£' but currency is 'CNY'", ERR)]),
    ("pos: a UTF-8 BOM from a GB18030 store",
     lambda landing: _pos_case(encoding="utf-8")(landing) and pos_path(landing, D1, "SH01")
     .write_bytes(b"\xef\xbb\xbf" + pos_path(landing, D1, "SH01").read_bytes()),
     [(SH01, None, "declared GB18030 but the file starts with a UTF-8 byte-order mark", WARN)]),
    ("pos: GB18030 bytes from a UTF-8 store",
     _pos_case(pos_row("LN01", D1, "L9", payment_method="现金"), store="LN01"),
     [(LN01, 2, "file quarantined whole: declared UTF-8 but the bytes decode as GB18030", ERR),
      (LN01, 3, "file quarantined whole: declared UTF-8 but the bytes decode as GB18030", ERR)]),
    ("pos: empty file", lambda landing: pos_path(landing, D1, "LN01").write_bytes(b""),
     [(LN01, None, "empty file (no header)", WARN)]),
    ("stores: bad time zone", _stores_row(timezone="Asia/Atlantis"),
     [(STORES_CSV, 4, "timezone is not an IANA time zone: 'Asia/Atlantis'", ERR)]),
    ("stores: unknown encoding", _stores_row(file_encoding="EBCDIC-??"),
     [(STORES_CSV, 4, "file_encoding is not an encoding Python knows: 'EBCDIC-??'", ERR)]),
    ("products: price",
     lambda landing: write_reference(landing, products=PRODUCTS + [
         {"sku": "SKU-3", "name": "x", "category": "x", "brand": "x", "list_price": "TBD"}]),
     [("pos/reference/products.csv", 4, "list_price is not a number: 'TBD'", ERR)]),
]


def test_a_clean_landing_folder_passes(tmp_path):
    records = write_clean_landing(tmp_path)
    report = validate_landing(tmp_path)
    assert report.problems == []
    assert report.ok
    assert report.files_checked == 8
    assert report.records_checked == records
    assert "OK" in report.as_table().title


@pytest.mark.parametrize("case, expected", [(c[1], c[2]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_each_defect_is_reported_with_file_line_and_reason(tmp_path, case, expected):
    write_clean_landing(tmp_path)
    case(tmp_path)
    report = validate_landing(tmp_path)
    found = [(p.file, p.line, p.reason, p.severity) for p in report.problems]
    assert len(found) == len(expected), found
    for (file, line, reason, severity), got in zip(sorted(expected, key=str),
                                                   sorted(found, key=str)):
        assert got[:2] == (file, line) and got[3] == severity, got
        assert got[2].startswith(reason), got
    assert report.ok == (ERR not in {e[3] for e in expected})


def test_reference_files_in_a_store_encoding_pass(tmp_path):
    write_clean_landing(tmp_path)
    ref = tmp_path / "pos" / "reference"
    for name in ("stores.csv", "products.csv"):
        (ref / name).write_bytes((ref / name).read_text(encoding="utf-8").encode("gb18030"))
    report = validate_landing(tmp_path)
    assert report.problems == []


def test_folders_after_through_are_not_checked(tmp_path):
    write_clean_landing(tmp_path)
    write_web_part(tmp_path, D2, 1, ["{not json"])
    write_pos_file(tmp_path, D2, "LN01", ["garbage"])
    assert not validate_landing(tmp_path).ok
    report = validate_landing(tmp_path, through=D1)
    assert report.ok and report.problems == []
    assert report.files_checked == 6  # two web and two POS files of D1, two reference files


def test_what_the_validator_calls_an_error_is_what_the_loaders_quarantine(tmp_path, monkeypatch):
    monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("C360_LANDING", raising=False)
    settings = get_settings()
    landing = settings.landing
    write_clean_landing(landing)
    write_web_part(landing, D2, 1, [
        event("a", D2), "{broken", event("b", D2, anonymousId=""), event("c", D2 + dt.timedelta(1)),
        event("d", D2 - dt.timedelta(days=5)), order_completed("e", D2) | {"properties": {}}])
    write_corrupt_web_part(landing, D2, 2)
    write_truncated_web_part(landing, D2, 3, [event(f"t{i}", D2) for i in range(300)])
    write_pos_file(landing, D2, "SH01", [
        pos_row("SH01", D2, "T1"), "T2,1", pos_row("SH01", D2, "T3", quantity="lots"),
        pos_row("SH01", D2, "T4", txn_type="sale"), '"T5,1,SH01'], encoding="gb18030")
    write_pos_file(landing, D2, "ZZ01", [pos_row("ZZ01", D2, "Z1")])
    write_pos_file(landing, D1, "LN01", [pos_row("LN01", D1, "L1", till="3")],
                   columns=POS_COLUMNS + ["till"])
    write_pos_file(landing, D2, "LN01", [pos_row("LN01", D2, "L7", payment_method="现金"),
                                         pos_row("LN01", D2, "L8", unit_price="HK$1,299.00")],
                   encoding="gb18030")

    report = validate_landing(landing)
    load_web(settings, D2)
    load_pos(settings, D2)

    errors = {(p.file, p.line, p.reason) for p in report.errors}
    quarantined = {(q["source_file"], q["source_line"], q["reason"])
                   for entity in (("web", "events"), ("pos", "transactions"))
                   for q in read_quarantine(settings, *entity)}
    assert errors == quarantined
    assert len(errors) == 13
