"""Reruns and backfills of an earlier date after later data has landed pass every gate.

Day D runs, then D+1 (with someone who signs up that day), then a web file for D arrives
late; rerunning D, and backfilling D..D+1 through Airflow, must pass every gate (this is also
the test of `backfill`: one simulated home serves both, CI time being what it is). The rerun of D sees the
warehouse as it is (the D+1 customer included: the facts refer to every customer), so the
scoring snapshot of D must score customers first seen after D too (marts.segment_coverage
failed on exactly that: "a customer without a segment").

Until the backfill the stages run in-process in the DAG's order (the report stage, which
renders HTML, is left out); a failed gate raises and fails the test.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from customer360.pipeline.airflow import backfill
from customer360.pipeline.stages import STAGES
from customer360.demo.simulator import deliver
from tests.e2e import pipeline_env
from tests.landing_fixtures import event, write_web_part

pytestmark = pytest.mark.slow


def _run_day(settings, day: dt.date, run_id: str) -> dict:
    gates = {}
    for st in STAGES:
        if st.name == "report":
            continue
        out = st.run(day, run_id, settings)  # a failing gate raises GateFailed
        if st.name.startswith("gate_"):
            gates[st.name] = out["ok"]
    return gates


def _published(settings, sql: str):
    con = duckdb.connect(str(settings.published_dir / "c360.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_rerun_and_backfill_of_an_earlier_date_after_late_data_pass_every_gate(tmp_path):
    days = 10
    day_d = dt.date(2026, 3, 1) + dt.timedelta(days=days - 2)
    with pipeline_env(tmp_path / "home", people=120, days=days,
                      deliver_through=day_d) as (settings, _, last):
        assert last == day_d + dt.timedelta(days=1)
        assert all(_run_day(settings, day_d, "first").values())

        deliver(settings.simulation_dir, settings.landing, through=last)
        # Someone new on D+1 only: a visitor who signs up.
        write_web_part(settings.landing, last, 91, [
            event("signup-next-1", last, anonymousId="anon-next-new"),
            event("signup-next-2", last, type="identify", anonymousId="anon-next-new",
                  userId="u-next-new", traits={"email": "next.new@example.com"})])
        assert all(_run_day(settings, last, "next").values())

        # A web file for D lands after D+1 ran: a visitor of D whose events were late.
        late = write_web_part(settings.landing, day_d, 90, [
            event("late-d-1", day_d, hour=15, anonymousId="anon-late-d"),
            event("late-d-2", day_d, hour=15, type="identify", anonymousId="anon-late-d",
                  userId="u-late-d", traits={"email": "late.d@example.com"})])

        gates = _run_day(settings, day_d, "rerun")

        assert gates and all(gates.values()), gates
        # The case at stake: customers first seen after the rerun's date are in customer_360.
        ((after,),) = _published(settings, "SELECT count(*) FROM marts.customer_360 "
                                           "WHERE CAST(first_seen_at AS DATE) > as_of_date")
        assert after >= 1
        assert _published(settings, "SELECT count(*) FROM marts.customer_360 "
                                    "WHERE segment_name IS NULL") == [(0,)]
        assert _published(settings, "SELECT DISTINCT as_of_date FROM marts.customer_360") == [
            (day_d,)]
        rel = late.relative_to(settings.landing).as_posix()
        con = duckdb.connect()
        try:
            landed = con.execute(
                "SELECT count(*) FROM read_parquet(?) WHERE _source_file = ?",
                [str(settings.lake_raw / "web" / "events" / "load_date=*" / "*.parquet"), rel],
            ).fetchone()[0]
        finally:
            con.close()
        assert landed == 2

        # A backfill of D..D+1 after all of it, through Airflow (a failed gate fails its run):
        # the dates run in order, each succeeds, the last one is what is published.
        results = backfill(settings, day_d, last)
        assert [r.logical_date for r in results] == [day_d, last]
        assert all(r.success for r in results), results[-1].log_path.read_text()[-3000:]
        ((published_date,),) = _published(settings, "SELECT max(logical_date) FROM meta.publication")
        assert str(published_date) == str(last)
        assert _published(settings, "SELECT count(*) FROM marts.customer_360 "
                                    "WHERE segment_name IS NULL") == [(0,)]
