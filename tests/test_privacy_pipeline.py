"""Privacy end to end on one small simulated run (150 people x 21 days) with planted people:

- Zelda (A) in all three sources, in free text and in quarantined lines: the PII boundary
  holds, then ``c360 erase --email`` leaves no trace of her in any file under C360_HOME;
- Brook (B) withdrew marketing consent, Cyra (C) behaves like him but consents: B is in
  no audience export, C is;
- Dario (D) is archived in the CRM: the DAG's erasure task erases him, and again when an old
  file of his is delivered late.

The stages run in-process through ``customer360.pipeline.stages`` (the DAG's own functions). The
marts gate's PII scan runs alone here (tests of the other marts suites are theirs); the
``simulation/`` folder is left out of the searches: it stands for the sources' own systems
(the CRM's database, files not yet delivered, the ground truth), which erasure must not touch.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from customer360 import pipeline
from customer360.core import audit
from customer360.cli import app
from customer360.privacy import audience, erasure_log, pii, tasks
from customer360.privacy.duck_purge import free_blocks
from customer360.privacy.scan import scan_tree
from customer360.quality.gates import GateFailed, run_gate
from customer360.core.settings import get_settings
from tests.e2e import START, pipeline_env
from tests.landing_fixtures import read_reference_csv

pytestmark = pytest.mark.slow

DAYS = 21
LAST = START + dt.timedelta(days=DAYS - 1)

# What each planted person must not leave behind, in every spelling the sources used.
ZELDA = {"contact": "199901", "email": " Zelda.Quist@Example.org ", "phone": "+86 139-1234-5678",
         "loyalty": "ly 9999 0001", "anon": "anon-zq-0001", "first": "Zelda", "last": "Quist",
         "traces": ["zelda.quist@example.org", "+8613912345678", "13912345678", "139 1234 5678",
                    "139-1234-5678", "LY99990001", "ly 9999 0001", "Zelda Quist", "Quist", "Zelda",
                    "anon-zq-0001"]}
BROOK = {"contact": "199902", "email": "brook.nolan@example.net", "phone": "+8613800009902",
         "anon": "anon-bn-0002", "first": "Brook", "last": "Nolan"}
CYRA = {"contact": "199903", "email": "cyra.vance@example.net", "phone": "+8613800009903",
        "anon": "anon-cv-0003", "first": "Cyra", "last": "Vance"}
DARIO = {"contact": "199904", "email": "dario.fenn@example.com", "phone": "+852 9123 9904",
         "anon": "anon-df-0004", "first": "Dario", "last": "Fenn",
         "traces": ["dario.fenn@example.com", "+85291239904", "9123 9904", "Dario Fenn", "Fenn",
                    "anon-df-0004"]}


# --------------------------------------------------------------------------- planting

def _iso(day: dt.date, hh: int, mm: int = 0) -> str:
    return f"{day.isoformat()}T{hh:02d}:{mm:02d}:00.000Z"


def _contact(p: dict, created: str, updated: str, consent: str = "true", archived: bool = False,
             country: str = "CN") -> dict:
    """A contact version in the simulated CRM store (HubSpot's internal names, "" for empty)."""
    return {"id": p["contact"], "createdAt": created, "updatedAt": updated, "archived": archived,
            "archivedAt": updated if archived else None,
            "properties": {"email": p["email"], "firstname": p["first"], "lastname": p["last"],
                           "phone": p["phone"], "mobilephone": "", "gender": "", "date_of_birth": "1990-05-17",
                           "city": "Shanghai", "country": country, "loyalty_id": p.get("loyalty") or "",
                           "lifecyclestage": "customer", "marketing_consent": consent,
                           "signup_channel": "web", "hs_object_id": p["contact"], "createdate": created,
                           "lastmodifieddate": updated}}


def _crm_record(record_id: str, created: str, contact: str, **properties: str) -> dict:
    """A ticket or survey answer in the simulated CRM store: its contact is an association."""
    return {"id": record_id, "createdAt": created, "updatedAt": created, "archived": False, "archivedAt": None,
            "properties": {"hs_object_id": record_id, "createdate": created, "hs_lastmodifieddate": created,
                           **properties},
            "associations": {"contacts": [contact]}}


def _append_crm(settings, obj: str, versions: list[dict]) -> None:
    path = settings.simulation_dir / "crm" / f"{obj}.jsonl.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    lines += [json.dumps(v, ensure_ascii=False) for v in versions]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    tmp.replace(path)  # the mock CRM reloads a changed file


def _event(kind: str, anon: str, user: str | None, ts: str, name: str | None = None,
           properties: dict | None = None, traits: dict | None = None, locale: str = "zh-CN") -> str:
    return json.dumps({
        "messageId": str(uuid.uuid4()), "type": kind, "event": name, "anonymousId": anon,
        "userId": user, "timestamp": ts, "receivedAt": ts,
        "context": {"page": {"path": "/p/x", "referrer": None, "title": "Lumen", "url": "https://shop.lumen.example/p/x"},
                    "campaign": {"source": None, "medium": None, "name": None},
                    "userAgent": "Mozilla/5.0", "ip": "203.0.113.7", "locale": locale},
        "properties": properties, "traits": traits}, ensure_ascii=False)


def _web_file(settings, day: dt.date, name: str, lines: list[str]) -> None:
    folder = settings.landing / "web" / "events" / f"date={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))


def _sku(settings) -> tuple[str, str]:
    products = read_reference_csv(settings.landing / "pos" / "reference" / "products.csv")
    return products["sku"].iloc[0], products["list_price"].iloc[0]


def _pos_rows(settings, day: dt.date, rows: list[str]) -> None:
    """Add rows to a UTF-8 store's file of ``day`` (creating it if that store sent none)."""
    stores = read_reference_csv(settings.landing / "pos" / "reference" / "stores.csv")
    store = stores[stores["file_encoding"].str.upper() == "UTF-8"]["store_id"].iloc[0]
    folder = settings.landing / "pos" / f"date={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"store_{store}.csv"
    header = ("transaction_id,line_no,store_id,business_date,txn_ts,txn_type,loyalty_id,customer_phone,"
              "customer_email,sku,quantity,unit_price,discount_amount,line_amount,currency,payment_method")
    text = path.read_text(encoding="utf-8") if path.exists() else header + "\n"
    if not text.endswith("\n"):
        text += "\n"
    text += "\n".join(r.format(store=store, day=day.isoformat(), ymd=day.strftime("%Y%m%d")) for r in rows) + "\n"
    path.write_text(text, encoding="utf-8")


def plant(settings) -> None:
    created, day = _iso(START + dt.timedelta(days=1), 9), LAST - dt.timedelta(days=3)
    sku, price = _sku(settings)
    _append_crm(settings, "contacts", [
        _contact(ZELDA, created, created),
        _contact(BROOK, created, created, consent="true"),
        _contact(BROOK, created, _iso(LAST - dt.timedelta(days=5), 10), consent="false"),  # withdrawn
        _contact(CYRA, created, created, consent="true"),
        _contact(DARIO, created, created, country="HK"),
        _contact(DARIO, created, _iso(LAST - dt.timedelta(days=1), 11), country="HK", archived=True),
    ])
    _append_crm(settings, "tickets", [
        _crm_record("599901", _iso(day, 8), ZELDA["contact"], subject="Refund",
                    content="Please call me on 13912345678 or write to zelda.quist@example.org",
                    hs_pipeline="0", hs_pipeline_stage="1", hs_ticket_category="BILLING_ISSUE",
                    hs_ticket_priority="HIGH", closed_date=""),
        _crm_record("599902", _iso(day, 9), "100002", subject="Referral",
                    content="My friend Zelda Quist recommended your shop", hs_pipeline="0",
                    hs_pipeline_stage="1", hs_ticket_category="GENERAL_INQUIRY",
                    hs_ticket_priority="LOW", closed_date=""),
    ])
    _append_crm(settings, "feedback_submissions", [
        _crm_record("999901", _iso(day, 12), ZELDA["contact"], hs_survey_type="NPS", hs_value="9",
                    hs_content="Great service, thanks! Zelda", hs_submission_timestamp=_iso(day, 12))])
    order = {"order_id": "WO-ZQ-0001", "revenue": float(price), "currency": "CNY",
             "products": [{"sku": sku, "quantity": 1, "price": float(price)}]}
    lines = [
        _event("page", ZELDA["anon"], None, _iso(day, 10, 0)),
        _event("identify", ZELDA["anon"], ZELDA["contact"], _iso(day, 10, 1),
               traits={"email": "Zelda.Quist@Example.org", "phone": "+8613912345678"}),
        _event("track", ZELDA["anon"], ZELDA["contact"], _iso(day, 10, 5), "Order Completed", order),
        '{"messageId":"m-zq-bad","type":"identify","anonymousId":"anon-zq-0001","traits":{"email":"zelda.quist@example.org"',
    ]
    _web_file(settings, day, "part-0900.jsonl.gz", lines)
    later = LAST - dt.timedelta(days=2)
    _web_file(settings, later, "part-0900.jsonl.gz", [
        _event("page", p["anon"], p["contact"], _iso(later, hour, m))
        for p, hour in ((BROOK, 13), (CYRA, 14), (DARIO, 15)) for m in (0, 3, 9)])
    _pos_rows(settings, day, [
        "{store}-{ymd}-9901,1,{store},{day},{day} 11:00:00,SALE,ly 9999 0001,139 1234 5678, ZELDA.QUIST@example.org ,"
        f"{sku},1,{price},0.00,{price},CNY,CASH",
        "{store}-{ymd}-9901,2,{store},{day},{day} 11:00:00,SALE,ly 9999 0001,139 1234 5678, ZELDA.QUIST@example.org ,"
        f"{sku},1,{price},0.00,{price},CNY,CASH",
        "{store}-{ymd}-9902,1,{store},{day},{day} 11:30:00,SALE,,139 1234 5678,,"
        f"{sku},two,{price},0.00,{price},CNY,CASH",
        "{store}-{ymd}-9903,1,{store},{day},{day} 12:00:00,SALE,,+852 9123 9904,,"
        f"{sku},1,{price},0.00,{price},CNY,CASH",
    ])


def run_stages(settings, day: dt.date) -> None:
    for source in ("crm", "web", "pos"):
        pipeline.extract(source, day, settings)
    pipeline.gate("raw", day, "test-privacy", settings)
    for layer in ("staging", "intermediate", "marts"):
        pipeline.build_layer(layer, day, settings)
    pipeline.machine_learning(day, settings)
    pipeline.build_layer("customer_360", day, settings)
    pipeline.publish(day, settings)


def no_pii_suite_dir(tmp_path):
    """An expectations folder with only the marts PII scan (the suite as it ships)."""
    from customer360.quality.suites import expectations_dir

    folder = tmp_path / "expectations" / "marts"
    folder.mkdir(parents=True)
    shutil.copy(expectations_dir() / "marts" / "no_pii.yml", folder / "no_pii.yml")
    return folder.parent


def traces(settings, strings: list[str]) -> list[str]:
    hits = scan_tree(settings.home, strings, exclude=[settings.simulation_dir])
    return sorted({f"{h.path} [{h.where}] {strings[h.needle]!r}" for h in hits if h.needle >= 0})


def customer_of(settings, email: str) -> str | None:
    pseudo = pii.pseudonymizer(settings)
    con = duckdb.connect(str(settings.published_dir / "c360.duckdb"), read_only=True)
    try:
        row = con.execute("SELECT customer_id FROM marts.customer_360 WHERE email_hash = ?",
                          [pseudo.hash(pii.normalize_email(email))]).fetchone()
    finally:
        con.close()
    return row[0] if row else None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    home = tmp_path_factory.mktemp("c360-privacy")
    with pipeline_env(home, people=150, days=DAYS, seed=11) as (settings, server, last):
        assert last == LAST
        plant(settings)
        run_stages(settings, LAST)
        state = {"zelda": customer_of(settings, ZELDA["email"]),
                 "brook": customer_of(settings, BROOK["email"]),
                 "cyra": customer_of(settings, CYRA["email"])}
        yield settings, state


# --------------------------------------------------------------------------- 1. PII boundary

def test_published_marts_hold_keyed_hashes_and_no_raw_pii(run, tmp_path):
    settings, state = run
    assert state["zelda"] and state["brook"] and state["cyra"], state
    # the planted data did land (raw zone, quarantine): the searches below can fail
    assert traces(settings, ["zelda.quist@example.org"])
    raw_hits = scan_tree(settings.lake_raw, ["zelda.quist@example.org"])
    assert raw_hits and all(h.needle == 0 for h in raw_hits)
    quarantined = scan_tree(settings.quarantine, ["zelda.quist@example.org", "139 1234 5678"])
    assert {h.needle for h in quarantined} == {0, 1}
    # ... and nothing of it in what is published: hashes only
    published = scan_tree(settings.published_dir, ZELDA["traces"][:8] + DARIO["traces"][:3])
    assert [h for h in published if h.needle >= 0] == []
    con = duckdb.connect(str(settings.published_dir / "c360.duckdb"), read_only=True)
    row = con.execute("SELECT email_hash, phone_hash FROM marts.customer_360 WHERE customer_id = ?",
                      [state["zelda"]]).fetchone()
    con.close()
    pseudo = pii.pseudonymizer(settings)
    assert row == (pseudo.hash("zelda.quist@example.org"), pseudo.hash("+8613912345678"))
    # the gate's PII scan, as it ships, passes on the real marts
    result = run_gate(settings, "marts", LAST, run_id="test-no-pii",
                      expectations_dir=no_pii_suite_dir(tmp_path))
    assert result.ok and [s.suite for s in result.suites] == ["marts.no_pii"]


def test_pii_gate_stops_a_publish_when_a_mart_column_holds_an_email_or_phone(run, tmp_path, monkeypatch):
    settings, _ = run
    monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
    other = get_settings()
    other.warehouse_path.parent.mkdir(parents=True)
    shutil.copy(settings.warehouse_path, other.warehouse_path)
    suites = no_pii_suite_dir(tmp_path)
    con = duckdb.connect(str(other.warehouse_path))
    # a free-text column someone adds to a mart, and a phone typed into a list column
    con.execute("ALTER TABLE marts.fct_tickets ADD COLUMN note VARCHAR")
    con.execute("UPDATE marts.fct_tickets SET note = 'call back zelda.quist@example.org' "
                "WHERE ticket_id = (SELECT min(ticket_id) FROM marts.fct_tickets)")
    con.close()
    with pytest.raises(GateFailed) as err:
        run_gate(other, "marts", LAST, run_id="test-pii-leak", expectations_dir=suites)
    assert "marts.no_pii" in str(err.value) and "zelda.quist@example.org" not in str(err.value)
    con = duckdb.connect(str(other.warehouse_path))
    con.execute("UPDATE marts.fct_tickets SET note = NULL")
    con.execute("UPDATE marts.customer_360 SET crm_contact_ids = list_append(crm_contact_ids, '+86 139-1234-5678') "
                "WHERE customer_id = (SELECT min(customer_id) FROM marts.customer_360)")
    con.close()
    with pytest.raises(GateFailed):
        run_gate(other, "marts", LAST, run_id="test-pii-leak-2", expectations_dir=suites)


# --------------------------------------------------------------------------- 3. consent

def test_audiences_hold_consenting_customers_only(run):
    settings, state = run
    exports = audience.export_all(settings, platform_match_keys=True)  # the ad platform's keys too
    members = {name: pd.read_csv(e["csv"], dtype=str) for name, e in exports.items()}
    con = duckdb.connect(str(settings.published_dir / "c360.duckdb"), read_only=True)
    consent = dict(con.execute("SELECT customer_id, marketing_consent FROM marts.customer_360").fetchall())
    browsers = {r[0] for r in con.execute(
        f"SELECT customer_id FROM marts.customer_360 WHERE {audience.SEGMENTS['browsers'].condition}").fetchall()}
    con.close()
    # Brook and Cyra both qualify for the browsers segment; only consent tells them apart
    assert {state["brook"], state["cyra"]} <= browsers
    assert consent[state["brook"]] is False and consent[state["cyra"]] is True
    everyone = pd.concat(members.values())
    assert state["brook"] not in set(everyone["customer_id"])
    assert state["cyra"] in set(members["browsers"]["customer_id"])
    assert all(consent[c] is True for c in everyone["customer_id"])
    assert any(e["without_consent"] > 0 for e in exports.values())
    # the match keys a marketing tool uses, and the published hashes; never a plain value
    cyra = members["browsers"].set_index("customer_id").loc[state["cyra"]]
    assert cyra["email_sha256"] == hashlib.sha256(b"cyra.vance@example.net").hexdigest()
    assert cyra["phone_sha256"] == hashlib.sha256(b"+8613800009903").hexdigest()
    assert cyra["email_hash"] == pii.pseudonymizer(settings).hash("cyra.vance@example.net")
    with open(exports["browsers"]["json"], encoding="utf-8") as fh:
        doc = json.load(fh)
    assert doc["consent"] == audience.CONSENT and doc["count"] == len(members["browsers"])
    assert sorted(m["customer_id"] for m in doc["members"]) == sorted(members["browsers"]["customer_id"])
    leaked = scan_tree(settings.published_dir / "audiences",
                       ["cyra.vance@example.net", "13800009903", "brook.nolan@example.net", "Vance"])
    assert leaked == []
    assert "audience_export" in set(audit.read(settings, "events")["kind"])


# --------------------------------------------------------------------------- 2. erasure

def test_erase_removes_a_person_from_every_file_under_c360_home(run):
    settings, state = run
    zelda = state["zelda"]
    before = traces(settings, ZELDA["traces"])
    assert any(t.startswith("landing/") for t in before) and any(t.startswith("warehouse/") for t in before)
    # the real command line: dbt, run in the same process, records sys.argv in its artifacts
    c360 = Path(sys.executable).with_name("c360")
    proc = subprocess.run([str(c360), "erase", "--email", ZELDA["email"]], capture_output=True,
                          text=True, timeout=900)
    output = proc.stdout + proc.stderr
    # a republish the marts gate blocks is reported (the publication was purged in place)
    assert proc.returncode == 0 or ("GateFailed" in output and "erasure: purged" in output), output[-3000:]
    assert "verification: 0 trace(s)" in output, output[-3000:]
    left = traces(settings, ZELDA["traces"])
    assert left == []
    assert "zelda" not in output.lower() and "1234-5678" not in output and "13912345678" not in output
    # DuckDB files hold no freed block a deleted value could hide in
    assert free_blocks(settings.warehouse_path) == 0
    assert free_blocks(settings.published_dir / "c360.duckdb") == 0
    for db in (settings.warehouse_path, settings.published_dir / "c360.duckdb"):
        con = duckdb.connect(str(db), read_only=True)
        for schema, table in con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall():
            text = con.execute(f'SELECT count(*) FROM "{schema}"."{table}" t '
                               "WHERE contains(CAST(t AS VARCHAR), ?)", [zelda]).fetchone()[0]
            assert text == 0, f"{db.name} {schema}.{table} still names the erased customer"
        con.close()
    # the others are still there
    assert customer_of(settings, BROOK["email"]) == state["brook"]
    assert customer_of(settings, CYRA["email"]) == state["cyra"]
    # the erasure log: a token, times, counts; the chain holds
    log = erasure_log.erasures(settings)
    row = log[log["reason"] == "request"].iloc[-1]
    assert row["request_token"] == pii.pseudonymizer(settings).token("email:zelda.quist@example.org")
    purged = json.loads(row["purged_json"])
    assert purged["lake"]["raw_rows"]["crm/contacts"] == 1
    assert purged["lake"]["raw_rows"]["crm/tickets"] == 2          # her own and the mention
    assert purged["lake"]["raw_rows"]["pos/transactions"] == 2     # both lines of her purchase
    assert purged["lake"]["raw_rows"]["web/events"] == 3
    # the malformed POS row with her phone, the broken web line with her email
    assert purged["lake"]["quarantine_rows"]["pos/transactions"] >= 1
    assert purged["lake"]["quarantine_rows"]["web/events"] >= 1
    assert json.loads(row["keys_json"])["customers"] == 1
    # per batch, so that reconciliation (landed = rows in the batch file) can allow for it
    rows = erasure_log.erased_rows(settings)
    mine = rows[(rows["erasure_id"] == row["erasure_id"]) & (rows["zone"] == "raw")]
    assert int(mine["rows"].sum()) == sum(purged["lake"]["raw_rows"].values())
    # model artifacts keep parameters, never training rows
    assert [h for h in scan_tree(settings.artifacts / "models", [zelda]) if h.needle >= 0] == []
    assert CliRunner().invoke(app, ["audit", "verify"]).exit_code == 0


def test_a_rerun_of_the_days_an_erasure_purged_passes_the_raw_gate(run):
    """The erasure took rows out of batches after they were counted: the raw gate of a rerun
    (reconciliation: landed = rows in the batch file) allows for them instead of failing."""
    settings, _ = run
    erased = erasure_log.erased_rows(settings)
    batches = sorted(set(erased.loc[erased["zone"] == "raw", "batch_id"]))
    assert batches
    with audit.connect(settings, read_only=True) as con:
        dates = sorted({d for (d,) in con.execute(
            "SELECT DISTINCT load_date FROM audit.reconciliation WHERE list_contains(?, batch_id)",
            [batches]).fetchall()})
    assert dates
    for day in dates:
        result = run_gate(settings, "raw", day, run_id=f"test-rerun-after-erasure-{day}")
        rows = [r for s in result.suites for r in s.results
                if r.column == "landed_minus_batch_rows"]
        assert rows and all(r.success for r in rows), (day, rows)


def test_rewritten_landing_files_are_not_loaded_again(run):
    settings, _ = run
    for source in ("web", "pos"):
        assert pipeline.extract(source, LAST, settings)["landed"] == 0


def test_the_dag_task_erases_a_contact_the_crm_archived(run):
    settings, _ = run
    assert traces(settings, DARIO["traces"])  # before: in raw, landing, warehouse
    out = tasks.erasure(LAST, settings)
    assert "archived" in {e["reason"] for e in out["erasures"]}, out
    json.dumps(out)  # an XCom: JSON-able
    assert "dario" not in json.dumps(out).lower()
    assert traces(settings, DARIO["traces"]) == []
    assert tasks.compact(LAST, settings)["compacted"] is True
    assert tasks.compact(LAST, settings)["compacted"] is False  # nothing new to compact
    assert tasks.erasure(LAST, settings)["requests"] == 0       # idempotent


def test_old_records_of_an_erased_person_delivered_late_are_erased_again(run):
    settings, _ = run
    late = [_event("page", DARIO["anon"], DARIO["contact"], _iso(LAST - dt.timedelta(days=4), 16, m))
            for m in (0, 5)]
    _web_file(settings, LAST, "part-0950.jsonl.gz", late)
    assert pipeline.extract("web", LAST, settings)["landed"] == 2
    assert traces(settings, ["anon-df-0004"])
    out = tasks.erasure(LAST, settings)
    assert {e["reason"] for e in out["erasures"]} == {"returning"}, out
    assert traces(settings, DARIO["traces"]) == []


def test_no_secret_is_written_anywhere(run):
    settings, _ = run
    secrets = [get_settings().pii_key().decode(), os.environ["C360_CRM_TOKEN"]]
    hits = [h for h in scan_tree(settings.home, secrets) if h.needle >= 0]  # the sources too
    assert hits == [], [str(h) for h in hits]
