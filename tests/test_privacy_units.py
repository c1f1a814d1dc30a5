"""Privacy building blocks on small real files: pseudonyms, free-text matching, atomic
rewrites of Parquet and landing files, DuckDB compaction, the deep scan, the audit CLI, and
secrets kept out of error messages."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import hmac
import json
import sqlite3

import duckdb
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from customer360.core import audit
from customer360.cli import app
from customer360.privacy import pii
from customer360.privacy.duck_purge import compact, free_blocks
from customer360.privacy.lake_purge import mention_mask, rewrite_parquet, scrub_landing_file
from customer360.privacy.person import PersonKeys, load_key_tables
from customer360.privacy.scan import scan_tree
from customer360.core.settings import SettingsError, get_settings

KEY = "unit-test-pii-key-000000000000"
EMAIL = "zelda.quist@example.org"


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("C360_PII_KEY", KEY)
    monkeypatch.delenv("C360_LANDING", raising=False)
    return get_settings()


def person() -> PersonKeys:
    return PersonKeys(contact_ids={"199901"}, emails={EMAIL}, phones={"+8613912345678"},
                      loyalty_ids={"LY99990001"}, anonymous_ids={"anon-zq-7f3e"},
                      names={("Zelda", "Quist"), ("婷", "欧阳")})


# --------------------------------------------------------------------------- pseudonyms

def test_keyed_hash_is_the_warehouse_hash_and_tokens_differ(settings):
    pseudo = pii.pseudonymizer(settings)
    expected = hmac.new(KEY.encode(), EMAIL.encode(), hashlib.sha256).hexdigest()
    assert pseudo.hash(EMAIL) == expected
    con = duckdb.connect()
    pii.register(con, pseudo)
    assert con.execute("SELECT pii_hash(?)", [EMAIL]).fetchone()[0] == expected
    token = pseudo.token(f"email:{EMAIL}")
    assert token == hashlib.sha256(pseudo.hash(f"email:{EMAIL}").encode()).hexdigest()
    assert token not in (expected, pseudo.hash(f"email:{EMAIL}"))
    assert con.execute("SELECT pii_token(?)", [f"email:{EMAIL}"]).fetchone()[0] == token
    assert KEY not in repr(pseudo) and KEY not in repr(settings)


def test_pii_key_is_required_and_never_shown(settings, monkeypatch):
    monkeypatch.delenv("C360_PII_KEY")
    with pytest.raises(SettingsError, match="C360_PII_KEY is not set"):
        pii.pseudonymizer(get_settings())
    monkeypatch.setenv("C360_PII_KEY", "short-secret")
    with pytest.raises(SettingsError) as err:
        pii.pseudonymizer(get_settings())
    assert "short-secret" not in str(err.value)


def test_normalization_matches_the_warehouse_rules():
    assert pii.normalize_email("  Zelda.Quist@Example.ORG ") == EMAIL
    assert pii.normalize_email("n/a") is None
    assert pii.normalize_loyalty("ly 9999-0001") == "LY99990001"
    for typed in ("+86 139-1234-5678", "13912345678", "0086 139 1234 5678"):
        assert pii.normalize_key("phone", typed, "CN") == "+8613912345678"
    con = duckdb.connect()
    pii.register(con, pii.Pseudonymizer(KEY.encode()))
    con.execute("CREATE TABLE typed AS SELECT '  Zelda.Quist@Example.ORG ' AS e, 'ly 9999-0001' AS l, "
                "'139 1234 5678' AS p, ' cn ' AS c")
    row = con.execute(f"SELECT {pii.email_sql('e')}, {pii.loyalty_sql('l')}, {pii.phone_sql('p', 'c')} "
                      "FROM typed").fetchone()
    assert row == (EMAIL, "LY99990001", "+8613912345678")


# --------------------------------------------------------------------------- free text

MENTIONS = [
    "You can reach me at Zelda.Quist@EXAMPLE.org.",
    "call +86 139-1234-5678 after 6pm",
    "请联系我：13912345678。",
    '{"traits": {"phone": "(+86) 139 1234 5678"}}',
    "loyalty card ly 9999 0001 was scanned",
    "Dear Zelda Quist, thank you",
    "客户欧阳婷来电",
    "device anon-zq-7f3e logged in",
]
NOT_MENTIONS = [
    "zelda@example.org is someone else",
    "order total 13912.34 CNY on 2026-03-05",
    "phone +86 139-1234-5679",
    "Zelda wrote in, and so did Ms Quist",
    "LY99990002",
]


def test_needles_find_the_person_typed_any_way_in_sql_and_arrow_alike():
    needles = person().needles()
    texts = MENTIONS + NOT_MENTIONS
    con = duckdb.connect()
    con.register("texts", pa.table({"t": texts}))
    in_sql = [r[0] for r in con.execute(f"SELECT {needles.sql('t')} FROM texts").fetchall()]
    in_arrow = mention_mask(pa.array(texts), needles).to_pylist()
    expected = [True] * len(MENTIONS) + [False] * len(NOT_MENTIONS)
    assert in_sql == expected
    assert in_arrow == expected
    assert con.execute(f"SELECT {needles.sql('NULL::VARCHAR')}").fetchone()[0] is False
    assert EMAIL not in repr(needles) and EMAIL not in repr(person())


# --------------------------------------------------------------------------- files

def test_landing_gzip_scrub_blanks_lines_and_keeps_numbering(tmp_path):
    lines = [b'{"messageId":"m1","anonymousId":"a1"}',
             b'{"messageId":"m2","anonymousId":"a2"}',
             b'{"messageId":"m3","traits":{"email":" Zelda.Quist@Example.org "}}',
             b'{"messageId":"m4","anonymousId":"a4"}', b""]
    path = tmp_path / "part-0000.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines)))
    assert scrub_landing_file(path, {2}, person().needles())[0] == 2
    out = gzip.decompress(path.read_bytes()).split(b"\n")
    assert out == [lines[0], b"", b"", lines[3], b""]
    assert not list(tmp_path.glob(".*"))
    assert scrub_landing_file(path, {2}, person().needles())[0] == 0  # idempotent: nothing left


def test_landing_csv_scrub_in_gb18030_keeps_other_bytes(tmp_path):
    header = "transaction_id,line_no,store_id,customer_phone,payment_method"
    rows = ["T1,1,S1,,微信支付", "T2,1,S1,+86 139-1234-5678,支付宝", "T3,1,S1,13800000000,现金"]
    path = tmp_path / "store_S1.csv"
    path.write_bytes(("\n".join([header, *rows]) + "\n").encode("gb18030"))
    original = path.read_bytes().split(b"\n")
    assert scrub_landing_file(path, set(), person().needles())[0] == 1
    out = path.read_bytes().split(b"\n")
    assert out == [original[0], original[1], b"", original[3], b""]
    assert scrub_landing_file(path, {1}, person().needles())[0] == 0  # a header is never blanked


def test_parquet_rewrite_is_atomic_and_keeps_the_schema(tmp_path):
    folder = tmp_path / "raw" / "crm" / "contacts" / "load_date=2026-03-01"
    folder.mkdir(parents=True)
    path = folder / "crm-contacts-x.parquet"
    con = duckdb.connect()
    con.execute(f"""COPY (SELECT * FROM (VALUES ('199901', '{{"email":"{EMAIL}"}}', TRUE),
                                               ('100001', '{{"email":"a@b.cn"}}', FALSE)) v(id, properties, archived))
                    TO '{path}' (FORMAT parquet)""")
    schema_before = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}', hive_partitioning = false)").fetchall()
    load_key_tables(con, person())
    assert rewrite_parquet(con, path, "trim(id) IN (SELECT v FROM p_contacts)") == 1
    assert con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}', hive_partitioning = false)").fetchall() == schema_before
    assert con.execute(f"SELECT id FROM '{path}'").fetchall() == [("100001",)]
    assert rewrite_parquet(con, path, "trim(id) IN (SELECT v FROM p_contacts)") == 0
    assert [p.name for p in folder.iterdir()] == [path.name]


def test_a_deleted_value_stays_in_a_duckdb_file_until_it_is_compacted(tmp_path):
    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE other AS SELECT 'row-' || i AS s FROM range(1000) t(i)")
    con.execute(f"CREATE TABLE contacts AS SELECT * FROM (VALUES ('{EMAIL}'), ('someone@else.cn')) v(email)")
    con.execute("CHECKPOINT")
    con.execute("DELETE FROM contacts WHERE email = ?", [EMAIL])
    con.execute("CHECKPOINT")
    con.close()
    assert EMAIL.encode() in path.read_bytes()  # deleted, yet still on disk
    detail = compact(path)
    assert detail["compacted"]
    assert EMAIL.encode() not in path.read_bytes()
    assert free_blocks(path) == 0
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT email FROM contacts").fetchall() == [("someone@else.cn",)]
    assert con.execute("SELECT count(*) FROM other").fetchone()[0] == 1000
    con.close()


def test_deep_scan_sees_through_compression(tmp_path):
    con = duckdb.connect()
    # neither the smallest nor the largest value, which Parquet statistics keep in plain text
    con.execute(f"COPY (SELECT CASE WHEN i % 2 = 0 THEN '0-' ELSE '~-' END || i AS s FROM range(5000) t(i) UNION ALL SELECT '{EMAIL}') "
                f"TO '{tmp_path / 'a.parquet'}' (FORMAT parquet, COMPRESSION zstd)")
    assert EMAIL.encode() not in (tmp_path / "a.parquet").read_bytes()  # grep would miss it
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(f'{{"phone": "+8613912345678"}}'.encode()))
    db = sqlite3.connect(tmp_path / "c.db")
    db.execute("CREATE TABLE t (v TEXT)")
    db.execute("INSERT INTO t VALUES ('Zelda Quist')")
    db.commit()
    db.close()
    d = duckdb.connect(str(tmp_path / "d.duckdb"))
    d.execute("CREATE TABLE t AS SELECT 'row-' || i AS s FROM range(20000) t(i)")
    d.execute("INSERT INTO t VALUES ('loyalty LY99990001')")
    d.close()
    (tmp_path / "clean.txt").write_text("nothing personal here")
    hits = scan_tree(tmp_path, [EMAIL, "+8613912345678", "zelda quist", "LY99990001"])
    found = {(h.path, h.needle) for h in hits if h.needle >= 0}
    assert {("a.parquet", 0), ("b.jsonl.gz", 1), ("c.db", 2), ("d.duckdb", 3)} <= found
    assert not any(h.path == "clean.txt" for h in hits)


# --------------------------------------------------------------------------- CLI

def test_audit_verify_command_reports_an_edited_and_a_deleted_entry(settings):
    runner = CliRunner()
    for i in range(4):
        audit.log_event(settings, "publication", {"logical_date": f"2026-03-0{i + 1}", "tables": 12})
    ok = runner.invoke(app, ["audit", "verify"])
    assert ok.exit_code == 0 and "4 entries" in ok.output
    con = duckdb.connect(str(audit.audit_path(settings)))
    con.execute("UPDATE audit.audit.events SET payload = replace(payload, '12', '13') WHERE seq = 2")
    con.close()
    edited = runner.invoke(app, ["audit", "verify"])
    assert edited.exit_code == 1 and "entry 2" in edited.output and "modified" in edited.output
    con = duckdb.connect(str(audit.audit_path(settings)))
    con.execute("DELETE FROM audit.audit.events WHERE seq = 3")
    con.close()
    deleted = runner.invoke(app, ["audit", "verify"])
    assert deleted.exit_code == 1 and "missing" in deleted.output


def test_erase_of_an_unknown_person_is_logged_without_the_value(settings):
    runner = CliRunner()
    out = runner.invoke(app, ["erase", "--email", "-", "--no-verify"], input=f" {EMAIL.upper()} \n")
    assert out.exit_code == 4, out.output
    assert "no record carries the email" in out.output
    assert EMAIL not in out.output.lower()
    events = audit.read(settings, "events")
    assert list(events["kind"]) == ["erasure_refused"]
    payload = events["payload"].iloc[0]
    assert EMAIL not in payload.lower()
    assert pii.pseudonymizer(settings).token(f"email:{EMAIL}") in payload
    assert runner.invoke(app, ["erase", "--email", EMAIL, "--phone", "+8613912345678"]).exit_code == 2


def test_erase_refuses_while_a_pipeline_run_holds_the_home(settings):
    from customer360.pipeline.airflow import run_lock

    with run_lock(settings):
        out = CliRunner().invoke(app, ["erase", "--contact-id", "199901"])
    assert out.exit_code == 3 and "another pipeline run" in out.output


# --------------------------------------------------------------------------- secrets

def test_a_rejected_crm_token_is_not_in_the_error(settings, crm_server, write_crm_versions, monkeypatch):
    from customer360.ingest.extract import ExtractError
    from customer360.ingest.crm import extract_crm

    write_crm_versions(crm_server.data_dir, "contacts", [])
    wrong = "wrong-token-" + "9" * 24
    monkeypatch.setenv("C360_CRM_BASE_URL", crm_server.base_url)
    monkeypatch.setenv("C360_CRM_TOKEN", wrong)
    with pytest.raises(ExtractError) as err:
        extract_crm(get_settings(), dt.date(2026, 3, 1))
    assert "401" in str(err.value)
    assert wrong not in str(err.value) and crm_server.token not in str(err.value)


def test_an_unreachable_publish_database_error_holds_no_password(settings, monkeypatch):
    from customer360.serve.postgres import publish_postgres
    from tests.test_publish import make_warehouse
    from customer360.serve.publish import publish

    password = "pg-pass-" + "7" * 20
    monkeypatch.setenv("C360_PUBLISH_POSTGRES_DSN", f"postgresql://c360:{password}@127.0.0.1:9/c360")
    s = get_settings()
    assert password not in repr(s)
    make_warehouse(s.warehouse_path, 5, 1)
    publish(s, dt.date(2026, 1, 5))
    with pytest.raises(Exception) as err:
        publish_postgres(s)
    assert password not in str(err.value) and password not in repr(err.value)


# --------------------------------------------------------------------------- resolution

def _raw(settings, source, entity, rows):
    from customer360.ingest.raw_zone import new_batch_id, write_raw_batch

    table = pa.Table.from_pylist(rows)
    # the raw zone keeps every source value as VARCHAR, an all-null column included
    table = table.cast(pa.schema([pa.field(f.name, pa.string() if pa.types.is_null(f.type) else f.type)
                                  for f in table.schema]))
    write_raw_batch(settings, table, source=source, entity=entity,
                    load_date=dt.date(2026, 3, 1), batch_id=new_batch_id(source, entity))


def test_a_key_shared_by_many_contacts_is_nobody_in_particular(settings):
    import json

    from customer360.privacy.person import ErasureRefused, ErasureRequest, Resolver

    shop_phone = "+86 21 6000 0000"  # typed at the till for customers without a phone
    contacts = [("100001", " Zelda.Quist@Example.org ", shop_phone), ("100002", "b@x.cn", shop_phone),
                ("100003", "c@x.cn", shop_phone)]
    _raw(settings, "crm", "contacts", [
        {"id": cid, "createdAt": "2026-03-01T00:00:00Z", "updatedAt": "2026-03-01T00:00:00Z",
         "archived": False, "properties": json.dumps({"email": email, "phone": phone, "country": "CN",
                                                      "firstname": "F", "lastname": cid})}
        for cid, email, phone in contacts])
    pos_row = {c: None for c in ("transaction_id", "line_no", "store_id", "business_date", "txn_ts",
                                 "txn_type", "loyalty_id", "customer_phone", "customer_email", "sku",
                                 "quantity", "unit_price", "discount_amount", "line_amount", "currency",
                                 "payment_method", "_store_country")}
    _raw(settings, "pos", "transactions", [
        pos_row | {"transaction_id": "T-1", "store_id": "S1", "customer_phone": shop_phone, "_store_country": "CN"},
        pos_row | {"transaction_id": "T-2", "store_id": "S1", "customer_email": "ZELDA.QUIST@example.org",
                   "_store_country": "CN"}])
    con = duckdb.connect()
    pii.register(con, pii.pseudonymizer(settings))
    resolver = Resolver(settings, con)
    keys = resolver.resolve(ErasureRequest("email", EMAIL))
    assert keys.contact_ids == {"100001"} and keys.emails == {EMAIL}
    assert keys.phones == set()                      # the shop's number is not hers
    assert keys.pos_transactions == {("S1", "T-2")}  # nor the sale it was typed for
    with pytest.raises(ErasureRefused, match="shared by several CRM contacts"):
        resolver.resolve(ErasureRequest("phone", shop_phone))
    with pytest.raises(ErasureRefused, match="no record carries"):
        resolver.resolve(ErasureRequest("email", "nobody@example.org"))
    assert len(resolver.resolve(ErasureRequest("phone", shop_phone), force=True).contact_ids) == 3


def test_an_audience_leaves_out_whoever_denied_advertising_in_their_latest_segment_consent(settings):
    from customer360.privacy import audience

    settings.published_db.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(settings.published_db))
    con.execute("CREATE SCHEMA marts")
    con.execute("""CREATE TABLE marts.customer_360 AS SELECT * FROM (VALUES
        ('c-ok', true, []::VARCHAR[], 'h1'),
        ('c-analytics-only', true, ['analytics'], 'h2'),
        ('c-no-ads', true, ['advertising'], 'h3'),
        ('c-no-sharing', true, ['analytics', 'datasharing'], 'h4'),
        ('c-no-marketing', false, []::VARCHAR[], 'h5'))
        AS t(customer_id, marketing_consent, web_consent_denied, email_hash)""")
    con.execute("""ALTER TABLE marts.customer_360 ADD COLUMN phone_hash VARCHAR;
                   ALTER TABLE marts.customer_360 ADD COLUMN orders_count INTEGER DEFAULT 0;
                   ALTER TABLE marts.customer_360 ADD COLUMN web_sessions_30d INTEGER DEFAULT 2""")
    con.close()

    export = audience.export_audience(settings, "browsers")

    members = sorted(duckdb.sql(f"SELECT customer_id FROM read_csv('{export.csv_path}')").fetchall())
    assert members == [("c-analytics-only",), ("c-ok",)]
    assert (export.in_segment, export.without_consent, export.web_consent_denied) == (5, 1, 2)
    # by default the export carries keyed hashes only, never the bare SHA-256 of a value
    assert "email_sha256" not in export.columns and "phone_sha256" not in export.columns
    header = export.csv_path.read_text().splitlines()[0].split(",")
    assert "email_hash" in header and not any(c.endswith("_sha256") for c in header)
    assert "email_sha256" not in export.json_path.read_text()
    uploaded = audience.export_audience(settings, "browsers", platform_match_keys=True)
    assert {"email_sha256", "phone_sha256"} <= set(uploaded.columns)
    events = audit.read(settings, "events", "kind = 'audience_export'")
    assert [json.loads(p)["platform_match_keys"] for p in events["payload"]] == [False, True]


def test_an_audience_refuses_a_publication_without_segment_consent(settings):
    from customer360.privacy import audience

    settings.published_db.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(settings.published_db))
    con.execute("CREATE SCHEMA marts")
    con.execute("CREATE TABLE marts.customer_360 AS SELECT 'c1' AS customer_id, "
                "true AS marketing_consent, 'h' AS email_hash, NULL::VARCHAR AS phone_hash, "
                "0 AS orders_count, 1 AS web_sessions_30d")
    con.close()
    with pytest.raises(audience.AudienceError, match="web_consent_denied"):
        audience.export_audience(settings, "browsers")


def test_a_segment_alias_takes_the_aliased_device_into_the_erasure(settings):
    """A browser's events before login carry only its anonymousId; an alias call (userId =
    the contact, previousId = that device) is what ties them to the person."""
    from customer360.privacy.lake_purge import LakePurge, purge_lake
    from customer360.privacy.person import ErasureRequest, Resolver

    base = {c: None for c in ("messageId", "type", "event", "anonymousId", "userId", "timestamp",
                              "receivedAt", "previousId", "context", "properties", "traits")}
    _raw(settings, "web", "events", [
        base | {"messageId": "m1", "type": "page", "anonymousId": "dev-zq", "timestamp": "2026-03-01T09:00:00Z"},
        base | {"messageId": "m2", "type": "alias", "userId": "199901", "previousId": "dev-zq",
                "timestamp": "2026-03-01T09:05:00Z"},
        base | {"messageId": "m3", "type": "page", "anonymousId": "dev-other", "timestamp": "2026-03-01T09:06:00Z"}])
    con = duckdb.connect()
    pii.register(con, pii.pseudonymizer(settings))
    resolver = Resolver(settings, con)
    keys = resolver.resolve(ErasureRequest("contact", "199901"))
    assert keys.anonymous_ids == {"dev-zq"}

    load_key_tables(con, keys)
    report = purge_lake(settings, con, keys.needles(), LakePurge())
    assert report.raw_rows == {"web/events": 2}
    left = duckdb.sql(f"SELECT messageId FROM read_parquet('{settings.lake_raw}/web/events/*/*.parquet')").fetchall()
    assert left == [("m3",)]


def test_needles_past_one_alternation_are_all_searched():
    """Many people erased at once: their needles are split over several RE2 patterns (one
    pattern of thousands of literals is ten times slower), and the last one still matches."""
    import duckdb
    import pyarrow as pa

    from customer360.privacy.lake_purge import mention_mask
    from customer360.privacy.person import Needles

    emails = tuple(sorted(f"person{i:05d}@example.com" for i in range(Needles.ALTERNATION_SIZE * 2 + 5)))
    needles = Needles(text=emails, digits=("13800138000",), alnum=())
    assert len(needles.patterns()["text"]) == 3
    lines = pa.array([f"write to {emails[-1].upper()}", "call 138 0013 8000", "nobody@example.com", None])
    assert mention_mask(lines[:3], needles).to_pylist() == [True, True, False]  # lines of a file
    con = duckdb.connect()
    got = con.execute(f"SELECT {needles.sql('t')} FROM (SELECT unnest(?) AS t, generate_subscripts(?, 1) AS i) "
                      "ORDER BY i", [lines.to_pylist(), lines.to_pylist()]).fetchall()
    assert [g[0] for g in got] == [True, True, False, False]
