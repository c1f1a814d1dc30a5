"""The run report: one static HTML page a run under ``$C360_HOME/artifacts/reports/``.

Charts are rendered server-side by matplotlib as inline SVG, so the page needs no network
and no JavaScript library to draw (BI users open it from a file share or an artifact store).
It reads the *published* database (what BI sees), the audit store (gate results) and the
extract reconciliation counts.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import json
import logging
import re
from pathlib import Path

import duckdb
import pandas as pd

from customer360.core import duck, files
from customer360.core.settings import Settings

log = logging.getLogger(__name__)


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]  # drop the XML prolog so it can sit inline


def _query(con, sql: str) -> pd.DataFrame:
    try:
        return con.execute(sql).df()
    except duckdb.Error as exc:
        log.warning("report query failed (%s): %s", exc.__class__.__name__, sql[:80])
        return pd.DataFrame()


def _chart_revenue(df: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(df["date"], df["web_net_revenue"], label="web")
    ax.plot(df["date"], df["store_net_revenue"], label="store")
    ax.set_title("Net revenue by channel")
    ax.legend()
    fig.autofmt_xdate()
    return fig


def _chart_bars(series: pd.Series, title: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh([str(i) for i in series.index], series.values)
    ax.set_title(title)
    ax.invert_yaxis()
    return fig


def _chart_hist(values: pd.Series, title: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(values.dropna(), bins=20, range=(0, 1))
    ax.set_title(title)
    ax.set_xlabel("churn probability")
    return fig


def _chart_clv_calibration(curve: pd.DataFrame):
    """Predicted against actual cumulative repeat purchase days over the CLV holdout weeks."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    weeks = curve["day"] / 7
    ax.plot(weeks, curve["actual"], marker="o", label="actual")
    ax.plot(weeks, curve["predicted"], linestyle="--", label="predicted (BG/NBD)")
    ax.set_xlabel("weeks after the calibration period")
    ax.set_ylabel("cumulative repeat purchases")
    ax.set_title("CLV calibration: holdout repeat purchases")
    ax.legend()
    return fig


def _clv_curve(runs: pd.DataFrame) -> pd.DataFrame:
    """The holdout curve of the latest CLV training run (ml_model_runs.metrics)."""
    if runs.empty:
        return pd.DataFrame()
    curve = json.loads(runs["metrics"].iloc[0] or "{}").get("holdout_curve") or []
    return pd.DataFrame(curve, columns=["day", "predicted", "actual"])


def _chart_satisfaction(df: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax1 = plt.subplots(figsize=(8, 3))
    ax1.plot(df["date"], df["nps"], color="tab:blue", label="NPS (trailing 90 d)")
    ax1.set_ylabel("NPS")
    ax2 = ax1.twinx()
    ax2.plot(df["date"], df["csat"], color="tab:orange", label="CSAT")
    ax2.set_ylabel("CSAT")
    ax1.set_title("NPS and CSAT")
    fig.autofmt_xdate()
    return fig


def _table_html(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p class='empty'>no rows</p>"
    return df.to_html(index=False, border=0, classes="data", escape=True)


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# --- the analyst's sections: headline, day over day, funnel, campaigns, experiments, churn
# model quality, identity. Each has its own gather query and its own section_* renderer, so
# another section can be added beside them without touching these.

_MONEY = {"gross_revenue", "returned_amount", "net_revenue", "web_net_revenue", "store_net_revenue"}
_COUNTS = {"customers", "orders", "active_customers", "new_customers"}


def fmt_count(value) -> str:
    """A count as an integer with thousands separators (credited orders under linear
    attribution are fractional: they are rounded for reading, the mart keeps the fraction)."""
    if value is None or pd.isna(value):
        return "–"
    return f"{round(float(value)):,}"


def fmt_money(value, currency: str) -> str:
    if value is None or pd.isna(value):
        return "–"
    return f"{currency} {float(value):,.2f}"


def fmt_rate(value, digits: int = 1) -> str:
    if value is None or pd.isna(value):
        return "–"
    return f"{float(value):.{digits}%}"


def fmt_number(value, digits: int = 3) -> str:
    if value is None or pd.isna(value):
        return "–"
    return f"{float(value):,.{digits}f}"


def _table(table_id: str, header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    """An HTML table of already formatted cells; columns from ``numeric_from`` on are right
    aligned (pandas' to_html cannot give cells a class)."""
    if not rows:
        return f"<p class='empty' id='{table_id}'>no rows</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td class='num'>{html.escape(c)}</td>" if i >= numeric_from
                         else f"<td>{html.escape(c)}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table class='data' id='{table_id}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def gather_analyst(con) -> dict[str, pd.DataFrame]:
    """The published marts behind the analyst's sections (one query each)."""
    return {
        # the latest day of the funnel, per channel; rates weighted by sessions
        "funnel": _query(con, """
            SELECT date, channel, sum(sessions) AS sessions, sum(product_viewed) AS product_viewed,
                   sum(product_added) AS product_added, sum(checkout_started) AS checkout_started,
                   sum(order_completed) AS order_completed,
                   sum(bounce_rate * sessions) / sum(sessions) AS bounce_rate,
                   sum(avg_session_minutes * sessions) / sum(sessions) AS avg_session_minutes
            FROM marts.fct_funnel_daily
            WHERE date = (SELECT max(date) FROM marts.fct_funnel_daily)
            GROUP BY ALL ORDER BY sessions DESC, channel"""),
        "campaigns": _query(con, """
            SELECT attribution_model, campaign_source, campaign_medium, campaign_name, sessions,
                   customers, orders, store_orders, new_customers, attributed_revenue
            FROM marts.fct_campaign_performance
            QUALIFY row_number() OVER (PARTITION BY attribution_model
                                       ORDER BY attributed_revenue DESC, campaign_name) <= 10
            ORDER BY attribution_model, attributed_revenue DESC, campaign_name"""),
        "attribution_totals": _query(con, """
            SELECT attribution_model, sum(orders) AS orders, sum(attributed_revenue) AS attributed_revenue,
                   sum(attributed_revenue) / (SELECT sum(net_amount) FROM marts.fct_orders) AS share_of_revenue
            FROM marts.fct_campaign_performance GROUP BY ALL ORDER BY attribution_model"""),
        "experiments": _query(con, """
            SELECT experiment_id, variation_id, is_control, exposed_customers, converted_customers,
                   conversion_rate, revenue_per_exposed, lift_vs_control, relative_lift, ci_low, ci_high,
                   p_value, is_significant, srm_p_value, srm_detected
            FROM marts.fct_experiment_results
            ORDER BY experiment_id, is_control DESC, variation_id"""),
        "churn_run": _query(con, """
            SELECT model_version, logical_date, metrics::VARCHAR AS metrics FROM ml.ml_model_runs
            WHERE model_name = 'churn' AND metrics::VARCHAR LIKE '%roc_auc%'
            ORDER BY logical_date DESC, trained_at DESC LIMIT 1"""),
    }


def gather_identity(settings: Settings) -> pd.DataFrame:
    """Identity resolution in numbers, from the warehouse's intermediate layer: the published
    marts hold customers, not the source keys merged into them nor the keys held apart. The
    report task holds the warehouse slot, so nothing writes the file while it is read."""
    if not settings.warehouse_path.exists():
        return pd.DataFrame()
    try:
        con = duck.connect(settings, settings.warehouse_path, read_only=True)
    except duckdb.Error as exc:
        log.warning("report: warehouse not readable for identity statistics (%s)", exc.__class__.__name__)
        return pd.DataFrame()
    try:
        return _query(con, """
            WITH keys AS (
                SELECT customer_id, count(*) AS identity_keys,
                       count(*) FILTER (WHERE key_type = 'contact') AS contacts,
                       bool_or(key_type = 'anon') AS has_device
                FROM intermediate.int_identity__clusters GROUP BY ALL),
            records AS (
                SELECT customer_id, bool_or(record_type = 'pos_transaction') AS has_store,
                       bool_or(record_type = 'web_order') AS has_web_order
                FROM intermediate.int_identity__record_customers GROUP BY ALL),
            per_customer AS (
                SELECT keys.*, (contacts > 0)::INTEGER
                       + (has_device OR coalesce(has_web_order, false))::INTEGER
                       + coalesce(has_store, false)::INTEGER AS sources
                FROM keys LEFT JOIN records USING (customer_id))
            SELECT count(*) AS customers, sum(identity_keys) AS identity_keys,
                   avg(identity_keys) AS keys_per_customer,
                   avg((sources > 1)::INTEGER) AS multi_source_share,
                   count(*) FILTER (WHERE contacts > 1) AS merged_duplicate_contacts,
                   (SELECT count(*) FROM intermediate.int_identity__ambiguous_keys
                    WHERE reason = 'shared_device') AS shared_devices,
                   (SELECT count(*) FROM intermediate.int_identity__ambiguous_keys
                    WHERE reason = 'shared_key') AS shared_keys
            FROM per_customer""")
    finally:
        con.close()


def section_headline(headline: pd.DataFrame, currency: str) -> str:
    if headline.empty:
        return "<section class='kpis' id='headline'></section>"
    row = headline.iloc[0]
    cells = [(fmt_count(row.get("customers")), "customers"), (fmt_count(row.get("orders")), "orders"),
             (fmt_money(row.get("net_revenue"), currency), "net revenue")]
    return "<section class='kpis' id='headline'>" + "".join(
        f"<div class='kpi'><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>" for v, k in cells) + "</section>"


def _fmt_kpi(column: str, value, currency: str) -> str:
    if column in _MONEY:
        return fmt_money(value, currency)
    if column in _COUNTS:
        return fmt_count(value)
    return fmt_number(value, 1)  # NPS, CSAT


def _delta(column: str, value, before, currency: str) -> tuple[str, str]:
    """The change as text (signed, in the column's unit) and as a share of the day before."""
    if value is None or before is None or pd.isna(value) or pd.isna(before):
        return "–", "–"
    change = float(value) - float(before)
    sign = "+" if change > 0 else "−" if change < 0 else "±"
    magnitude = _fmt_kpi(column, abs(change), currency)
    pct = f"{change / abs(float(before)):+.1%}" if float(before) else "–"
    return sign + magnitude, pct


def section_day_over_day(kpi: pd.DataFrame, currency: str) -> str:
    """The logical date's KPIs against the day before (kpi_daily has one row a date)."""
    title = "<h2>Day over day (kpi_daily)</h2>"
    if len(kpi) < 2:
        return title + "<p class='empty' id='day-over-day'>fewer than two days of KPIs: no change to show</p>"
    today, before = kpi.iloc[-1], kpi.iloc[-2]
    day, day_before = (pd.Timestamp(d).date().isoformat() for d in (today["date"], before["date"]))
    rows = []
    for column in [c for c in kpi.columns if c != "date"]:
        change, pct = _delta(column, today[column], before[column], currency)
        rows.append([column, _fmt_kpi(column, today[column], currency),
                     _fmt_kpi(column, before[column], currency), change, pct])
    return (title + f"<p>{day} against {day_before}</p>"
            + _table("day-over-day", ["measure", day, day_before, "change", "change %"], rows))


def section_funnel(funnel: pd.DataFrame) -> str:
    title = "<h2>Funnel (fct_funnel_daily)</h2>"
    if funnel.empty:
        return title + _table("funnel", [], [])
    steps = ["sessions", "product_viewed", "product_added", "checkout_started", "order_completed"]
    totals = funnel[steps].sum()
    rows = []
    for _, r in funnel.iterrows():
        rows.append([r["channel"], *(fmt_count(r[s]) for s in steps),
                     fmt_rate(r["order_completed"] / r["sessions"] if r["sessions"] else None),
                     fmt_rate(r["bounce_rate"]), fmt_number(r["avg_session_minutes"], 1)])
    weights = funnel["sessions"] / totals["sessions"] if totals["sessions"] else funnel["sessions"] * 0
    rows.append(["all channels", *(fmt_count(totals[s]) for s in steps),
                 fmt_rate(totals["order_completed"] / totals["sessions"] if totals["sessions"] else None),
                 fmt_rate((funnel["bounce_rate"] * weights).sum()),
                 fmt_number((funnel["avg_session_minutes"] * weights).sum(), 1)])
    return (title + f"<p>sessions started on {pd.Timestamp(funnel['date'].iloc[0]).date().isoformat()}, by the landing event's channel</p>"
            + _table("funnel", ["channel", "sessions", "product viewed", "product added", "checkout started",
                                "order completed", "conversion", "bounce", "avg minutes"], rows))


def section_campaigns(campaigns: pd.DataFrame, totals: pd.DataFrame, currency: str) -> str:
    title = "<h2>Campaigns (fct_campaign_performance)</h2>"
    rows = [[r["attribution_model"], f"{r['campaign_source']} / {r['campaign_medium']} / {r['campaign_name']}",
             fmt_count(r["sessions"]), fmt_count(r["customers"]), fmt_count(r["orders"]),
             fmt_count(r["store_orders"]), fmt_count(r["new_customers"]),
             fmt_money(r["attributed_revenue"], currency)] for _, r in campaigns.iterrows()]
    total_rows = [[r["attribution_model"], fmt_count(r["orders"]), fmt_money(r["attributed_revenue"], currency),
                   fmt_rate(r["share_of_revenue"])] for _, r in totals.iterrows()]
    return (title + "<p class='note'>top 10 campaigns by attributed revenue under each model; orders "
            "are credited, fractionally under linear</p>"
            + _table("campaigns", ["model", "source / medium / campaign", "sessions", "customers", "orders",
                                   "store orders", "new customers", "attributed revenue"], rows, numeric_from=2)
            + "<h3>Attributed revenue per model</h3>"
            + _table("attribution-totals", ["model", "orders credited", "attributed revenue",
                                            "share of net revenue"], total_rows))


def section_experiments(experiments: pd.DataFrame, currency: str) -> str:
    title = "<h2>Experiments (fct_experiment_results)</h2>"
    rows = []
    for _, r in experiments.iterrows():
        control = bool(r["is_control"])
        ci = "–" if control or pd.isna(r["ci_low"]) else \
            f"[{float(r['ci_low']) * 100:+.2f}, {float(r['ci_high']) * 100:+.2f}] pp"
        rows.append([r["experiment_id"], r["variation_id"] + (" (control)" if control else ""),
                     fmt_count(r["exposed_customers"]), fmt_count(r["converted_customers"]),
                     fmt_rate(r["conversion_rate"], 2), fmt_money(r["revenue_per_exposed"], currency),
                     "–" if control or pd.isna(r["lift_vs_control"]) else f"{float(r['lift_vs_control']) * 100:+.2f} pp",
                     ci, "–" if control else fmt_number(r["p_value"], 4),
                     "–" if control else ("yes" if r["is_significant"] else "no"),
                     "MISMATCH" if r["srm_detected"] else "ok"])
    return (title + "<p class='note'>lift in percentage points of conversion against the control, "
            "95% interval; a sample-ratio mismatch makes the result untrustworthy</p>"
            + _table("experiments", ["experiment", "variation", "exposed", "converted", "conversion",
                                     "revenue per exposed", "lift", "95% CI", "p-value", "significant",
                                     "sample ratio"], rows, numeric_from=2))


def section_churn_quality(run: pd.DataFrame) -> str:
    title = "<h2>Churn model quality (ml_model_runs)</h2>"
    if run.empty:
        return title + "<p class='empty' id='churn-quality'>no evaluated churn model run</p>"
    metrics = json.loads(run["metrics"].iloc[0] or "{}")
    rows = [["model version", str(run["model_version"].iloc[0])],
            ["trained for", pd.Timestamp(run["logical_date"].iloc[0]).date().isoformat()],
            ["ROC AUC", fmt_number(metrics.get("roc_auc"))],
            ["ROC AUC of the recency baseline", fmt_number(metrics.get("recency_baseline_roc_auc"))],
            ["top-decile lift", fmt_number(metrics.get("top_decile_lift"), 2)],
            ["PR AUC", fmt_number(metrics.get("pr_auc"))],
            ["Brier score", fmt_number(metrics.get("brier"), 4)],
            ["customers evaluated", fmt_count(metrics.get("rows"))],
            ["churn base rate", fmt_rate(metrics.get("base_rate"))]]
    return title + _table("churn-quality", ["measure", "value"], rows)


def section_identity(identity: pd.DataFrame) -> str:
    title = "<h2>Identity resolution</h2>"
    if identity.empty:
        return title + "<p class='empty' id='identity'>identity statistics unavailable</p>"
    r = identity.iloc[0]
    rows = [["customers", fmt_count(r["customers"])],
            ["source keys merged into them (contacts, emails, phones, loyalty ids, devices)", fmt_count(r["identity_keys"])],
            ["keys per customer", fmt_number(r["keys_per_customer"], 2)],
            ["customers seen in more than one source (CRM, web, store)", fmt_rate(r["multi_source_share"])],
            ["customers with duplicate CRM contacts merged", fmt_count(r["merged_duplicate_contacts"])],
            ["shared devices held apart (several people logged in)", fmt_count(r["shared_devices"])],
            ["shared emails, phones or loyalty ids held apart", fmt_count(r["shared_keys"])]]
    return title + _table("identity", ["measure", "value"], rows)


def _value_by(con, group: str, table: str) -> pd.DataFrame:
    """Customer value (CLV) summed and averaged by a column of ``table`` (alias ``x``)."""
    return _query(con, f"""
        SELECT {group}, count(*) AS customers,
               round(avg(v.p_alive), 3) AS mean_p_alive, round(sum(v.clv_365d), 2) AS clv_365d,
               round(avg(v.clv_365d), 2) AS mean_clv_365d
        FROM ml.ml_customer_value AS v
        LEFT JOIN {table} AS x USING (customer_id)
        GROUP BY 1 ORDER BY clv_365d DESC NULLS LAST""")


def gather(settings: Settings, run_id: str) -> dict:
    """DataFrames by section name, plus ``currency`` (a str: the code every amount is in)."""
    published = settings.published_db
    con = duck.connect(settings, published, read_only=True)
    try:
        data = {
            "kpi": _query(con, "SELECT * FROM marts.kpi_daily ORDER BY date"),
            "lifecycle": _query(con, "SELECT lifecycle_stage AS label, count(*) AS n "
                                     "FROM marts.customer_360 GROUP BY 1 ORDER BY 2 DESC"),
            "segments": _query(con, "SELECT segment_name AS label, count(*) AS n "
                                    "FROM ml.ml_customer_segments GROUP BY 1 ORDER BY 2 DESC"),
            "churn": _query(con, "SELECT churn_probability FROM ml.ml_churn_scores"),
            "clv_run": _query(con, "SELECT model_version, metrics::VARCHAR AS metrics FROM ml.ml_model_runs "
                                   "WHERE model_name = 'clv' AND metrics::VARCHAR LIKE '%holdout_curve%' "
                                   "ORDER BY logical_date DESC, trained_at DESC LIMIT 1"),
            "value_by_segment": _value_by(con, "coalesce(x.segment_name, 'unsegmented') AS segment",
                                          "ml.ml_customer_segments"),
            "value_by_tier": _value_by(con, "coalesce(x.value_tier, 'none') AS value_tier",
                                       "marts.customer_360"),
            "headline": _query(con, """
                SELECT (SELECT count(*) FROM marts.customer_360) AS customers,
                       (SELECT count(*) FROM marts.fct_orders) AS orders,
                       (SELECT round(sum(net_amount), 2) FROM marts.fct_orders) AS net_revenue"""),
            "feedback_spikes": _feedback_spikes(con),
        }
        data.update(gather_analyst(con))
    finally:
        con.close()
    data["currency"] = settings.reporting_currency
    data["identity"] = gather_identity(settings)
    data["gates"] = pd.DataFrame()
    data["gate_warnings"] = pd.DataFrame()
    if settings.audit_db.exists():
        from customer360.core import audit

        with audit.connect(settings, read_only=True) as acon:
            data["gates"] = _query(acon, f"""
                SELECT stage, suite, count(*) AS expectations,
                       count(*) FILTER (WHERE outcome = 'fail') AS errors,
                       count(*) FILTER (WHERE outcome = 'warn') AS warnings
                FROM audit.gate_results
                WHERE run_id = {_sql_str(run_id)}
                GROUP BY 1, 2 ORDER BY 1, 2""")
            # every warning in full (dbt test warnings of each layer among them): a warning
            # does not stop the run, so the report is where someone reads it
            data["gate_warnings"] = _query(acon, f"""
                SELECT stage, suite, expectation, column_name, observed_value, sample
                FROM audit.gate_results
                WHERE run_id = {_sql_str(run_id)} AND outcome = 'warn'
                ORDER BY stage, suite, expectation""")
    recon_path = settings.reconciliation_path
    if recon_path.exists():
        recs = pd.read_json(recon_path, lines=True)
        data["reconciliation"] = (recs.groupby(["source", "entity"], as_index=False)
                                  [["read", "landed", "quarantined", "duplicates_in_raw"]].sum())
    else:
        data["reconciliation"] = pd.DataFrame()
    return data


# --- voice of the customer (issue 23): self-contained, so the report's other sections can change

def _feedback_spikes(con, as_of: dt.date | None = None) -> pd.DataFrame:
    """Topics whose negative share spiked against their 28-day baseline (marts.kpi_feedback_daily
    decides what a spike is), on the latest date with texts or on ``as_of``."""
    day = f"DATE '{as_of.isoformat()}'" if as_of else "(SELECT max(date) FROM marts.kpi_feedback_daily)"
    return _query(con, f"""
        SELECT date, topic, texts, negative_texts, round(negative_share, 3) AS negative_share,
               round(baseline_negative_share, 3) AS baseline_negative_share, baseline_texts
        FROM marts.kpi_feedback_daily
        WHERE is_spike AND date = {day}
        ORDER BY negative_share DESC, topic""")


def voice_of_customer_section(data: dict[str, pd.DataFrame]) -> str:
    spikes = data.get("feedback_spikes", pd.DataFrame())
    if spikes is None or spikes.empty:
        body = "<p>No topic's negative share spiked against its 28-day baseline.</p>"
    else:
        body = (f"<p class='warning'><b>{len(spikes)} topic(s) with a spike of negative feedback</b> "
                f"against the 28-day baseline:</p>{_table_html(spikes)}")
    return f"<h2>Voice of the customer</h2>{body}"


def render(data: dict, logical_date: dt.date, run_id: str,
           dbt_docs: Path | None = None) -> str:
    charts: list[tuple[str, str]] = []
    kpi = data["kpi"]
    if not kpi.empty:
        charts.append(("revenue-by-channel", _svg(_chart_revenue(kpi))))
        charts.append(("nps-csat", _svg(_chart_satisfaction(kpi))))
    if not data["lifecycle"].empty:
        charts.append(("lifecycle", _svg(_chart_bars(
            data["lifecycle"].set_index("label")["n"], "Customers by lifecycle stage"))))
    if not data["segments"].empty:
        charts.append(("segments", _svg(_chart_bars(
            data["segments"].set_index("label")["n"], "Customers by segment"))))
    if not data["churn"].empty:
        charts.append(("churn-risk", _svg(_chart_hist(
            data["churn"]["churn_probability"], "Churn risk distribution"))))
    curve = _clv_curve(data.get("clv_run", pd.DataFrame()))
    if not curve.empty:
        charts.append(("clv-calibration", _svg(_chart_clv_calibration(curve))))
    for key, label, title in (("value_by_segment", "segment", "Expected 365-day value by segment"),
                              ("value_by_tier", "value_tier", "Expected 365-day value by value tier")):
        frame = data.get(key, pd.DataFrame())
        if not frame.empty and frame["clv_365d"].notna().any():
            charts.append((key.replace("_", "-"), _svg(_chart_bars(
                frame.set_index(label)["clv_365d"].fillna(0), title))))
    if not data["gates"].empty:
        g = data["gates"].groupby("stage")[["expectations", "errors", "warnings"]].sum()
        charts.append(("gates", _svg(_chart_bars(g["expectations"], "Expectations checked per gate"))))
    currency = data.get("currency") or ""
    lineage = (f"<p>Lineage and model documentation: <a href='{html.escape(dbt_docs.as_uri())}'>dbt docs</a></p>"
               if dbt_docs and dbt_docs.exists() else "<p>dbt docs were not generated for this run.</p>")
    figures = "".join(f"<figure class='chart' id='{cid}'>{svg}</figure>" for cid, svg in charts)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>customer360 run report {logical_date}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
.kpis {{ display: flex; gap: 2em; }} .kpi b {{ display: block; font-size: 1.6em; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 1em; }} figure.chart {{ margin: 0; }}
table.data {{ border-collapse: collapse; }} table.data td, table.data th {{ padding: 2px 8px; border-bottom: 1px solid #ddd; }}
table.data td.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
.up {{ color: #1a7f37; }} .down {{ color: #b42318; }} .note {{ color: #555; font-size: .9em; }}
</style></head><body>
<h1>customer360 run report</h1>
<p>logical date <b>{logical_date}</b>, run <code>{html.escape(run_id)}</code>,
generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC</p>
{section_headline(data.get("headline", pd.DataFrame()), currency)}
{section_day_over_day(kpi, currency)}
{section_funnel(data.get("funnel", pd.DataFrame()))}
{section_campaigns(data.get("campaigns", pd.DataFrame()), data.get("attribution_totals", pd.DataFrame()), currency)}
{section_experiments(data.get("experiments", pd.DataFrame()), currency)}
{section_churn_quality(data.get("churn_run", pd.DataFrame()))}
{section_identity(data.get("identity", pd.DataFrame()))}
<h2>Charts</h2><section class="charts">{figures}</section>
<h2>Customer value (BG/NBD and Gamma-Gamma, undiscounted 365 days)</h2>
<h3>By segment</h3>{_table_html(data.get("value_by_segment", pd.DataFrame()))}
<h3>By value tier</h3>{_table_html(data.get("value_by_tier", pd.DataFrame()))}
<h2>Quality gates</h2>{_table_html(data["gates"])}
<h3>Warnings</h3>{_table_html(data.get("gate_warnings", pd.DataFrame()))}
{voice_of_customer_section(data)}
<h2>Reconciliation (read = landed + quarantined)</h2>{_table_html(data["reconciliation"])}
{lineage}
</body></html>"""


def build_report(settings: Settings, logical_date: dt.date, run_id: str,
                 dbt_docs: Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    page = render(gather(settings, run_id), logical_date, run_id, dbt_docs)
    folder = settings.reports_dir
    folder.mkdir(parents=True, exist_ok=True)
    safe_run = re.sub(r"[^0-9A-Za-z_.-]+", "_", run_id)[:80]
    path = folder / f"{logical_date.isoformat()}_{safe_run}.html"
    with files.atomic_write(path) as fh:  # a reader on the share never opens half a page
        fh.write(page)
    with files.atomic_write(folder / "latest.json") as fh:
        fh.write(json.dumps({"report": str(path)}))
    log.info("run report written to %s", path)
    return path
