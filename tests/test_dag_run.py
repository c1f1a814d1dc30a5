"""End to end through Airflow itself: the DAG on small simulated data."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import shutil
import subprocess

import duckdb
import pytest

from customer360.pipeline.airflow import RunLockedError, run_dag, run_lock
from tests.e2e import file_digest, pipeline_env, published_checksums

pytestmark = pytest.mark.slow


# wall clock (UTC) just before the module's first run: no run of this module started earlier
_RUNS_SINCE: dict[str, dt.datetime] = {}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """One simulated home with the DAG already run once for the last simulated day."""
    home = tmp_path_factory.mktemp("c360")
    with pipeline_env(home) as (settings, server, last):
        _RUNS_SINCE["first"] = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        first = run_dag(settings, last)
        assert first.success, first.log_path.read_text()[-5000:]
        yield settings, server, last


def test_run_publishes_the_marts(pipeline):
    settings, _, _ = pipeline
    con = duckdb.connect(str(settings.published_dir / "c360.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM marts.customer_360").fetchone()[0] > 50
        assert con.execute("SELECT count(*) FROM marts.fct_orders WHERE channel = 'web'").fetchone()[0] > 0
        assert con.execute("SELECT count(*) FROM marts.fct_orders WHERE channel = 'store'").fetchone()[0] > 0
        # Every customer carries a segment and, when they have ordered, a churn probability.
        assert con.execute("SELECT count(*) FROM marts.customer_360 WHERE segment_name IS NULL").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM marts.customer_360 WHERE orders_count > 0 "
                           "AND churn_probability IS NULL").fetchone()[0] == 0
    finally:
        con.close()


def test_feedback_text_is_published_masked_and_reaches_customer_360(pipeline):
    import pandas as pd

    settings, _, _ = pipeline
    truth = pd.read_parquet(settings.simulation_dir / "ground_truth" / "texts.parquet")
    con = duckdb.connect(str(settings.published_dir / "c360.duckdb"), read_only=True)
    try:
        texts = con.execute("SELECT source, source_id, language, sentiment_label, topic, masked_text, "
                            "pii_masked FROM marts.fct_feedback_text").df()
        assert len(texts) > 0 and set(texts.language) <= {"en", "zh-Hans", "zh-Hant"}
        assert {"ticket", "survey"} <= set(texts.source)
        planted = texts.merge(truth[truth.has_pii], on=["source", "source_id"])
        assert len(planted) > 0 and planted.pii_masked.all()
        assert not texts.masked_text.str.contains("@", regex=False).any()
        labelled = con.execute("SELECT count(*) FROM marts.customer_360 "
                               "WHERE last_sentiment_label IS NOT NULL").fetchone()[0]
        assert labelled > 0
        assert con.execute("SELECT count(*) FROM marts.kpi_feedback_daily").fetchone()[0] > 0
    finally:
        con.close()


def test_rerun_of_the_same_date_changes_nothing(pipeline):
    settings, _, last = pipeline
    before = published_checksums(settings)
    assert {"marts.customer_360", "marts.fct_orders", "ml.ml_churn_scores"} <= set(before)
    second = run_dag(settings, last)
    assert second.success, second.log_path.read_text()[-5000:]
    assert published_checksums(settings) == before


def test_the_recorded_run_lasts_as_long_as_it_ran(pipeline):
    """The Airflow UI shows dag_run start/end: the run for a March date executed today must
    start today, not at its logical date (Airflow's own `dags test` records the latter)."""
    import sqlite3

    settings, _, last = pipeline
    con = sqlite3.connect(settings.airflow_home / "airflow.db")
    try:
        rows = con.execute("SELECT logical_date, start_date, end_date, state FROM dag_run "
                           "WHERE dag_id = 'c360_daily'").fetchall()
    finally:
        con.close()
    assert rows
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    for logical, start, end, state in rows:
        assert dt.datetime.fromisoformat(logical).date() == last
        start, end = dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end)
        assert state == "success"
        assert _RUNS_SINCE["first"] <= start <= end <= now, (logical, start, end)


def test_second_concurrent_run_is_refused(pipeline):
    settings, _, last = pipeline
    with run_lock(settings):
        with pytest.raises(RunLockedError, match="another pipeline run is in progress"):
            run_dag(settings, last)


def test_report_is_rendered_with_charts_in_headless_chromium(pipeline, tmp_path):
    settings, _, _ = pipeline
    reports = sorted((settings.artifacts / "reports").glob("*.html"))
    assert reports, "the report task wrote no page"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (.ci/run installs Debian's chromium)")
    page = reports[-1].read_text()
    # Measure every chart's drawn geometry inside the browser and write it into the DOM.
    probe = """<script>window.addEventListener('load', () => {
      const out = [...document.querySelectorAll('figure.chart')].map(f => {
        const marks = [...f.querySelectorAll('path, rect, line, polyline')]
          .map(e => e.getBBox()).filter(b => b.width > 0 || b.height > 0);
        return {id: f.id, marks: marks.length, width: f.getBoundingClientRect().width};
      });
      const pre = document.createElement('pre'); pre.id = 'probe';
      pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
    });</script>"""
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(page.replace("</body>", probe + "</body>"))
    out = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chrome'}", "--virtual-time-budget=5000", "--dump-dom",
         probe_page.as_uri()], capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="probe">(.*?)</pre>', out.stdout, re.S)
    assert match, out.stderr[-2000:]
    charts = {c["id"]: c for c in json.loads(match.group(1).replace("&quot;", '"'))}
    for chart in ("revenue-by-channel", "lifecycle", "segments", "churn-risk", "nps-csat", "gates"):
        assert chart in charts, f"chart {chart} missing from the report"
        assert charts[chart]["marks"] >= 3 and charts[chart]["width"] > 100, charts[chart]


def test_failed_gate_leaves_publication_unchanged(tmp_path):
    with pipeline_env(tmp_path / "home", people=400, days=16) as (settings, server, last):
        assert run_dag(settings, last - dt.timedelta(days=1)).success
        published = settings.published_dir / "c360.duckdb"
        before = file_digest(published)
        parquet_before = {p.name: file_digest(p) for p in (settings.published_dir / "marts").glob("*.parquet")}
        # A half-delivered day: the web collector sent 3% of the day's events.
        for part in sorted((settings.landing / "web" / "events" / f"date={last.isoformat()}").glob("*.jsonl.gz")):
            with gzip.open(part, "rb") as fh:
                lines = fh.read().splitlines(keepends=True)
            with gzip.open(part, "wb") as fh:
                fh.write(b"".join(lines[: max(1, len(lines) * 3 // 100)]))
        result = run_dag(settings, last)
        assert not result.success
        log = result.log_path.read_text()
        assert "gate raw stopped the run" in log and "raw.volume" in log
        assert file_digest(published) == before
        assert {p.name: file_digest(p) for p in (settings.published_dir / "marts").glob("*.parquet")} == parquet_before
        alerts = list((settings.artifacts / "alerts").glob("*gate_raw.json"))
        assert alerts and "raw.volume" in alerts[0].read_text()
