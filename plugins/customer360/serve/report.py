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

from customer360.core import duck
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


def gather(settings: Settings, run_id: str) -> dict[str, pd.DataFrame]:
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
            "value_by_segment": _query(con, """
                SELECT coalesce(s.segment_name, 'unsegmented') AS segment, count(*) AS customers,
                       round(avg(v.p_alive), 3) AS mean_p_alive, round(sum(v.clv_365d), 2) AS clv_365d,
                       round(avg(v.clv_365d), 2) AS mean_clv_365d
                FROM ml.ml_customer_value AS v
                LEFT JOIN ml.ml_customer_segments AS s USING (customer_id)
                GROUP BY 1 ORDER BY clv_365d DESC NULLS LAST"""),
            "value_by_tier": _query(con, """
                SELECT coalesce(c.value_tier, 'none') AS value_tier, count(*) AS customers,
                       round(avg(v.p_alive), 3) AS mean_p_alive, round(sum(v.clv_365d), 2) AS clv_365d,
                       round(avg(v.clv_365d), 2) AS mean_clv_365d
                FROM ml.ml_customer_value AS v
                LEFT JOIN marts.customer_360 AS c USING (customer_id)
                GROUP BY 1 ORDER BY clv_365d DESC NULLS LAST"""),
            "headline": _query(con, """
                SELECT (SELECT count(*) FROM marts.customer_360) AS customers,
                       (SELECT count(*) FROM marts.fct_orders) AS orders,
                       (SELECT round(sum(net_amount), 2) FROM marts.fct_orders) AS net_revenue"""),
            "feedback_spikes": _feedback_spikes(con),
        }
    finally:
        con.close()
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


def render(data: dict[str, pd.DataFrame], logical_date: dt.date, run_id: str,
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
    headline = data["headline"].iloc[0].to_dict() if not data["headline"].empty else {}
    head = "".join(f"<div class='kpi'><b>{html.escape(str(v))}</b><span>{html.escape(k)}</span></div>"
                   for k, v in headline.items())
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
</style></head><body>
<h1>customer360 run report</h1>
<p>logical date <b>{logical_date}</b>, run <code>{html.escape(run_id)}</code>,
generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC</p>
<section class="kpis">{head}</section>
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
    path.write_text(page, encoding="utf-8")
    (folder / "latest.json").write_text(json.dumps({"report": str(path)}))
    log.info("run report written to %s", path)
    return path
