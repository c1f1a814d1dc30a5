"""The marts against docs/marts.md on hand-made raw data (tests/warehouse_fixtures.py).

One warehouse per module: load 1 built as of 2026-03-08 (models only; a copy kept), then
load 2 as of 2026-03-10 through ``dbt build`` with every data test and unit test.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from tests import warehouse_fixtures as wf
from customer360.core.settings import Settings
from customer360.warehouse.dbt_runner import RunResults, build_warehouse

D = Decimal


@dataclass
class Built:
    settings: Settings
    first: RunResults
    second: RunResults
    db1: Path  # the warehouse after load 1
    db2: Path  # after load 2


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    home = tmp_path_factory.mktemp("c360_marts")
    with pytest.MonkeyPatch.context() as mp:
        settings = wf.use_home(mp, home)
        wf.land_first_load(settings)
        first = build_warehouse(settings, logical_date=wf.LOAD_1, tests=False)
        db1 = wf.copy_warehouse(settings, home / "after_load_1.duckdb")
        wf.land_second_load(settings)
        second = build_warehouse(settings, logical_date=wf.LOAD_2)
        yield Built(settings, first, second, db1, settings.warehouse_path)


def customer_of(db: Path, contact_id: str) -> str:
    return wf.scalar(db, "select customer_id from intermediate.int_identity__clusters "
                         "where identity_key = ?", [f"contact:{contact_id}"])


def order(db: Path, order_id: str) -> dict:
    with_cols = wf.query(db, "select * from marts.fct_orders where order_id = ?", [order_id])
    assert len(with_cols) == 1, f"order {order_id} not found exactly once"
    names = [r[0] for r in wf.query(db, "select column_name from information_schema.columns "
                                        "where table_schema = 'marts' and table_name = 'fct_orders' "
                                        "order by ordinal_position")]
    return dict(zip(names, with_cols[0]))


def test_dbt_build_runs_every_data_and_unit_test_and_all_pass(built):
    assert built.first.success and {n.resource_type for n in built.first.nodes} == {
        "model", "seed", "snapshot"}
    results = built.second
    assert results.success and not results.warned
    counts: dict[str, int] = {}
    for node in results.nodes:
        counts[node.resource_type] = counts.get(node.resource_type, 0) + 1
    assert counts["unit_test"] == 17
    assert counts["test"] >= 150
    assert counts["snapshot"] == 1 and counts["model"] == 39
    assert {n.status for n in results.nodes} <= {"success", "pass"}


def test_pos_wall_clock_times_become_utc_with_the_stores_zone(built):
    times = dict(wf.query(built.db2, "select order_id, ordered_at from marts.fct_orders"))
    assert times["T-1001"] == dt.datetime(2026, 3, 1, 2, 0)    # 10:00 Asia/Shanghai (UTC+8)
    assert times["T-2002"] == dt.datetime(2026, 3, 7, 15, 0)   # 10:00 New York, EST (UTC-5)
    assert times["T-2001"] == dt.datetime(2026, 3, 8, 7, 30)   # 03:30 New York, EDT after the jump
    business = wf.scalar(built.db2, "select business_date from marts.fct_orders "
                                    "where order_id = 'T-2001'")
    assert business == dt.date(2026, 3, 8)


def test_order_amounts_net_returns_and_leave_voids_out(built):
    sale = order(built.db2, "T-1001")  # 2 x 50 + 1 x 30 sold, a 20 line voided
    assert (sale["item_count"], sale["gross_amount"], sale["returned_amount"],
            sale["net_amount"], sale["order_kind"]) == (3, D("130.00"), D("0.00"), D("130.00"),
                                                        "purchase")
    assert sale["line_count"] == 3
    ret = order(built.db2, "T-1002")  # the mug comes back
    assert (ret["gross_amount"], ret["returned_amount"], ret["net_amount"], ret["order_kind"]) == (
        D("0.00"), D("30.00"), D("-30.00"), "return")
    web = order(built.db2, "W-5001")
    assert (web["channel"], web["item_count"], web["net_amount"]) == ("web", 3, D("199.00"))
    void_lines = wf.scalar(built.db2, "select count(*) from marts.fct_order_lines "
                                      "where order_id = 'T-1001' and txn_type = 'VOID'")
    assert void_lines == 1  # kept as a line, counted nowhere


def test_money_is_converted_to_cny_with_the_dated_rate(built):
    usd = wf.fx_rate("USD", dt.date(2026, 3, 8))
    t2001 = order(built.db2, "T-2001")  # 2 x 50 USD - 10 USD discount
    assert t2001["source_currency"] == "USD"
    assert t2001["gross_amount"] == D(str(round(90 * usd, 2)))
    assert t2001["discount_amount"] == D(str(round(10 * usd, 2)))
    assert order(built.db2, "T-1001")["gross_amount"] == D("130.00")  # CNY stays as it is


def test_a_corrected_pos_file_replaces_the_first_version(built):
    before = {r[0] for r in wf.query(built.db1, "select order_id from marts.fct_orders")}
    after = {r[0] for r in wf.query(built.db2, "select order_id from marts.fct_orders")}
    assert "T-1009" in before and "T-1009" not in after  # dropped by the corrected file
    assert "T-1003" not in before and "T-1003" in after  # added by it
    lines = wf.scalar(built.db2, "select count(*) from marts.fct_order_lines "
                                 "where order_id like 'T-100%' and business_date = '2026-03-01'")
    assert lines == 4  # T-1001 x3 + T-1003, once each


def test_web_events_are_deduplicated_by_message_id(built):
    total, distinct = wf.query(built.db2, "select count(*), count(distinct message_id) "
                                          "from staging.stg_web__events")[0]
    assert total == distinct == 14
    assert wf.scalar(built.db2, "select count(*) from staging.stg_web__events "
                                "where message_id = 'm-ann-3'") == 1


def test_sessions_split_after_30_idle_minutes_and_take_late_events(built):
    sql = ("select started_at, ended_at, events, page_views, converted from marts.fct_web_sessions "
           "where anonymous_id = 'anon-ann' order by started_at")
    first = wf.query(built.db1, sql)
    assert [(s[0].time(), s[1].time(), s[2]) for s in first] == [
        (dt.time(10, 0), dt.time(10, 49), 3),  # gaps of 20 and 29 minutes
        (dt.time(11, 20), dt.time(11, 20), 1),  # 31 minutes later
        (dt.time(12, 0), dt.time(12, 0), 1),  # 40 minutes later: the order
    ]
    assert [s[4] for s in first] == [False, False, True]
    second = wf.query(built.db2, sql)
    assert second[0][2] == 4 and second[0][3] == 3  # the late 10:35 page view joined session 1
    assert len(second) == 3


def test_customer_360_measures_for_a_known_customer(built):
    ann = customer_of(built.db2, "1001")
    cols = ("crm_contact_ids, email_hash, city, orders_count, web_orders_count, "
            "store_orders_count, gross_revenue, returned_amount, net_revenue, avg_order_value, "
            "recency_days, tickets_count, open_tickets_count, avg_resolution_hours, nps_latest, "
            "csat_avg, lifecycle_stage, marketing_consent, signup_channel, as_of_date, "
            "web_sessions_30d")
    row = wf.query(built.db2, f"select {cols} from marts.customer_360 where customer_id = ?", [ann])
    got = dict(zip([c.strip() for c in cols.split(",")], row[0]))
    assert got["crm_contact_ids"] == ["1001", "1002"]
    assert got["email_hash"] == hmac.new(wf.PII_KEY.encode(), b"ann@mail.com",
                                         hashlib.sha256).hexdigest()
    assert got["city"] == "Hangzhou"  # the latest contact version wins
    assert (got["orders_count"], got["web_orders_count"], got["store_orders_count"]) == (2, 1, 1)
    assert (got["gross_revenue"], got["returned_amount"], got["net_revenue"]) == (
        D("329.00"), D("30.00"), D("299.00"))
    assert got["avg_order_value"] == D("149.50")
    assert got["recency_days"] == (wf.LOAD_2 - dt.date(2026, 3, 2)).days
    assert (got["tickets_count"], got["open_tickets_count"]) == (1, 0)
    assert got["avg_resolution_hours"] == pytest.approx(30.5)  # 09:00 -> next day 15:30
    assert got["nps_latest"] == 10 and got["csat_avg"] == pytest.approx(4.0)
    assert got["lifecycle_stage"] == "active"
    assert got["marketing_consent"] is True and got["signup_channel"] == "store"
    assert got["as_of_date"] == wf.LOAD_2
    assert got["web_sessions_30d"] == 4  # three on 03-02, one on the shared device


def test_feedback_categories_and_daily_nps(built):
    cats = dict(wf.query(built.db2, "select feedback_id, nps_category from marts.fct_feedback"))
    assert cats == {"F1": "promoter", "F2": "detractor", "F3": "passive", "F4": None,
                    "F5": "promoter"}
    nps = dict(wf.query(built.db2, "select date, nps from marts.kpi_daily"))
    assert nps[dt.date(2026, 3, 2)] is None  # no answer yet
    assert nps[dt.date(2026, 3, 3)] == pytest.approx(100.0)  # one promoter
    assert nps[dt.date(2026, 3, 4)] == pytest.approx(0.0)  # + a detractor and a passive
    assert nps[dt.date(2026, 3, 9)] == pytest.approx(25.0)  # 2 promoters, 1 detractor of 4


def test_crm_staging_reads_hubspot_shapes_through_the_property_map(built):
    """HubSpot's raw shapes (tests/warehouse_fixtures.py): "" is missing, free-text countries
    become ISO, national phones are read in them, an unreadable phone is flagged (counted by
    the intermediate gate), the portal's stages and stage ids are mapped, contacts come from
    associations and archivedAt is kept."""
    contacts = {r[0]: r[1:] for r in wf.query(built.db2, """
        select contact_id, country, phone, phone_unparsed, lifecycle_stage, first_name, archived_at
        from staging.stg_crm__contacts""")}
    assert contacts["1001"][:3] == ("CN", "+8613800138000", False)
    assert contacts["1002"][3] == "lead"  # marketingqualifiedlead
    assert contacts["1004"][0] == "GB"  # "UK"
    assert contacts["1005"][:3] == ("GB", "+442079460018", False)  # "020 7946 0018", "United Kingdom"
    assert contacts["1007"][:3] == ("CN", "+8613912345678", False)  # "中国"
    assert contacts["1008"][1:3] == (None, True)  # "12345": no phone key, flagged
    assert contacts["1003"][4] == "Bob" and contacts["1004"][4] == "Carol"
    assert wf.scalar(built.db2, "select count(*) from staging.stg_crm__contacts where last_name = ''") == 0
    assert contacts["1006"][5] == dt.datetime(2026, 3, 9, 11, 0)  # archived, archivedAt kept
    tickets = {r[0]: r[1:] for r in wf.query(built.db2, """
        select ticket_id, contact_id, status, priority, category, closed_at from staging.stg_crm__tickets""")}
    assert tickets["T1"] == ("1001", "closed", "medium", "delivery", dt.datetime(2026, 3, 2, 15, 30))
    assert tickets["T2"] == ("1004", "open", "high", "delivery", None)
    feedback = dict(wf.query(built.db2, "select feedback_id, contact_id from staging.stg_crm__feedback_submissions"))
    assert feedback == {"F1": "1001", "F2": "1003", "F3": "1004", "F4": "1001", "F5": "1001"}


def test_kpi_daily_adds_up_to_the_orders(built):
    mismatches = wf.query(built.db2, """
        select k.date, k.net_revenue, o.net
        from marts.kpi_daily k
        left join (select order_date, sum(net_amount) net, count(*) filter (where order_kind = 'purchase') n
                   from marts.fct_orders group by 1) o on o.order_date = k.date
        where k.net_revenue <> coalesce(o.net, 0) or k.orders <> coalesce(o.n, 0)""")
    assert mismatches == []
    first_day, last_day, days = wf.query(built.db2, "select min(date), max(date), count(*) "
                                                    "from marts.kpi_daily")[0]
    assert (first_day, last_day, days) == (dt.date(2026, 3, 1), wf.LOAD_2, 10)
    # 03-06: ann (order 03-02, sessions 03-02/06), carol (order 03-03), eve (03-05),
    # frank's card (03-05) and bob (logged-in session 03-06) - the walk-ins count nowhere
    assert wf.scalar(built.db2, "select active_customers from marts.kpi_daily "
                                "where date = '2026-03-06'") == 5


def test_dim_customer_keeps_history_dated_by_the_logical_date(built):
    ann = customer_of(built.db2, "1001")
    versions = wf.query(built.db2, "select valid_from, valid_to, is_current, city "
                                   "from marts.dim_customer where customer_id = ? "
                                   "order by valid_from", [ann])
    assert versions == [
        (dt.datetime(2026, 3, 9), dt.datetime(2026, 3, 11), False, "Shanghai"),
        (dt.datetime(2026, 3, 11), None, True, "Hangzhou"),
    ]
    erased = customer_of(built.db1, "1006")
    rows = wf.query(built.db2, "select is_current from marts.dim_customer where customer_id = ?",
                    [erased])
    assert rows == [(False,)]  # closed when the contact was erased; no current version
    assert wf.scalar(built.db2, "select count(*) from marts.customer_360 where customer_id = ?",
                     [erased]) == 0


def test_published_marts_hold_no_raw_pii(built):
    raw_values = ["ann@mail.com", "bob@example.com", "carol@example.com", "frank@example.com",
                  "+8613800138000", "13800138000", "+12125550101", "LY00012345", "Smith",
                  "Carol", "Frank", "1990-04-02", "203.0.113.7"]
    tables = [r[0] for r in wf.query(built.db2, "select table_name from information_schema.tables "
                                                "where table_schema = 'marts'")]
    assert len(tables) == 14
    with duckdb.connect(str(built.db2), read_only=True) as con:
        for table in tables:
            cursor = con.execute(f'select * from marts."{table}"')
            names = [d[0] for d in cursor.description]
            for row in cursor.fetchall():
                for name, value in zip(names, row):
                    text = str(value)
                    leaked = [v for v in raw_values if v in text]
                    assert not leaked, f"marts.{table}.{name} holds {leaked}"


def test_a_new_logical_date_does_not_make_dbt_reparse_the_project(built):
    """The two builds are for two dates; the second must reuse the first's saved manifest
    (issue 19: a date passed as --vars re-parsed the whole project in every dbt command)."""
    log = (built.settings.dbt_logs_dir / "dbt.log").read_text(encoding="utf-8", errors="replace")
    invocations = [chunk for chunk in log.split("Running with dbt=")[1:]]
    assert len(invocations) == 2
    assert "Unable to do partial parsing because saved manifest not found" in invocations[0]
    assert "Unable to do partial parsing" not in invocations[1]
    assert "Starting full parse" not in invocations[1]
