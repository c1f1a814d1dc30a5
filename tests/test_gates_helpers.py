"""Hand-made fixtures for the gate tests (no tests here): raw batches written with
customer360.ingest.raw_zone, a small warehouse DuckDB file with the docs/marts.md columns, dbt results.

Everything is small (hundreds of rows) and deterministic; each builder takes the knobs the
tests use to plant one defect at a time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from customer360.ingest import raw_zone as lake
from customer360.core.settings import get_settings

WEB_COLUMNS = ["messageId", "type", "event", "anonymousId", "userId", "timestamp", "receivedAt",
               "originalTimestamp", "sentAt", "previousId", "groupId", "name", "category",
               "context", "properties", "traits"]
POS_COLUMNS = ["transaction_id", "line_no", "store_id", "business_date", "txn_ts", "txn_type",
               "loyalty_id", "customer_phone", "customer_email", "sku", "quantity", "unit_price",
               "discount_amount", "line_amount", "currency", "payment_method"]
CRM_COLUMNS = ["id", "createdAt", "updatedAt", "archived", "archivedAt", "properties", "associations"]


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("C360_PII_KEY", "test-key-0123456789abcdef")
    monkeypatch.delenv("C360_EXPECTATIONS_DIR", raising=False)
    monkeypatch.delenv("C360_DBT_RESULTS", raising=False)
    return get_settings()


def _table(rows: list[dict], columns: list[str]) -> pa.Table:
    """All source columns as text (raw zone rule), whatever the rows hold."""
    fields = [pa.field(c, pa.bool_() if c == "archived" else pa.string()) for c in columns]
    fields += [pa.field("_source_file", pa.string()), pa.field("_source_line", pa.int64())]
    for extra in sorted({k for r in rows for k in r if k.startswith("_")} - {"_source_file", "_source_line"}):
        fields.append(pa.field(extra, pa.date32() if extra == "_folder_date" else pa.string()))
    schema = pa.schema(fields)
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)


def land(settings, rows: list[dict], *, source: str, entity: str, load_date: dt.date,
         columns: list[str], drop: tuple[str, ...] = ()) -> str:
    """Write one raw batch with customer360.ingest.raw_zone.write_raw_batch; returns its batch id.
    ``drop`` leaves source or load columns out (a batch that breaks the contract)."""
    batch_id = lake.new_batch_id(source, entity)
    table = _table(rows, [c for c in columns if c not in drop])
    table = table.drop_columns([c for c in drop if c in table.column_names])
    lake.write_raw_batch(settings, table, source=source, entity=entity, load_date=load_date,
                         batch_id=batch_id)
    return batch_id


# Segment call shapes the contract accepts (docs/sources.md section 2), planted by ``shapes``.
SEGMENT_SHAPES = {
    "server_side": {"type": "track", "event": "Order Refunded", "anonymousId": None, "userId": "1007"},
    "alias": {"type": "alias", "anonymousId": None, "userId": "1007", "previousId": "anon-3"},
    "group": {"type": "group", "groupId": "acme", "traits": json.dumps({"name": "Acme"})},
    "screen": {"type": "screen", "name": "Cart"},
}
# ... and broken ones, planted by ``broken``.
BROKEN_SHAPES = {
    "no_ids": {"anonymousId": None, "userId": None},
    "alias_without_previous_id": {"type": "alias", "anonymousId": None, "userId": "1007"},
    "group_without_group_id": {"type": "group"},
}


def web_events(day: dt.date, n: int, *, prefix: str = "", bad_type: int = 0, late: int = 0,
               shapes: tuple[str, ...] = (), broken: tuple[str, ...] = ()) -> list[dict]:
    rows = []
    for i in range(n):
        ts = dt.datetime.combine(day, dt.time(8)) + dt.timedelta(seconds=37 * i)
        if i < late:
            ts -= dt.timedelta(days=5)
        is_order = i % 10 == 3
        rows.append({
            "messageId": f"{prefix}m-{day}-{i}",
            "type": "PAGE!" if i < bad_type else ("track" if is_order else "page"),
            "event": "Order Completed" if is_order else None,
            "anonymousId": f"anon-{i % 40}",
            "userId": str(1000 + i % 30) if i % 2 else None,
            "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "receivedAt": (ts + dt.timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "context": json.dumps({"page": {"path": "/p"}, "ip": "10.0.0.1"}),
            "properties": json.dumps({"order_id": f"W{day:%m%d}{i}", "revenue": 99.5, "currency": "CNY",
                                      "products": [{"sku": "SKU10001", "quantity": 1, "price": 99.5}]}
                                     if is_order else {}),
            "traits": None,
            "_folder_date": day,
            "_source_file": f"web/events/date={day}/part-0000.jsonl.gz",
            "_source_line": i + 1,
        })
    # planted on the last rows (never an order: rows i % 10 == 3 are kept as they are)
    planted = [SEGMENT_SHAPES[k] for k in shapes] + [BROKEN_SHAPES[k] for k in broken]
    free = [i for i in range(n - 1, -1, -1) if i % 10 != 3]
    for i, shape in zip(free, planted):
        rows[i].update(shape)
    return rows


def pos_lines(day: dt.date, n: int, *, store: str = "S01", bad_type: int = 0,
              price: str = "20.00", amount: str = "20.00") -> list[dict]:
    rows = []
    for i in range(n):
        rows.append({
            "transaction_id": f"T{store}-{day:%Y%m%d}-{i // 2}", "line_no": str(i % 2 + 1),
            "store_id": store, "business_date": day.isoformat(),
            "txn_ts": f"{day} {10 + i % 8:02d}:{i % 60:02d}:00",
            "txn_type": "SALEX" if i < bad_type else "SALE",
            "loyalty_id": f"LY{i:05d}" if i % 3 == 0 else None,
            "customer_phone": "+86 138-0013-8000" if i % 3 == 1 else None,
            "customer_email": " Ann@Mail.com " if i % 3 == 2 else None,
            "sku": "SKU10001", "quantity": "1", "unit_price": price, "discount_amount": "",
            "line_amount": amount, "currency": "CNY", "payment_method": "card",
            "_store_timezone": "Asia/Shanghai", "_store_country": "CN", "_file_encoding": "utf-8",
            "_folder_date": day,
            "_source_file": f"pos/date={day}/store_{store}.csv", "_source_line": i + 2,
        })
    return rows


CRM_STAGES = ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity",
              "customer", "evangelist", "other")


def crm_contacts(day: dt.date, n: int, *, bad_stage: int = 0, bad_time: int = 0) -> list[dict]:
    """HubSpot-shaped contacts: "" for empty properties, the portal's lifecycle stages, free-text
    countries and national phones. ``bad_stage`` rows carry a stage outside the property map (a
    warning), ``bad_time`` rows an unreadable createdAt (quarantined)."""
    rows = []
    for i in range(n):
        stamp = f"{day}T09:{i % 60:02d}:00.000Z"
        props = {"email": f"person{i}@example.com", "phone": "(021) 6234-5678" if i % 3 else "13800138000",
                 "mobilephone": "", "firstname": "Ann", "lastname": "" if i % 4 else "Li",
                 "city": "Shanghai", "country": ("China", "CN", "中国")[i % 3], "loyalty_id": f"LY{i:05d}",
                 "lifecyclestage": "unknown-stage" if i < bad_stage else CRM_STAGES[i % len(CRM_STAGES)],
                 "marketing_consent": "true" if i % 5 else "", "signup_channel": "web",
                 "date_of_birth": "" if i % 2 else "1990-01-01", "hs_object_id": str(5000 + i),
                 "createdate": stamp, "lastmodifieddate": stamp}
        rows.append({"id": str(5000 + i), "createdAt": "yesterday" if i < bad_time else stamp,
                     "updatedAt": stamp, "archived": False, "archivedAt": None,
                     "properties": json.dumps(props, ensure_ascii=False), "associations": None,
                     "_source_file": f"search contacts {day} page 1", "_source_line": i})
    return rows


def land_web(settings, day, n, **kw) -> str:
    drop = kw.pop("drop", ())
    return land(settings, web_events(day, n, **kw), source="web", entity="events", load_date=day,
                columns=WEB_COLUMNS, drop=drop)


def land_pos(settings, day, n, **kw) -> str:
    return land(settings, pos_lines(day, n, **kw), source="pos", entity="transactions",
                load_date=day, columns=POS_COLUMNS)


def land_crm(settings, day, n, **kw) -> str:
    return land(settings, crm_contacts(day, n, **kw), source="crm", entity="contacts",
                load_date=day, columns=CRM_COLUMNS)


def record(settings, source, entity, batch_id, day, read, landed, quarantined=0) -> None:
    rec = lake.Reconciliation(source=source, entity=entity, batch_id=batch_id,
                              load_date=day.isoformat(), source_file=None, read=read,
                              landed=landed, quarantined=quarantined)
    lake.record_reconciliation(settings, rec)


def land_history(settings, day: dt.date, days: int = 3, web: int = 120, pos: int = 60) -> None:
    """Clean web and POS batches for the ``days`` days before ``day``: the volume baseline
    (the raw_volume metric needs three earlier days when there are not two same weekdays)."""
    for k in range(days, 0, -1):
        d = day - dt.timedelta(days=k)
        for source, entity, n, fn in (("web", "events", web, land_web), ("pos", "transactions", pos, land_pos)):
            batch = fn(settings, d, n)
            record(settings, source, entity, batch, d, n, n)


# ---------------------------------------------------------------- warehouse

def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def build_warehouse(path: Path, *, customers: int = 60, churn_override: float | None = None,
                    email_in_city: bool = False, duplicate_message: bool = False,
                    cluster_keys: int = 3, linked_share: float = 0.8,
                    missing_column: str | None = None, segment_gap: int = 0,
                    null_segment_share: float = 0.0, revenue_skew: float = 0.0,
                    feedback_spike: bool = False) -> Path:
    """A warehouse with staging, intermediate, marts and ml tables as the suites expect.

    Each keyword plants one defect: ``churn_override`` (a probability for one customer),
    ``email_in_city`` (a raw email in a published column), ``duplicate_message`` (a web
    messageId twice in staging after dedup), ``cluster_keys`` (identity keys of the first
    customer), ``linked_share`` (orders linked to a customer), ``missing_column`` (dropped
    from marts.customer_360), ``segment_gap`` (customers without a segment in ml),
    ``null_segment_share`` (customer_360 rows without segment_name), ``revenue_skew``
    (marts store revenue off staging by this share), ``feedback_spike`` (the latest day's
    delivery topic flagged as a spike of negative feedback).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    con = duckdb.connect(str(path))
    n = customers
    orders = n * 2
    linked = int(orders * linked_share)
    con.execute(f"""
    CREATE SCHEMA staging; CREATE SCHEMA intermediate; CREATE SCHEMA marts; CREATE SCHEMA ml;
    CREATE TABLE staging.stg_crm__contacts AS
        SELECT CAST(1000 + i AS VARCHAR) AS contact_id, 'customer' AS lifecycle_stage,
               '138 0013 ' || lpad(CAST(i AS VARCHAR), 4, '0') AS phone_raw,
               '+86138001' || lpad(CAST(i AS VARCHAR), 5, '0') AS phone, false AS phone_unparsed,
               'China' AS country_raw, 'CN' AS country
        FROM range({n}) t(i);
    CREATE TABLE staging.stg_crm__tickets AS
        SELECT 'K' || i AS ticket_id, CAST(1000 + i AS VARCHAR) AS contact_id FROM range({n // 2}) t(i);
    CREATE TABLE staging.stg_crm__feedback_submissions AS
        SELECT 'F' || i AS feedback_id FROM range({n // 2}) t(i);
    CREATE TABLE staging.stg_web__events AS
        SELECT 'm' || i AS message_id,
               CASE WHEN i < {n} THEN 'Order Completed' ELSE 'Page Viewed' END AS event_name,
               CASE WHEN i < {n} THEN 'W' || i END AS order_id,
               CAST(100 AS DECIMAL(18, 2)) AS order_revenue, 'CNY' AS order_currency,
               TIMESTAMPTZ '2026-03-01 10:00:00+00' + i * INTERVAL 1 MINUTE AS event_at
        FROM range({n * 3}) t(i);
    CREATE TABLE staging.stg_pos__transactions AS
        SELECT 'T' || i AS transaction_id, 1 AS line_no, 'SALE' AS txn_type,
               CAST(50 AS DECIMAL(18, 2)) AS line_amount, 'CNY' AS currency,
               TIMESTAMPTZ '2026-03-01 10:00:00+00' AS txn_at,
               CASE WHEN i % 2 = 0 THEN 'LY' || i END AS loyalty_id,
               CASE WHEN i % 2 = 1 THEN '+86138' || i END AS customer_phone,
               CAST(NULL AS VARCHAR) AS customer_email
        FROM range({n}) t(i);
    CREATE TABLE staging.stg_pos__stores AS SELECT 'S01' AS store_id;
    CREATE TABLE staging.stg_pos__products AS SELECT 'SKU' || i AS sku FROM range(5) t(i);
    CREATE TABLE intermediate.int_identity__clusters AS
        SELECT 'contact:' || (1000 + i) AS identity_key, 'contact' AS key_type, 'c_' || i AS customer_id,
               2 AS cluster_size
        FROM range({n}) t(i)
        UNION ALL
        SELECT 'email:p' || i || '@example.com', 'email', 'c_' || i, 2 FROM range({n}) t(i)
        UNION ALL
        SELECT 'phone:+86138' || k, 'phone', 'c_0', {cluster_keys} FROM range({max(cluster_keys - 2, 0)}) t(k);
    CREATE TABLE intermediate.int_identity__record_customers AS
        SELECT * FROM (
            SELECT 'pos_transaction' AS record_type, 'T' || i AS record_id, 'c_' || (i % {n}) AS customer_id,
                   1 AS customers, row_number() OVER () AS k FROM range({n}) t(i)
            UNION ALL
            SELECT 'web_order', 'W' || i, 'c_' || (i % {n}), 1, {n} + row_number() OVER () FROM range({n}) t(i)
        ) WHERE k <= {linked};
    CREATE TABLE intermediate.int_fx__rates AS
        SELECT 'CNY' AS currency, DATE '2020-01-01' AS valid_from, CAST(NULL AS DATE) AS valid_to,
               1.0 AS rate_to_reporting;
    CREATE TABLE marts.customer_360 AS
        SELECT 'c_' || i AS customer_id, ['100' || i] AS crm_contact_ids,
               sha256('p' || i || '@example.com') AS email_hash, sha256('+86138' || i) AS phone_hash,
               CASE WHEN {str(email_in_city).lower()} AND i = 7 THEN 'Shanghai ann.li@mail.com' ELSE 'Shanghai' END AS city,
               'CN' AS country, 'web' AS signup_channel, true AS marketing_consent,
               TIMESTAMPTZ '2026-01-05 10:00:00+00' AS first_order_at,
               TIMESTAMPTZ '2026-02-25 10:00:00+00' AS last_order_at,
               CAST(2 AS BIGINT) AS orders_count, CAST(1 AS BIGINT) AS web_orders_count,
               CAST(1 AS BIGINT) AS store_orders_count,
               CAST(150 AS DECIMAL(18, 2)) AS gross_revenue, CAST(0 AS DECIMAL(18, 2)) AS returned_amount,
               CAST(150 AS DECIMAL(18, 2)) AS net_revenue, CAST(75 AS DECIMAL(18, 2)) AS avg_order_value,
               CAST(4 AS BIGINT) AS recency_days, 1 + i % 5 AS rfm_r, 1 + i % 5 AS rfm_f, 1 + i % 5 AS rfm_m,
               'loyal' AS rfm_segment, 'gold' AS value_tier, 'active' AS lifecycle_stage,
               CAST(3 AS BIGINT) AS web_sessions_30d, TIMESTAMPTZ '2026-02-28 10:00:00+00' AS last_seen_at,
               CAST(0 AS BIGINT) AS tickets_count, CAST(0 AS BIGINT) AS open_tickets_count,
               CAST(NULL AS DOUBLE) AS avg_resolution_hours, 9 AS nps_latest, 4.5 AS csat_avg,
               CASE WHEN i < {int(n * null_segment_share)} THEN NULL ELSE 'seg ' || (i % 3) END AS segment_name,
               CASE WHEN i = 3 AND {churn_override is not None} THEN {churn_override or 0}
                    ELSE (i % 10) / 10.0 END AS churn_probability,
               DATE '2026-03-01' AS as_of_date
        FROM range({n}) t(i);
    CREATE TABLE marts.dim_customer AS
        SELECT customer_id, TIMESTAMP '2026-01-01' AS valid_from, CAST(NULL AS TIMESTAMP) AS valid_to,
               true AS is_current, city FROM marts.customer_360;
    CREATE TABLE marts.fct_order_lines AS
        SELECT 'T' || i AS order_id, 1 AS line_no, 'SKU1' AS sku, CAST(1 AS INTEGER) AS quantity,
               CAST(50 AS DECIMAL(18, 2)) AS unit_price, CAST(50 AS DECIMAL(18, 2)) AS line_amount,
               'SALE' AS txn_type FROM range({n}) t(i);
    CREATE TABLE marts.fct_orders AS
        SELECT 'T' || i AS order_id, 'c_' || i AS customer_id, 'store' AS channel, 'S01' AS store_id,
               TIMESTAMPTZ '2026-03-01 10:00:00+00' AS ordered_at, DATE '2026-03-01' AS order_date,
               CAST(1 AS INTEGER) AS item_count,
               CAST(50 * (1 + {revenue_skew}) AS DECIMAL(18, 2)) AS gross_amount,
               CAST(0 AS DECIMAL(18, 2)) AS discount_amount, CAST(0 AS DECIMAL(18, 2)) AS returned_amount,
               CAST(50 * (1 + {revenue_skew}) AS DECIMAL(18, 2)) AS net_amount
        FROM range({n}) t(i)
        UNION ALL
        SELECT 'W' || i, 'c_' || i, 'web', NULL, TIMESTAMPTZ '2026-03-01 10:00:00+00', DATE '2026-03-01', 1,
               100, 0, 0, 100 FROM range({n}) t(i);
    CREATE TABLE marts.fct_web_sessions AS
        SELECT 's' || i AS session_id, 'c_' || i AS customer_id, 'anon-' || i AS anonymous_id,
               TIMESTAMPTZ '2026-03-01 10:00:00+00' AS started_at,
               TIMESTAMPTZ '2026-03-01 10:20:00+00' AS ended_at, CAST(3 AS BIGINT) AS page_views,
               CAST(5 AS BIGINT) AS events, i % 2 = 0 AS converted FROM range({n}) t(i);
    CREATE TABLE marts.fct_tickets AS
        SELECT 'K' || i AS ticket_id, 'c_' || i AS customer_id, 'billing' AS category, 'low' AS priority,
               'closed' AS status, TIMESTAMPTZ '2026-02-01 10:00:00+00' AS created_at,
               TIMESTAMPTZ '2026-02-01 12:00:00+00' AS closed_at, 2.0 AS resolution_hours
        FROM range({n // 2}) t(i);
    CREATE TABLE marts.fct_feedback AS
        SELECT 'F' || i AS feedback_id, 'c_' || i AS customer_id, 'NPS' AS survey_type, 9 AS score,
               'promoter' AS nps_category, TIMESTAMPTZ '2026-02-01 10:00:00+00' AS submitted_at
        FROM range({n // 2}) t(i);
    CREATE TABLE marts.fct_feedback_text AS
        SELECT CASE WHEN i % 2 = 0 THEN 'ticket' ELSE 'survey' END AS source, 'F' || i AS source_id,
               'c_' || i AS customer_id, 'en' AS language, -0.5 AS sentiment_score,
               'negative' AS sentiment_label, 'delivery/late/parcel' AS topic,
               TIMESTAMP '2026-02-01 10:00:00' AS created_at, DATE '2026-02-01' AS created_date,
               'Dear [name], my parcel is late, call [phone]' AS masked_text, true AS pii_masked,
               'text-1' AS model_version, TIMESTAMP '2026-03-01 12:00:00' AS scored_at
        FROM range({n // 2}) t(i);
    CREATE TABLE marts.kpi_feedback_daily AS
        SELECT DATE '2026-02-01' + CAST(i AS INTEGER) AS date, 'delivery/late/parcel' AS topic,
               CAST(20 AS BIGINT) AS texts, CAST(CASE WHEN i = 27 AND {feedback_spike} THEN 15 ELSE 2 END AS BIGINT) AS negative_texts,
               CASE WHEN i = 27 AND {feedback_spike} THEN 0.75 ELSE 0.1 END AS negative_share,
               CAST(least(i, 28) * 20 AS BIGINT) AS baseline_texts, 0.1 AS baseline_negative_share,
               i = 27 AND {feedback_spike} AS is_spike
        FROM range(28) t(i);
    CREATE TABLE marts.kpi_daily AS
        SELECT DATE '2026-02-01' + CAST(i AS INTEGER) AS date, CAST(40 AS BIGINT) AS active_customers,
               CAST(2 AS BIGINT) AS new_customers, CAST(10 AS BIGINT) AS orders,
               CAST(500 AS DECIMAL(18, 2)) AS net_revenue, CAST(300 AS DECIMAL(18, 2)) AS web_net_revenue,
               CAST(200 AS DECIMAL(18, 2)) AS store_net_revenue, 35.0 AS nps, 4.2 AS csat
        FROM range(28) t(i);
    CREATE TABLE marts.fct_funnel_daily AS
        SELECT DATE '2026-03-01' AS date, c.channel, c.source AS campaign_source, c.medium AS campaign_medium,
               c.name AS campaign_name, CAST(100 AS INTEGER) AS sessions, CAST(60 AS INTEGER) AS product_viewed,
               CAST(20 AS INTEGER) AS product_added, CAST(10 AS INTEGER) AS checkout_started,
               CAST(5 AS INTEGER) AS order_completed, 0.05 AS conversion_rate, 0.4 AS bounce_rate,
               6.5 AS avg_session_minutes
        FROM (VALUES ('direct', '(none)', '(none)', '(none)'), ('email', 'newsletter', 'email', 'weekly'))
             c(channel, source, medium, name);
    -- web orders W0..W4 attributed: first_touch and last_touch to the newsletter, linear half
    -- to it and half to the search ad; the campaign table credits exactly that
    CREATE TABLE intermediate.int_marketing__order_attribution AS
        SELECT 'W' || i AS order_id, m.model AS attribution_model, m.source AS campaign_source,
               m.medium AS campaign_medium, m.name AS campaign_name, 'c_' || i AS customer_id, 'web' AS channel,
               TIMESTAMPTZ '2026-03-01 10:00:00+00' AS ordered_at, false AS is_first_purchase,
               CAST(100 AS DECIMAL(18, 2)) AS order_net_amount, m.credit, 100 * m.credit AS attributed_revenue
        FROM range(5) t(i), (VALUES ('first_touch', 'newsletter', 'email', 'weekly', 1.0),
                                    ('last_touch', 'newsletter', 'email', 'weekly', 1.0),
                                    ('linear', 'newsletter', 'email', 'weekly', 0.5),
                                    ('linear', 'baidu', 'cpc', 'brand_cn', 0.5)) m(model, source, medium, name, credit);
    CREATE TABLE marts.fct_campaign_performance AS
        SELECT campaign_source, campaign_medium, campaign_name, attribution_model,
               CAST(40 AS INTEGER) AS sessions, CAST(count(DISTINCT customer_id) AS INTEGER) AS customers,
               sum(credit) AS orders, 0.0 AS store_orders, sum(attributed_revenue) AS attributed_revenue,
               0.0 AS new_customers
        FROM intermediate.int_marketing__order_attribution GROUP BY ALL;
    CREATE TABLE marts.fct_experiment_results AS
        SELECT * FROM (VALUES
            ('exp_a', 'control', true, 1000, 100, 0.10, 5.0, NULL, NULL, NULL, NULL, NULL, NULL, false, 0.7, false, 0),
            ('exp_a', 'treatment', false, 1010, 130, 0.1287, 6.0, 0.0287, 0.287, 2.0, 0.045, 0.001, 0.056, true, 0.7, false, 0))
            t(experiment_id, variation_id, is_control, exposed_customers, converted_customers, conversion_rate,
              revenue_per_exposed, lift_vs_control, relative_lift, z_score, p_value, ci_low, ci_high,
              is_significant, srm_p_value, srm_detected, mixed_units);
    CREATE TABLE ml.ml_customer_segments AS
        SELECT customer_id, i % 3 AS segment_id, 'seg ' || (i % 3) AS segment_name, 'v1' AS model_version,
               TIMESTAMPTZ '2026-03-01 12:00:00+00' AS scored_at
        FROM (SELECT customer_id, row_number() OVER (ORDER BY customer_id) - 1 AS i FROM marts.customer_360)
        WHERE i >= {segment_gap};
    CREATE TABLE ml.ml_churn_scores AS
        SELECT customer_id, churn_probability, CASE WHEN churn_probability > 0.5 THEN 'high' ELSE 'low' END AS risk_band,
               1 - churn_probability AS repurchase_30d_probability,
               'v1' AS model_version, TIMESTAMPTZ '2026-03-01 12:00:00+00' AS scored_at FROM marts.customer_360;
    CREATE TABLE ml.ml_customer_value AS
        SELECT customer_id, 2 AS frequency, 30 AS recency_days, 60 AS tenure_days, 40.0 AS monetary_value,
               0.8 AS p_alive, 1.5 AS expected_purchases_90d, 5.0 AS expected_purchases_365d,
               42.0 AS expected_avg_order_value, 210.0 AS clv_365d, 'v1' AS model_version,
               TIMESTAMPTZ '2026-03-01 12:00:00+00' AS scored_at FROM marts.customer_360;
    CREATE TABLE ml.ml_product_recommendations AS
        SELECT customer_id, r AS rank, 'SKU' || r AS sku, 1.0 / r AS score, 'v1' AS model_version
        FROM marts.customer_360, range(1, 4) t(r);
    CREATE TABLE ml.ml_model_runs AS
        SELECT 'churn' AS model_name, 'v1' AS model_version, TIMESTAMPTZ '2026-03-01 11:00:00+00' AS trained_at,
               '{{"auc": 0.81}}' AS metrics, true AS promoted;
    """)
    if duplicate_message:
        con.execute("INSERT INTO staging.stg_web__events SELECT * FROM staging.stg_web__events LIMIT 1")
    if missing_column:
        con.execute(f"ALTER TABLE marts.customer_360 DROP COLUMN {missing_column}")
    con.close()
    return path


def write_dbt_results(path: Path, statuses: dict[str, str]) -> Path:
    """A dbt run_results.json with one result per unique_id -> status."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "metadata": {"generated_at": "2026-03-01T12:00:00Z"},
        "results": [{"unique_id": uid, "status": status, "failures": 3 if status in ("fail", "warn") else 0,
                     "message": None, "execution_time": 0.1} for uid, status in statuses.items()],
    }))
    return path
