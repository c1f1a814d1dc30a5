"""The POS loader on small hand-made store files: real CSV bytes in their stores' encodings,
real DuckDB, real Parquet."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from customer360.ingest.extract import ExtractError
from customer360.ingest.raw_zone import read_reconciliation
from customer360.core.settings import get_settings
from customer360.ingest.pos import load_pos
from tests.landing_fixtures import (POS_COLUMNS, STORES, batch_files, pos_path, pos_row,
                                    read_quarantine, read_raw, write_pos_file, write_reference)

D1 = dt.date(2026, 3, 10)
D2 = D1 + dt.timedelta(days=1)


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("C360_LANDING", raising=False)
    s = get_settings()
    write_reference(s.landing)
    return s


def _txns(settings) -> list[dict]:
    return read_raw(settings, "pos", "transactions")


def test_a_gb18030_file_decodes_chinese_text_exactly(settings):
    path = write_pos_file(settings.landing, D1, "SH01", [
        pos_row("SH01", D1, "T1", customer_email=" 张伟@例子.中国 ", payment_method="支付宝"),
        pos_row("SH01", D1, "T1", line_no=2, sku="SKU-2", payment_method="微信支付")],
        encoding="gb18030")
    with pytest.raises(UnicodeDecodeError):  # the bytes really are GB18030, not UTF-8
        path.read_bytes().decode("utf-8")

    load_pos(settings, D1)

    rows = sorted(_txns(settings), key=lambda r: r["line_no"])
    assert [r["payment_method"] for r in rows] == ["支付宝", "微信支付"]
    assert rows[0]["customer_email"] == " 张伟@例子.中国 "  # kept as typed at the till
    assert rows[0]["_file_encoding"] == "GB18030"
    stores = {r["store_id"]: r for r in read_raw(settings, "pos", "stores")}
    assert stores["SH01"]["name"] == "上海南京路店" and stores["SH01"]["city"] == "上海"
    products = {r["sku"]: r for r in read_raw(settings, "pos", "products")}
    assert products["SKU-1"]["name"] == "绿茶 Green tea"


def test_txn_ts_is_kept_as_given_with_the_store_time_zone(settings):
    write_pos_file(settings.landing, D1, "SH01",
                   [pos_row("SH01", D1, "T1", txn_ts="2026-03-10 23:30:00")], encoding="gb18030")
    write_pos_file(settings.landing, D1, "LN01", [pos_row("LN01", D1, "L1")])

    load_pos(settings, D1)

    rows = {r["transaction_id"]: r for r in _txns(settings)}
    assert rows["T1"]["txn_ts"] == "2026-03-10 23:30:00"
    assert (rows["T1"]["_store_timezone"], rows["T1"]["_store_country"]) == ("Asia/Shanghai",
                                                                             "CN")
    assert rows["L1"]["_store_timezone"] == "Europe/London"
    assert rows["L1"]["_folder_date"] == D1
    assert rows["L1"]["_source_file"] == "pos/date=2026-03-10/store_LN01.csv"
    assert rows["L1"]["_source_line"] == 2


def test_a_corrected_file_supersedes_the_earlier_one_and_both_stay_in_raw(settings):
    write_pos_file(settings.landing, D1, "LN01", [pos_row("LN01", D1, "L1")])
    (*_, first) = load_pos(settings, D1)
    write_pos_file(settings.landing, D2, "LN01", [pos_row("LN01", D2, "L9")])
    write_pos_file(settings.landing, D1, "LN01",
                   [pos_row("LN01", D1, "L1"), pos_row("LN01", D1, "L2")], mtime_offset=5)

    (second,) = load_pos(settings, D2)

    assert (second.read, second.landed) == (3, 3)  # the corrected D1 file and D2's file
    rows = _txns(settings)
    d1 = [r for r in rows if r["_source_file"] == "pos/date=2026-03-10/store_LN01.csv"]
    assert sorted((r["_batch_id"], r["transaction_id"]) for r in d1) == sorted(
        [(first.batch_id, "L1"), (second.batch_id, "L1"), (second.batch_id, "L2")])
    versions = {r["_batch_id"]: r for r in read_raw(settings, "pos", "files")
                if r["source_file"] == "pos/date=2026-03-10/store_LN01.csv"}
    assert versions[first.batch_id]["supersedes_batch_id"] is None
    assert versions[second.batch_id]["supersedes_batch_id"] == first.batch_id
    assert versions[second.batch_id]["_loaded_at"] > versions[first.batch_id]["_loaded_at"]
    assert (versions[second.batch_id]["store_id"],
            versions[second.batch_id]["business_date"]) == ("LN01", "2026-03-10")


def test_malformed_rows_are_quarantined_and_the_other_rows_land(settings):
    good = pos_row("SH01", D1, "T1")
    write_pos_file(settings.landing, D1, "SH01", [
        good,
        "T2,1,SH01,2026-03-10,2026-03-10 10:20:00,SALE",
        pos_row("SH01", D1, "T3", quantity="两个", txn_type="SOLD"),
        pos_row("SH01", D1, "T4", txn_ts="2026-03-10T10:15:00+08:00"),
        pos_row("SH01", D1, "T5", business_date="2026-03-09", store_id="SH02"),
        pos_row("SH01", D1, "T6", line_no=2),
    ], encoding="gb18030")

    (*_, rec) = load_pos(settings, D1)

    assert (rec.read, rec.landed, rec.quarantined) == (6, 2, 4)
    assert sorted(r["transaction_id"] for r in _txns(settings)) == ["T1", "T6"]
    q = {r["source_line"]: r for r in read_quarantine(settings, "pos", "transactions")}
    assert set(q) == {3, 4, 5, 6}
    assert all(r["source_file"] == "pos/date=2026-03-10/store_SH01.csv" for r in q.values())
    assert q[3]["reason"] == "expected 16 fields as in the header, found 6"
    assert q[3]["raw_text"] == "T2,1,SH01,2026-03-10,2026-03-10 10:20:00,SALE"
    assert q[3]["record_key"] is None
    assert q[4]["reason"] == ("txn_type must be SALE, RETURN or VOID, got 'SOLD'; "
                              "quantity is not a number: '两个'")
    assert "两个" in q[4]["raw_text"] and q[4]["record_key"] == "T3:1"
    assert q[5]["reason"].startswith("txn_ts is not a local time")
    assert "store_id 'SH02' does not match the file name store_SH01.csv" in q[6]["reason"]
    assert "business_date '2026-03-09' does not match its folder date=2026-03-10" in q[6]["reason"]


def test_an_unknown_extra_column_does_not_break_the_load(settings):
    write_pos_file(settings.landing, D1, "LN01",
                   [dict(pos_row("LN01", D1, "L1"), till_no="7", cashier="Ann, B.")],
                   columns=["till_no", *POS_COLUMNS[::-1], "cashier"])  # other order, too

    (*_, rec) = load_pos(settings, D1)

    assert (rec.landed, rec.quarantined) == (1, 0)
    (row,) = _txns(settings)
    assert row["transaction_id"] == "L1" and row["quantity"] == "2"
    assert json.loads(row["_extra"]) == {"till_no": "7", "cashier": "Ann, B."}


def test_empty_and_header_only_files_load_nothing_and_say_so(settings):
    empty = pos_path(settings.landing, D1, "LN01")
    empty.parent.mkdir(parents=True)
    empty.write_bytes(b"")
    write_pos_file(settings.landing, D1, "SH01", [], encoding="gb18030")

    (*_, rec) = load_pos(settings, D1)

    assert (rec.read, rec.landed, rec.quarantined) == (0, 0, 0)
    files = {r["source_file"]: r for r in read_raw(settings, "pos", "files")}
    assert {f["status"] for f in files.values()} == {"loaded"}
    assert {f["rows_read"] for f in files.values()} == {0}
    assert load_pos(settings, D1) == []


def test_a_file_of_an_unknown_store_waits_for_the_store_to_be_known(settings):
    write_pos_file(settings.landing, D1, "HK01", [pos_row("HK01", D1, "H1")])
    (*_, rec) = load_pos(settings, D1)
    assert (rec.read, rec.quarantined) == (1, 1)
    (q,) = read_quarantine(settings, "pos", "transactions")
    assert q["source_file"] == "pos/date=2026-03-10/store_HK01.csv" and "HK01" in q["reason"]

    write_reference(settings.landing, stores=STORES + [
        {"store_id": "HK01", "name": "Causeway Bay", "city": "Hong Kong", "region": "HK",
         "country": "HK", "timezone": "Asia/Hong_Kong", "file_encoding": "UTF-8",
         "opened_on": "2022-01-01"}])
    recs = load_pos(settings, D2)

    # products.csv was rewritten with the same bytes: touched, not changed, not loaded again
    assert [r.entity for r in recs] == ["stores", "transactions"]
    (row,) = _txns(settings)
    assert (row["transaction_id"], row["_store_timezone"]) == ("H1", "Asia/Hong_Kong")


def test_missing_stores_reference_stops_the_run(settings):
    (settings.landing / "pos" / "reference" / "stores.csv").unlink()
    write_pos_file(settings.landing, D1, "LN01", [pos_row("LN01", D1, "L1")])
    with pytest.raises(ExtractError, match="stores.csv"):
        load_pos(settings, D1)
    assert _txns(settings) == []


def test_reruns_land_nothing_and_counts_reconcile(settings):
    write_pos_file(settings.landing, D1, "SH01", [pos_row("SH01", D1, "T1"), "broken,row"],
                   encoding="gb18030")
    write_pos_file(settings.landing, D1, "LN01", [pos_row("LN01", D1, "L1")])
    write_pos_file(settings.landing, D2, "LN01", [pos_row("LN01", D2, "L2", quantity="x")])
    load_pos(settings, D1)
    load_pos(settings, D2)
    batches = batch_files(settings, "pos", "transactions")

    assert load_pos(settings, D2) == []
    assert batch_files(settings, "pos", "transactions") == batches
    audit = [r for r in read_reconciliation(settings) if r["entity"] == "transactions"]
    assert all(r["read"] == r["landed"] + r["quarantined"] for r in audit)
    assert sum(r["landed"] for r in audit) == len(_txns(settings)) == 2
    assert sum(r["quarantined"] for r in audit) == len(
        read_quarantine(settings, "pos", "transactions")) == 2


# --- issue 17: till exports as real tills write them -----------------------------------------

def _quarantine_by_line(settings) -> dict[int, dict]:
    return {r["source_line"]: r for r in read_quarantine(settings, "pos", "transactions")}


def _files_rows(settings) -> dict[str, dict]:
    return {r["source_file"]: r for r in read_raw(settings, "pos", "files")}


def test_amounts_with_separators_and_currency_signs_land_as_sent(settings):
    write_pos_file(settings.landing, D1, "SH01", [
        pos_row("SH01", D1, "T1", unit_price="1,299.00", line_amount="¥2,598.00",
                discount_amount="￥0.00"),
        pos_row("SH01", D1, "T2", unit_price="CNY 88.00", line_amount="-¥88.00", quantity="-1",
                txn_type="RETURN")], encoding="gb18030")

    (*_, rec) = load_pos(settings, D1)

    assert (rec.read, rec.landed, rec.quarantined) == (2, 2, 0)
    rows = {r["transaction_id"]: r for r in _txns(settings)}
    assert (rows["T1"]["unit_price"], rows["T1"]["line_amount"]) == ("1,299.00", "¥2,598.00")


def test_a_currency_sign_that_contradicts_the_currency_column_is_a_reason(settings):
    write_pos_file(settings.landing, D1, "LN01", [
        pos_row("LN01", D1, "L1", currency="GBP", unit_price="£12.50", line_amount="£25.00"),
        pos_row("LN01", D1, "L2", currency="GBP", unit_price="¥12.50", line_amount="25.00")])

    (*_, rec) = load_pos(settings, D1)

    assert (rec.read, rec.landed, rec.quarantined) == (2, 1, 1)
    assert _quarantine_by_line(settings)[3]["reason"] == (
        "unit_price has the currency sign '¥' but currency is 'GBP'")


def test_a_comma_decimal_store_reads_its_amounts_in_its_own_locale(settings):
    write_reference(settings.landing, stores=STORES + [
        {"store_id": "BE01", "name": "Berlin Mitte", "city": "Berlin", "region": "BE",
         "country": "DE", "timezone": "Europe/Berlin", "file_encoding": "UTF-8",
         "opened_on": "2022-01-01"}])
    write_pos_file(settings.landing, D1, "BE01", [
        pos_row("BE01", D1, "B1", currency="EUR", unit_price="1.299,00", line_amount="1.299,00 €",
                quantity="1", discount_amount="0,00"),
        pos_row("BE01", D1, "B2", currency="EUR", unit_price="1,299.00", line_amount="12,5",
                discount_amount="0,00")])

    (*_, rec) = load_pos(settings, D1)

    assert (rec.landed, rec.quarantined) == (1, 1)
    assert _quarantine_by_line(settings)[3]["reason"] == (
        "unit_price is not a number: '1,299.00' (store country DE writes a decimal comma)")


def test_one_bad_line_quarantines_its_whole_transaction_with_the_line_named(settings):
    write_pos_file(settings.landing, D1, "SH01", [
        pos_row("SH01", D1, "T1", line_no=1),
        pos_row("SH01", D1, "T1", line_no=2, quantity="两个"),
        pos_row("SH01", D1, "T1", line_no=3),
        pos_row("SH01", D1, "T2", line_no=1)], encoding="gb18030")

    (*_, rec) = load_pos(settings, D1)

    assert (rec.read, rec.landed, rec.quarantined) == (4, 1, 3)
    assert [r["transaction_id"] for r in _txns(settings)] == ["T2"]
    q = _quarantine_by_line(settings)
    assert q[3]["reason"] == "quantity is not a number: '两个'"
    whole = "transaction T1 quarantined whole: line 3: quantity is not a number: '两个'"
    assert q[2]["reason"] == q[4]["reason"] == whole
    assert q[2]["record_key"] == "T1:1"
    files = _files_rows(settings)["pos/date=2026-03-10/store_SH01.csv"]
    assert (files["rows_read"], files["rows_landed"], files["rows_quarantined"]) == (4, 1, 3)


def test_a_short_line_takes_its_transaction_with_it(settings):
    write_pos_file(settings.landing, D1, "LN01", [
        pos_row("LN01", D1, "L1", line_no=1), "L1,2,LN01,2026-03-10", pos_row("LN01", D1, "L2")])

    (*_, rec) = load_pos(settings, D1)

    assert (rec.landed, rec.quarantined) == (1, 2)
    assert _quarantine_by_line(settings)[2]["reason"] == (
        "transaction L1 quarantined whole: line 3: expected 16 fields as in the header, found 4")


def test_a_utf8_bom_file_from_a_gb18030_store_loads_with_a_note(settings):
    path = pos_path(settings.landing, D1, "SH01")
    write_pos_file(settings.landing, D1, "SH01", [
        pos_row("SH01", D1, "T1", payment_method="支付宝")])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))

    (*_, rec) = load_pos(settings, D1)

    assert (rec.read, rec.landed, rec.quarantined) == (1, 1, 0)
    (row,) = _txns(settings)
    assert (row["transaction_id"], row["payment_method"]) == ("T1", "支付宝")
    assert _files_rows(settings)[f"pos/date=2026-03-10/store_SH01.csv"]["reason"] == (
        "declared GB18030 but the file starts with a UTF-8 byte-order mark: read as UTF-8")


@pytest.mark.parametrize("store, encoding, reason", [
    ("LN01", "gb18030", "declared UTF-8 but the bytes decode as GB18030"),
    ("SH01", "utf-8", "declared GB18030 but the bytes decode as UTF-8"),
])
def test_a_file_in_another_encoding_is_quarantined_whole_naming_both(settings, store, encoding,
                                                                      reason):
    write_pos_file(settings.landing, D1, store, [
        pos_row(store, D1, "X1", payment_method="微信支付"), pos_row(store, D1, "X2")],
        encoding=encoding)

    (*_, rec) = load_pos(settings, D1)

    assert (rec.read, rec.landed, rec.quarantined) == (2, 0, 2)
    q = _quarantine_by_line(settings)
    assert {r["reason"] for r in q.values()} == {"file quarantined whole: " + reason}
    assert "微信支付" in q[2]["raw_text"]  # shown as the bytes really read
    f = _files_rows(settings)[f"pos/date=2026-03-10/store_{store}.csv"]
    assert (f["status"], f["reason"]) == ("quarantined", "file quarantined whole: " + reason)


@pytest.mark.parametrize("repeated", ["till", "sku"])
def test_a_header_repeating_a_column_quarantines_that_file_only(settings, repeated):
    columns = POS_COLUMNS + [repeated, repeated] if repeated == "till" else POS_COLUMNS + ["sku"]
    extra = ",a,b" if repeated == "till" else ",SKU-2"
    write_pos_file(settings.landing, D1, "SH01",
                   ["T1,1,SH01,2026-03-10,2026-03-10 10:00:00,SALE,,,,SKU-1,1,1,0,1,CNY,cash"
                    + extra], columns=columns, encoding="gb18030")
    write_pos_file(settings.landing, D1, "LN01", [pos_row("LN01", D1, "L1")])

    (*_, rec) = load_pos(settings, D1)

    assert (rec.read, rec.landed, rec.quarantined) == (2, 1, 1)
    assert [r["transaction_id"] for r in _txns(settings)] == ["L1"]
    (q,) = read_quarantine(settings, "pos", "transactions")
    assert (q["source_line"], q["reason"]) == (2, f"header repeats column(s) {repeated}")
    assert _files_rows(settings)["pos/date=2026-03-10/store_SH01.csv"]["status"] == "quarantined"


def test_reference_files_are_read_in_their_own_encodings(settings):
    ref = settings.landing / "pos" / "reference"
    text = (ref / "products.csv").read_text(encoding="utf-8")
    (ref / "products.csv").write_bytes(text.encode("gb18030"))
    stores = (ref / "stores.csv").read_text(encoding="utf-8")
    (ref / "stores.csv").write_bytes(b"\xef\xbb\xbf" + stores.replace("\n", "\r\n").encode())

    load_pos(settings, D1)

    products = {r["sku"]: r for r in read_raw(settings, "pos", "products")}
    assert products["SKU-1"]["name"] == "绿茶 Green tea"
    stores_rows = {r["store_id"]: r for r in read_raw(settings, "pos", "stores")}
    assert stores_rows["SH01"]["name"] == "上海南京路店"
    assert stores_rows["LN01"]["opened_on"] == "2021-03-15"  # no stray \r at the line end


def test_crlf_trailing_blank_lines_and_quoted_commas_and_quotes(settings):
    path = write_pos_file(settings.landing, D1, "LN01", [
        pos_row("LN01", D1, "L1", payment_method='card, "contactless"', unit_price="1,299.00",
                line_amount="2,598.00"),
        pos_row("LN01", D1, "L1", line_no=2, customer_email=" Ann@Mail.com ")])
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n") + b"\r\n\r\n")
    assert b'"card, ""contactless"""' in path.read_bytes() and b'"1,299.00"' in path.read_bytes()

    (*_, rec) = load_pos(settings, D1)

    assert (rec.read, rec.landed, rec.quarantined) == (2, 2, 0)
    rows = sorted(_txns(settings), key=lambda r: r["line_no"])
    assert rows[0]["payment_method"] == 'card, "contactless"'
    assert rows[0]["unit_price"] == "1,299.00"
    assert rows[1]["payment_method"] == "cash"  # the last column carries no \r
    assert rows[1]["customer_email"] == " Ann@Mail.com "
