"""The run report as an analyst reads it: counts with separators, money with the reporting
currency, day-over-day changes, the funnel, campaign and experiment tables, churn model quality
and identity statistics; then the page in headless Chromium, the screenshot kept beside it.

The published database and the warehouse's identity tables are made by hand here, so each
number on the page is known in advance (a full pipeline run is tests/test_dag_run.py's)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import struct
import subprocess
from html.parser import HTMLParser

import duckdb
import pytest

from customer360.core.settings import get_settings
from customer360.serve import report

DAY = dt.date(2026, 3, 10)


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
    # not the default (CNY): the page must print the setting, not a constant
    monkeypatch.setenv("C360_REPORTING_CURRENCY", "EUR")
    return get_settings()


def _published(settings) -> None:
    settings.published_db.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(settings.published_db)) as con:
        con.execute("create schema marts; create schema ml")
        con.execute("""create table marts.kpi_daily as select * from (values
            (date '2026-03-09', 980, 12, 1000, 101000.00, 1000.00, 100000.00, 60000.00, 40000.00, 31.0, 4.2),
            (date '2026-03-10', 1020, 15, 1100, 112345.50, 2345.00, 110000.50, 66000.50, 44000.00, 29.5, 4.1))
            t(date, active_customers, new_customers, orders, gross_revenue, returned_amount, net_revenue,
              web_net_revenue, store_net_revenue, nps, csat)""")
        con.execute("create table marts.customer_360 as select 'c' || i as customer_id, 'active' as lifecycle_stage "
                    "from range(1420) r(i)")
        con.execute("create table marts.fct_orders as select 'o' || i as order_id, 'web' as channel, "
                    "1234567.89 / 3 as net_amount from range(3) r(i)")
        con.execute("""create table marts.fct_funnel_daily as select * from (values
            (date '2026-03-09', 'direct', '(none)', '(none)', '(none)', 50, 40, 20, 10, 5, 0.1, 0.3, 4.0),
            (date '2026-03-10', 'direct', '(none)', '(none)', '(none)', 2500, 1800, 600, 300, 125, 0.05, 0.40, 6.0),
            (date '2026-03-10', 'email', 'newsletter', 'email', 'weekly', 500, 450, 200, 100, 50, 0.1, 0.10, 9.0))
            t(date, channel, campaign_source, campaign_medium, campaign_name, sessions, product_viewed,
              product_added, checkout_started, order_completed, conversion_rate, bounce_rate, avg_session_minutes)""")
        con.execute("""create table marts.fct_campaign_performance as select * from (values
            ('newsletter', 'email', 'weekly', 'first_touch', 1500, 90, 100.0, 20.0, 12.0, 25000.0),
            ('newsletter', 'email', 'weekly', 'linear', 1500, 95, 80.5, 15.0, 10.5, 21000.0),
            ('baidu', 'cpc', 'brand_cn', 'linear', 900, 30, 40.5, 5.0, 3.5, 9000.0))
            t(campaign_source, campaign_medium, campaign_name, attribution_model, sessions, customers,
              orders, store_orders, new_customers, attributed_revenue)""")
        con.execute("""create table marts.fct_experiment_results as select * from (values
            ('exp_checkout', 'control', true, 5000, 500, 0.10, 12.5, null, null, null, null, null, null, false, 0.6, false, 0),
            ('exp_checkout', 'one_page', false, 5020, 602, 0.1199, 14.0, 0.0199, 0.199, 3.2, 0.0014, 0.0077, 0.0321, true, 0.6, false, 0),
            ('exp_banner', 'control', true, 3000, 300, 0.10, 11.0, null, null, null, null, null, null, false, 0.0001, true, 3),
            ('exp_banner', 'green', false, 2500, 251, 0.1004, 11.1, 0.0004, 0.004, 0.05, 0.96, -0.015, 0.016, false, 0.0001, true, 3))
            t(experiment_id, variation_id, is_control, exposed_customers, converted_customers, conversion_rate,
              revenue_per_exposed, lift_vs_control, relative_lift, z_score, p_value, ci_low, ci_high,
              is_significant, srm_p_value, srm_detected, mixed_units)""")
        metrics = {"roc_auc": 0.8123, "recency_baseline_roc_auc": 0.7011, "top_decile_lift": 3.456,
                   "pr_auc": 0.5, "brier": 0.12, "rows": 12345, "base_rate": 0.25}
        con.execute("create table ml.ml_model_runs (model_name varchar, model_version varchar, logical_date date, "
                    "trained_at timestamp, metrics json)")
        con.execute("insert into ml.ml_model_runs values ('churn', 'churn-v7', '2026-03-10', '2026-03-10 03:00', ?), "
                    "('churn', 'churn-v6', '2026-03-03', '2026-03-03 03:00', ?)",
                    [json.dumps(metrics), json.dumps({**metrics, "roc_auc": 0.5})])


def _warehouse(settings) -> None:
    """Identity tables: c1 = two CRM contacts + a device + till purchases (3 sources, 4 keys);
    c2 = one contact and an email (1 source, 2 keys); two shared devices and a shared phone held apart."""
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute("create schema intermediate")
        con.execute("""create table intermediate.int_identity__clusters as select * from (values
            ('contact:1', 'contact', 'c1'), ('contact:2', 'contact', 'c1'), ('anon:a', 'anon', 'c1'),
            ('loyalty:L1', 'loyalty', 'c1'), ('contact:3', 'contact', 'c2'), ('email:x', 'email', 'c2'))
            t(identity_key, key_type, customer_id)""")
        con.execute("""create table intermediate.int_identity__record_customers as select * from (values
            ('crm_contact', '1', 'c1'), ('pos_transaction', 'T1', 'c1'), ('crm_contact', '3', 'c2'))
            t(record_type, record_id, customer_id)""")
        con.execute("""create table intermediate.int_identity__ambiguous_keys as select * from (values
            ('anon:s1', 'anon', 'shared_device', 2), ('anon:s2', 'anon', 'shared_device', 3),
            ('phone:p', 'phone', 'shared_key', 5)) t(identity_key, key_type, reason, contact_count)""")


class _Tables(HTMLParser):
    """Rows of cell texts of each table with an id, and the headline tiles. (The standard
    library's parser: no HTML parsing library is in the lock file.)"""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.kpis: list[str] = []
        self._table = self._row = self._cell = None
        self._in_kpi = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("id"):
            self._table = self.tables.setdefault(a["id"], [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "div" and a.get("class") == "kpi":
            self._in_kpi, self._kpi = True, []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._table.append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "div" and self._in_kpi:
            self.kpis.append(" ".join(self._kpi))
            self._in_kpi = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_kpi and data.strip():
            self._kpi.append(data.strip())


@pytest.fixture
def page(settings):
    import matplotlib
    matplotlib.use("Agg")
    _published(settings)
    _warehouse(settings)
    path = report.build_report(settings, DAY, "run-22")
    parsed = _Tables()
    parsed.feed(path.read_text(encoding="utf-8"))
    return path, parsed


def _rows(parsed, table_id):
    header, *rows = parsed.tables[table_id]
    return [dict(zip(header, r)) for r in rows]


def test_headline_counts_have_separators_and_revenue_its_currency(page):
    _, parsed = page
    assert parsed.kpis == ["1,420 customers", "3 orders", "EUR 1,234,567.89 net revenue"]


def test_day_over_day_changes_against_the_day_before(page):
    _, parsed = page
    rows = {r["measure"]: r for r in _rows(parsed, "day-over-day")}
    assert rows["orders"]["2026-03-10"] == "1,100" and rows["orders"]["change"] == "+100"
    assert rows["orders"]["change %"] == "+10.0%"
    assert rows["net_revenue"]["2026-03-10"] == "EUR 110,000.50"
    assert rows["net_revenue"]["change"] == "+EUR 10,000.50"
    # every money measure carries its currency, gross and returns too
    assert rows["gross_revenue"]["2026-03-10"] == "EUR 112,345.50"
    assert rows["returned_amount"]["change"] == "+EUR 1,345.00"
    assert rows["nps"]["change"] == "−1.5" and rows["nps"]["change %"] == "-4.8%"


def test_funnel_is_the_latest_day_by_channel_with_a_total(page):
    _, parsed = page
    rows = {r["channel"]: r for r in _rows(parsed, "funnel")}
    assert set(rows) == {"direct", "email", "all channels"}  # the earlier day is not summed in
    assert rows["all channels"]["sessions"] == "3,000" and rows["all channels"]["order completed"] == "175"
    assert rows["all channels"]["conversion"] == "5.8%"
    # bounce weighted by sessions: (2500 x 0.40 + 500 x 0.10) / 3000
    assert rows["all channels"]["bounce"] == "35.0%"


def test_campaign_table_and_attributed_revenue_per_model(page):
    _, parsed = page
    rows = _rows(parsed, "campaigns")
    assert [(r["model"], r["source / medium / campaign"]) for r in rows] == [
        ("first_touch", "newsletter / email / weekly"), ("linear", "newsletter / email / weekly"),
        ("linear", "baidu / cpc / brand_cn")]
    assert rows[0]["attributed revenue"] == "EUR 25,000.00" and rows[0]["sessions"] == "1,500"
    totals = {r["model"]: r for r in _rows(parsed, "attribution-totals")}
    assert totals["linear"]["attributed revenue"] == "EUR 30,000.00"
    assert totals["linear"]["orders credited"] == "121"
    assert totals["linear"]["share of net revenue"] == "2.4%"


def test_experiment_table_has_every_variation_with_lift_ci_and_flags(page):
    _, parsed = page
    rows = {(r["experiment"], r["variation"]): r for r in _rows(parsed, "experiments")}
    assert list(rows) == [("exp_banner", "control (control)"), ("exp_banner", "green"),
                          ("exp_checkout", "control (control)"), ("exp_checkout", "one_page")]
    real = rows[("exp_checkout", "one_page")]
    assert (real["exposed"], real["lift"], real["95% CI"], real["p-value"], real["significant"]) == (
        "5,020", "+1.99 pp", "[+0.77, +3.21] pp", "0.0014", "yes")
    assert real["revenue per exposed"] == "EUR 14.00"
    assert rows[("exp_banner", "green")]["significant"] == "no"
    assert rows[("exp_banner", "green")]["sample ratio"] == "MISMATCH"
    assert rows[("exp_checkout", "control (control)")]["p-value"] == "–"


def test_churn_quality_is_the_latest_evaluated_run(page):
    _, parsed = page
    rows = {r["measure"]: r["value"] for r in _rows(parsed, "churn-quality")}
    assert rows["model version"] == "churn-v7" and rows["trained for"] == "2026-03-10" and rows["ROC AUC"] == "0.812"
    assert rows["top-decile lift"] == "3.46" and rows["customers evaluated"] == "12,345"


def test_identity_statistics(page):
    _, parsed = page
    rows = [r["value"] for r in _rows(parsed, "identity")]
    # 2 customers, 6 keys, 3 per customer, c1 alone in several sources, c1's two contacts merged,
    # 2 shared devices and 1 shared phone held apart
    assert rows == ["2", "6", "3.00", "50.0%", "1", "2", "1"]


def test_the_clv_chart_and_value_tables_stay(settings, page):
    path, _ = page
    text = path.read_text(encoding="utf-8")
    assert "<h3>By segment</h3>" in text and "<h3>By value tier</h3>" in text


def test_the_page_renders_in_headless_chromium(settings, page, tmp_path):
    path, _ = page
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (.ci/run installs Debian's chromium)")
    shot = settings.reports_dir / f"{path.stem}.png"  # kept beside the page as the artifact
    out = subprocess.run(
        [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update", f"--user-data-dir={tmp_path / 'chrome'}",
         f"--screenshot={shot}", "--window-size=1280,4000", path.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.exists(), out.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk follows the signature
    assert (width, height) == (1280, 4000)
    assert len(data) > 20_000  # a blank page compresses to a few kB
