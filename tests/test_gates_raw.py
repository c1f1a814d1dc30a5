"""The raw gate on hand-made raw batches: clean data passes, row-level defects quarantine and
the run goes on, batch-level defects stop it with a message naming suite, expectation, rows
and a masked sample, and nothing downstream (publish) runs."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import duckdb
import pytest

from customer360.core import audit
from customer360.serve.publish import publish
from customer360.quality.gates import GateFailed, run_gate
from tests.test_gates_helpers import (build_warehouse, land_crm, land_history, land_pos, land_web,
                                record, settings)  # noqa: F401  (settings is a fixture)

DAY = dt.date(2026, 3, 10)  # a Tuesday


def _today(settings, *, web=120, pos=60, crm=30, defects=None):
    """Today's batches (with reconciliation lines); ``defects`` plants bad rows per source."""
    defects, batches = defects or {}, {}
    for source, entity, n, fn in (("web", "events", web, land_web), ("pos", "transactions", pos, land_pos),
                                  ("crm", "contacts", crm, land_crm)):
        if n:
            batches[source] = fn(settings, DAY, n, **defects.get(source, {}))
            record(settings, source, entity, batches[source], DAY, n, n)
    return batches


def _fingerprint(settings) -> str:
    pub = settings.published_dir
    return hashlib.sha256((pub / "c360.duckdb").read_bytes() + (pub / "publication.json").read_bytes()).hexdigest()


def _published_before(settings):
    """A publication from an earlier good run, which a stopped gate must leave as it is."""
    build_warehouse(settings.warehouse_path)
    publish(settings, DAY - dt.timedelta(days=1))
    return _fingerprint(settings)


def _gate_then_publish(settings, run_id):
    """What the DAG does: the gate, then publish only if the gate passed."""
    run_gate(settings, "raw", DAY, run_id=run_id)
    publish(settings, DAY)


def test_clean_batches_pass_and_are_gated_once(settings):
    land_history(settings, DAY)
    _today(settings)
    result = run_gate(settings, "raw", DAY, run_id="clean")

    assert result.ok and result.rows_quarantined == 0
    assert result.summary_line().startswith(
        f"gate raw: 12 suites, {result.expectations} expectations, 0 errors, 0 warnings, 0 rows quarantined (")
    recorded = audit.read(settings, "gate_results", "run_id = ?", ["clean"])
    assert len(recorded) == result.expectations and recorded["success"].all()
    gated = audit.read(settings, "gated_batches")
    assert len(gated) == 3 * 2 + 3  # three days of web and POS history, and today's three batches
    assert (settings.artifacts / "data_docs" / "raw" / DAY.isoformat() / "clean.html").exists()

    again = run_gate(settings, "raw", DAY, run_id="rerun")
    web = next(s for s in again.suites if s.suite == "raw.web_events")
    assert web.results == [] and again.ok  # nothing validated twice; volume still checked
    assert any(s.suite == "raw.volume" and s.results for s in again.suites)
    assert audit.verify_chain(settings) == []


def test_bad_rows_are_quarantined_and_excluded_and_the_run_goes_on(settings):
    land_history(settings, DAY)
    batches = _today(settings, defects={"web": {"bad_type": 3}, "crm": {"bad_time": 1, "bad_stage": 2}})
    result = run_gate(settings, "raw", DAY, run_id="q")

    assert result.ok and result.rows_quarantined == 4
    # a lifecycle stage outside the CRM property map is reported with its value, the rows kept
    stage = next(r for r in result.results if r.suite == "raw.crm_contacts" and r.column == "lifecycle_stage")
    assert stage.outcome == "warn" and stage.unexpected_count == 2
    assert "unknown-stage" in " ".join(map(str, [stage.observed_value, *stage.sample]))
    assert "marketingqualifiedlead" in stage.label
    crm_rejects = duckdb.sql(
        f"SELECT * FROM read_parquet('{settings.quarantine}/_gate_rejects/{batches['crm']}.parquet')").df()
    assert list(crm_rejects["_source_line"]) == [0]
    assert crm_rejects["reason"].str.contains("createdAt").all()
    enum = next(r for r in result.results if r.suite == "raw.web_events" and r.column == "type")
    assert enum.outcome == "quarantine" and enum.unexpected_count == 3
    rejects = duckdb.sql(
        f"SELECT * FROM read_parquet('{settings.quarantine}/_gate_rejects/{batches['web']}.parquet')").df()
    assert sorted(rejects["_source_line"]) == [1, 2, 3]
    assert set(rejects["_batch_id"]) == {batches["web"]}
    assert rejects["reason"].str.contains("expect_column_values_to_be_in_set").all()
    quarantined = duckdb.sql(
        f"SELECT * FROM read_parquet('{settings.quarantine}/web/events/*/gate-{batches['web']}.parquet', "
        "hive_partitioning = false)").df()
    assert len(quarantined) == 3
    assert json.loads(quarantined["raw_text"][0])["type"] == "PAGE!"
    # the schema file keeps staging's glob valid even before anything is rejected
    assert (settings.quarantine / "_gate_rejects" / "_schema.parquet").exists()


def test_a_broken_enum_across_a_batch_stops_the_gate_and_publish_does_not_run(settings):
    before = _published_before(settings)
    land_history(settings, DAY)
    batches = _today(settings, defects={"pos": {"bad_type": 60}})

    with pytest.raises(GateFailed) as failed:
        _gate_then_publish(settings, "enum")

    message = str(failed.value)
    assert "suite raw.pos_transactions" in message
    assert "expect_column_values_to_be_in_set(column=txn_type_normalized" in message
    assert "60 of 60 rows fail" in message and "more than the 5% that may be quarantined" in message
    assert "txn_type_normalized='SALEX'" in message
    assert "Ann@Mail.com" not in message and "+86 138-0013-8000" not in message
    assert _fingerprint(settings) == before
    assert failed.value.result.errors[0].outcome == "fail"
    # the broken batch is not watermarked, so the next gate run looks at it again; the
    # good batches of the same run are
    gated = set(audit.read(settings, "gated_batches")["batch_id"])
    assert batches["pos"] not in gated and batches["web"] in gated
    assert list(audit.read(settings, "gate_runs")["ok"]) == [False]


def test_every_segment_call_shape_passes_and_incomplete_calls_are_quarantined(settings):
    land_history(settings, DAY)
    batches = _today(settings, defects={"web": {
        "shapes": ("server_side", "alias", "group", "screen"),
        "broken": ("no_ids", "alias_without_previous_id", "group_without_group_id")}})
    result = run_gate(settings, "raw", DAY, run_id="shapes")

    assert result.ok and result.rows_quarantined == 3
    failed = {r.column: r.unexpected_count for r in result.results
              if r.suite == "raw.web_events" and r.outcome == "quarantine"}
    assert failed == {"has_anonymous_or_user_id": 1, "alias_is_complete": 1,
                      "group_has_group_id": 1}
    rejects = duckdb.sql(
        f"SELECT * FROM read_parquet('{settings.quarantine}/_gate_rejects/{batches['web']}.parquet')").df()
    # planted from the last row back, skipping orders (line 114): shapes on lines 120-117,
    # the broken calls on 116, 115 and 113
    assert sorted(rejects["_source_line"]) == [113, 115, 116]


def test_a_missing_column_stops_the_gate(settings):
    land_history(settings, DAY)
    _today(settings, web=0)
    bad = land_web(settings, DAY, 120, drop=("event",))
    record(settings, "web", "events", bad, DAY, 120, 120)

    with pytest.raises(GateFailed) as failed:
        run_gate(settings, "raw", DAY, run_id="schema")

    message = str(failed.value)
    assert "suite raw.web_events, expectation expect_column_distinct_values_to_contain_set(column=column_name" in message
    assert "missing column: event" in message and bad in message
    # the data expectations ran on the history batches only, and say so
    data = [r for r in failed.value.result.results
            if r.suite == "raw.web_events" and r.expectation == "expect_column_values_to_be_in_set"]
    assert data and all("not evaluated on 1 batch(es) whose contract failed" in r.note for r in data)
    assert bad not in set(audit.read(settings, "gated_batches")["batch_id"])


def test_a_batch_with_five_percent_of_the_usual_rows_stops_the_gate(settings):
    land_history(settings, DAY, pos=200)
    _today(settings, pos=10)

    with pytest.raises(GateFailed) as failed:
        run_gate(settings, "raw", DAY, run_id="volume")

    message = str(failed.value)
    assert "suite raw.volume" in message
    assert "expect_column_values_to_be_between(column=pos_transactions_ratio, min_value=0.25" in message
    assert "pos_transactions_ratio=0.05" in message and "pos_transactions_baseline=200" in message
    assert [e.suite for e in failed.value.result.errors] == ["raw.volume"]


def test_reconciliation_lines_are_loaded_and_an_imbalance_stops_the_gate(settings):
    land_history(settings, DAY)
    _today(settings)
    # an extractor that lost rows: read 120, landed 110, quarantined 0 (written by hand, as
    # raw_zone.record_reconciliation refuses to write an unbalanced line)
    with open(settings.audit_dir / "reconciliation.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"source": "web", "entity": "events", "batch_id": "web-events-lost",
                             "load_date": DAY.isoformat(), "source_file": None, "read": 120,
                             "landed": 110, "quarantined": 0}) + "\n")

    with pytest.raises(GateFailed) as failed:
        run_gate(settings, "raw", DAY, run_id="recon")

    assert "suite raw.reconciliation" in str(failed.value)
    assert "imbalance=10" in str(failed.value)
    loaded = audit.read(settings, "reconciliation")
    assert len(loaded) == 3 * 2 + 3 + 1
    assert (loaded["read"] == loaded["landed"] + loaded["quarantined"]).sum() == 3 * 2 + 3


def test_a_warn_level_defect_lets_the_run_finish_and_is_recorded(settings):
    land_history(settings, DAY)
    _today(settings, defects={"web": {"late": 4}})  # four events five days late: beyond the contract
    result = run_gate(settings, "raw", DAY, run_id="late")

    assert result.ok and result.rows_quarantined == 0
    late = [w for w in result.warnings if w.column == "hours_before_folder_day_end"]
    assert len(late) == 1 and late[0].unexpected_count == 4
    assert "1 warnings" in result.summary_line()
    stored = audit.read(settings, "gate_results", "run_id = ? AND outcome = 'warn'", ["late"])
    assert list(stored["column_name"]) == ["hours_before_folder_day_end"]
    assert stored["success"].tolist() == [False]


def test_amounts_as_tills_print_them_pass_the_raw_gate(settings):
    """The gate reads "¥1,299.00" by the loader's rule (c360_pos_amount), not as a plain
    decimal, so what the loader accepted is not quarantined again here."""
    land_history(settings, DAY)
    _today(settings, defects={"pos": {"price": "¥1,299.00", "amount": "1,299.00"}})

    result = run_gate(settings, "raw", DAY, run_id="amounts")

    pos = next(s for s in result.suites if s.suite == "raw.pos_transactions")
    assert result.ok and result.rows_quarantined == 0
    parsed = [r for r in pos.results if r.column in ("unit_price_parsed", "line_amount_parsed")]
    assert len(parsed) == 2 and all(r.outcome == "pass" and r.unexpected_count == 0
                                    for r in parsed), parsed
