"""The web loader on small hand-made part files: real gzip files, real DuckDB, real Parquet."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import pytest

from customer360.ingest.raw_zone import read_reconciliation
from customer360.ingest.state import StateStore
from customer360.core.settings import get_settings
from customer360.ingest.web import load_web
from tests.landing_fixtures import (batch_files, event, order_completed, read_quarantine,
                                    read_raw, web_part_path, write_corrupt_web_part,
                                    write_truncated_web_part, write_web_part)

D1 = dt.date(2026, 3, 10)
D2 = D1 + dt.timedelta(days=1)


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("C360_LANDING", raising=False)
    return get_settings()


def _ids(rows: list[dict]) -> list[str]:
    return sorted(r["messageId"] for r in rows)


def test_first_load_lands_everything_and_a_rerun_lands_nothing(settings):
    write_web_part(settings.landing, D1, 0, [event("a1", D1), order_completed("a2", D1)])
    write_web_part(settings.landing, D1, 1, [event("a3", D1, type="track")])
    write_web_part(settings.landing, D2, 0, [event("b1", D2, type="identify",
                                                   traits={"email": " Ann@Mail.com "})])

    recs = load_web(settings, D2)

    assert sum(r.landed for r in recs) == 4
    rows = read_raw(settings, "web", "events")
    assert _ids(rows) == ["a1", "a2", "a3", "b1"]
    order = next(r for r in rows if r["messageId"] == "a2")
    assert json.loads(order["properties"])["order_id"] == "o-1"
    assert order["_source_file"] == "web/events/date=2026-03-10/part-0000.jsonl.gz"
    assert order["_source_line"] == 2
    assert order["_folder_date"] == D1
    identify = next(r for r in rows if r["messageId"] == "b1")
    assert json.loads(identify["traits"]) == {"email": " Ann@Mail.com "}

    batches_before = batch_files(settings, "web", "events")
    assert load_web(settings, D2) == []
    assert load_web(settings, D1) == []
    assert batch_files(settings, "web", "events") == batches_before
    assert len(read_raw(settings, "web", "events")) == 4


def test_a_run_reads_only_folders_up_to_its_date(settings):
    write_web_part(settings.landing, D1, 0, [event("a1", D1)])
    write_web_part(settings.landing, D2, 0, [event("b1", D2)])

    load_web(settings, D1)
    assert _ids(read_raw(settings, "web", "events")) == ["a1"]
    load_web(settings, D2)
    assert _ids(read_raw(settings, "web", "events")) == ["a1", "b1"]


def test_a_file_added_later_to_an_earlier_day_is_picked_up_by_the_next_run(settings):
    write_web_part(settings.landing, D1, 0, [event("a1", D1)])
    load_web(settings, D1)

    write_web_part(settings.landing, D1, 1, [event("late-file", D1, hour=23)])
    write_web_part(settings.landing, D2, 0, [event("b1", D2)])
    recs = load_web(settings, D2)

    assert sum(r.read for r in recs) == 2  # the new file and D2's; part-0000 not again
    rows = read_raw(settings, "web", "events")
    assert _ids(rows) == ["a1", "b1", "late-file"]
    late = next(r for r in rows if r["messageId"] == "late-file")
    assert late["_folder_date"] == D1
    assert late["_source_file"] == "web/events/date=2026-03-10/part-0001.jsonl.gz"


def test_a_late_event_keeps_its_true_timestamp(settings):
    happened = D2 - dt.timedelta(days=3)
    late = event("late", happened, hour=8)
    write_web_part(settings.landing, D2, 0, [event("on-time", D2), late])

    load_web(settings, D2)

    row = next(r for r in read_raw(settings, "web", "events") if r["messageId"] == "late")
    assert row["timestamp"] == late["timestamp"] == "2026-03-08T08:00:00.000Z"
    assert row["_folder_date"] == D2
    assert read_quarantine(settings, "web", "events") == []


def test_duplicate_message_ids_are_kept_in_raw_and_counted(settings):
    write_web_part(settings.landing, D1, 0, [event("m1", D1), event("m2", D1), event("m1", D1)])
    first = load_web(settings, D1)
    write_web_part(settings.landing, D2, 0, [event("m2", D1, hour=11), event("m3", D2)])
    second = load_web(settings, D2)

    assert [r.duplicates_in_raw for r in first] == [1]   # m1 twice in one file
    assert [r.duplicates_in_raw for r in second] == [1]  # m2 redelivered the next day
    assert _ids(read_raw(settings, "web", "events")) == ["m1", "m1", "m2", "m2", "m3"]
    files = {r["source_file"]: r for r in read_raw(settings, "web", "files")}
    assert files["web/events/date=2026-03-10/part-0000.jsonl.gz"]["duplicate_message_ids"] == 1
    assert files["web/events/date=2026-03-11/part-0000.jsonl.gz"]["duplicate_message_ids"] == 1


def test_corrupt_and_truncated_files_are_quarantined_and_the_others_load(settings):
    write_web_part(settings.landing, D1, 0, [event("good1", D1), event("good2", D1)])
    write_corrupt_web_part(settings.landing, D1, 1)
    write_truncated_web_part(settings.landing, D1, 2, [event(f"t{i}", D1) for i in range(500)])
    write_web_part(settings.landing, D1, 3, [event("good3", D1)])

    recs = load_web(settings, D1)

    assert _ids(read_raw(settings, "web", "events")) == ["good1", "good2", "good3"]
    quarantined = {q["source_file"]: q for q in read_quarantine(settings, "web", "events")}
    corrupt = quarantined["web/events/date=2026-03-10/part-0001.jsonl.gz"]
    truncated = quarantined["web/events/date=2026-03-10/part-0002.jsonl.gz"]
    assert corrupt["reason"].startswith("corrupt gzip file") and corrupt["source_line"] is None
    assert truncated["reason"].startswith("truncated gzip file")
    files = {r["source_file"]: r for r in read_raw(settings, "web", "files")}
    assert files["web/events/date=2026-03-10/part-0001.jsonl.gz"]["status"] == "quarantined"
    assert files["web/events/date=2026-03-10/part-0000.jsonl.gz"]["status"] == "loaded"
    assert sum(r.landed for r in recs) == 3 and sum(r.quarantined for r in recs) == 2
    assert all(r.read == r.landed + r.quarantined for r in recs)


def test_malformed_lines_are_quarantined_with_line_reason_and_text(settings):
    broken = '{"messageId": "x", "type": "page", "anonymousId": "a", "timestamp": "2026-03-10T1'
    write_web_part(settings.landing, D1, 0, [
        event("ok1", D1), "", broken, event("no-anon", D1, anonymousId=None),
        event("screen", D1, type="pageview"), event("noevent", D1, type="track", event=None),
        order_completed("order", D1) | {"properties": {"revenue": "lots"}},
        event("future", D1 + dt.timedelta(days=1), hour=1), event("ok2", D1)])

    (rec,) = load_web(settings, D1)

    got = {q["source_line"]: q for q in read_quarantine(settings, "web", "events")}
    assert sorted(got) == [3, 4, 5, 6, 7, 8]
    assert got[3]["reason"] == "line is not valid JSON" and got[3]["raw_text"] == broken
    assert got[4]["reason"] == "missing both anonymousId and userId"
    assert got[4]["record_key"] == "no-anon"
    assert got[5]["reason"].startswith("type must be identify, track, page, screen, group or alias")
    assert got[6]["reason"] == "track call without event"
    assert got[7]["reason"] == "Order Completed without properties.order_id"
    assert "after its folder's day" in got[8]["reason"]
    assert json.loads(got[5]["raw_text"])["messageId"] == "screen"
    assert _ids(read_raw(settings, "web", "events")) == ["ok1", "ok2"]
    assert (rec.read, rec.landed, rec.quarantined) == (8, 2, 6)  # the blank line is no record


def test_unknown_top_level_fields_are_kept(settings):
    write_web_part(settings.landing, D1, 0, [event("e1", D1, sentAt="2026-03-10T10:00:01.000Z",
                                                  integrations={"All": True}, channel="server",
                                                  version=2)])
    load_web(settings, D1)
    (row,) = read_raw(settings, "web", "events")
    assert row["sentAt"] == "2026-03-10T10:00:01.000Z"   # a Segment field: a column of its own
    assert json.loads(row["_extra"]) == {"integrations": {"All": True}, "channel": "server",
                                         "version": 2}


def test_every_segment_call_type_lands_with_either_id(settings):
    write_web_part(settings.landing, D1, 0, [
        event("i", D1, type="identify", userId="1042", anonymousId=None, traits={"email": "a@b.c"}),
        event("t", D1, type="track", userId="1042", anonymousId=None, event="Signed Up"),
        event("p", D1, type="page", name="Home", category="Shop"),
        event("s", D1, type="screen", name="Cart", anonymousId="dev-1", userId="1042"),
        event("g", D1, type="group", userId="1042", anonymousId=None, groupId="acme",
              traits={"name": "Acme 有限公司"}),
        event("a", D1, type="alias", userId="1042", anonymousId=None, previousId="dev-1")])

    (rec,) = load_web(settings, D1)

    assert (rec.read, rec.landed, rec.quarantined) == (6, 6, 0)
    rows = {r["messageId"]: r for r in read_raw(settings, "web", "events")}
    assert {r["type"] for r in rows.values()} == {"identify", "track", "page", "screen", "group",
                                                  "alias"}
    assert rows["a"]["previousId"] == "dev-1" and rows["a"]["anonymousId"] is None
    assert rows["g"]["groupId"] == "acme"
    assert json.loads(rows["g"]["traits"]) == {"name": "Acme 有限公司"}
    assert (rows["s"]["name"], rows["p"]["category"]) == ("Cart", "Shop")


def test_a_line_without_timestamp_gets_segments_skew_corrected_one(settings):
    # The device clock runs 2 hours fast: it says it sent at 12:00:05 what happened at 12:00:00
    # (its time); the collector received it at 10:00:06 (true time). Segment's timestamp is
    # receivedAt - (sentAt - originalTimestamp) = 10:00:01.
    skewed = event("skew", D1, timestamp=None, originalTimestamp="2026-03-10T12:00:00.000Z",
                   sentAt="2026-03-10T12:00:05.000Z", receivedAt="2026-03-10T10:00:06.000Z")
    original_only = event("orig", D1, timestamp=None, originalTimestamp="2026-03-10T09:30:00Z",
                          receivedAt="2026-03-10T09:31:00.000Z")
    received_only = event("recv", D1, timestamp=None, receivedAt="2026-03-10T08:00:00.250Z")
    kept = event("kept", D1, originalTimestamp="2026-03-10T01:00:00Z",
                 sentAt="2026-03-10T01:00:00Z")
    write_web_part(settings.landing, D1, 0, [skewed, original_only, received_only, kept])

    load_web(settings, D1)

    rows = {r["messageId"]: r for r in read_raw(settings, "web", "events")}
    assert rows["skew"]["timestamp"] == "2026-03-10T10:00:01.000Z"
    assert rows["skew"]["_timestamp_from"] == "receivedAt - (sentAt - originalTimestamp)"
    assert rows["skew"]["originalTimestamp"] == "2026-03-10T12:00:00.000Z"
    assert (rows["orig"]["timestamp"], rows["orig"]["_timestamp_from"]) == (
        "2026-03-10T09:30:00.000Z", "originalTimestamp")
    assert (rows["recv"]["timestamp"], rows["recv"]["_timestamp_from"]) == (
        "2026-03-10T08:00:00.250Z", "receivedAt")
    # a line with its own timestamp keeps it as sent
    assert rows["kept"]["timestamp"] == kept["timestamp"]
    assert rows["kept"]["_timestamp_from"] is None


def test_a_changed_file_is_loaded_again_and_its_events_count_as_duplicates(settings):
    write_web_part(settings.landing, D1, 0, [event("m1", D1), event("m2", D1)])
    (first,) = load_web(settings, D1)
    write_web_part(settings.landing, D1, 0, [event("m1", D1), event("m2", D1), event("m3", D1)])

    (second,) = load_web(settings, D1)

    assert (second.read, second.landed, second.duplicates_in_raw) == (3, 3, 2)
    versions = [r for r in read_raw(settings, "web", "files")
                if r["source_file"] == "web/events/date=2026-03-10/part-0000.jsonl.gz"]
    assert sorted(v["supersedes_batch_id"] or "" for v in versions) == ["", first.batch_id]


def test_counts_reconcile_with_what_was_written(settings):
    write_web_part(settings.landing, D1, 0, [event("a", D1), "not json", event("b", D1)])
    write_corrupt_web_part(settings.landing, D1, 1)
    write_web_part(settings.landing, D2, 0, [event("c", D2), event("c", D2)])
    load_web(settings, D1)
    load_web(settings, D2)

    audit = [r for r in read_reconciliation(settings) if r["source"] == "web"]
    assert all(r["read"] == r["landed"] + r["quarantined"] for r in audit)
    assert sum(r["landed"] for r in audit) == len(read_raw(settings, "web", "events")) == 4
    assert sum(r["quarantined"] for r in audit) == len(
        read_quarantine(settings, "web", "events")) == 2
    assert sum(r["duplicates_in_raw"] for r in audit) == 1


def test_a_crash_before_the_state_commit_counts_nothing_twice(settings, monkeypatch):
    write_web_part(settings.landing, D1, 0, [event("a", D1), event("b", D1)])
    real_commit = StateStore.commit_files

    def crash(self, *args, **kwargs):
        raise KeyboardInterrupt("killed after the batch files were written")

    monkeypatch.setattr(StateStore, "commit_files", crash)
    with pytest.raises(KeyboardInterrupt):
        load_web(settings, D1)
    assert len(batch_files(settings, "web", "events")) == 1  # written, never committed

    monkeypatch.setattr(StateStore, "commit_files", real_commit)
    (rec,) = load_web(settings, D1)

    assert rec.landed == 2
    assert _ids(read_raw(settings, "web", "events")) == ["a", "b"]
    assert len(batch_files(settings, "web", "events")) == 1
    assert [r["batch_id"] for r in read_reconciliation(settings)] == [rec.batch_id]


def test_line_numbers_stay_exact_across_the_files_of_a_batch(settings):
    """Files of one batch are read together; one of them only Python can decode."""
    write_web_part(settings.landing, D1, 0, [event("a1", D1), "", "", event("a4", D1)])
    bad_utf8 = web_part_path(settings.landing, D1, 1)
    bad_utf8.write_bytes(gzip.compress(
        (json.dumps(event("b1", D1)) + "\n").encode() + b'{"messageId": "\xff"}\n'
        + (json.dumps(event("b3", D1)) + "\n").encode()))
    write_web_part(settings.landing, D1, 2, [event("c1", D1), event("c2", D1), event("c3", D1),
                                             "{oops", event("c5", D1)])

    (rec,) = load_web(settings, D1)

    lines = {r["messageId"]: (r["_source_file"][-18:], r["_source_line"])
             for r in read_raw(settings, "web", "events")}
    assert lines == {"a1": ("part-0000.jsonl.gz", 1), "a4": ("part-0000.jsonl.gz", 4),
                     "b1": ("part-0001.jsonl.gz", 1), "b3": ("part-0001.jsonl.gz", 3),
                     "c1": ("part-0002.jsonl.gz", 1), "c2": ("part-0002.jsonl.gz", 2),
                     "c3": ("part-0002.jsonl.gz", 3), "c5": ("part-0002.jsonl.gz", 5)}
    bad = {(q["source_file"][-18:], q["source_line"]): q["reason"]
           for q in read_quarantine(settings, "web", "events")}
    assert bad == {("part-0001.jsonl.gz", 2): "line is not valid UTF-8",
                   ("part-0002.jsonl.gz", 4): "line is not valid JSON"}
    assert (rec.read, rec.landed, rec.quarantined) == (10, 8, 2)
