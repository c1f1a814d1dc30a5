"""Atomic publication: DuckDB + Parquet swap, readers during a publish, PostgreSQL roles."""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
import time

import duckdb
import psycopg
import pytest

from customer360.serve.publish import publish, table_checksum
from customer360.core.settings import get_settings
from tests.pg_server import postgres_server


def make_warehouse(path, customers: int, version: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA IF NOT EXISTS marts; CREATE SCHEMA IF NOT EXISTS ml; "
                "CREATE SCHEMA IF NOT EXISTS staging")
    con.execute(f"""CREATE OR REPLACE TABLE marts.customer_360 AS
        SELECT 'c_' || i AS customer_id, i * 10.5 + {version} AS net_revenue,
               DATE '2026-01-01' + i::INT AS first_order_date, i % 2 = 0 AS marketing_consent
        FROM range({customers}) t(i)""")
    con.execute(f"""CREATE OR REPLACE TABLE ml.ml_churn_scores AS
        SELECT 'c_' || i AS customer_id, (i % 10) / 10.0 AS churn_probability, 'v{version}' AS model_version
        FROM range({customers}) t(i)""")
    con.execute("CREATE OR REPLACE TABLE ml.ml_customer_features AS SELECT 1 AS x; CREATE OR REPLACE TABLE staging.stg_secret AS SELECT 'ann@mail.com' AS email")
    con.close()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("C360_HOME", str(tmp_path))
    monkeypatch.delenv("C360_PUBLISH_POSTGRES_DSN", raising=False)
    return get_settings()


def test_publish_copies_only_marts_and_ml(env):
    make_warehouse(env.warehouse_path, 50, 1)
    pub = publish(env, dt.date(2026, 1, 5))
    con = duckdb.connect(str(env.published_dir / "c360.duckdb"), read_only=True)
    schemas = {r[0] for r in con.execute("SELECT DISTINCT table_schema FROM information_schema.tables").fetchall()}
    assert schemas == {"marts", "ml", "meta"}
    assert con.execute("SELECT count(*) FROM marts.customer_360").fetchone()[0] == 50
    con.close()
    assert {p.name for p in (env.published_dir / "marts").glob("*.parquet")} == {
        "customer_360.parquet", "ml_churn_scores.parquet"}
    assert {f"{t.schema}.{t.name}": t.rows for t in pub.tables} == {
        "marts.customer_360": 50, "ml.ml_churn_scores": 50}
    assert not list(env.published_dir.rglob("*.tmp"))


def _reader(path: str, queue) -> None:
    """Holds the published file open read-only and keeps counting while a publish happens."""
    con = duckdb.connect(path, read_only=True)
    seen = set()
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        seen.add(con.execute("SELECT count(*) FROM marts.customer_360").fetchone()[0])
        time.sleep(0.01)
    con.close()
    queue.put(sorted(seen))


def test_reader_open_during_publish_sees_one_consistent_version(env):
    make_warehouse(env.warehouse_path, 100, 1)
    publish(env, dt.date(2026, 1, 5))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_reader, args=(str(env.published_dir / "c360.duckdb"), queue))
    proc.start()
    time.sleep(1.5)  # the reader has the old file open
    make_warehouse(env.warehouse_path, 20000, 2)
    publish(env, dt.date(2026, 1, 6))
    proc.join(30)
    assert queue.get(timeout=5) == [100]  # never a half state, never an error
    con = duckdb.connect(str(env.published_dir / "c360.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM marts.customer_360").fetchone()[0] == 20000
    con.close()


def test_failed_publish_leaves_previous_publication(env, monkeypatch):
    make_warehouse(env.warehouse_path, 30, 1)
    publish(env, dt.date(2026, 1, 5))
    before = (env.published_dir / "c360.duckdb").read_bytes()
    parquet_before = (env.published_dir / "marts" / "customer_360.parquet").read_bytes()
    make_warehouse(env.warehouse_path, 40, 2)
    import customer360.serve.publish as pubmod

    def boom(con, qualified):
        raise RuntimeError("disk full (injected)")
    monkeypatch.setattr(pubmod, "table_checksum", boom)
    with pytest.raises(RuntimeError, match="injected"):
        publish(env, dt.date(2026, 1, 6))
    assert (env.published_dir / "c360.duckdb").read_bytes() == before
    assert (env.published_dir / "marts" / "customer_360.parquet").read_bytes() == parquet_before
    assert not list(env.published_dir.rglob("*.tmp"))


@pytest.mark.postgres
def test_postgres_publish_and_analyst_role(env, monkeypatch):
    from customer360.serve.postgres import publish_postgres

    with postgres_server() as pg:
        monkeypatch.setenv("C360_PUBLISH_POSTGRES_DSN", pg["dsn"])
        settings = get_settings()
        make_warehouse(settings.warehouse_path, 25, 1)
        publish(settings, dt.date(2026, 1, 5))
        with psycopg.connect(pg["dsn"], autocommit=True) as admin:
            admin.execute("CREATE DATABASE other_team")
        out = publish_postgres(settings)
        assert out["tables"] == {"marts.customer_360": 25, "ml.ml_churn_scores": 25}
        with psycopg.connect(pg["dsn"], autocommit=True) as admin:
            admin.execute("CREATE SCHEMA restricted")
            admin.execute("CREATE TABLE restricted.contacts AS SELECT 'ann@mail.com' AS email")
            admin.execute("CREATE ROLE ana LOGIN PASSWORD 'ana-pw' IN ROLE c360_analyst")
            admin.execute("CREATE ROLE boss LOGIN PASSWORD 'boss-pw' IN ROLE c360_admin")
        analyst_dsn = f"postgresql://ana:ana-pw@127.0.0.1:{pg['port']}/postgres"
        with psycopg.connect(analyst_dsn, autocommit=True) as ana:
            assert ana.execute("SELECT count(*) FROM marts.customer_360").fetchone()[0] == 25
            assert ana.execute("SELECT max(churn_probability) FROM ml.ml_churn_scores").fetchone()[0] == 0.9
            for forbidden in ("SELECT * FROM restricted.contacts",
                              "INSERT INTO marts.customer_360 (customer_id) VALUES ('x')",
                              "DELETE FROM ml.ml_churn_scores",
                              "CREATE TABLE marts.mine (x int)",
                              "CREATE TABLE public.mine (x int)",
                              "CREATE TEMP TABLE scratch (x int)"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    ana.execute(forbidden)
        for db in ("other_team", "template1"):
            with pytest.raises(psycopg.OperationalError, match="permission denied|not currently accepting"):
                psycopg.connect(f"postgresql://ana:ana-pw@127.0.0.1:{pg['port']}/{db}").close()
        with psycopg.connect(f"postgresql://boss:boss-pw@127.0.0.1:{pg['port']}/postgres", autocommit=True) as boss:
            boss.execute("INSERT INTO marts.customer_360 (customer_id) VALUES ('added-by-admin')")
            assert boss.execute("SELECT count(*) FROM marts.customer_360").fetchone()[0] == 26
        # A second publish swaps the schemas in one transaction; grants survive the swap.
        make_warehouse(settings.warehouse_path, 40, 2)
        publish(settings, dt.date(2026, 1, 6))
        publish_postgres(settings)
        with psycopg.connect(analyst_dsn, autocommit=True) as ana:
            assert ana.execute("SELECT count(*) FROM marts.customer_360").fetchone()[0] == 40


def test_table_checksum_sees_every_column_and_ignores_row_order():
    con = duckdb.connect()
    con.execute("create table a as select * from (values (1, 'x', 2.50::decimal(18, 2)), "
                "(2, 'y', null)) t(id, name, amount)")
    con.execute("create table b as select * from a order by id desc")
    con.execute("create table c as select id, name, case when id = 2 then 0.01 end::decimal(18, 2) "
                "as amount from a")
    con.execute("create table d as select id, case when id = 1 then 'X' else name end as name, amount from a")
    sums = {t: table_checksum(con, t) for t in "abcd"}
    assert sums["a"] == sums["b"] and sums["a"][0] == 2
    assert sums["c"] != sums["a"] and sums["d"] != sums["a"] and sums["c"] != sums["d"]


@pytest.mark.postgres
def test_postgres_publish_waits_for_a_reader_lock_only_so_long_then_fails_clearly(env, monkeypatch):
    """An analyst's open transaction holds a lock on a published table: publish gives up
    after its lock timeout on each of its attempts, names the cause, and leaves the
    publication as it was; once the reader is done, it goes through."""
    from customer360.serve.postgres import PUBLISH_ATTEMPTS, PublishLockTimeout, publish_postgres

    with postgres_server() as pg:
        monkeypatch.setenv("C360_PUBLISH_POSTGRES_DSN", pg["dsn"])
        monkeypatch.setenv("C360_PUBLISH_LOCK_TIMEOUT_SECONDS", "0.3")
        settings = get_settings()
        make_warehouse(settings.warehouse_path, 25, 1)
        publish(settings, dt.date(2026, 1, 5))
        publish_postgres(settings)
        make_warehouse(settings.warehouse_path, 40, 2)
        publish(settings, dt.date(2026, 1, 6))

        reader = psycopg.connect(pg["dsn"])  # a BI tool's long transaction
        assert reader.execute("SELECT count(*) FROM marts.customer_360").fetchone()[0] == 25
        started = time.monotonic()
        with pytest.raises(PublishLockTimeout, match=f"after {PUBLISH_ATTEMPTS} attempts.*0.3s"):
            publish_postgres(settings)
        assert time.monotonic() - started < 30
        reader.rollback()
        with psycopg.connect(pg["dsn"], autocommit=True) as check:
            assert check.execute("SELECT count(*) FROM marts.customer_360").fetchone()[0] == 25
            assert check.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE '%%__next'"
                                 ).fetchone()[0] == 0
        publish_postgres(settings)
        with psycopg.connect(pg["dsn"], autocommit=True) as check:
            assert check.execute("SELECT count(*) FROM marts.customer_360").fetchone()[0] == 40
        reader.close()


# --------------------------------------------------------------------------- a set, atomically

def _read_one_version(settings) -> dict:
    """What a reader that wants one whole publication does: resolve ``current`` once, then
    read the database, the Parquet copies and publication.json under that folder."""
    import json

    from customer360.serve.publish import current_version_dir

    folder = current_version_dir(settings)
    con = duckdb.connect(str(folder / "c360.duckdb"), read_only=True)
    try:
        db_rows = con.execute("SELECT count(*) FROM marts.customer_360").fetchone()[0]
        db_tables = {r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema IN ('marts', 'ml')").fetchall()}
        pq_rows = con.execute("SELECT count(*) FROM read_parquet(?)",
                              [str(folder / "marts" / "customer_360.parquet")]).fetchone()[0]
    finally:
        con.close()
    pub = json.loads((folder / "publication.json").read_text())
    return {"version": folder.name, "db_rows": db_rows, "parquet_rows": pq_rows,
            "json_rows": {t["name"]: t["rows"] for t in pub["tables"]}["customer_360"],
            "json_version": pub["version"], "db_tables": db_tables,
            "parquet_tables": {p.stem for p in (folder / "marts").glob("*.parquet")}}


def _whole(seen: dict, rows: int) -> bool:
    return (seen["db_rows"] == seen["parquet_rows"] == seen["json_rows"] == rows
            and seen["json_version"] == seen["version"] and seen["db_tables"] == seen["parquet_tables"])


def test_a_publish_killed_between_its_swaps_leaves_the_old_set_whole(env, monkeypatch):
    """The new version is written in full and renamed to v<N>, then the publish dies right
    before the pointer swap: readers (by the stable paths or by current/) see the old set."""
    import customer360.serve.publish as pubmod

    make_warehouse(env.warehouse_path, 30, 1)
    publish(env, dt.date(2026, 1, 5))
    old = _read_one_version(env)
    make_warehouse(env.warehouse_path, 45, 2)

    def killed(settings, name):
        assert (settings.published_dir / name / "c360.duckdb").exists()  # written in full
        raise KeyboardInterrupt("killed between the swaps (injected)")
    monkeypatch.setattr(pubmod, "_swap_current", killed)
    with pytest.raises(KeyboardInterrupt):
        publish(env, dt.date(2026, 1, 6))
    assert _read_one_version(env) == old and _whole(old, 30)
    con = duckdb.connect(str(env.published_db), read_only=True)  # the stable path BI tools use
    assert con.execute("SELECT count(*) FROM marts.customer_360").fetchone()[0] == 30
    con.close()
    assert pubmod.versions(env) == [1, 2]  # v2 was written, never made current

    monkeypatch.undo()
    (env.published_dir / "v000002" / "orphan-marker").write_text("x")
    publish(env, dt.date(2026, 1, 6))  # the next publish removes the orphan and writes v2 anew
    new = _read_one_version(env)
    assert new["version"] == "v000002" and _whole(new, 45)
    assert not (env.published_dir / "v000002" / "orphan-marker").exists()
    assert pubmod.versions(env) == [1, 2]


def test_a_publish_that_fails_mid_write_leaves_no_staging_behind(env, monkeypatch):
    import customer360.serve.publish as pubmod

    make_warehouse(env.warehouse_path, 30, 1)
    publish(env, dt.date(2026, 1, 5))
    old = _read_one_version(env)
    calls = []
    real = pubmod.table_checksum

    def second_fails(con, qualified):
        calls.append(qualified)
        if len(calls) == 2:  # the first table's Parquet is written already
            raise OSError(28, "No space left on device (injected)")
        return real(con, qualified)
    monkeypatch.setattr(pubmod, "table_checksum", second_fails)
    with pytest.raises(OSError, match="injected"):
        publish(env, dt.date(2026, 1, 6))
    assert _read_one_version(env) == old
    assert [p.name for p in env.published_dir.iterdir() if p.name.startswith(".")] == []
    assert pubmod.versions(env) == [1]


def test_leftovers_of_a_killed_publish_are_removed(env):
    """A SIGKILL leaves a staging folder and temporary files (no finally ran): the next
    publish, under the run lock, removes them."""
    make_warehouse(env.warehouse_path, 10, 1)
    publish(env, dt.date(2026, 1, 5))
    pub = env.published_dir
    (pub / ".v000002.k1ll3d.tmp" / "marts").mkdir(parents=True)
    (pub / ".v000002.k1ll3d.tmp" / "c360.duckdb").write_bytes(b"half")
    (pub / ".c360.duckdb.abc123.tmp").write_bytes(b"half")
    (pub / ".c360.duckdb.abc123.tmp.wal").write_bytes(b"wal")
    (pub / ".current.x1y2.link").symlink_to("v000001")
    publish(env, dt.date(2026, 1, 6))
    assert sorted(p.name for p in pub.iterdir() if p.name.startswith(".")) == []
    assert not list(pub.rglob("*.tmp"))


def test_a_dropped_table_leaves_no_parquet_and_old_versions_are_pruned(env, monkeypatch):
    monkeypatch.setenv("C360_PUBLISH_KEEP_VERSIONS", "2")
    env = get_settings()
    make_warehouse(env.warehouse_path, 10, 1)
    publish(env, dt.date(2026, 1, 5))
    assert (env.published_marts_dir / "ml_churn_scores.parquet").exists()
    con = duckdb.connect(str(env.warehouse_path))
    con.execute("DROP TABLE ml.ml_churn_scores")
    con.close()
    publish(env, dt.date(2026, 1, 6))
    assert sorted(p.name for p in env.published_marts_dir.iterdir()) == ["customer_360.parquet"]
    seen = _read_one_version(env)
    assert seen["db_tables"] == seen["parquet_tables"] == {"customer_360"}
    publish(env, dt.date(2026, 1, 7))
    import customer360.serve.publish as pubmod

    assert pubmod.versions(env) == [2, 3]  # keep 2: the current one and the one before


def test_a_home_published_by_an_older_version_moves_to_the_versioned_layout(env):
    """Real files at the stable paths (the layout before versions) become links."""
    pub = env.published_dir
    (pub / "marts").mkdir(parents=True)
    (pub / "marts" / "customer_360.parquet").write_bytes(b"old")
    (pub / "c360.duckdb").write_bytes(b"old")
    (pub / "publication.json").write_text("{}")
    make_warehouse(env.warehouse_path, 12, 1)
    publish(env, dt.date(2026, 1, 5))
    for name in ("c360.duckdb", "marts", "publication.json"):
        assert (pub / name).is_symlink() and os.readlink(pub / name) == f"current/{name}"
    assert os.readlink(pub / "current") == "v000001"
    assert _whole(_read_one_version(env), 12)
    assert not [p.name for p in pub.iterdir() if p.name.startswith(".")]


def _version_reader(home: str, queue) -> None:
    os.environ["C360_HOME"] = home
    settings = get_settings()
    seen, deadline = [_read_one_version(settings)], time.monotonic() + 8
    queue.put("reading")
    while time.monotonic() < deadline and len(seen) < 400:
        try:
            seen.append(_read_one_version(settings))
        except FileNotFoundError:  # a version pruned between resolving and opening: retry
            continue
    queue.put(seen)


def test_readers_during_publishes_always_see_one_whole_version(env):
    make_warehouse(env.warehouse_path, 10, 1)
    publish(env, dt.date(2026, 1, 5))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_version_reader, args=(str(env.home), queue))
    proc.start()
    assert queue.get(timeout=60) == "reading"
    for i, rows in enumerate((200, 30, 4000, 10), start=2):
        make_warehouse(env.warehouse_path, rows, i)
        publish(env, dt.date(2026, 1, 5 + i))
    seen = queue.get(timeout=60)
    proc.join(30)
    rows_of = {"v000001": 10, "v000002": 200, "v000003": 30, "v000004": 4000, "v000005": 10}
    assert all(_whole(s, rows_of[s["version"]]) for s in seen)
    assert len({s["version"] for s in seen}) > 1  # it did read while the versions changed


@pytest.mark.postgres
def test_the_compose_publisher_role_publishes_without_being_a_superuser(env, monkeypatch, tmp_path):
    """deploy/publish-db-init.sh run as docker's entrypoint would on a fresh server; then the
    pipeline publishes as c360_publisher, a role that is no superuser and cannot create roles,
    and analysts read what it published and nothing else."""
    import subprocess

    from customer360.core.settings import REPO_ROOT
    from customer360.serve.postgres import publish_postgres
    from tests.pg_server import _pg_bin

    with postgres_server() as pg:
        with psycopg.connect(pg["dsn"], autocommit=True) as admin:
            admin.execute("CREATE DATABASE c360")
        env_vars = {**os.environ, "PATH": f"{_pg_bin()}:{os.environ['PATH']}",
                    "PGHOST": "127.0.0.1", "PGPORT": str(pg["port"]), "PGPASSWORD": pg["password"],
                    "POSTGRES_USER": "c360_super", "POSTGRES_DB": "c360",
                    "POSTGRES_PASSWORD": pg["password"], "PUBLISH_DB_PASSWORD": "publisher-pw-4711"}
        script = REPO_ROOT / "deploy" / "publish-db-init.sh"
        refused = subprocess.run(["bash", str(script)], env={**env_vars, "PUBLISH_DB_PASSWORD": "change-me"},
                                 capture_output=True, text=True)
        assert refused.returncode == 1 and "placeholder" in refused.stderr
        subprocess.run(["bash", str(script)], env=env_vars, check=True, capture_output=True, text=True)

        dsn = f"postgresql://c360_publisher:publisher-pw-4711@127.0.0.1:{pg['port']}/c360"
        monkeypatch.setenv("C360_PUBLISH_POSTGRES_DSN", dsn)
        settings = get_settings()
        make_warehouse(settings.warehouse_path, 25, 1)
        publish(settings, dt.date(2026, 1, 5))
        assert publish_postgres(settings)["tables"]["marts.customer_360"] == 25
        make_warehouse(settings.warehouse_path, 30, 2)
        publish(settings, dt.date(2026, 1, 6))
        assert publish_postgres(settings)["tables"]["marts.customer_360"] == 30  # the swap, again
        with psycopg.connect(dsn, autocommit=True) as pub:
            assert pub.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                               "WHERE rolname = current_user").fetchone() == (False, False, False)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                pub.execute("CREATE ROLE sneaky LOGIN")
        with psycopg.connect(pg["dsn"].rsplit("/", 1)[0] + "/c360", autocommit=True) as admin:
            admin.execute("CREATE ROLE ana LOGIN PASSWORD 'ana-pw' IN ROLE c360_analyst")
        with psycopg.connect(f"postgresql://ana:ana-pw@127.0.0.1:{pg['port']}/c360", autocommit=True) as ana:
            assert ana.execute("SELECT count(*) FROM marts.customer_360").fetchone()[0] == 30
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                ana.execute("CREATE TEMP TABLE scratch (x int)")
        for db in ("postgres", "template1"):
            with pytest.raises(psycopg.OperationalError, match="permission denied"):
                psycopg.connect(f"postgresql://ana:ana-pw@127.0.0.1:{pg['port']}/{db}").close()


def _inode(path) -> int:
    return os.stat(path).st_ino


def _db_rows(folder, qualified: str) -> list:
    con = duckdb.connect(str(folder / "c360.duckdb"), read_only=True)
    try:
        return con.execute(f"SELECT * FROM {qualified} ORDER BY ALL").fetchall()
    finally:
        con.close()


def test_only_changed_tables_get_a_new_parquet_file_the_others_are_hard_linked(env):
    import customer360.serve.publish as pubmod

    make_warehouse(env.warehouse_path, 40, 1)
    first = publish(env, dt.date(2026, 1, 5))
    v1 = pubmod.current_version_dir(env)
    assert not any(t.reused for t in first.tables)
    # the warehouse changes only ml_churn_scores
    con = duckdb.connect(str(env.warehouse_path))
    con.execute("UPDATE ml.ml_churn_scores SET model_version = 'v9' WHERE customer_id = 'c_3'")
    con.close()
    second = publish(env, dt.date(2026, 1, 6))
    v2 = pubmod.current_version_dir(env)
    assert v2 != v1
    assert {t.name: t.reused for t in second.tables} == {"customer_360": True, "ml_churn_scores": False}
    assert _inode(v2 / "marts" / "customer_360.parquet") == _inode(v1 / "marts" / "customer_360.parquet")
    assert _inode(v2 / "marts" / "ml_churn_scores.parquet") != _inode(v1 / "marts" / "ml_churn_scores.parquet")
    # the new version holds the new rows, in its database and its Parquet copy, and the old one is as it was
    assert ("c_3", 0.3, "v9") in _db_rows(v2, "ml.ml_churn_scores")
    assert ("c_3", 0.3, "v1") in _db_rows(v1, "ml.ml_churn_scores")
    pq = duckdb.connect().execute("SELECT model_version FROM read_parquet(?) WHERE customer_id = 'c_3'",
                                  [str(v2 / "marts" / "ml_churn_scores.parquet")]).fetchall()
    assert pq == [("v9",)]
    assert _db_rows(v2, "marts.customer_360") == _db_rows(v1, "marts.customer_360")
    assert _db_rows(v2, "meta.publication")[0][2] == "v000002"
    assert _whole(_read_one_version(env), 40)
    # the database is made new: no freed block in which a replaced row could survive
    con = duckdb.connect(str(v2 / "c360.duckdb"), read_only=True)
    assert con.execute("SELECT free_blocks FROM pragma_database_size()").fetchone()[0] == 0
    con.close()


def test_a_renamed_column_with_the_same_values_is_not_reused(env):
    make_warehouse(env.warehouse_path, 10, 1)
    publish(env, dt.date(2026, 1, 5))
    con = duckdb.connect(str(env.warehouse_path))
    con.execute("ALTER TABLE marts.customer_360 RENAME COLUMN net_revenue TO net_revenue_cny")
    con.close()
    pub = publish(env, dt.date(2026, 1, 6))
    assert {t.name: t.reused for t in pub.tables} == {"customer_360": False, "ml_churn_scores": True}
    import customer360.serve.publish as pubmod

    con = duckdb.connect(str(pubmod.current_version_dir(env) / "c360.duckdb"), read_only=True)
    cols = [r[0] for r in con.execute("DESCRIBE marts.customer_360").fetchall()]
    con.close()
    assert "net_revenue_cny" in cols and "net_revenue" not in cols


def test_a_table_dropped_from_the_warehouse_leaves_the_next_version(env):
    make_warehouse(env.warehouse_path, 10, 1)
    publish(env, dt.date(2026, 1, 5))
    con = duckdb.connect(str(env.warehouse_path))
    con.execute("DROP TABLE ml.ml_churn_scores")
    con.close()
    pub = publish(env, dt.date(2026, 1, 6))
    assert [(t.name, t.reused) for t in pub.tables] == [("customer_360", True)]
    seen = _read_one_version(env)
    assert seen["db_tables"] == seen["parquet_tables"] == {"customer_360"}


def test_a_publication_an_erasure_rewrote_is_not_reused(env):
    """A purged version keeps the fingerprints of what it was made from; they no longer
    describe its files, so the next publish writes every table."""
    import json

    import customer360.serve.publish as pubmod

    make_warehouse(env.warehouse_path, 10, 1)
    publish(env, dt.date(2026, 1, 5))
    meta_path = pubmod.current_version_dir(env) / "publication.json"
    meta = json.loads(meta_path.read_text())
    meta["purged_at"] = "2026-01-05T12:00:00+00:00"
    meta_path.write_text(json.dumps(meta))
    pub = publish(env, dt.date(2026, 1, 6))
    assert not any(t.reused for t in pub.tables)
