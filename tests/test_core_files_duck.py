"""The two shared helpers of core: core.files (atomic writes) and core.duck (the one way to
open DuckDB), and a guard that nobody writes either pattern out again.

The guard reads the package's syntax trees: a ``duckdb.connect(...)`` call anywhere but in
core/duck.py, or an ``os.replace(...)`` anywhere but in core/files.py, fails the test with the
list of places (file:line) to re-point at the helper.
"""

from __future__ import annotations

import ast
from pathlib import Path

import duckdb
import pytest

from customer360.core import duck, files
from customer360.core.settings import get_settings

PACKAGE = Path(__file__).resolve().parents[1] / "plugins" / "customer360"


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("C360_DUCKDB_MEMORY_LIMIT", "512MB")
    monkeypatch.setenv("C360_DUCKDB_THREADS", "3")
    return get_settings()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- core.files

def test_atomic_write_replaces_the_content(tmp_path):
    path = tmp_path / "sub" / "state.json"
    with files.atomic_write(path) as fh:
        fh.write('{"v": 1}')
    assert path.read_text() == '{"v": 1}'
    with files.atomic_write(path) as fh:
        fh.write('{"v": 2}')
    assert path.read_text() == '{"v": 2}'
    files.write_bytes(path, b"\x00bytes")
    assert path.read_bytes() == b"\x00bytes"
    assert _leftovers(path.parent) == []


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="writer broke"):
        with files.atomic_write(path) as fh:
            fh.write("half of the new conte")
            assert _leftovers(tmp_path), "the new content goes to a temporary file beside it"
            raise RuntimeError("writer broke")
    assert path.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_path_for_a_tool_that_writes_the_file_itself(tmp_path):
    dest = tmp_path / "batch.parquet"
    con = duckdb.connect()
    try:
        with files.atomic_path(dest) as tmp:
            assert tmp.parent == dest.parent and tmp.name.startswith(".batch.parquet.")
            con.execute(f"COPY (SELECT 42 AS x) TO {duck.sql_str(str(tmp))} (FORMAT parquet)")
            assert not dest.exists()
        assert con.execute(f"SELECT x FROM {duck.sql_str(str(dest))}").fetchone() == (42,)
        with pytest.raises(duckdb.Error):
            with files.atomic_path(dest) as tmp:
                con.execute(f"COPY (SELECT 1 AS x) TO {duck.sql_str(str(tmp))} (FORMAT parquet)")
                con.execute("SELECT no_such_column")
        assert con.execute(f"SELECT x FROM {duck.sql_str(str(dest))}").fetchone() == (42,)
    finally:
        con.close()
    assert _leftovers(tmp_path) == []


def test_a_duckdb_database_is_written_under_a_temporary_name_and_renamed(tmp_path):
    db = tmp_path / "pub.duckdb"
    with files.atomic_path(db, create=False, sidecars=files.DUCKDB_SIDECARS) as tmp:
        assert not tmp.exists()  # DuckDB takes an existing empty file for a corrupt database
        con = duck.connect(path=tmp)
        con.execute("CREATE TABLE t AS SELECT 7 AS v")
        con.close()
    con = duck.connect(path=db, read_only=True)
    try:
        assert con.execute("SELECT v FROM t").fetchone() == (7,)
    finally:
        con.close()
    assert _leftovers(tmp_path) == []


def test_staged_files_appear_together_or_not_at_all(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "m" / "b.txt"
    a.write_text("old a")
    with pytest.raises(OSError):
        with files.staged_files() as stage:
            stage(a).write_text("new a")
            stage(b).write_text("new b")
            raise OSError("disk full")
    assert a.read_text() == "old a" and not b.exists()
    assert _leftovers(tmp_path) == [] and _leftovers(b.parent) == []
    with files.staged_files() as stage:
        stage(a).write_text("new a")
        stage(b).write_text("new b")
    assert (a.read_text(), b.read_text()) == ("new a", "new b")
    assert _leftovers(tmp_path) == [] and _leftovers(b.parent) == []


def test_swap_into_place_renames_the_database_and_its_copies(tmp_path):
    tmp_db, db = tmp_path / ".db.tmp", tmp_path / "db"
    tmp_pq, pq = tmp_path / ".t.parquet.tmp", tmp_path / "t.parquet"
    tmp_db.write_text("db")
    tmp_pq.write_text("pq")
    files.swap_into_place(tmp_db, db, [(tmp_pq, pq)])
    assert (db.read_text(), pq.read_text()) == ("db", "pq")
    assert not tmp_db.exists() and not tmp_pq.exists()


# --------------------------------------------------------------------------- core.duck

def _settings_of(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return dict(con.execute("SELECT name, value FROM duckdb_settings() WHERE name IN "
                            "('memory_limit', 'threads', 'temp_directory', 'TimeZone', "
                            "'enable_progress_bar')").fetchall())


def test_connect_applies_the_settings(settings):
    con = duck.connect(settings)
    try:
        got = _settings_of(con)
        assert got["threads"] == "3"
        assert got["memory_limit"] == con.execute(
            "SELECT current_setting('memory_limit')").fetchone()[0]
        assert got["memory_limit"].replace(" ", "") in ("512.0MiB", "488.2MiB")  # 512 MB
        assert Path(got["temp_directory"]) == settings.duckdb_temp_dir
        assert settings.duckdb_temp_dir.is_dir()
        assert got["TimeZone"] == "UTC"
        assert got["enable_progress_bar"] == "false"
    finally:
        con.close()


def test_connect_without_settings_keeps_duckdb_limits(tmp_path):
    con = duck.connect(config={"threads": 1})
    try:
        got = _settings_of(con)
        assert got["threads"] == "1" and got["TimeZone"] == "UTC"
    finally:
        con.close()


def test_connect_to_a_file_read_only(settings, tmp_path):
    path = tmp_path / "w.duckdb"
    con = duck.connect(settings, path)
    con.execute("CREATE TABLE t AS SELECT 1 AS x")
    con.close()
    con = duck.connect(settings, path, read_only=True)
    try:
        assert con.execute("SELECT x FROM t").fetchone() == (1,)
        assert _settings_of(con)["threads"] == "3"
        with pytest.raises(duckdb.Error, match="(?i)read.only"):
            con.execute("INSERT INTO t VALUES (2)")
    finally:
        con.close()


def test_connect_loads_extensions_on_request():
    con = duck.connect(extensions=("json",))
    try:
        loaded = con.execute("SELECT loaded FROM duckdb_extensions() "
                             "WHERE extension_name = 'json'").fetchone()[0]
        assert loaded
    finally:
        con.close()
    with pytest.raises(ValueError):
        duck.connect(extensions=("json; DROP TABLE x",))


# --------------------------------------------------------------------------- the guard

# Renames that are not an atomic write (no new content is written): allowed where they are.
RENAMES_ALLOWED = {
    # the landed-state store retires a legacy state file (and its -wal/-shm) as <name>.imported
    "ingest/state.py",
}


def _calls(module: str, function: str) -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == function and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == module):
                found.append(f"{path.relative_to(PACKAGE).as_posix()}:{node.lineno}")
    return found


def test_duckdb_is_opened_only_by_core_duck():
    stray = [c for c in _calls("duckdb", "connect") if not c.startswith("core/duck.py:")]
    assert stray == [], ("open DuckDB with customer360.core.duck.connect, not duckdb.connect: "
                         + ", ".join(stray))


def test_files_are_replaced_only_by_core_files():
    stray = [c for c in _calls("os", "replace")
             if not c.startswith("core/files.py:") and c.split(":")[0] not in RENAMES_ALLOWED]
    assert stray == [], ("write files with customer360.core.files (atomic_write, atomic_path, "
                         "staged_files), not os.replace: " + ", ".join(stray))


def test_a_torn_last_line_is_skipped_by_readers_and_cut_by_the_next_writer(tmp_path, caplog):
    log = tmp_path / "audit" / "reconciliation.jsonl"
    files.append_jsonl(log, ['{"n": 1}', '{"n": 2}'])
    with open(log, "ab") as fh:  # a writer that died mid-append (a crash, a full disk)
        fh.write(b'{"n": 3, "sour')

    assert files.read_jsonl_lines(log) == ['{"n": 1}', '{"n": 2}']
    assert "torn last line of 14 bytes" in caplog.text

    files.append_jsonl(log, ['{"n": 4}'])
    assert log.read_text() == '{"n": 1}\n{"n": 2}\n{"n": 4}\n'
    assert (tmp_path / "audit" / "reconciliation.jsonl.torn").read_bytes() == b'{"n": 3, "sour\n'
    assert files.read_jsonl_lines(log) == ['{"n": 1}', '{"n": 2}', '{"n": 4}']


def test_a_log_that_is_one_torn_line_reads_empty_and_repairs(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_bytes(b'{"half": ' + b"x" * 9000)  # longer than one block read backwards

    assert files.read_jsonl_lines(log) == []
    files.append_jsonl(log, ['{"ok": true}'])
    assert log.read_text() == '{"ok": true}\n'


def test_the_reconciliation_log_survives_a_torn_write(settings):
    from customer360.ingest import raw_zone
    from customer360.quality.raw_gate import load_reconciliation

    def rec(batch: str) -> raw_zone.Reconciliation:
        return raw_zone.Reconciliation("web", "events", batch, "2026-03-10", None, 5, 5, 0)

    raw_zone.record_reconciliation(settings, rec("b1"))
    with open(settings.reconciliation_path, "ab") as fh:
        fh.write(b'{"source": "web", "entity": "ev')
    assert [r["batch_id"] for r in raw_zone.read_reconciliation(settings)] == ["b1"]
    assert len(load_reconciliation(settings)) == 1  # the gate reads on past the torn tail

    raw_zone.record_reconciliation(settings, rec("b2"))
    assert [r["batch_id"] for r in raw_zone.read_reconciliation(settings)] == ["b1", "b2"]
    assert len(load_reconciliation(settings)) == 1  # only the new whole line is new
