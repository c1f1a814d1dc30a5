"""Fault injection (issue 10.1): the real pipeline on simulated data, one invariant after each fault.

Invariant: every source record is accounted for (landed, counted as a duplicate, or
quarantined with a reason), counted independently of the extractors from the landing files
and the simulator's CRM store; and after recovery the published tables equal those of a clean
run (table checksums).

Few full DAG runs (each ~40-60 s): one *reference* run and one *chaos* run, both over the same
landing, which already holds every bad file (corrupt gzip, truncated gzip and CSV, a file in
the wrong encoding, unknown extra columns, empty files, a file delivered twice). The bad files
change the data, so the "clean run" they are compared with is the reference run over those same
files without infrastructure faults. In the chaos home, before its DAG run, the extract tasks
are hit at task level (disk full, bad token, SIGKILL mid-extract, days out of order); the DAG
run then meets a CRM with a scripted 429 storm, 5xx burst and cut pages, and must recover to the
reference checksums. After it, dbt, ML and publish are SIGKILLed and rerun, a day is rerun, two
runs start at once, and a corrected POS file arrives. A table (fault, recovered, records lost)
is printed at the end.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import errno
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest

from tests.chaos_faults import FAULTS
from tests.e2e import START, published_checksums

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

PEOPLE, DAYS = 150, 14
LAST = START + dt.timedelta(days=DAYS - 1)
BAD_DAY = START + dt.timedelta(days=4)  # bad files sit in an older folder: the last day's volume gate stays meaningful
TOKEN = "chaos-crm-token-0123456789abcdef"
CRM_OBJECTS = ("contacts", "tickets", "feedback_submissions")
RECORD_ENTITIES = {"crm": CRM_OBJECTS, "web": ("events",), "pos": ("transactions",)}
LANDING_SOURCES = ("web", "pos")
ROWS: list[tuple[str, bool, int, str]] = []  # fault, recovered, records lost, note
# Wall-clock columns: when a row was scored, published or landed (a retried batch lands later).
WALL_CLOCK = ("scored_at", "published_at", "_loaded_at")


def checksums(settings) -> dict[str, str]:
    return published_checksums(settings, exclude_columns=WALL_CLOCK)


# ----------------------------------------------------------------------------- independent counts

def _decompressed(part: Path, cap: int) -> bytes | None:
    """A part file's text, or None if it is unreadable or holds more than ``cap`` bytes (the
    contract's size cap: such a file is one record, quarantined whole). Read as a stream, so
    a gzip bomb costs this count one chunk of memory, not its decompressed size."""
    chunks, n = [], 0
    try:
        with gzip.open(part, "rb") as fh:
            while chunk := fh.read(1 << 20):
                n += len(chunk)
                if n > cap:
                    return None
                chunks.append(chunk)
    except (OSError, EOFError, zlib.error):
        return None
    return b"".join(chunks)


def _web_expected(landing: Path, through: dt.date, cap: int) -> int:
    """Records in the web landing: non-blank lines of readable part files, 1 for an unreadable
    file or one past the size cap (an over-long line is still one line: one record)."""
    total = 0
    for part in sorted((landing / "web" / "events").glob("date=*/part-*.jsonl.gz")):
        if dt.date.fromisoformat(part.parent.name.removeprefix("date=")) > through:
            continue
        text = _decompressed(part, cap)
        if text is None:
            total += 1
            continue
        total += sum(1 for line in text.split(b"\n") if line.strip())
    return total


def _pos_expected(landing: Path, through: dt.date) -> int:
    """Records in the POS landing: non-empty data lines after the header (an empty file has none)."""
    total = 0
    for f in sorted((landing / "pos").glob("date=*/store_*.csv")):
        if dt.date.fromisoformat(f.parent.name.removeprefix("date=")) > through:
            continue
        data = f.read_bytes()
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # a till's "Unicode text"
            data = data.decode("utf-16").encode("utf-8")
        total += sum(1 for ln in data.splitlines()[1:] if ln.strip())
    return total


def _crm_expected(sim_dir: Path, through: dt.date, tolerance: float) -> int:
    """CRM records the API serves before the end of ``through``: the latest version of each id;
    and one dated past this host's clock and its tolerance, landed at once, flagged (contract)."""
    bound = dt.datetime.combine(through + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=tolerance)
    total = 0
    for obj in CRM_OBJECTS:
        latest: dict[str, str] = {}
        with gzip.open(sim_dir / "crm" / f"{obj}.jsonl.gz", "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh):
                rec = json.loads(line)
                key = str(rec.get("id") or f"line{n}")
                if key not in latest or str(rec.get("updatedAt")) >= latest[key]:
                    latest[key] = str(rec.get("updatedAt"))
        for ts in latest.values():
            try:
                when = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
            except ValueError:
                total += 1  # unparseable: served, and the extractor must quarantine it
                continue
            when = when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
            total += when < bound or when > future
    return total


def _superseded_pos_rows(settings) -> int:
    """Records of POS file versions a corrected file replaced: the landing holds only the new
    version, the raw zone keeps both, so the old version's records count on top of the landing's."""
    files = sorted((settings.lake_raw / "pos" / "files").glob("load_date=*/*.parquet"))
    if not files:
        return 0
    con = duckdb.connect()
    try:
        return con.execute(
            "WITH f AS (SELECT * FROM read_parquet(?, union_by_name = true)) "
            "SELECT coalesce(sum(old.rows_read), 0) FROM f AS old WHERE EXISTS (SELECT 1 FROM f "
            "WHERE f.source_file = old.source_file AND f.supersedes_batch_id = old._batch_id)",
            [[str(f) for f in files]]).fetchone()[0]
    finally:
        con.close()


def _parquet_rows(folder: Path) -> int:
    files = sorted(folder.glob("load_date=*/*.parquet"))
    if not files:
        return 0
    con = duckdb.connect()
    try:
        return con.execute("SELECT count(*) FROM read_parquet(?)", [[str(f) for f in files]]).fetchone()[0]
    finally:
        con.close()


def _set_aside_batches(settings) -> set[str]:
    import sqlite3

    from customer360.ingest.state import state_db_path

    path = state_db_path(settings)
    if not path.exists():
        return set()
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if not con.execute("SELECT 1 FROM sqlite_master WHERE name = 'set_aside'").fetchone():
            return set()
        return {b for (b,) in con.execute("SELECT batch_id FROM set_aside")}
    finally:
        con.close()


def _erased_rows(settings, gone: set[str]) -> dict[tuple[str, str], int]:
    """Rows erasures removed from the lake, per (zone, source/entity), batches set aside left out."""
    from customer360.privacy import erasure_log

    frame = erasure_log.erased_rows(settings)
    frame = frame[~frame["batch_id"].isin(gone)]
    return {(z, e): int(n) for (z, e), n in frame.groupby(["zone", "source_entity"])["rows"].sum().items()}


def account(settings, through: dt.date = LAST) -> dict[str, dict]:
    """Per source: expected records, landed, quarantined, duplicates, and records lost."""
    from customer360.ingest.raw_zone import read_reconciliation

    # The log is append-only history: a batch `c360 doctor --repair raw` set aside (its files
    # moved to lake/broken, its records landed again by a later batch) keeps its line there, and
    # only the state store's set_aside table says it is no longer in the lake.
    gone = _set_aside_batches(settings)
    recs = [r for r in read_reconciliation(settings) if r.get("batch_id") not in gone]
    assert all(r["read"] == r["landed"] + r["quarantined"] for r in recs)
    expected = {"web": _web_expected(settings.landing, through, settings.max_decompressed_bytes),
                "pos": _pos_expected(settings.landing, through) + _superseded_pos_rows(settings),
                "crm": _crm_expected(settings.simulation_dir, through,
                                     settings.crm_future_tolerance_seconds)}
    erased = _erased_rows(settings, gone)
    out = {}
    for source, entities in RECORD_ENTITIES.items():
        mine = [r for r in recs if r["source"] == source and r["entity"] in entities]
        landed = sum(r["landed"] for r in mine)
        quarantined = sum(r["quarantined"] for r in mine)
        # The reconciliation must describe what the lake holds: no partial or uncounted batch.
        # An erasure takes its person's rows out of the batch files after they were counted;
        # the audit store's erased_rows says how many, per batch.
        raw_rows = sum(_parquet_rows(settings.lake_raw / source / e) for e in entities)
        q_rows = sum(_parquet_rows(settings.quarantine / source / e) for e in entities)
        erased_raw = sum(erased.get(("raw", f"{source}/{e}"), 0) for e in entities)
        erased_q = sum(erased.get(("quarantine", f"{source}/{e}"), 0) for e in entities)
        assert raw_rows + erased_raw == landed, (source, raw_rows, erased_raw, landed)
        assert q_rows + erased_q == quarantined, (source, q_rows, erased_q, quarantined)
        out[source] = {"expected": expected[source], "landed": landed, "quarantined": quarantined,
                       "duplicates": sum(r.get("duplicates_in_raw", 0) for r in mine),
                       # web and POS are counted from the landing, where an erasure blanks
                       # its lines too; the CRM from its own store, which erasure leaves alone
                       "lost": expected[source] - landed - quarantined
                               + (erased_raw + erased_q if source in LANDING_SOURCES else 0)}
    return out


def lost(acc: dict) -> int:
    return sum(abs(v["lost"]) for v in acc.values())


def raw_digest(settings) -> dict[str, tuple[int, str]]:
    """Per raw entity: row count and an order-independent hash of the source columns."""
    out = {}
    con = duckdb.connect()
    try:
        for folder in sorted(p for p in settings.lake_raw.glob("*/*") if p.is_dir()):
            files = sorted(folder.glob("load_date=*/*.parquet"))
            if files:
                n, h = con.execute("SELECT count(*), sum(hash(_record_hash))::VARCHAR FROM read_parquet(?, "
                                   "union_by_name=true)", [[str(f) for f in files]]).fetchone()
                out[f"{folder.parent.name}/{folder.name}"] = (n, h)
    finally:
        con.close()
    return out


# ----------------------------------------------------------------------------- the bad files

def _rewrite_csv(path: Path, transform) -> None:
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(transform(rows))
    path.write_text(buf.getvalue(), encoding="utf-8")


# The suite plants its own faults and accounts for each; the simulator's till-export shapes
# (whole files quarantined on purpose, non-ASCII amounts) are tested on their own
# (test_pos_loader, test_simulator) and would blur which fault cost what here.
TILL_SHAPES_OFF = ["pos_mismatched_encoding_files=0", "pos_repeated_header_files=0",
                   "pos_formatted_amount_rate=0", "pos_bom_file_rate=0"]


def plant_bad_files(landing: Path) -> dict[str, str]:
    web = landing / "web" / "events" / f"date={BAD_DAY.isoformat()}"
    parts = sorted(web.glob("part-*.jsonl.gz"))
    good = parts[0].read_bytes()
    (web / "part-0901.jsonl.gz").write_bytes(good[:10] + bytes(range(256)) * 4)  # corrupt gzip
    (web / "part-0902.jsonl.gz").write_bytes(b"")  # empty file
    (web / "part-0903.jsonl.gz").write_bytes(good)  # the same file delivered twice
    (web / "part-0904.jsonl.gz").write_bytes(parts[-1].read_bytes()[: len(parts[-1].read_bytes()) // 2])
    pos_day = landing / "pos" / f"date={BAD_DAY.isoformat()}"
    stores = sorted(pos_day.glob("store_*.csv"), key=lambda p: p.stat().st_size, reverse=True)
    utf8 = [s for s in stores if _is_utf8(s)]
    truncated, extra, wrong = utf8[:3]
    empty = next(s for s in reversed(stores) if s not in (truncated, extra, wrong))
    # the day after has files to spare: one of them is saved as UTF-16
    utf16 = sorted((landing / "pos" / f"date={BAD_DAY + dt.timedelta(days=1)}").glob("store_*.csv"))[0]
    data = truncated.read_bytes()
    truncated.write_bytes(data[: int(len(data) * 0.6)])  # cut mid-line
    _rewrite_csv(extra, lambda rows: [rows[0] + ["loyalty_tier"]] + [r + ["gold"] for r in rows[1:]])
    # a UTF-8 store's file saved in GB18030 (Chinese text in it): quarantined whole, named
    _rewrite_csv(wrong, lambda rows: [rows[0]] + [r[:-1] + ["现金"] for r in rows[1:]])
    wrong.write_bytes(wrong.read_text(encoding="utf-8").encode("gb18030"))
    # saved as Excel's "Unicode text" (UTF-16 with its byte-order mark): read as the mark says
    text = utf16.read_bytes()
    utf16.write_bytes((text.decode("utf-8") if _is_utf8(utf16) else text.decode("gb18030")).encode("utf-16"))
    empty.write_bytes(b"")
    return {fault: f"{path.parent.name}/{path.name}" for fault, path in (
        ("truncated csv", truncated), ("extra columns", extra), ("wrong encoding", wrong),
        ("utf-16 with byte-order mark", utf16), ("empty csv", empty))}


def _is_utf8(path: Path) -> bool:
    try:
        path.read_bytes().decode("ascii")
        return True
    except UnicodeDecodeError:
        return False


# ----------------------------------------------------------------------------- homes

@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """One simulation (landing + CRM store), bad files planted; every home is a copy of it."""
    from customer360.demo.simulator import SimulationConfig, deliver, simulate

    home = tmp_path_factory.mktemp("chaos-template")
    cfg = SimulationConfig.from_overrides(people=PEOPLE, days=DAYS, start=START, seed=11,
                                          overrides=TILL_SHAPES_OFF)
    simulate(cfg, landing=home / "landing", sim_dir=home / "simulation", progress=False, deliver_all=False)
    deliver(home / "simulation", home / "landing", through=LAST + dt.timedelta(days=3))
    planted = plant_bad_files(home / "landing")
    return home, planted


def _env(mp: pytest.MonkeyPatch, home: Path) -> None:
    for name in ("C360_LANDING", "C360_PUBLISH_POSTGRES_DSN", "AIRFLOW_CONN_CRM_API", "C360_CRM_BASE_URL"):
        mp.delenv(name, raising=False)
    mp.setenv("C360_HOME", str(home))
    mp.setenv("C360_PII_KEY", "test-pii-key-0123456789abcdef")
    mp.setenv("C360_CRM_TOKEN", TOKEN)
    mp.setenv("C360_DUCKDB_MEMORY_LIMIT", "2GB")
    # Short CRM back-off so a storm costs seconds, not minutes; the behaviour is the same.
    mp.setenv("C360_CRM_BACKOFF_SECONDS", "0.05")
    mp.setenv("C360_CRM_BACKOFF_MAX_SECONDS", "0.5")
    mp.setenv("C360_CRM_MAX_RETRY_AFTER_SECONDS", "1")


def _copy_home(template_home: Path, home: Path) -> None:
    for sub in ("landing", "simulation"):
        shutil.copytree(template_home / sub, home / sub)


@pytest.fixture(scope="module")
def reference(template, tmp_path_factory):
    """The clean run: the DAG over the template landing with a healthy CRM."""
    from customer360.pipeline.airflow import run_dag
    from customer360.demo.crm_server import start_server
    from customer360.core.settings import get_settings

    home = tmp_path_factory.mktemp("chaos-reference")
    _copy_home(template[0], home)
    with pytest.MonkeyPatch.context() as mp:
        _env(mp, home)
        settings = get_settings()
        with start_server(settings.simulation_dir / "crm", token=TOKEN) as server:
            mp.setenv("C360_CRM_BASE_URL", server.base_url)
            result = run_dag(settings, LAST)
            assert result.success, result.log_path.read_text()[-6000:]
        return {"checksums": checksums(settings), "raw": raw_digest(settings),
                "account": account(settings), "settings": settings}


@pytest.fixture(scope="module")
def chaos(template, reference, tmp_path_factory, request):
    """The home every fault hits, with its CRM server; prints the fault table at the end."""
    from customer360.demo.crm_server import start_server
    from customer360.core.settings import get_settings

    home = tmp_path_factory.mktemp("chaos-home")
    _copy_home(template[0], home)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    with pytest.MonkeyPatch.context() as mp:
        _env(mp, home)
        settings = get_settings()
        with start_server(settings.simulation_dir / "crm", token=TOKEN) as server:
            mp.setenv("C360_CRM_BASE_URL", server.base_url)
            yield settings, server
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        # Module teardown runs inside the last test's captured teardown: lift the capture.
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(f"{'fault':<52} {'recovered':<10} {'records lost':>12}  note")
            for fault, ok, n, detail in ROWS:
                reporter.write_line(f"{fault:<52} {'yes' if ok else 'NO':<10} {n:>12}  {detail}")


def note(fault: str, recovered: bool, records_lost: int, detail: str = "") -> None:
    assert fault in FAULTS, f"{fault!r} is not in tests/chaos_faults.py (and docs/chaos.md)"
    ROWS.append((fault, recovered, records_lost, detail))


# ----------------------------------------------------------------------------- subprocess tasks

TASK = """
import datetime as dt, sys
from customer360 import pipeline
kind, day = sys.argv[1], dt.date.fromisoformat(sys.argv[2])
if kind.startswith("extract_"):
    pipeline.extract(kind.removeprefix("extract_"), day)
elif kind == "ml":
    pipeline.machine_learning(day)
elif kind == "publish":
    pipeline.publish(day)
elif kind in pipeline.STAGE_NAMES:  # gates, erasure, compaction, audiences: as the DAG runs them
    from customer360.core.settings import get_settings
    pipeline.stage(kind).run(day, "chaos", get_settings())
else:
    pipeline.build_layer(kind, day)
"""


def run_task(kind: str, day: dt.date = LAST, ok: bool = True) -> subprocess.CompletedProcess:
    """A task in a child process, as Airflow's task runner would; ``ok=False``: it must fail."""
    proc = subprocess.run([sys.executable, "-c", TASK, kind, day.isoformat()], env=dict(os.environ),
                          capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr[-4000:]
    else:
        assert proc.returncode != 0, f"{kind} succeeded under the fault"
    return proc


def kill_task_midway(kind: str, ready, day: dt.date = LAST, timeout: float = 120,
                     then: float = 0.0) -> bool:
    """Start a task in a child process, SIGKILL it ``then`` seconds after ``ready()`` holds;
    True if it died by the kill (False: it finished first)."""
    proc = subprocess.Popen([sys.executable, "-c", TASK, kind, day.isoformat()], env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.02)
    if then:
        try:
            proc.wait(timeout=then)
        except subprocess.TimeoutExpired:
            pass
    proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=30) == -signal.SIGKILL


def _any_file(folder: Path, pattern: str):
    return lambda: folder.exists() and any(folder.rglob(pattern))


# ----------------------------------------------------------------------------- the faults

def test_reference_run_accounts_for_every_bad_file(reference, template):
    acc = reference["account"]
    settings = reference["settings"]
    assert lost(acc) == 0, acc
    assert acc["web"]["duplicates"] > 0  # part-0903 repeats part-0000: counted, not dropped
    q = duckdb.connect().execute(
        "SELECT source_file, reason FROM read_parquet(?, union_by_name=true)",
        [str(settings.quarantine / "*" / "*" / "load_date=*" / "*.parquet")]).fetchall()
    reasons = {f: r for f, r in q}
    for name in ("part-0901.jsonl.gz", "part-0904.jsonl.gz"):
        assert any(f.endswith(name) for f in reasons), f"{name} not quarantined"
    assert all(r for r in reasons.values()), "a quarantined record without a reason"
    planted = template[1]
    # Every planted file is on record, loaded or quarantined; none silently skipped.
    seen = {f for (f,) in duckdb.connect().execute(
        "SELECT source_file FROM read_parquet(?, union_by_name=true)",
        [[str(p) for p in settings.lake_raw.glob("*/files/load_date=*/*.parquet")]]).fetchall()}
    web = [f"date={BAD_DAY.isoformat()}/part-090{i}.jsonl.gz" for i in (1, 2, 3)]
    for name in [*planted.values(), *web]:
        assert any(f.endswith(name) for f in seen), f"{name} not on record"
    for fault in ("corrupt gzip", "truncated gzip", "same file delivered twice", *planted):
        note(fault, True, lost(acc), "reference run (no infrastructure fault)")


def test_disk_full_while_writing_a_batch(chaos, reference, monkeypatch):
    from customer360 import pipeline
    from customer360.ingest import raw_zone as lake

    settings, _ = chaos
    real = lake._copy_atomically

    def full_disk(con, select_sql, dest):
        if dest.parts[-3] == "events":  # the web events batch: fail after a partial write
            tmp = dest.with_name(f".{dest.name}.partial.tmp")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(b"PAR1 half")
            tmp.unlink()
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(con, select_sql, dest)

    monkeypatch.setattr(lake, "_copy_atomically", full_disk)
    with pytest.raises(OSError, match="No space left"):
        pipeline.extract("web", LAST, settings)
    assert not list((settings.lake_raw / "web" / "events").rglob("*.parquet"))
    from customer360.ingest.raw_zone import read_reconciliation
    assert not [r for r in read_reconciliation(settings) if r["source"] == "web" and r["entity"] == "events"]
    monkeypatch.setattr(lake, "_copy_atomically", real)
    pipeline.extract("web", LAST, settings)
    acc = account(settings)
    assert acc["web"]["lost"] == 0, acc
    note("disk full writing a web batch (ENOSPC)", True, acc["web"]["lost"])


def test_bad_crm_token_fails_fast_without_leaking_it(chaos, monkeypatch):
    from customer360.ingest.extract import ExtractError
    from customer360.ingest.crm import extract_crm

    settings, server = chaos
    monkeypatch.setenv("C360_CRM_TOKEN", "wrong-token-zzzzzzzzzzzz")
    started = time.monotonic()
    with pytest.raises(ExtractError) as err:
        extract_crm(settings, LAST)
    assert time.monotonic() - started < 10, "a bad token must not be retried like a 5xx"
    assert "wrong-token-zzzzzzzzzzzz" not in str(err.value) and TOKEN not in str(err.value)
    assert not (settings.lake_raw / "crm").exists() or not list((settings.lake_raw / "crm").rglob("*.parquet"))
    note("CRM bad token", True, 0, "ExtractError, nothing landed; the DAG run below extracts it")


def test_sigkill_mid_crm_extract_then_retry(chaos, monkeypatch):
    settings, server = chaos
    from customer360.demo.crm_server import CrmMockClient

    client = CrmMockClient(server.base_url, TOKEN)
    client.set_faults(delay_seconds=0.15)
    monkeypatch.setenv("C360_CRM_PAGE_SIZE", "10")
    monkeypatch.setenv("C360_CRM_PAGES_PER_BATCH", "2")
    audit = settings.audit_dir / "reconciliation.jsonl"
    before = audit.read_text().count("\"crm\"") if audit.exists() else 0
    killed = kill_task_midway(
        "extract_crm", lambda: audit.exists() and audit.read_text().count("\"crm\"") > before)
    client.set_faults(delay_seconds=0.0)
    assert killed, "the extract finished before it could be killed"
    run_task("extract_crm")
    acc = account(settings)
    assert acc["crm"]["lost"] == 0, acc
    note("SIGKILL mid CRM extract, retried", True, acc["crm"]["lost"], "killed after its first batch")


def test_sigkill_mid_pos_extract_and_days_out_of_order(chaos, reference):
    settings, _ = chaos
    killed = kill_task_midway("extract_pos", _any_file(settings.lake_raw / "pos", "*.parquet"))
    early = LAST - dt.timedelta(days=6)
    run_task("extract_pos", early)  # an older day after a newer one started
    run_task("extract_pos", LAST)
    run_task("extract_pos", early)  # and once more out of order: lands nothing
    acc = account(settings)
    assert acc["pos"]["lost"] == 0, acc
    assert {k: v for k, v in raw_digest(settings).items() if k.startswith("pos/")} == \
        {k: v for k, v in reference["raw"].items() if k.startswith("pos/")}
    note("SIGKILL mid POS extract, retried", True, acc["pos"]["lost"], f"killed: {killed}")
    note("days run out of order (extract)", True, acc["pos"]["lost"], "raw pos equals the reference")


def test_dag_recovers_from_crm_storm_to_reference_checksums(chaos, reference):
    from customer360.pipeline.airflow import run_dag
    from customer360.demo.crm_server import CrmMockClient

    settings, server = chaos
    client = CrmMockClient(server.base_url, TOKEN)
    # Consumed one a request, retries included; the CRM here is 4 pages and the script needs 3
    # successful ones, and no request meets more than max_attempts (8) failures in a row.
    client.set_faults(scripted=["429"] * 5 + ["ok"] + ["cut", "500", "502", "503", "cut", "ok"]
                      + ["cut", "429", "500", "ok"])
    before = client.stats()
    result = run_dag(settings, LAST)
    after = client.stats()
    assert result.success, result.log_path.read_text()[-6000:]
    seen = Counter(after["by_status"]) - Counter(before["by_status"])
    cuts = after["cut"] - before["cut"]
    # The script was really played: the storm, the burst and the cut pages all hit the extract.
    assert seen["429"] >= 6 and seen["500"] + seen["502"] + seen["503"] >= 4 and cuts >= 3, (seen, cuts)
    acc = account(settings)
    assert lost(acc) == 0, acc
    assert raw_digest(settings) == reference["raw"]
    assert checksums(settings) == reference["checksums"]
    note("CRM 429 storm + 5xx burst + cut pages (DAG)", True, lost(acc),
         f"{seen['429']} x 429, {seen['500'] + seen['502'] + seen['503']} x 5xx, {cuts} cut; checksums equal")


def test_sigkill_mid_dbt_layer_then_retry(chaos, reference):
    settings, _ = chaos
    target = settings.warehouse_path
    mtime = target.stat().st_mtime
    killed = kill_task_midway("marts", lambda: target.stat().st_mtime != mtime or
                              any(target.parent.glob("*.wal")))
    run_task("marts")
    note("SIGKILL mid dbt marts layer, retried", True, lost(account(settings)),
         f"killed: {killed}; checksums after publish below")


def test_sigkill_mid_ml_then_retry(chaos, reference):
    settings, _ = chaos
    # The ML task first rebuilds its dbt features, then trains (about a second on this data):
    # kill it as training starts.
    features = settings.dbt_results_path("ml")
    mtime = features.stat().st_mtime if features.exists() else 0
    killed = kill_task_midway("ml", lambda: features.exists() and features.stat().st_mtime != mtime,
                              timeout=90, then=0.2)
    run_task("ml")
    run_task("customer_360")
    note("SIGKILL mid ML, retried", True, lost(account(settings)), f"killed: {killed}; checksums after publish below")


def test_sigkill_mid_publish_then_retry(chaos, reference):
    settings, _ = chaos
    published = settings.published_dir
    seen = {p for p in published.rglob("*")}
    killed = kill_task_midway("publish", lambda: any(p not in seen for p in published.rglob("*")), timeout=60)
    # The old publication is intact whatever instant the kill hit.
    assert checksums(settings) == reference["checksums"]
    run_task("publish")
    assert checksums(settings) == reference["checksums"]
    note("SIGKILL mid publish, retried", True, lost(account(settings)), f"killed: {killed}; checksums equal")


def test_sigkill_mid_web_extract_then_rerun_of_the_day(chaos, reference):
    """Everything of the day extracted already: a killed rerun and a full rerun land nothing twice."""
    settings, _ = chaos
    kill_task_midway("extract_web", lambda: False, timeout=1.5)
    for source in ("web", "pos", "crm"):
        run_task(f"extract_{source}")
    acc = account(settings)
    assert lost(acc) == 0 and raw_digest(settings) == reference["raw"]
    note("a day run twice (its extracts again)", True, lost(acc), "lands nothing; raw equals the reference")


def test_two_runs_at_once_one_is_refused(chaos, reference):
    from customer360.pipeline.airflow import RunLockedError, run_dag

    settings, _ = chaos
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom customer360.pipeline.airflow import run_lock\n"
         "from customer360.core.settings import get_settings\nwith run_lock(get_settings()):\n"
         "    print('held', flush=True)\n    time.sleep(60)\n"],
        env=dict(os.environ), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            run_dag(settings, LAST)
        cli = subprocess.run([str(Path(sys.executable).parent / "c360"), "run", "--date", LAST.isoformat()],
                             env=dict(os.environ), capture_output=True, text=True, timeout=120)
        assert cli.returncode != 0 and "another pipeline run is in progress" in cli.stdout + cli.stderr
    finally:
        holder.kill()
        holder.wait()
    assert checksums(settings) == reference["checksums"]
    note("two runs started at once", True, lost(account(settings)), "second refused with RunLockedError, nothing changed")


# ----------------------------------------------------------------------------- helpers for the faults below

def c360(*args: str, env: dict | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    """The ``c360`` command as an operator runs it (its own process, its real output)."""
    return subprocess.run([str(Path(sys.executable).parent / "c360"), *args], env=env or dict(os.environ),
                          input=stdin, capture_output=True, text=True, timeout=300)


# Ours, plain or in typer's panel; dbt's own log lines (time-stamped) may quote one of theirs.
_TRACEBACK = re.compile(r"^Traceback \(most recent call last\)|─ Traceback \(most recent call last\) ─",
                        re.MULTILINE)


def assert_no_traceback(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert not _TRACEBACK.search(out), out[-3000:]
    return " ".join(out.split())


def crm_client(server):
    from customer360.demo.crm_server import CrmMockClient

    return CrmMockClient(server.base_url, TOKEN)


def _du(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


@contextmanager
def full_disk(folder: Path, free: int = 0):
    """A real ENOSPC: ``folder`` (with what it holds) on a tmpfs of its own that is full but for
    ``free`` bytes. Every process writing there meets the kernel's error, not a mock's."""
    aside = folder.with_name(f".{folder.name}.chaos-aside")
    folder.rename(aside)
    folder.mkdir()
    size = _du(aside) + free + (1 << 20)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        folder.rmdir()
        aside.rename(folder)
        pytest.skip(f"a small tmpfs cannot be mounted here (root with CAP_SYS_ADMIN needed): {mounted.stderr}")
    back = folder.with_name(f".{folder.name}.chaos-back")
    try:
        subprocess.run(["cp", "-a", f"{aside}/.", str(folder)], check=True)
        st = os.statvfs(folder)
        filler = folder / ".chaos-filler"
        with open(filler, "wb") as fh:
            os.posix_fallocate(fh.fileno(), 0, max(st.f_bavail * st.f_frsize - free, 1))
        yield folder
    finally:
        (folder / ".chaos-filler").unlink(missing_ok=True)
        back.mkdir()
        subprocess.run(["cp", "-a", f"{folder}/.", str(back)], check=True)
        subprocess.run(["umount", str(folder)], check=True)
        folder.rmdir()
        back.rename(folder)
        shutil.rmtree(aside)


@contextmanager
def read_only(folder: Path):
    """``folder`` read-only for everyone, root included (a read-only bind mount: chmod does not
    stop root, and the pipeline runs as root in the compose stack's containers too)."""
    steps = [["mount", "--bind", str(folder), str(folder)],
             ["mount", "-o", "remount,bind,ro", str(folder), str(folder)]]
    for i, cmd in enumerate(steps):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            if i:
                subprocess.run(["umount", str(folder)], check=True)
            pytest.skip(f"a read-only bind mount is not permitted here: {done.stderr}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def pipeline_files(settings) -> dict[str, str]:
    """A digest of every file the pipeline owns under the home except logs (what a refused
    command must leave untouched)."""
    out = {}
    for sub in ("lake", "warehouse", "published", "audit"):
        for f in sorted((settings.home / sub).rglob("*")):
            if f.is_file() and not f.is_symlink() and not f.name.endswith((".lock", ".log")):
                out[str(f.relative_to(settings.home))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def audiences_digest(settings) -> dict[str, str]:
    from customer360.privacy.audience import audiences_dir

    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(audiences_dir(settings).glob("*.csv"))}


def republish_equal(settings, reference, *layers_: str) -> None:
    """Rerun the given layers, then publish: the publication equals the reference's."""
    for kind in layers_:
        run_task(kind)
    run_task("publish")
    assert checksums(settings) == reference["checksums"]


# ----------------------------------------------------------------------------- bounded external calls (item 1)

@pytest.mark.parametrize("fault, knobs, expect, first", [
    ("CRM request hangs (timeout)", {"rate_hang": 1.0, "hang_seconds": 20}, "timed out", False),
    # A looping cursor shows on a first extract's listings (an incremental search pages by
    # time, not by cursor): it hits a new home's first extract from the same CRM.
    ("CRM cursor does not advance", {"cursor_loop": True}, "did not advance|never end", True),
    ("CRM pages never end (page cap)", {"endless_pages": True}, "never end|did not advance", False),
    ("CRM 5xx on every request (retry ceiling)", {"rate_5xx": 1.0}, "after 3 attempts", False),
])
def test_crm_misbehaves_the_extract_is_bounded_then_retried(chaos, monkeypatch, tmp_path, fault, knobs,
                                                           expect, first):
    from customer360.core.settings import get_settings
    from customer360.ingest.crm import extract_crm

    settings, server = chaos
    if first:
        (tmp_path / "home").mkdir()
        (tmp_path / "home" / "simulation").symlink_to(settings.simulation_dir)
        monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
        settings = get_settings()
    home = settings.home
    client = crm_client(server)
    monkeypatch.setenv("C360_CRM_TIMEOUT_SECONDS", "0.5")
    monkeypatch.setenv("C360_CRM_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("C360_CRM_MAX_PAGES", "30")
    # one record a page: the incremental extract's listings page, so the paging faults bite
    monkeypatch.setenv("C360_CRM_PAGE_SIZE", "1")
    monkeypatch.setenv("C360_CRM_SEARCH_PAGE_SIZE", "1")
    before = raw_digest(settings)
    client.set_faults(**knobs)
    try:
        with pytest.raises(RuntimeError, match=expect) as err:
            extract_crm(get_settings(), LAST)
    finally:
        client.set_faults()
        monkeypatch.undo()  # the retry below runs with the home's own settings
    assert TOKEN not in str(err.value)
    assert raw_digest(settings) == before  # nothing half-landed
    if first:
        monkeypatch.setenv("C360_HOME", str(home))
    run_task("extract_crm")
    acc = account(settings)
    assert acc["crm"]["lost"] == 0, acc
    note(fault, True, acc["crm"]["lost"], str(err.value).split("\n")[0][:70])


def test_every_dag_task_has_a_timeout_and_the_sources_a_retry_ceiling():
    """What bounds a hang that is not an HTTP call (a stuck lock, a dbt model that never ends)."""
    from customer360 import pipeline

    dag_file = (Path(__file__).resolve().parents[1] / "dags" / "c360_daily.py").read_text()
    assert 'options["execution_timeout"] = stage.timeout' in dag_file and '"retries": 3' in dag_file
    assert all(dt.timedelta(0) < st.timeout <= dt.timedelta(hours=2) for st in pipeline.STAGES)


# ----------------------------------------------------------------------------- torn logs, future dates, secrets

def test_torn_tail_of_the_reconciliation_log(chaos, reference):
    settings, _ = chaos
    path = settings.reconciliation_path
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"source": "web", "entity": "events", "read": 99')  # died mid-append
    try:
        acc = account(settings)  # the whole lines are read, the torn one skipped
        run_task("gate_raw")  # the raw gate reads the log too
        assert lost(acc) == 0, acc
    finally:
        path.write_bytes(whole)
    note("torn tail: reconciliation log", True, lost(acc), "torn line skipped; raw gate passes")


def test_torn_tail_of_the_audit_anchors_log(chaos):
    settings, _ = chaos
    path = settings.audit_anchors_path
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"seq": 9999, "hash": "ab')
    try:
        text = assert_no_traceback(out := c360("audit", "verify"))
        assert out.returncode == 0 and "audit log intact" in text, text
    finally:
        path.write_bytes(whole)
    note("torn tail: audit anchors log", True, 0, "verify skips the torn line, chain intact")


def test_a_future_logical_date_is_refused_and_changes_nothing(chaos):
    from customer360.core.logical_date import latest_allowed

    settings, _ = chaos
    future = (latest_allowed() + dt.timedelta(days=2)).isoformat()
    before = pipeline_files(settings)
    for args in (["run", "--date", future], ["extract", "crm", "--date", future],
                 ["stage", "publish", "--date", future]):
        out = c360(*args)
        text = assert_no_traceback(out)
        assert out.returncode == 2 and "future" in text, text
    assert pipeline_files(settings) == before
    note("future logical date", True, 0, "refused by the CLI and every stage; no file changed")


def test_placeholder_secrets_are_refused_without_printing_them(chaos):
    example = {}
    for line in (Path(__file__).resolve().parents[1] / "deploy" / ".env.example").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            example[k.strip()] = v.strip()
    env = {**os.environ, "C360_PII_KEY": example["C360_PII_KEY"]}
    out = c360("check-config", env=env)
    text = assert_no_traceback(out)
    assert out.returncode == 2 and "C360_PII_KEY" in text and example["C360_PII_KEY"] not in text, text
    note("placeholder secret (deploy/.env.example)", True, 0, "check-config exits 2 naming the variable")


def test_verbose_logs_carry_no_secret_and_no_pii(chaos):
    settings, server = chaos
    emails = set()
    with gzip.open(settings.simulation_dir / "crm" / "contacts.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            email = (json.loads(line).get("properties") or {}).get("email")
            if email:
                emails.add(email.lower())
    client = crm_client(server)
    client.set_faults(scripted=["500", "cut", "429"])  # the error paths log too
    try:
        out = c360("-v", "extract", "crm", "--date", LAST.isoformat())
    finally:
        client.set_faults()
    text = (out.stdout + out.stderr).lower()
    assert out.returncode == 0, text[-3000:]
    assert " debug " in text  # -v really logged at DEBUG
    assert TOKEN.lower() not in text and "test-pii-key" not in text
    assert not [e for e in emails if e in text]
    note("secrets and PII in logs at -v", True, 0, "masked: no token, key or email in DEBUG output")


# ----------------------------------------------------------------------------- landing entries (item 11)

def test_symlink_and_fifo_in_the_landing_are_refused_without_hanging(chaos, reference, tmp_path):
    settings, _ = chaos
    day = settings.landing / "web" / "events" / f"date={LAST.isoformat()}"
    outside = tmp_path / "outside.jsonl.gz"
    shutil.copy(sorted(day.glob("part-*.jsonl.gz"))[0], outside)
    link, fifo = day / "part-0980.jsonl.gz", day / "part-0981.jsonl.gz"
    link.symlink_to(outside)
    os.mkfifo(fifo)  # reading it would block forever
    try:
        out = c360("validate-landing", "--through", LAST.isoformat())
        text = assert_no_traceback(out)
        assert "symbolic link: refused" in text and "FIFO, socket or device" in text, text[-2000:]
        run_task("extract_web")  # returns: the FIFO is never opened
    finally:
        link.unlink()
        fifo.unlink()
    acc = account(settings)
    assert lost(acc) == 0 and raw_digest(settings) == reference["raw"]
    note("symlink in the landing", True, lost(acc), "refused by the landing scan, never read")
    note("FIFO in the landing", True, lost(acc), "refused by the landing scan, never opened")


def test_a_read_only_landing_is_extracted(chaos, reference):
    """The extracts only read the landing: a read-only share (how landing folders are often
    mounted) loses nothing and lands nothing twice."""
    settings, _ = chaos
    with read_only(settings.landing):
        with pytest.raises(OSError, match="Read-only file system"):
            (settings.landing / "probe").write_text("x")
        for source in ("web", "pos"):
            run_task(f"extract_{source}")
    acc = account(settings)
    assert lost(acc) == 0 and raw_digest(settings) == reference["raw"]
    note("read-only landing folder", True, lost(acc), "read-only bind mount; extracts only read it")


# ----------------------------------------------------------------------------- scheduler and CLI at once (item 9)

def test_scheduler_task_queues_behind_a_cli_writer(chaos, reference):
    """A CLI writer holds the home; the scheduler's task (run_stage with wait=True, what the DAG
    file calls) waits and runs after it; a second CLI writer is refused meanwhile."""
    settings, _ = chaos
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom customer360.pipeline.airflow import run_lock\n"
         "from customer360.core.settings import get_settings\nwith run_lock(get_settings()):\n"
         "    print('held', flush=True)\n    sys.stdin.readline()\n    print('released', flush=True)\n"],
        env=dict(os.environ), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    scheduled = None
    try:
        assert holder.stdout.readline().strip() == "held"
        scheduled = subprocess.Popen(
            [sys.executable, "-c", "import datetime as dt\nfrom customer360.pipeline import run_stage\n"
             f"run_stage('publish', dt.date.fromisoformat('{LAST}'), 'scheduler', wait=True)\n"
             "print('published', flush=True)\n"],
            env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for args in (["audience", "--all"], ["erase", "--contact-id", "1", "--no-rebuild"],
                     ["stage", "publish", "--date", LAST.isoformat()]):
            out = c360(*args)
            assert out.returncode == 3 and f"pid {holder.pid}" in assert_no_traceback(out), out.stdout
        assert scheduled.poll() is None, "the scheduled task ran while the CLI writer held the home"
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        stdout, stderr = scheduled.communicate(timeout=300)
        assert scheduled.returncode == 0 and stdout.strip() == "published", stderr[-3000:]
    finally:
        holder.kill()
        holder.wait()
        if scheduled and scheduled.poll() is None:
            scheduled.kill()
    assert checksums(settings) == reference["checksums"]
    note("scheduler task and CLI writer at once", True, lost(account(settings)),
         "run lock: scheduler waits, CLI writers refused")


# ----------------------------------------------------------------------------- audiences (SIGKILL)

def test_sigkill_mid_audience_export_then_retry(chaos, reference):
    from customer360.privacy.audience import audiences_dir

    settings, _ = chaos
    folder = audiences_dir(settings)
    before = audiences_digest(settings)
    assert before, "the DAG run exported no audience"
    for f in folder.glob("*.csv"):
        os.utime(f, (0, 0))
    killed = kill_task_midway("audiences", lambda: any(f.stat().st_mtime > 0 for f in folder.glob("*.csv")))
    # whatever instant the kill hit, every export is the old one or the new one, whole
    # (both are the same bytes: the data did not change)
    assert audiences_digest(settings) == before
    run_task("audiences")
    assert audiences_digest(settings) == before
    assert not [f for f in folder.iterdir() if f.suffix not in (".csv", ".json")], list(folder.iterdir())
    header = next(folder.glob("*.csv")).read_text().splitlines()[0]
    assert "email_hash" in header and "email_sha256" not in header  # keyed hashes only
    note("SIGKILL mid audience export, retried", True, lost(account(settings)),
         f"killed: {killed}; exports equal the first ones")


# ----------------------------------------------------------------------------- PostgreSQL (item 10)

@pytest.fixture(scope="module")
def pg(chaos):
    from tests.pg_server import postgres_server

    with postgres_server() as server:
        yield server


def _pg_counts(dsn: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as con:
        tables = con.execute("SELECT table_schema, table_name FROM information_schema.tables "
                             "WHERE table_schema IN ('marts', 'ml') ORDER BY 1, 2").fetchall()
        return {f"{a}.{b}": con.execute(f'SELECT count(*) FROM "{a}"."{b}"').fetchone()[0] for a, b in tables}


def _published_counts(settings) -> dict[str, int]:
    con = duckdb.connect(str(settings.published_db), read_only=True)
    try:
        tables = con.execute("SELECT table_schema, table_name FROM information_schema.tables "
                             "WHERE table_schema IN ('marts', 'ml') ORDER BY 1, 2").fetchall()
        return {f"{a}.{b}": con.execute(f'SELECT count(*) FROM "{a}"."{b}"').fetchone()[0] for a, b in tables}
    finally:
        con.close()


def _pg_ctl(pg: dict, action: str) -> None:
    import glob

    import psycopg

    bindir = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))[-1]).parent
    if action == "stop":
        with psycopg.connect(pg["dsn"], autocommit=True) as con:
            pg["data"] = con.execute("SHOW data_directory").fetchone()[0]
        # how it was started, for the start below (a trailing newline would end pg_ctl's
        # shell command before its redirection to the log)
        opts = (Path(pg["data"]) / "postmaster.opts").read_text().split(None, 1)[1]
        pg["opts"] = " ".join(opts.replace('"', "").split())
        args = [str(bindir / "pg_ctl"), "-D", pg["data"], "-m", "fast", "-w", "stop"]
    else:
        args = [str(bindir / "pg_ctl"), "-D", pg["data"], "-l", f"{pg['data']}/../log2", "-w", "start",
                "-o", pg["opts"].replace("-D " + pg["data"], "")]
    # not captured: the postmaster outlives pg_ctl, and would hold a capture pipe open
    subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_postgres_down_at_publish_then_up(chaos, reference, pg, monkeypatch):
    settings, _ = chaos
    monkeypatch.setenv("C360_PUBLISH_POSTGRES_DSN", pg["dsn"])
    run_task("publish")
    assert _pg_counts(pg["dsn"]) == _published_counts(settings)
    _pg_ctl(pg, "stop")
    try:
        proc = run_task("publish", ok=False)
        assert "connection" in proc.stderr.lower() and pg["password"] not in proc.stderr
        assert checksums(settings) == reference["checksums"]  # the DuckDB publication stands
    finally:
        _pg_ctl(pg, "start")
    run_task("publish")
    assert _pg_counts(pg["dsn"]) == _published_counts(settings)
    note("PostgreSQL down at publish", True, 0, "publish fails naming the connection; rerun publishes")


def test_postgres_backend_killed_mid_transaction(chaos, reference, pg, monkeypatch):
    import psycopg

    settings, _ = chaos
    monkeypatch.setenv("C360_PUBLISH_POSTGRES_DSN", pg["dsn"])
    expected = _published_counts(settings)
    proc = subprocess.Popen([sys.executable, "-c", "from customer360.serve.postgres import publish_postgres\n"
                             "from customer360.core.settings import get_settings\npublish_postgres(get_settings())\n"],
                            env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = False
    with psycopg.connect(pg["dsn"], autocommit=True) as admin:
        while proc.poll() is None and not killed:
            killed = bool(admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                "AND backend_type = 'client backend' AND xact_start IS NOT NULL "
                "AND state <> 'idle'").fetchall())
    _, stderr = proc.communicate(timeout=120)
    assert killed and proc.returncode != 0, ("the publish finished before its backend was killed", stderr[-2000:])
    # the old tables are whole (the swap is one transaction): counts as before the attempt
    assert _pg_counts(pg["dsn"]) == expected
    with psycopg.connect(pg["dsn"], autocommit=True) as check:
        assert check.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE '%%__next'").fetchone()[0] == 0
    run_task("publish")
    assert _pg_counts(pg["dsn"]) == expected
    note("PostgreSQL backend killed mid-transaction", True, 0, "rolled back whole; rerun publishes")


def test_postgres_reader_lock_past_lock_timeout_and_revoked_rights(chaos, pg, monkeypatch):
    import psycopg

    settings, _ = chaos
    monkeypatch.setenv("C360_PUBLISH_POSTGRES_DSN", pg["dsn"])
    monkeypatch.setenv("C360_PUBLISH_LOCK_TIMEOUT_SECONDS", "0.3")
    reader = psycopg.connect(pg["dsn"])
    table = next(iter(_pg_counts(pg["dsn"])))
    reader.execute(f'SELECT count(*) FROM {".".join(chr(34) + p + chr(34) for p in table.split("."))}')
    proc = run_task("publish", ok=False)
    assert "PublishLockTimeout" in proc.stderr and "previous publication is unchanged" in proc.stderr
    reader.rollback()
    reader.close()
    run_task("publish")
    with psycopg.connect(pg["dsn"], autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS chaos_ana")
        admin.execute("CREATE ROLE chaos_ana LOGIN PASSWORD 'ana-pw' IN ROLE c360_analyst")
    with psycopg.connect(f"postgresql://chaos_ana:ana-pw@127.0.0.1:{pg['port']}/postgres", autocommit=True) as ana:
        assert ana.execute(f"SELECT count(*) FROM {table}").fetchone()[0] >= 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            ana.execute("CREATE TEMP TABLE scratch (x int)")
    with pytest.raises(psycopg.OperationalError, match="permission denied|not currently accepting"):
        psycopg.connect(f"postgresql://chaos_ana:ana-pw@127.0.0.1:{pg['port']}/template1").close()
    note("PostgreSQL reader lock past lock_timeout", True, 0, "3 attempts, clear error; rerun publishes")
    note("PostgreSQL analyst TEMP/CONNECT revoked", True, 0, "CREATE TEMP and other databases refused")


# ----------------------------------------------------------------------------- a full disk (ENOSPC)

def test_disk_full_in_dbt(chaos, reference):
    settings, _ = chaos
    with full_disk(settings.warehouse_path.parent, free=64 << 10):
        proc = run_task("marts", ok=False)
    out = proc.stdout + proc.stderr
    assert "No space left" in out or "out of disk" in out.lower() or "disk is full" in out.lower(), out[-3000:]
    republish_equal(settings, reference, "marts", "customer_360")
    note("disk full in dbt (warehouse)", True, lost(account(settings)), "dbt fails; rerun gives reference checksums")


def test_disk_full_at_publish(chaos, reference):
    settings, _ = chaos
    with full_disk(settings.published_dir, free=64 << 10):
        proc = run_task("publish", ok=False)
        assert "No space left" in proc.stderr, proc.stderr[-3000:]
        assert checksums(settings) == reference["checksums"]  # the old set is whole
    republish_equal(settings, reference)
    note("disk full at publish", True, lost(account(settings)), "old publication whole; rerun equal")


def test_disk_full_in_the_audit_store(chaos, reference):
    """An erasure request that matches nobody is still on record (an event): with the audit
    store's disk full it is refused whole, said plainly, and the chain stays intact."""
    settings, _ = chaos
    with full_disk(settings.audit_dir, free=0):
        out = c360("erase", "--contact-id", "999999999", "--no-rebuild")
        text = assert_no_traceback(out)
        assert out.returncode == 2 and settings.audit_db.name in text and "No space left" in text, text[-3000:]
    text = assert_no_traceback(out := c360("audit", "verify"))
    assert out.returncode == 0 and "audit log intact" in text, text
    run_task("gate_marts")
    note("disk full in the audit store", True, lost(account(settings)), "exit 2 naming the store; chain intact")


def test_disk_full_in_the_sqlite_state(chaos, reference):
    settings, _ = chaos
    # Touched, not changed: the extract must write the files' new stat into the state (with
    # nothing to write, a full disk is no fault), and the raw zone stays the reference's.
    for landed in (settings.landing / "pos").glob(f"date={LAST.isoformat()}/*.csv"):
        os.utime(landed, ns=(time.time_ns(), time.time_ns()))
    with full_disk(settings.state_dir, free=0):
        out = c360("extract", "pos", "--date", LAST.isoformat())
        text = assert_no_traceback(out)
        assert out.returncode == 1 and "state.sqlite" in text, text[-3000:]
        assert re.search("disk is full|No space left|disk I/O error", text), text[-3000:]
    import sqlite3

    from customer360.ingest.state import state_db_path

    con = sqlite3.connect(state_db_path(settings))
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    run_task("extract_pos")
    acc = account(settings)
    assert lost(acc) == 0 and raw_digest(settings) == reference["raw"]
    note("disk full in the SQLite state", True, lost(acc), "extract exits 1 clearly; state intact; rerun")


# ----------------------------------------------------------------------------- corrupt stores

def _scribble(path: Path, at: float = 0.0, n: int = 4096) -> bytes:
    data = path.read_bytes()
    start = int(len(data) * at)
    path.write_bytes(data[:start] + bytes((i * 37 + 11) % 256 for i in range(n)) + data[start + n:])
    return data


def test_corrupt_state_file(chaos, reference):
    from customer360.ingest.state import state_db_path

    settings, _ = chaos
    path = state_db_path(settings)
    original = _scribble(path)
    try:
        out = c360("extract", "web", "--date", LAST.isoformat())
        text = assert_no_traceback(out)
        assert out.returncode == 1 and path.name in text and "corrupt" in text.lower(), text[-2000:]
    finally:
        path.write_bytes(original)  # the operator restores the file (a rebuild of it from the raw zone: doctor)
    run_task("extract_web")
    acc = account(settings)
    assert lost(acc) == 0 and raw_digest(settings) == reference["raw"]
    note("corrupt ingest state file (SQLite)", True, lost(acc), "refused naming the file; restored copy resumes")


def test_corrupt_audit_store(chaos):
    settings, _ = chaos
    path = settings.audit_db
    original = _scribble(path)
    try:
        out = c360("audit", "verify")
        text = assert_no_traceback(out)
        assert out.returncode == 2 and path.name in text and "corrupt" in text.lower(), text[-2000:]
        out = c360("erase", "--contact-id", "999999999", "--no-rebuild")  # a writer of the store
        text = assert_no_traceback(out)
        assert out.returncode == 2 and path.name in text and "corrupt" in text.lower(), text[-2000:]
    finally:
        path.write_bytes(original)
    out = c360("audit", "verify")
    assert out.returncode == 0, out.stdout
    note("corrupt audit store", True, 0, "verify and writers exit 2 naming the file")


def test_corrupt_dbt_manifest(chaos, reference):
    settings, _ = chaos
    target = settings.dbt_target_dir
    spoiled = [f for f in (target / "manifest.json", target / "partial_parse.msgpack") if f.exists()]
    assert spoiled, list(target.iterdir())
    for f in spoiled:
        _scribble(f, at=0.3)
    republish_equal(settings, reference, "marts", "customer_360")
    note("corrupt dbt manifest", True, lost(account(settings)), "dbt re-parses the project")


def _customer_ids(settings) -> list[tuple]:
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        return con.execute("SELECT identity_key, customer_id FROM intermediate.int_identity__clusters "
                           "ORDER BY ALL").fetchall()
    finally:
        con.close()


def test_corrupt_warehouse_then_rebuilt_from_the_raw_zone(chaos, reference):
    settings, _ = chaos
    path = settings.warehouse_path
    ids = _customer_ids(settings)
    assert ids
    _scribble(path, at=0.0, n=8192)
    out = c360("stage", "dbt_marts", "--date", LAST.isoformat())
    # dbt, run in-process, prints its own traceback of DuckDB's error to its log on stdout;
    # the command itself ends on one clear line naming the file
    text = " ".join((out.stdout + out.stderr).split())
    assert "─ Traceback (most recent call last) ─" not in text, text[-3000:]
    assert out.returncode == 1, text[-3000:]
    assert re.search(rf"stage dbt_marts failed: .*{re.escape(str(path))}.* not a valid DuckDB database file",
                     text), text[-3000:]
    assert checksums(settings) == reference["checksums"]  # what readers see is untouched
    text = " ".join((out := c360("doctor")).stdout.split())
    assert out.returncode == 1 and "warehouse/c360.duckdb" in text and "c360 rebuild-warehouse" in text, text
    text = assert_no_traceback(out := c360("rebuild-warehouse"))
    assert out.returncode == 0 and "warehouse rebuilt" in text, text[-3000:]
    assert list(path.parent.glob(f"{path.name}.broken-*")), "the broken file is not kept"
    # the id memory was put back: every person keeps their customer id
    assert _customer_ids(settings) == ids
    assert checksums(settings) == reference["checksums"]
    acc = account(settings)
    note("corrupt warehouse", True, lost(acc), "dbt fails naming it; rebuilt from raw = reference")
    note("corrupt warehouse: c360 doctor, rebuild-warehouse", True, lost(acc),
         f"doctor exit 1 naming it; rebuild: checksums and {len(ids)} customer ids equal")


def test_truncated_raw_batch_doctor_sets_it_aside_and_the_extract_lands_it_again(chaos, reference):
    settings, _ = chaos
    batch = sorted((settings.lake_raw / "web" / "events").glob("load_date=*/*.parquet"))[0]
    data = batch.read_bytes()
    batch.write_bytes(data[: len(data) // 2])
    rel = str(batch.relative_to(settings.home))
    text = " ".join((out := c360("doctor")).stdout.split())
    assert out.returncode == 1 and rel in text and "c360 doctor --repair raw" in text, text[-3000:]
    text = assert_no_traceback(out := c360("doctor", "--repair", "raw"))
    assert out.returncode == 0 and "c360 extract web --date" in text, text[-3000:]
    assert not batch.exists()
    text = assert_no_traceback(out := c360("extract", "web", "--date", LAST.isoformat()))
    assert out.returncode == 0, text[-3000:]
    acc = account(settings)
    assert lost(acc) == 0 and raw_digest(settings) == reference["raw"], acc
    text = " ".join((out := c360("doctor")).stdout.split())
    assert rel not in text, text[-3000:]
    note("truncated raw batch: c360 doctor --repair raw", True, lost(acc),
         "doctor names it; set aside, re-landed; raw equals the reference")


# ----------------------------------------------------------------------------- the audit chain (item 7)

@pytest.mark.parametrize("fault, tamper", [
    ("audit chain: tail truncated", "DELETE FROM audit_store.audit.events WHERE seq >= (SELECT max(seq) - 1 FROM audit_store.audit.events)"),
    ("audit chain: entry rewritten", "UPDATE audit_store.audit.events SET payload = replace(payload, '\"version\"', '\"versi0n\"') WHERE seq = (SELECT min(seq) FROM audit_store.audit.events WHERE kind = 'publication')"),
    ("audit store deleted", None),
])
def test_audit_tampering_is_detected(chaos, fault, tamper):
    settings, _ = chaos
    path = settings.audit_db
    original = path.read_bytes()
    try:
        if tamper is None:
            path.unlink()
        else:
            con = duckdb.connect()
            con.execute(f"ATTACH '{path}' AS audit_store")
            con.execute(tamper)
            con.close()
        out = c360("audit", "verify")
        text = assert_no_traceback(out)
        assert out.returncode == 1 and "tampered" in text, text[-2000:]
    finally:
        path.write_bytes(original)
        Path(f"{path}.wal").unlink(missing_ok=True)
    assert c360("audit", "verify").returncode == 0
    note(fault, True, 0, "c360 audit verify exits 1 naming the break")


def test_corrected_pos_file_supersedes_the_first(chaos):
    settings, _ = chaos
    day = LAST - dt.timedelta(days=2)
    store = max((settings.landing / "pos" / f"date={day.isoformat()}").glob("store_*.csv"),
                key=lambda p: p.stat().st_size)
    raw = store.read_bytes()
    store.write_bytes(raw.rstrip(b"\r\n").rsplit(b"\n", 1)[0] + b"\n")  # the till voided the last line
    run_task("extract_pos")
    acc = account(settings)
    con = duckdb.connect()
    files = con.execute("SELECT source_file, rows_read, supersedes_batch_id FROM read_parquet(?) "
                        "WHERE source_file LIKE ?",
                        [str(settings.lake_raw / "pos" / "files" / "load_date=*" / "*.parquet"),
                         f"%{store.name}"]).fetchall()
    con.close()
    mine = [f for f in files if f[0].endswith(f"date={day.isoformat()}/{store.name}")]
    assert len(mine) == 2 and sum(1 for f in mine if f[2]) == 1, mine
    # The landing now holds only the corrected file; the raw zone keeps both versions, and the
    # count takes the superseded one's records on top of the landing's (_superseded_pos_rows).
    assert _superseded_pos_rows(settings) == next(f[1] for f in mine if not f[2])
    missing = acc["pos"]["lost"]
    assert missing == 0, acc
    note("corrected POS file", True, missing, "new version supersedes the first; both kept in raw")


# ----------------------------------------------------------------------------- the data changes from here on
# Late data, then erasures: the publication no longer equals the reference's; the invariant
# (every record landed, counted or quarantined) still holds, computed the same way.

def _late_web_file(settings) -> Path:
    """A file delivered after the day's run: fresh events, one of them with rich markup as its type."""
    day = settings.landing / "web" / "events" / f"date={LAST.isoformat()}"
    src = sorted(day.glob("part-0*.jsonl.gz"))[0]
    lines = [json.loads(line) for line in gzip.decompress(src.read_bytes()).splitlines() if line.strip()][:20]
    for i, event in enumerate(lines):
        event["messageId"] = f"late-{i:04d}-{event['messageId']}"
    lines[0]["type"] = "[/bold][red]x"  # a closing tag alone makes rich raise on markup
    dest = day / "part-0950.jsonl.gz"
    dest.write_bytes(gzip.compress("".join(json.dumps(e) + "\n" for e in lines).encode()))
    return dest


def test_late_data_and_a_corrupt_airflow_db_then_the_day_rerun_passes_its_gates(chaos):
    from customer360.pipeline.airflow import run_dag

    settings, _ = chaos
    _late_web_file(settings)
    out = c360("validate-landing", "--through", LAST.isoformat())
    assert "[/bold][red]x" in assert_no_traceback(out)  # printed literally, not as markup
    airflow_db = settings.airflow_home / "airflow.db"
    assert airflow_db.exists()
    _scribble(airflow_db, at=0.0, n=8192)
    result = run_dag(settings, LAST)
    assert result.success, result.log_path.read_text()[-6000:]
    assert list(settings.airflow_home.glob("airflow.db.corrupt-*")), "the corrupt DB is not kept for a look"
    acc = account(settings)
    assert acc["web"]["lost"] == 0 and acc["crm"]["lost"] == 0, acc
    con = duckdb.connect()
    reasons = con.execute("SELECT reason FROM read_parquet(?, union_by_name=true) WHERE source_file LIKE "
                          "'%part-0950.jsonl.gz'", [str(settings.quarantine / "web" / "events" / "load_date=*" / "*.parquet")]
                          ).fetchall()
    con.close()
    assert len(reasons) == 1 and reasons[0][0], reasons
    note("late data, the day rerun", True, acc["web"]["lost"], "the DAG reruns the day; every gate passes")
    note("rich markup in a source value", True, acc["web"]["lost"], "printed literally; quarantined with its reason")
    note("corrupt Airflow metadata DB", True, 0, "moved aside and re-created at the run's start")


def _raw_rows(settings) -> int:
    return sum(_parquet_rows(f) for f in settings.lake_raw.glob("*/*") if f.is_dir())


def _a_contact(settings) -> str:
    con = duckdb.connect()
    try:
        return con.execute("SELECT min(id) FROM read_parquet(?) WHERE NOT archived",
                           [str(settings.lake_raw / "crm" / "contacts" / "load_date=*" / "*.parquet")]).fetchone()[0]
    finally:
        con.close()


def test_an_erasure_that_matches_nothing_is_refused(chaos):
    settings, _ = chaos
    before = raw_digest(settings)
    out = c360("erase", "--contact-id", "999999999", "--no-rebuild")
    text = assert_no_traceback(out)
    assert out.returncode == 4 and "no record carries the contact given" in text, text
    assert raw_digest(settings) == before
    note("erasure matching nothing", True, 0, "refused (exit 4), logged as refused; nothing purged")


def test_sigkill_mid_erasure_then_resumed(chaos):
    from customer360.privacy import erasure_log

    settings, _ = chaos
    contact = _a_contact(settings)
    rows_before = _raw_rows(settings)
    anchors = settings.audit_anchors_path
    started_before = anchors.read_text().count("started")
    args = [str(Path(sys.executable).parent / "c360"), "erase", "--contact-id", contact, "--no-rebuild", "--no-verify"]
    proc = subprocess.Popen(args, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and anchors.read_text().count("started") == started_before:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    killed = proc.wait(timeout=30) == -signal.SIGKILL
    assert killed, "the erasure finished before it could be killed"
    interrupted = erasure_log.interrupted(settings)
    assert len(interrupted) == 1
    erasure_id = interrupted["erasure_id"].iloc[0]
    out = c360("erase", "--contact-id", contact, "--no-rebuild")
    text = assert_no_traceback(out)
    assert out.returncode == 0, text[-3000:]
    assert "an earlier erasure died mid-purge" in text and erasure_id in text and "verification: 0 trace" in text, text
    assert erasure_log.interrupted(settings).empty
    erased = erasure_log.erased_rows(settings)
    erased_raw = int(erased[(erased["erasure_id"] == erasure_id) & (erased["zone"] == "raw")]["rows"].sum())
    missing = rows_before - _raw_rows(settings) - erased_raw  # rows of anyone else gone
    assert erased_raw > 0 and missing == 0, (rows_before, erased_raw)
    assert c360("audit", "verify").returncode == 0
    note("SIGKILL mid erasure, resumed", True, missing, "'started' row before purge; rerun resumes the same id")


def test_torn_tail_of_the_erased_keys_log(chaos):
    from customer360.privacy import erasure_log

    settings, _ = chaos
    path = settings.erased_keys_copy_path
    tokens = set(erasure_log.erased_tokens(settings)["token"])
    assert tokens
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"token": "0123')
    assert set(erasure_log.erased_tokens(settings)["token"]) == tokens
    run_task("erasure")  # the DAG's step reads both copies
    assert set(erasure_log.erased_tokens(settings)["token"]) == tokens
    note("torn tail: erased-keys log", True, 0, "torn line skipped; every erased key still known")


def test_sigkill_mid_compaction_then_retry(chaos):
    from customer360.privacy import duck_purge, erasure_log

    settings, _ = chaos
    assert erasure_log.awaiting_compaction(settings)
    run_task("publish")
    published = checksums(settings)
    path = settings.warehouse_path
    killed = kill_task_midway("compact_warehouse", _any_file(path.parent, f".{path.name}.*.compacting*"))
    assert killed, "the compaction finished before it could be killed"
    run_task("compact_warehouse")
    assert not erasure_log.awaiting_compaction(settings)
    assert duck_purge.free_blocks(path, settings) == 0
    assert not list(path.parent.glob("*.compacting*"))
    run_task("publish")
    assert checksums(settings) == published
    note("SIGKILL mid compaction, retried", True, 0, f"killed: {killed}; the warehouse opens, publish equal")


def test_audit_store_lost_after_an_erasure_keeps_the_erased_keys(chaos):
    from customer360.privacy import erasure_log

    settings, _ = chaos
    tokens = set(erasure_log.erased_tokens(settings)["token"])
    path = settings.audit_db
    aside = path.with_name("audit.duckdb.chaos-aside")
    path.rename(aside)
    try:
        assert set(erasure_log.erased_tokens(settings)["token"]) == tokens
        out = c360("audit", "verify")
        text = assert_no_traceback(out)
        assert out.returncode == 1 and "erased-keys copy but not in the log" in text, text[-2000:]
    finally:
        path.unlink(missing_ok=True)
        aside.rename(path)
    note("audit store lost after an erasure", True, 0, "erased keys survive in their copy; verify exits 1")


# ----------------------------------------------------------------------------- caps on a landing file (item 12)
# Run last: the over-long line's file lands new events, and the bomb stays in the landing, where
# every count after it (validate-landing, account) reads it to the cap again (~1 GiB of zeros).

def _gzip_pieces(path: Path, pieces) -> None:
    packer = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 16+: a gzip wrapper
    with open(path, "wb") as fh:
        for piece in pieces:
            fh.write(packer.compress(piece))
        fh.write(packer.flush())


def test_a_gzip_bomb_and_an_over_long_line_in_the_web_landing(chaos):
    settings, _ = chaos
    cap, max_line = settings.max_decompressed_bytes, settings.max_line_bytes
    day = settings.landing / "web" / "events" / f"date={LAST.isoformat()}"
    # A real bomb at the real cap (about 1 MB on disk): the setting stays as deployed.
    bomb = day / "part-0960.jsonl.gz"
    zeros = bytes(1 << 20)
    _gzip_pieces(bomb, (zeros for _ in range(cap // len(zeros) + 2)))
    assert bomb.stat().st_size < cap // 100
    src = sorted(day.glob("part-0*.jsonl.gz"))[0]
    events = [json.loads(line) for line in gzip.decompress(src.read_bytes()).splitlines() if line.strip()][:3]
    for i, event in enumerate(events):
        event["messageId"] = f"caps-{i}-{event['messageId']}"
    events[1]["properties"] = {**(events[1].get("properties") or {}), "blob": "y" * (max_line + 10)}
    long_file = day / "part-0961.jsonl.gz"
    long_file.write_bytes(gzip.compress("".join(json.dumps(e) + "\n" for e in events).encode()))
    run_task("extract_web")
    con = duckdb.connect()
    q = dict(((f, ln), r) for f, ln, r in con.execute(
        "SELECT source_file, source_line, reason FROM read_parquet(?, union_by_name=true) "
        "WHERE source_file LIKE '%part-096_.jsonl.gz'",
        [str(settings.quarantine / "web" / "events" / "load_date=*" / "*.parquet")]).fetchall())
    landed = {m for (m,) in con.execute(
        "SELECT messageId FROM read_parquet(?, union_by_name=true) WHERE messageId LIKE 'caps-%'",
        [str(settings.lake_raw / "web" / "events" / "load_date=*" / "*.parquet")]).fetchall()}
    con.close()
    rel = f"web/events/date={LAST.isoformat()}"
    assert sorted(q) == [(f"{rel}/part-0960.jsonl.gz", None), (f"{rel}/part-0961.jsonl.gz", 2)], q
    assert q[(f"{rel}/part-0960.jsonl.gz", None)].startswith(
        f"decompressed size exceeds C360_MAX_DECOMPRESSED_BYTES ({cap} bytes)")
    assert q[(f"{rel}/part-0961.jsonl.gz", 2)].startswith(
        f"line 2 is longer than C360_MAX_LINE_BYTES ({max_line} bytes)")
    assert landed == {events[0]["messageId"], events[2]["messageId"]}
    acc = account(settings)
    assert lost(acc) == 0, acc
    note("gzip bomb in the web landing", True, lost(acc), f"{bomb.stat().st_size} bytes on disk; quarantined whole")
    note("over-long line in a web file", True, lost(acc), "line 2 quarantined, lines 1 and 3 landed")


# ----------------------------------------------------------------------------- CRM clocks (item 12)

def _crm_version(template: dict, record_id: str, when: str) -> dict:
    rec = json.loads(json.dumps(template))
    rec.update(id=record_id, updatedAt=when, createdAt=when, archived=False, archivedAt=None)
    rec["properties"].update(hs_object_id=record_id, lastmodifieddate=when, createdate=when,
                             email=f"chaos-clock-{record_id}@example.com", phone=None)
    return rec


def _write_crm_store(path: Path, versions: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(v, ensure_ascii=False) + "\n" for v in versions)
    tmp.replace(path)  # the mock reloads on change: it never sees half a file


def test_a_crm_record_dated_in_the_future_with_this_host_behind_the_crm(chaos, monkeypatch):
    """In-process: this host's clock is skewed by patching the extractor's one clock."""
    from customer360.ingest import crm
    from customer360.ingest.crm import extract_crm, load_state

    settings, _ = chaos
    store = settings.simulation_dir / "crm" / "contacts.jsonl.gz"
    with gzip.open(store, "rt", encoding="utf-8") as fh:
        versions = [json.loads(line) for line in fh]
    bogus = "2099-12-31T00:00:00.000Z"
    end = dt.datetime.combine(LAST + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    iso = lambda t: t.isoformat(timespec="milliseconds").replace("+00:00", "Z")  # noqa: E731
    added = [_crm_version(versions[-1], "990000001", bogus),
             _crm_version(versions[-1], "990000002", iso(end - dt.timedelta(seconds=2)))]
    _write_crm_store(store, versions + added)
    # The CRM's clock is the real one (months past LAST); this host believes it is 5 minutes
    # after LAST ended: the version at 23:59:58 is inside host clock minus the lookback.
    host = end + dt.timedelta(minutes=5)
    monkeypatch.setattr(crm, "wall_clock_ms", lambda: int(host.timestamp() * 1000))
    lookback_ms = int(settings.crm_lookback_seconds * 1000)

    def contacts() -> list[tuple[str, str, bool]]:
        con = duckdb.connect()
        try:
            return con.execute("SELECT id, updatedAt, _modified_in_future FROM read_parquet(?, union_by_name=true) "
                               "WHERE id LIKE '99000000%' ORDER BY ALL",
                               [str(settings.lake_raw / "crm" / "contacts" / "load_date=*" / "*.parquet")]).fetchall()
        finally:
            con.close()

    first = extract_crm(settings, LAST)
    assert "1 modified in the future" in " | ".join(r.note for r in first)
    assert contacts() == [("990000001", bogus, True), ("990000002", added[1]["updatedAt"], False)]
    assert load_state(settings, "contacts").watermark_ms <= int(host.timestamp() * 1000) - lookback_ms
    # A later change, the host's clock a minute on: it lands; the future one is not landed twice.
    added.append(_crm_version(versions[-1], "990000003", iso(end - dt.timedelta(seconds=1))))
    _write_crm_store(store, versions + added)
    host += dt.timedelta(minutes=1)
    second = extract_crm(settings, LAST)
    assert "modified in the future" not in " | ".join(r.note for r in second)
    assert contacts() == [("990000001", bogus, True), ("990000002", added[1]["updatedAt"], False),
                          ("990000003", added[2]["updatedAt"], False)]
    assert load_state(settings, "contacts").watermark_ms <= int(host.timestamp() * 1000) - lookback_ms
    acc = account(settings)
    assert acc["crm"]["lost"] == 0, acc
    note("CRM record dated in the future", True, acc["crm"]["lost"], "landed once, flagged _modified_in_future")
    note("host clock behind the CRM's", True, acc["crm"]["lost"],
         "watermark <= host clock - lookback; a later change landed")
