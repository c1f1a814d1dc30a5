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
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from tests.e2e import START, published_checksums

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

PEOPLE, DAYS = 150, 14
LAST = START + dt.timedelta(days=DAYS - 1)
BAD_DAY = START + dt.timedelta(days=4)  # bad files sit in an older folder: the last day's volume gate stays meaningful
TOKEN = "chaos-crm-token-0123456789abcdef"
CRM_OBJECTS = ("contacts", "tickets", "feedback_submissions")
RECORD_ENTITIES = {"crm": CRM_OBJECTS, "web": ("events",), "pos": ("transactions",)}
ROWS: list[tuple[str, bool, int, str]] = []  # fault, recovered, records lost, note
# Wall-clock columns: when a row was scored, published or landed (a retried batch lands later).
WALL_CLOCK = ("scored_at", "published_at", "_loaded_at")


def checksums(settings) -> dict[str, str]:
    return published_checksums(settings, exclude_columns=WALL_CLOCK)


# ----------------------------------------------------------------------------- independent counts

def _web_expected(landing: Path, through: dt.date) -> int:
    """Records in the web landing: non-blank lines of readable part files, 1 for an unreadable file."""
    total = 0
    for part in sorted((landing / "web" / "events").glob("date=*/part-*.jsonl.gz")):
        if dt.date.fromisoformat(part.parent.name.removeprefix("date=")) > through:
            continue
        try:
            text = gzip.decompress(part.read_bytes())
        except (OSError, EOFError, zlib.error):
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


def _crm_expected(sim_dir: Path, through: dt.date) -> int:
    """CRM records the API serves before the end of ``through``: the latest version of each id."""
    bound = dt.datetime.combine(through + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
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
            total += (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)) < bound
    return total


def _parquet_rows(folder: Path) -> int:
    files = sorted(folder.glob("load_date=*/*.parquet"))
    if not files:
        return 0
    con = duckdb.connect()
    try:
        return con.execute("SELECT count(*) FROM read_parquet(?)", [[str(f) for f in files]]).fetchone()[0]
    finally:
        con.close()


def account(settings, through: dt.date = LAST) -> dict[str, dict]:
    """Per source: expected records, landed, quarantined, duplicates, and records lost."""
    from customer360.ingest.raw_zone import read_reconciliation

    recs = read_reconciliation(settings)
    assert all(r["read"] == r["landed"] + r["quarantined"] for r in recs)
    expected = {"web": _web_expected(settings.landing, through),
                "pos": _pos_expected(settings.landing, through),
                "crm": _crm_expected(settings.simulation_dir, through)}
    out = {}
    for source, entities in RECORD_ENTITIES.items():
        mine = [r for r in recs if r["source"] == source and r["entity"] in entities]
        landed = sum(r["landed"] for r in mine)
        quarantined = sum(r["quarantined"] for r in mine)
        # The reconciliation must describe what the lake holds: no partial or uncounted batch.
        raw_rows = sum(_parquet_rows(settings.lake_raw / source / e) for e in entities)
        q_rows = sum(_parquet_rows(settings.quarantine / source / e) for e in entities)
        assert raw_rows == landed, (source, raw_rows, landed)
        assert q_rows == quarantined, (source, q_rows, quarantined)
        out[source] = {"expected": expected[source], "landed": landed, "quarantined": quarantined,
                       "duplicates": sum(r.get("duplicates_in_raw", 0) for r in mine),
                       "lost": expected[source] - landed - quarantined}
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
            reporter.write_line(f"{'fault':<44} {'recovered':<10} {'records lost':>12}  note")
            for fault, ok, n, detail in ROWS:
                reporter.write_line(f"{fault:<44} {'yes' if ok else 'NO':<10} {n:>12}  {detail}")


def note(fault: str, recovered: bool, records_lost: int, detail: str = "") -> None:
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
else:
    pipeline.build_layer(kind, day)
"""


def run_task(kind: str, day: dt.date = LAST) -> None:
    proc = subprocess.run([sys.executable, "-c", TASK, kind, day.isoformat()], env=dict(os.environ),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


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
    # The landing now holds only the corrected file; the raw zone keeps both versions, so the
    # records of the superseded one are accounted for on top of the landing's.
    superseded = next(f[1] for f in mine if not f[2])
    missing = acc["pos"]["expected"] + superseded - acc["pos"]["landed"] - acc["pos"]["quarantined"]
    assert missing == 0, (acc, superseded)
    note("corrected POS file", True, missing, "new version supersedes the first; both kept in raw")
