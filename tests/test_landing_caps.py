"""Caps on what one landing file may hold (C360_MAX_DECOMPRESSED_BYTES, C360_MAX_LINE_BYTES).

A gzip bomb and a file with a 100 MB line are loaded and validated in a child process whose
peak RSS is measured (a memory bound, not a timing): each is quarantined with its reason and
the good lines of the long-line file still load. Small caps set in the environment check the
exact reasons, line numbers and that the validator reports what the loaders quarantine.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

from customer360.core.settings import get_settings
from customer360.ingest.landing.lines import ReadLimits, measure_file
from customer360.ingest.landing.validate import validate_landing
from customer360.ingest.pos import load_pos
from customer360.ingest.web import load_web
from tests.landing_fixtures import (POS_COLUMNS, csv_text, event, pos_row, read_quarantine,
                                    read_raw, web_part_path, write_pos_file, write_reference,
                                    write_web_part)

ROOT = Path(__file__).resolve().parents[1]
D1 = dt.date(2026, 3, 10)
GIB = 2**30
# Generous: the child imports DuckDB, pyarrow and the package (~150 MB) and reads in chunks.
RSS_BOUND_MB = 400


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("C360_LANDING", raising=False)
    return get_settings()


def _gzip_stream(path: Path, pieces) -> Path:
    """Write a gzip file from byte pieces, compressing as it goes (the test stays small too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 16+: a gzip wrapper
    with open(path, "wb") as fh:
        for piece in pieces:
            fh.write(packer.compress(piece))
        fh.write(packer.flush())
    return path


def _zeros(n_bytes: int):
    chunk = bytes(2**20)
    for _ in range(n_bytes // len(chunk)):
        yield chunk
    yield bytes(n_bytes % len(chunk))


def _line(ev: dict) -> bytes:
    return (json.dumps(ev) + "\n").encode()


_CHILD = textwrap.dedent("""
    import datetime as dt, json, resource, sys
    from customer360.core.settings import get_settings
    from customer360.ingest.landing.validate import validate_landing
    from customer360.ingest.web import load_web
    settings = get_settings()
    day = dt.date.fromisoformat(sys.argv[1])
    report = validate_landing(settings.landing, through=day)
    recs = load_web(settings, day)
    # Linux keeps ru_maxrss across exec, so it can hold the forking test process's peak;
    # VmHWM is this process's own peak RSS.
    with open("/proc/self/status") as fh:
        hwm = next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:"))
    print(json.dumps({
        "problems": [[p.file, p.line, p.reason] for p in report.problems],
        "landed": sum(r.landed for r in recs), "quarantined": sum(r.quarantined for r in recs),
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "max_rss_mb": hwm / 1024}))
""")


def _load_in_child(home: Path, day: dt.date) -> dict:
    env = dict(os.environ, C360_HOME=str(home), PYTHONPATH=f"{ROOT / 'plugins'}:{ROOT}")
    env.pop("C360_LANDING", None)
    env.pop("C360_MAX_DECOMPRESSED_BYTES", None)
    env.pop("C360_MAX_LINE_BYTES", None)
    done = subprocess.run([sys.executable, "-c", _CHILD, day.isoformat()], env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_gzip_bomb_is_quarantined_by_the_size_cap_with_memory_bounded(tmp_path):
    home = tmp_path / "home"
    bomb = _gzip_stream(web_part_path(home / "landing", D1, 0), _zeros(GIB + 2**20))
    assert bomb.stat().st_size < 2 * 2**20  # a real bomb: ~1 MB holding 1 GiB

    got = _load_in_child(home, D1)

    print(f"gzip bomb: peak RSS of the loading child {got['max_rss_mb']:.0f} MB "
          f"(ru_maxrss {got['ru_maxrss_mb']:.0f} MB)")
    assert got["max_rss_mb"] < RSS_BOUND_MB
    (problem,) = [p for p in got["problems"] if p[0].endswith("part-0000.jsonl.gz")]
    assert problem[1] is None
    assert problem[2].startswith(f"decompressed size exceeds C360_MAX_DECOMPRESSED_BYTES ({GIB} "
                                 f"bytes)")
    assert (got["landed"], got["quarantined"]) == (0, 1)
    settings = get_settings(home)
    (q,) = read_quarantine(settings, "web", "events")
    assert q["reason"] == problem[2] and q["raw_text"] is None


def test_a_100_mb_line_is_quarantined_and_the_rest_of_its_file_loads_with_memory_bounded(
        tmp_path):
    home = tmp_path / "home"
    huge = b'{"messageId": "huge", "junk": "' + b"x" * (100 * 2**20) + b'"}\n'
    _gzip_stream(web_part_path(home / "landing", D1, 0),
                 [_line(event("before", D1)), huge, _line(event("after", D1))])
    huge_length = len(huge) - 1
    del huge  # not to be counted in the child's peak (it starts as a fork of this process)

    got = _load_in_child(home, D1)

    print(f"100 MB line: peak RSS of the loading child {got['max_rss_mb']:.0f} MB "
          f"(ru_maxrss {got['ru_maxrss_mb']:.0f} MB)")
    assert got["max_rss_mb"] < RSS_BOUND_MB
    (problem,) = [p for p in got["problems"] if p[0].endswith("part-0000.jsonl.gz")]
    assert problem[1] == 2
    assert problem[2].startswith(f"line 2 is longer than C360_MAX_LINE_BYTES ({2**20} bytes): "
                                 f"{huge_length} bytes")
    assert (got["landed"], got["quarantined"]) == (2, 1)
    settings = get_settings(home)
    assert sorted(r["messageId"] for r in read_raw(settings, "web", "events")) == ["after",
                                                                                  "before"]
    (q,) = read_quarantine(settings, "web", "events")
    assert q["source_line"] == 2 and q["reason"] == problem[2]
    assert q["raw_text"].startswith('{"messageId": "huge"') and len(q["raw_text"]) <= 200


# --------------------------------------------------------------------------- small caps

@pytest.fixture
def capped(settings, monkeypatch):
    monkeypatch.setenv("C360_MAX_LINE_BYTES", "400")
    monkeypatch.setenv("C360_MAX_DECOMPRESSED_BYTES", "20000")
    return get_settings()


@pytest.mark.parametrize("chunk", [7, 13, 64])  # lines cut across chunks, and inside one
def test_measure_finds_every_long_line_across_chunk_borders(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr("customer360.ingest.landing.lines.STREAM_CHUNK_BYTES", chunk)
    lines = [b"a" * 5, b"b" * 12, b"", b"c" * 11, b"d" * 3, b"e" * 30]  # last: no line feed
    path = _gzip_stream(tmp_path / "f.gz", [b"\n".join(lines)])

    got = measure_file(path, True, ReadLimits(max_bytes=1000, max_line=10))

    assert got.n_bytes == len(b"\n".join(lines))
    assert got.long_lines == {2: 12, 4: 11, 6: 30}
    assert measure_file(path, True, ReadLimits(max_bytes=50, max_line=10)).startswith(
        "decompressed size exceeds C360_MAX_DECOMPRESSED_BYTES (50 bytes)")


def test_long_web_lines_are_quarantined_with_their_numbers_and_the_validator_agrees(capped):
    long_ev = event("long", D1, properties={"blob": "y" * 500})
    write_web_part(capped.landing, D1, 0, [event("a", D1), long_ev, "", event("b", D1), long_ev])
    write_web_part(capped.landing, D1, 1, [event("c", D1)])

    report = validate_landing(capped.landing)
    (rec,) = load_web(capped, D1)

    errors = {(p.file, p.line): p.reason for p in report.problems if p.severity == "error"}
    quarantined = {(q["source_file"], q["source_line"]): q["reason"]
                   for q in read_quarantine(capped, "web", "events")}
    rel = "web/events/date=2026-03-10/part-0000.jsonl.gz"
    assert sorted(quarantined) == [(rel, 2), (rel, 5)]
    assert quarantined[(rel, 5)].startswith("line 5 is longer than C360_MAX_LINE_BYTES (400 bytes)")
    assert errors == quarantined
    rows = read_raw(capped, "web", "events")
    assert {(r["messageId"], r["_source_line"]) for r in rows} == {("a", 1), ("b", 4), ("c", 1)}
    assert (rec.read, rec.landed, rec.quarantined) == (5, 3, 2)


def test_pos_files_get_the_same_caps(capped):
    write_reference(capped.landing)
    rows = [pos_row("LN01", D1, "T1"), pos_row("LN01", D1, "T2", customer_email="z" * 500),
            pos_row("LN01", D1, "T3")]
    write_pos_file(capped.landing, D1, "LN01", rows)
    big = capped.landing / "pos" / f"date={D1.isoformat()}" / "store_SH01.csv"
    big.write_bytes(csv_text(POS_COLUMNS, [pos_row("SH01", D1, f"B{i}") for i in range(300)])
                    .encode("gb18030"))
    assert big.stat().st_size > 20000

    report = validate_landing(capped.landing)
    load_pos(capped, D1)

    quarantined = {(q["source_file"], q["source_line"]): q["reason"]
                   for q in read_quarantine(capped, "pos", "transactions")}
    ln01 = f"pos/date={D1.isoformat()}/store_LN01.csv"
    sh01 = f"pos/date={D1.isoformat()}/store_SH01.csv"
    assert quarantined[(ln01, 3)].startswith("line 3 is longer than C360_MAX_LINE_BYTES")
    assert quarantined[(sh01, None)].startswith(
        "decompressed size exceeds C360_MAX_DECOMPRESSED_BYTES (20000 bytes)")
    assert len(quarantined) == 2
    landed = {r["transaction_id"] for r in read_raw(capped, "pos", "transactions")}
    assert landed == {"T1", "T3"}
    errors = {(p.file, p.line): p.reason for p in report.problems if p.severity == "error"}
    assert errors == quarantined
