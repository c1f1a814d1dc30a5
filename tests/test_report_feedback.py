"""The run report's voice-of-the-customer section: spikes of kpi_feedback_daily, or none."""

import datetime as dt

import duckdb
import pandas as pd

from customer360.serve import report


def _kpi(con, spike_on_last_day: bool):
    con.execute("create schema marts")
    con.execute(f"""
        create table marts.kpi_feedback_daily as
        select date '2026-03-01' + cast(i as integer) as date, 'delivery/late/parcel' as topic,
               20::bigint as texts, (case when i = 9 and {spike_on_last_day} then 15 else 2 end)::bigint as negative_texts,
               case when i = 9 and {spike_on_last_day} then 0.75 else 0.1 end as negative_share,
               (i * 20)::bigint as baseline_texts, 0.1 as baseline_negative_share,
               i = 9 and {spike_on_last_day} as is_spike
        from range(10) t(i)
        union all
        select date '2026-03-05', 'price/expensive/value', 20, 18, 0.9, 80, 0.1, true""")


def test_a_spike_on_the_latest_day_is_listed_with_its_topic():
    con = duckdb.connect()
    _kpi(con, True)
    spikes = report._feedback_spikes(con)
    assert spikes.topic.tolist() == ["delivery/late/parcel"]   # the older price spike is history
    assert pd.Timestamp(spikes.date.iloc[0]).date() == dt.date(2026, 3, 10)
    section = report.voice_of_customer_section({"feedback_spikes": spikes})
    assert "1 topic(s) with a spike" in section and "delivery/late/parcel" in section


def test_no_spike_says_so_and_a_missing_table_is_not_an_error():
    con = duckdb.connect()
    _kpi(con, False)
    assert report._feedback_spikes(con).empty
    assert "No topic" in report.voice_of_customer_section({"feedback_spikes": report._feedback_spikes(con)})
    assert "No topic" in report.voice_of_customer_section({"feedback_spikes": report._feedback_spikes(duckdb.connect())})
    assert report._feedback_spikes(con, dt.date(2026, 3, 5)).topic.tolist() == ["price/expensive/value"]
