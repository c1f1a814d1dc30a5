"""The gate runner's parts: masking, suite files, chunked validation with GX, the summary line,
and the lazy import of Great Expectations."""

from __future__ import annotations

import datetime as dt
import pickle
import subprocess
import sys
import textwrap

import duckdb
import pytest

from customer360.ingest.crm_properties import DEFAULT_PROPERTY_MAP
from customer360.quality.crm_map import apply_property_map
from customer360.quality.gx_validation import FrameSample, expectation_class, validate_source
from customer360.core.masking import mask_personal, mask_text
from customer360.quality.results import ExpectationResult, GateFailed, GateResult, SuiteResult
from customer360.quality.suites import (STAGES, ExpectationSpec, SuiteError, expectations_dir,
                                        load_suite, load_suites)
from customer360.quality.targets import QuerySource


@pytest.mark.parametrize("text, masked", [
    ("ann@mail.com", "a***@m***.com"),
    (" Ann@Mail.com ", " A***@M***.com "),
    ("+8613800138000", "+86*******8000"),
    ("+86 138-0013-8000", "+86*******8000"),
    ("call 13800138000 today", "call 13*****8000 today"),
    ("web/events/date=2026-03-01/part-0001.jsonl.gz", "web/events/date=2026-03-01/part-0001.jsonl.gz"),
    ("2026-03-01T09:12:44.120Z", "2026-03-01T09:12:44.120Z"),
    ("pos-transactions-20260301T091244-12345678", "pos-transactions-20260301T091244-12345678"),
    ("total 1234567.50", "total 1234567.50"),
])
def test_mask_text(text, masked):
    assert mask_text(text) == masked


def test_personal_columns_show_only_their_shape():
    assert mask_personal("Ann") == "A***"
    assert mask_personal("ann@mail.com") == "a***@m***.com"
    assert mask_personal(None) is None


def test_every_suite_in_the_repository_loads_and_builds_gx_expectations():
    for stage in STAGES:
        suites = load_suites(stage)
        assert suites, f"no suites for {stage}"
        for suite in suites:
            assert suite.name.startswith(f"{stage}.")
            # CRM raw suites name the portal's values through the property map (raw_gate applies it)
            suite = apply_property_map(suite, DEFAULT_PROPERTY_MAP)
            for spec in suite.expectations:
                cls = expectation_class(spec)
                cls(**spec.kwargs)  # raises on a misspelled argument


def test_suite_files_are_checked(tmp_path):
    bad = tmp_path / "raw" / "x.yml"
    bad.parent.mkdir()
    bad.write_text(textwrap.dedent("""
        suite: raw.x
        target: {source: web, entity: events}
        expectations:
          - {type: expect_column_values_to_not_be_null, kwargs: {column: a}, severity: fatal}
    """))
    with pytest.raises(SuiteError, match=r"x.yml: expectation #1: severity must be one of"):
        load_suite(bad)
    bad.write_text("suite: raw.x\ntarget: {source: web, entity: events}\ncolumns: {a: text}\n")
    with pytest.raises(SuiteError, match="type family 'text'"):
        load_suite(bad)
    bad.write_text("suite: raw.x\ntarget: {entity: events}\n")
    with pytest.raises(SuiteError, match="needs both source and entity"):
        load_suite(bad)
    (tmp_path / "raw" / "y.yml").write_text("suite: raw.x\ntarget: {metric: raw_volume}\n")
    bad.write_text("suite: raw.x\ntarget: {metric: reconciliation}\n")
    with pytest.raises(SuiteError, match="is used by both"):
        load_suites("raw", tmp_path)


def test_an_unknown_expectation_type_is_named():
    spec = ExpectationSpec("expect_column_values_to_be_purple", {"column": "a"})
    with pytest.raises(SuiteError, match="expect_column_values_to_be_purple is not an expectation"):
        expectation_class(spec)


def test_default_suites_live_at_the_top_of_the_repository():
    assert expectations_dir().name == "expectations"
    assert (expectations_dir() / "raw" / "web_events.yml").exists()


def test_chunked_validation_adds_up_and_sees_duplicates_across_chunks():
    con = duckdb.connect()
    # 1000 rows in chunks of 128; bad values every 100th row; one key repeated far apart
    con.execute("""CREATE TABLE t AS SELECT i, CASE WHEN i % 100 = 0 THEN 'bad' ELSE 'ok' END AS v,
                   CASE WHEN i = 999 THEN 5 ELSE i END AS k, 'ann' || i || '@mail.com' AS email
                   FROM range(1000) r(i)""")
    source = QuerySource(con, "SELECT * FROM t", chunk_rows=128)
    specs = [ExpectationSpec("expect_column_values_to_be_in_set", {"column": "v", "value_set": ["ok"]}),
             ExpectationSpec("expect_column_values_to_be_unique", {"column": "k"}),
             ExpectationSpec("expect_column_values_to_be_in_set", {"column": "v", "value_set": ["ok"],
                                                                   "mostly": 0.95}),
             ExpectationSpec("expect_column_values_to_not_be_null", {"column": "missing"})]
    enum, unique, mostly, missing = validate_source(
        specs, source, "t", FrameSample(key_columns=("i", "email"), pii_columns=("email",)),
        collect_rows=lambda spec: spec is specs[0])

    assert (enum.success, enum.element_count, enum.unexpected_count) == (False, 1000, 10)
    assert len(enum.sample) == 5 and enum.sample[0] == "v='bad' (i=0, email='a***@m***.com')"
    assert sorted(sum((f["i"].tolist() for f in enum.failing_rows), [])) == list(range(0, 1000, 100))
    assert (unique.success, unique.unexpected_count) == (False, 2)
    assert mostly.success is True  # 1% unexpected is within mostly=0.95
    assert missing.success is False and missing.exception == "column missing not found"


def test_the_summary_line():
    result = GateResult(stage="raw", logical_date=dt.date(2026, 3, 10), run_id="r",
                        rows_quarantined=31, seconds=1.84)
    result.suites = [SuiteResult(f"raw.s{i}", "t") for i in range(14)]
    outcomes = ["pass"] * 210 + ["warn", "warn"]
    result.suites[0].results = [ExpectationResult("raw.s0", "expect_x", "expect_x()", None, {}, "warn",
                                                  "row", o, o == "pass", "") for o in outcomes]
    assert result.summary_line() == ("gate raw: 14 suites, 212 expectations, 0 errors, 2 warnings, "
                                     "31 rows quarantined (1.8 s)")
    assert result.ok


def test_gate_failed_survives_a_trip_between_processes():
    result = GateResult(stage="marts", logical_date=dt.date(2026, 3, 10), run_id="r")
    result.suites = [SuiteResult("marts.x", "t", [ExpectationResult(
        "marts.x", "expect_x", "expect_x()", None, {}, "error", "batch", "fail", False, "1 of 2 rows")])]
    failed = pickle.loads(pickle.dumps(GateFailed(result)))
    assert isinstance(failed, RuntimeError) and str(failed) == str(GateFailed(result))
    assert failed.result.errors[0].suite == "marts.x"


def test_importing_the_gates_does_not_import_great_expectations():
    code = "import sys, customer360.quality.gates; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
