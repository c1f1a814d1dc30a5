"""The raw gate judges how much of each batch the loaders quarantined: real store files through
the real POS loader, then the raw gate. A few bad records warn; most of a file quarantined
fails the gate with the file and its commonest reasons named, and publish does not run."""

from __future__ import annotations

import datetime as dt

import pytest

from customer360.core import audit
from customer360.core.settings import get_settings
from customer360.ingest.pos import load_pos
from customer360.ingest.web import load_web
from customer360.quality.gates import GateFailed, run_gate
from tests.landing_fixtures import (event, pos_row, write_corrupt_web_part, write_pos_file,
                                    write_reference, write_web_part)
from tests.test_gates_raw import _fingerprint, _gate_then_publish, _published_before
from tests.test_gates_helpers import settings  # noqa: F401  (a fixture)

DAY = dt.date(2026, 3, 10)  # the day test_gates_raw's helpers publish
FILE = f"pos/date={DAY.isoformat()}/store_LN01.csv"


def _store_day(settings, good: int, bad: int, bad_value: str = "two") -> None:
    """One store's day: ``good`` + ``bad`` single-line transactions, the bad ones with a
    quantity that is not a number."""
    rows = [pos_row("LN01", DAY, f"G{i}", currency="GBP") for i in range(good)]
    rows += [pos_row("LN01", DAY, f"B{i}", currency="GBP", quantity=bad_value) for i in range(bad)]
    write_reference(settings.landing)
    write_pos_file(settings.landing, DAY, "LN01", rows)
    load_pos(settings, DAY)


def _loader_results(result):
    return [r for r in result.results if r.suite == "raw.loader_quarantine"]


def test_most_of_a_file_quarantined_fails_the_gate_naming_file_and_reasons(settings):
    before = _published_before(settings)
    _store_day(settings, good=24, bad=76)

    with pytest.raises(GateFailed) as failed:
        _gate_then_publish(settings, "bad-day")

    message = str(failed.value)
    assert "suite raw.loader_quarantine" in message
    assert "expect_column_values_to_be_between(column=error_headroom" in message
    assert f"{FILE}: 76 of 100 (76%)" in message
    assert "quantity is not a number" in message and "(76)" in message
    assert "quarantine_share=0.76" in message and "error_share=0.25" in message
    assert _fingerprint(settings) == before  # the last good publication stays
    assert list(audit.read(settings, "gate_runs")["ok"]) == [False]
    # a rerun of the same date judges the same batch again: still failing
    with pytest.raises(GateFailed):
        run_gate(settings, "raw", DAY, run_id="rerun")


def test_a_few_bad_records_warn_and_the_run_goes_on(settings):
    _store_day(settings, good=95, bad=5)

    result = run_gate(settings, "raw", DAY, run_id="few")

    assert result.ok
    by_column = {r.column: r for r in _loader_results(result)}
    assert by_column["error_headroom"].outcome == "pass"
    warning = by_column["warning_headroom"]
    assert warning.outcome == "warn"
    assert f"{FILE}: 5 of 100 (5%)" in " ".join(warning.sample)


def test_a_clean_batch_passes_every_threshold(settings):
    _store_day(settings, good=40, bad=0)

    result = run_gate(settings, "raw", DAY, run_id="clean")

    assert result.ok
    outcomes = {r.column: r.outcome for r in _loader_results(result)}
    assert outcomes == {"error_headroom": "pass", "warning_headroom": "pass",
                        "files_quarantined_whole": "pass"}


def test_the_operator_can_raise_the_error_share_for_one_run(settings, monkeypatch):
    _store_day(settings, good=24, bad=76)
    monkeypatch.setenv("C360_QUARANTINE_ERROR_SHARE", "0.8")
    overridden = get_settings()

    result = run_gate(overridden, "raw", DAY, run_id="accepted")

    assert result.ok
    warning = next(r for r in _loader_results(result) if r.column == "warning_headroom")
    assert warning.outcome == "warn" and "error_share=0.8" in " ".join(warning.sample)


def test_a_batch_too_small_to_judge_only_warns(settings):
    _store_day(settings, good=2, bad=3)  # 60% of 5 records: below min_rows

    result = run_gate(settings, "raw", DAY, run_id="small")

    assert result.ok
    outcomes = {r.column: r.outcome for r in _loader_results(result)}
    assert outcomes["warning_headroom"] == "warn" and outcomes["error_headroom"] == "pass"


def test_reasons_never_repeat_what_a_record_held(settings):
    _store_day(settings, good=10, bad=90, bad_value="ann.lee@example.com")

    with pytest.raises(GateFailed) as failed:
        run_gate(settings, "raw", DAY, run_id="pii")

    message = str(failed.value)
    assert "quantity is not a number" in message
    assert "ann.lee@example.com" not in message and "ann.lee" not in message
    recorded = audit.read(settings, "gate_results", "run_id = ?", ["pii"])
    assert not recorded["sample"].astype(str).str.contains("ann.lee").any()


def test_a_file_quarantined_whole_is_reported_by_name(settings):
    events = [event(f"m{i}", DAY) for i in range(60)]
    write_web_part(settings.landing, DAY, 0, events)
    corrupt = write_corrupt_web_part(settings.landing, DAY, 1)
    load_web(settings, DAY)

    result = run_gate(settings, "raw", DAY, run_id="whole")

    assert result.ok  # one unreadable file of 61 records read: a warning, not a broken source
    whole = next(r for r in _loader_results(result) if r.column == "files_quarantined_whole")
    assert whole.outcome == "warn"
    shown = " ".join(whole.sample)
    assert f"web/events/date={DAY.isoformat()}/{corrupt.name}: quarantined whole" in shown


def test_reasons_keep_their_words_and_lose_only_what_varies(settings):
    """A store file in another encoding than its store declares: the reason names both
    encodings, while transaction ids, line numbers and quoted values are blanked."""
    write_reference(settings.landing)
    write_pos_file(settings.landing, DAY, "LN01",
                   [pos_row("LN01", DAY, f"G{i}", currency="GBP", payment_method="现金")
                    for i in range(30)], encoding="gb18030")  # LN01 declares UTF-8
    write_pos_file(settings.landing, DAY, "SH01",
                   [pos_row("SH01", DAY, "T-77", line_no=1),
                    pos_row("SH01", DAY, "T-77", line_no=2, quantity="2x")], encoding="gb18030")
    load_pos(settings, DAY)

    with pytest.raises(GateFailed) as failed:  # 32 of 32 records quarantined
        run_gate(settings, "raw", DAY, run_id="kinds")

    message = str(failed.value)
    assert f"{FILE}: quarantined whole (file quarantined whole: declared UTF-8 but the bytes " \
           "decode as GB18030)" in message
    assert "transaction … quarantined whole: line …: quantity is not a number: … (1)" in message
    assert "T-77" not in message and "2x" not in message
