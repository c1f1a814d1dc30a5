"""The demo source simulator: determinism, the docs/sources.md layout, every messy case behind its
knob (present when on, absent at 0, checked from the files), ground truth coverage, delivery
replay, and that the landing validator finds exactly the planted defects."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import re
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import phonenumbers
import pyarrow.parquet as pq
import pytest

from customer360.demo.sim_behaviour import hazard
from customer360.demo.simulator import SimulationConfig, deliver, simulate

START = dt.date(2026, 3, 2)
PEOPLE, DAYS = 600, 14
POS_COLUMNS = ["transaction_id", "line_no", "store_id", "business_date", "txn_ts", "txn_type",
               "loyalty_id", "customer_phone", "customer_email", "sku", "quantity", "unit_price",
               "discount_amount", "line_amount", "currency", "payment_method"]
CONTACT_PROPS = {"email", "firstname", "lastname", "phone", "gender", "date_of_birth", "city",
                 "country", "loyalty_id", "lifecyclestage", "marketing_consent", "signup_channel"}
TICKET_PROPS = {"contact_id", "subject", "content", "category", "priority", "status", "closed_at"}
FEEDBACK_PROPS = {"contact_id", "survey_type", "score", "comment", "submitted_at"}
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
CJK = re.compile(r"[\u4e00-\u9fff]")
CURRENCY = {"CN": "CNY", "HK": "HKD", "JP": "JPY", "GB": "GBP", "US": "USD"}
# High rates so each case shows up in a small run.
MESSY = dict(dup_contact_rate=0.15, archived_contact_rate=0.05, shared_device_rate=0.08,
             messy_key_format_rate=0.5, walkin_rate=0.3, dup_message_rate=0.03,
             late_event_rate=0.05, late_file_rate=0.4, corrupt_files=1,
             corrected_pos_file_rate=0.3, gb18030_store_share=0.5, return_rate=0.3, void_rate=0.1,
             malformed_row_rate=0.02, chinese_comment_share=0.5, pii_in_ticket_rate=0.5,
             consent_change_rate=0.1, existing_customer_share=0.5, web_usd_share=0.3,
             store_timezones=5)


@dataclass
class Run:
    cfg: SimulationConfig
    landing: Path
    sim_dir: Path
    counts: dict

    @cached_property
    def stores(self) -> dict[str, dict]:
        with open(self.landing / "pos/reference/stores.csv", encoding="utf-8", newline="") as fh:
            return {r["store_id"]: r for r in csv.DictReader(fh)}

    @cached_property
    def web(self) -> tuple[list[tuple[str, int, dict | None]], set[str]]:
        """(file, line, event or None when the line is not JSON), and the corrupt files."""
        rows, corrupt = [], set()
        for path in sorted((self.landing / "web/events").rglob("*.jsonl.gz")):
            rel = path.relative_to(self.landing).as_posix()
            try:
                text = gzip.decompress(path.read_bytes()).decode("utf-8")
            except (EOFError, OSError, zlib.error):
                corrupt.add(rel)
                continue
            for i, line in enumerate(text.splitlines(), start=1):
                try:
                    rows.append((rel, i, json.loads(line)))
                except json.JSONDecodeError:
                    rows.append((rel, i, None))
        return rows, corrupt

    @property
    def events(self) -> list[tuple[str, dict]]:
        return [(f, e) for f, _, e in self.web[0] if e is not None]

    @cached_property
    def pos(self) -> list[tuple[str, int, list[str]]]:
        """(file, physical line, fields) of every data row, decoded with the store's encoding."""
        out = []
        for path in sorted((self.landing / "pos").glob("date=*/store_*.csv")):
            store = path.stem.removeprefix("store_")
            text = path.read_bytes().decode(self.stores[store]["file_encoding"].lower())
            rows = list(csv.reader(io.StringIO(text, newline="")))
            assert rows[0] == POS_COLUMNS, path
            rel = path.relative_to(self.landing).as_posix()
            out += [(rel, i, r) for i, r in enumerate(rows[1:], start=2)]
        return out

    @property
    def good_pos(self) -> list[dict]:
        return [dict(zip(POS_COLUMNS, r)) | {"_file": f} for f, _, r in self.pos
                if not _pos_defect(r)]

    def crm(self, obj: str) -> list[dict]:
        with gzip.open(self.sim_dir / "crm" / f"{obj}.jsonl.gz", "rt", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]

    @cached_property
    def keys(self):
        return pq.read_table(self.sim_dir / "ground_truth/keys.parquet").to_pandas()

    def person_of(self, key_type: str) -> dict:
        k = self.keys[self.keys.key_type == key_type]
        return dict(zip(k.key_value, k.person_id))

    @cached_property
    def deliveries(self) -> list[dict]:
        with open(self.sim_dir / "deliveries.jsonl", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]


def run_sim(root: Path, people: int = PEOPLE, days: int = DAYS, seed: int = 7,
            deliver_all: bool = True, **knobs) -> Run:
    cfg = SimulationConfig(people=people, days=days, start=START, seed=seed, **knobs)
    summary = simulate(cfg, landing=root / "landing", sim_dir=root / "simulation",
                       progress=False, deliver_all=deliver_all)
    return Run(cfg, root / "landing", root / "simulation", summary.counts)


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> Run:
    return run_sim(tmp_path_factory.mktemp("messy"), **MESSY)


def _pos_defect(r: list[str]) -> str | None:
    if len(r) != len(POS_COLUMNS):
        return "field count"
    if not re.fullmatch(r"-?\d+", r[10]):
        return "quantity"
    try:
        dt.datetime.strptime(r[4], "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return "timestamp"
    return None


def _e164(raw: str, region: str) -> str:
    return phonenumbers.format_number(phonenumbers.parse(raw, region),
                                      phonenumbers.PhoneNumberFormat.E164)


def _latest(records: list[dict]) -> dict[str, dict]:
    out = {}
    for r in records:
        out[r["id"]] = r
    return out


# --- detectors: each counts one messy case from the files ------------------------------------

def n_dup_contacts(run: Run) -> int:
    """Pairs of contact ids sharing an email (after lower/strip) or a phone (E.164)."""
    by_key = defaultdict(set)
    for cid, r in _latest(run.crm("contacts")).items():
        p = r["properties"]
        if p["email"]:
            by_key["e:" + p["email"].strip().lower()].add(cid)
        if p["phone"]:
            by_key["p:" + _e164(p["phone"], p["country"])].add(cid)
    return sum(len(ids) - 1 for ids in by_key.values())


def n_archived(run: Run) -> int:
    return sum(r["archived"] for r in run.crm("contacts"))


def n_shared_devices(run: Run) -> int:
    person = run.person_of("web_user_id")
    people = defaultdict(set)
    for _, e in run.events:
        if e["userId"]:
            people[e["anonymousId"]].add(person[e["userId"]])
    return sum(len(p) > 1 for p in people.values())


def n_messy_keys(run: Run) -> int:
    n = 0
    for r in run.good_pos:
        n += bool(r["loyalty_id"]) and not re.fullmatch(r"LY\d{8}", r["loyalty_id"])
        n += bool(r["customer_phone"]) and not re.fullmatch(r"\+\d{8,15}", r["customer_phone"])
        n += bool(r["customer_email"]) and r["customer_email"] != r["customer_email"].strip().lower()
    for _, e in run.events:
        if e["type"] == "identify":
            t = e["traits"]
            n += bool(t["email"]) and t["email"] != t["email"].strip().lower()
            n += bool(t["phone"]) and not re.fullmatch(r"\+\d{8,15}", t["phone"])
    return n


def n_walkins(run: Run) -> int:
    return sum(r["txn_type"] == "SALE" and not (r["loyalty_id"] or r["customer_phone"] or r["customer_email"])
               for r in run.good_pos)


def n_dup_messages(run: Run) -> int:
    return sum(c - 1 for c in Counter(e["messageId"] for _, e in run.events).values() if c > 1)


def n_late_events(run: Run) -> int:
    return sum(e["timestamp"][:10] < f.split("date=")[1][:10] for f, e in run.events)


def n_late_files(run: Run) -> int:
    return sum(d["path"].startswith("web/") and d["available_from"] > d["path"].split("date=")[1][:10]
               for d in run.deliveries)


def n_corrupt(run: Run) -> int:
    return len(run.web[1])


def n_corrected(run: Run) -> int:
    return sum(d["path"].startswith("pos/date=") and d["version"] > 1 for d in run.deliveries)


def n_gb18030_files(run: Run) -> int:
    n = 0
    for path in (run.landing / "pos").glob("date=*/store_*.csv"):
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            assert CJK.search(data.decode("gb18030"))
            n += 1
    return n


def n_returns(run: Run) -> int:
    return sum(r["txn_type"] == "RETURN" for r in run.good_pos)


def n_voids(run: Run) -> int:
    return sum(r["txn_type"] == "VOID" for r in run.good_pos)


def n_malformed(run: Run) -> int:
    return sum(_pos_defect(r) is not None for _, _, r in run.pos) + \
        sum(e is None for _, _, e in run.web[0])


def n_chinese_text(run: Run) -> int:
    texts = [r["properties"]["comment"] for r in run.crm("feedback_submissions")]
    texts += [r["properties"]["content"] for r in run.crm("tickets")]
    return sum(bool(t and CJK.search(t)) for t in texts)


def n_pii_tickets(run: Run) -> int:
    return sum(bool(re.search(r"@|\d{6,}", r["properties"]["content"].replace(" ", "")))
               for r in run.crm("tickets"))


def n_consent_changes(run: Run) -> int:
    seen = defaultdict(set)
    for r in run.crm("contacts"):
        seen[r["id"]].add(r["properties"]["marketing_consent"])
    return sum(len(v) > 1 for v in seen.values())


def n_existing_contacts(run: Run) -> int:
    return sum(r["createdAt"] < START.isoformat() for r in _latest(run.crm("contacts")).values())


def n_usd_orders(run: Run) -> int:
    return sum(e.get("event") == "Order Completed" and e["properties"]["currency"] == "USD"
               for _, e in run.events)


def n_extra_timezones(run: Run) -> int:
    return len({s["timezone"] for s in run.stores.values()}) - 1


DETECTORS = {
    "dup_contact_rate": n_dup_contacts, "archived_contact_rate": n_archived,
    "shared_device_rate": n_shared_devices, "messy_key_format_rate": n_messy_keys,
    "walkin_rate": n_walkins, "dup_message_rate": n_dup_messages,
    "late_event_rate": n_late_events, "late_file_rate": n_late_files, "corrupt_files": n_corrupt,
    "corrected_pos_file_rate": n_corrected, "gb18030_store_share": n_gb18030_files,
    "return_rate": n_returns, "void_rate": n_voids, "malformed_row_rate": n_malformed,
    "chinese_comment_share": n_chinese_text, "pii_in_ticket_rate": n_pii_tickets,
    "consent_change_rate": n_consent_changes, "existing_customer_share": n_existing_contacts,
    "web_usd_share": n_usd_orders, "store_timezones": n_extra_timezones,
}
OFF = {"store_timezones": 1}


def test_every_messy_knob_has_a_detector():
    knobs = {name for name, _, _ in SimulationConfig.knob_docs()}
    behaviour = {"stores", "parts_per_day", "products", "mean_days_between_orders",
                 "mean_days_between_visits", "churn_90d"}
    assert knobs - behaviour == set(DETECTORS)


@pytest.mark.parametrize("knob", sorted(DETECTORS))
def test_knob_produces_its_case_and_zero_removes_it(knob, messy, tmp_path):
    detect = DETECTORS[knob]
    assert detect(messy) > 0, f"{knob} on: case missing from the files"
    off = run_sim(tmp_path, **(MESSY | {knob: OFF.get(knob, 0)}))
    assert detect(off) == 0, f"{knob} off: case still in the files"


def test_summary_counts_match_the_files(messy):
    c = messy.counts
    # Events in the corrupt file and in malformed lines cannot be read back.
    assert 0.8 * c["duplicate_message_ids"] <= n_dup_messages(messy) <= c["duplicate_message_ids"]
    assert 0.8 * c["late_events"] <= n_late_events(messy) <= c["late_events"]
    assert c["late_files"] == n_late_files(messy)
    assert c["corrupt_files"] == n_corrupt(messy) == 1
    assert c["corrected_pos_files"] == n_corrected(messy)
    assert c["return_lines"] >= n_returns(messy) and c["void_lines"] >= n_voids(messy)
    assert c["malformed_pos_rows"] + c["malformed_web_lines"] == n_malformed(messy)
    assert c["archived_contacts"] == n_archived(messy)
    assert c["shared_devices"] == n_shared_devices(messy) or c["shared_devices"] > 0
    assert c["gb18030_files"] == n_gb18030_files(messy)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    def digest(run: Run) -> dict[str, bytes]:
        out = {}
        for root in (run.landing, run.sim_dir):
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    out[f"{root.name}/{p.relative_to(root)}"] = p.read_bytes()
        return out

    a = digest(run_sim(tmp_path / "a", people=200, days=8, seed=11))
    b = digest(run_sim(tmp_path / "b", people=200, days=8, seed=11))
    c = digest(run_sim(tmp_path / "c", people=200, days=8, seed=12))
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    shared = a.keys() & c.keys()
    assert any(a[k] != c[k] for k in shared if "crm/" in k or "web/" in k)


def test_landing_layout_is_exactly_sources_md(messy):
    days = {(START + dt.timedelta(days=i)).isoformat() for i in range(DAYS)}
    patterns = [re.compile(r"web/events/date=(\d{4}-\d\d-\d\d)/part-\d{4}\.jsonl\.gz"),
                re.compile(r"pos/date=(\d{4}-\d\d-\d\d)/store_(\w+)\.csv"),
                re.compile(r"pos/reference/(stores|products)\.csv")]
    files = [p.relative_to(messy.landing).as_posix() for p in messy.landing.rglob("*") if p.is_file()]
    assert files
    for f in files:
        m = next((m for pat in patterns if (m := pat.fullmatch(f))), None)
        assert m, f"unexpected landing file {f}"
        if f.startswith("pos/date="):
            assert m.group(1) in days and m.group(2) in messy.stores
        elif f.startswith("web/"):
            assert m.group(1) in days
    with open(messy.landing / "pos/reference/products.csv", encoding="utf-8") as fh:
        products = list(csv.DictReader(fh))
    assert list(products[0]) == ["sku", "name", "category", "brand", "list_price"]
    assert any(CJK.search(p["name"]) for p in products)
    assert list(next(iter(messy.stores.values()))) == [
        "store_id", "name", "city", "region", "country", "timezone", "file_encoding", "opened_on"]


def test_pos_rows_follow_the_contract(messy):
    skus = set()
    with open(messy.landing / "pos/reference/products.csv", encoding="utf-8") as fh:
        skus = {r["sku"] for r in csv.DictReader(fh)}
    rows = messy.good_pos
    assert rows
    for r in rows:
        folder_day = r["_file"].split("date=")[1][:10]
        store = messy.stores[r["store_id"]]
        assert r["_file"].endswith(f"store_{r['store_id']}.csv")
        assert r["business_date"] == folder_day == r["txn_ts"][:10]
        assert r["txn_type"] in {"SALE", "RETURN", "VOID"}
        assert r["currency"] == CURRENCY[store["country"]]
        assert r["sku"] in skus
        qty, amount = int(r["quantity"]), float(r["line_amount"])
        if r["txn_type"] == "RETURN":
            assert qty < 0 and amount < 0
        else:
            assert qty > 0 and amount >= 0
    # A RETURN is of a product the same person bought earlier in a store (all rows: a
    # malformed row keeps its transaction id, date, type and sku).
    person = messy.person_of("pos_transaction_id")
    bought = defaultdict(list)
    for _, _, r in messy.pos:
        if r[5] == "SALE" and person[r[0]] == person[r[0]]:
            bought[(person[r[0]], r[9])].append(r[3])
    returns = [r for _, _, r in messy.pos if r[5] == "RETURN" and person[r[0]] == person[r[0]]]
    assert returns
    for r in returns:
        assert any(d < r[3] for d in bought[(person[r[0]], r[9])]), r


def test_gb18030_store_files_hold_chinese_and_are_not_utf8(messy):
    gb = [s for s, r in messy.stores.items() if r["file_encoding"] == "GB18030"]
    assert gb and all(CJK.search(messy.stores[s]["name"]) for s in gb)
    files = [p for s in gb for p in (messy.landing / "pos").glob(f"date=*/store_{s}.csv")]
    assert files
    for path in files:
        data = path.read_bytes()
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")
        assert CJK.search(data.decode("gb18030"))
    utf8 = [p for p in (messy.landing / "pos").glob("date=*/store_*.csv")
            if messy.stores[p.stem.removeprefix("store_")]["file_encoding"] == "UTF-8"]
    for path in utf8:
        path.read_bytes().decode("utf-8")


def test_store_time_zones_are_real_and_times_are_local(messy):
    zones = {s["timezone"] for s in messy.stores.values()}
    assert len(zones) >= 3
    for z in zones:
        ZoneInfo(z)
    # Tills open 10:00-22:00 local: had UTC been written, London and New York would sell at night.
    hours = defaultdict(set)
    for r in messy.good_pos:
        hours[messy.stores[r["store_id"]]["timezone"]].add(int(r["txn_ts"][11:13]))
    assert len(hours) >= 3
    for zone, hs in hours.items():
        assert min(hs) >= 10 and max(hs) <= 21, zone


def test_web_events_follow_the_segment_spec(messy):
    events = messy.events
    assert events
    linked = defaultdict(set)
    for f, e in events:
        folder_day = f.split("date=")[1][:10]
        assert {"messageId", "type", "anonymousId", "userId", "timestamp", "receivedAt", "context",
                "properties", "traits"} <= set(e)
        assert e["type"] in {"page", "track", "identify"}
        assert ISO_MS.match(e["timestamp"]) and ISO_MS.match(e["receivedAt"])
        assert e["timestamp"] <= e["receivedAt"] and e["receivedAt"][:10] == folder_day
        assert (dt.date.fromisoformat(folder_day) - dt.date.fromisoformat(e["timestamp"][:10])).days <= 3
        assert {"page", "campaign", "userAgent", "ip", "locale"} <= set(e["context"])
        assert {"url", "path", "referrer", "title"} <= set(e["context"]["page"])
        if e["type"] == "track":
            assert e["event"] in {"Product Viewed", "Product Added", "Order Completed", "Signed Up"}
        if e["type"] == "identify":
            assert e["userId"] and e["traits"]["email"]
        if e.get("event") == "Order Completed":
            p = e["properties"]
            assert e["userId"] and p["currency"] in {"CNY", "USD"} and p["products"]
            assert abs(sum(x["quantity"] * x["price"] for x in p["products"]) - p["revenue"]) < 0.02
        linked[e["anonymousId"]].add(e["userId"])
    # Anonymous browsing followed by a login on the same device: the anonymousId -> userId link.
    assert sum(None in users and len(users) > 1 for users in linked.values()) > 10


def test_crm_records_follow_the_contract(messy):
    start = START.isoformat()
    for obj, props in (("contacts", CONTACT_PROPS), ("tickets", TICKET_PROPS),
                       ("feedback_submissions", FEEDBACK_PROPS)):
        records = messy.crm(obj)
        assert records, obj
        last = {}
        for r in records:
            assert set(r) == {"id", "properties", "createdAt", "updatedAt", "archived"}
            assert r["id"].isdigit() and ISO_MS.match(r["createdAt"]) and ISO_MS.match(r["updatedAt"])
            assert set(r["properties"]) == props
            assert all(v is None or isinstance(v, str) for v in r["properties"].values())
            if r["id"] in last:
                prev = last[r["id"]]
                assert r["updatedAt"] > prev["updatedAt"] and r["createdAt"] == prev["createdAt"]
                assert not prev["archived"], "nothing comes after an erasure"
            last[r["id"]] = r
        order = [(r["updatedAt"], int(r["id"])) for r in records]
        assert order == sorted(order)
    contacts = _latest(messy.crm("contacts"))
    assert any(r["createdAt"] < start for r in contacts.values())
    assert any(r["createdAt"] >= start for r in contacts.values())
    tickets = messy.crm("tickets")
    assert {r["properties"]["status"] for r in tickets} >= {"open", "closed"}
    for r in tickets:
        assert r["properties"]["contact_id"] in contacts
        assert (r["properties"]["status"] == "closed") == (r["properties"]["closed_at"] is not None)
    for r in messy.crm("feedback_submissions"):
        score = int(r["properties"]["score"])
        assert 0 <= score <= 10 if r["properties"]["survey_type"] == "NPS" else 1 <= score <= 5
    comments = [r["properties"]["comment"] for r in messy.crm("feedback_submissions")
                if r["properties"]["comment"]]
    assert any(CJK.search(c) for c in comments) and any(not CJK.search(c) for c in comments)


def test_ground_truth_covers_every_source_key(messy):
    keys = messy.keys
    assert set(keys.key_type) == {"crm_contact_id", "web_user_id", "anonymous_id", "email",
                                  "phone", "loyalty_id", "pos_transaction_id", "web_order_id"}
    contact_person = messy.person_of("crm_contact_id")
    assert {r["id"] for r in messy.crm("contacts")} == set(contact_person)
    assert not any(v != v for v in contact_person.values())   # no NaN: every contact has a person
    users = messy.person_of("web_user_id")
    anon = keys[keys.key_type == "anonymous_id"]
    anon_people = defaultdict(set)
    for a, p in zip(anon.key_value, anon.person_id):
        anon_people[a].add(p)
    orders = messy.person_of("web_order_id")
    for _, e in messy.events:
        assert e["anonymousId"] in anon_people
        if e["userId"]:
            assert users[e["userId"]] == contact_person[e["userId"]]
            assert users[e["userId"]] in anon_people[e["anonymousId"]]
        if e.get("event") == "Order Completed":
            assert orders[e["properties"]["order_id"]] == users[e["userId"]]
    shared = anon[anon.is_shared_device]
    assert len(shared) and shared.groupby("key_value").person_id.nunique().min() == 2
    txn_person = messy.person_of("pos_transaction_id")
    by_type = {t: messy.person_of(t) for t in ("email", "phone", "loyalty_id")}
    for r in messy.good_pos:
        person = txn_person[r["transaction_id"]]
        has_key = r["loyalty_id"] or r["customer_phone"] or r["customer_email"]
        assert (person == person) == bool(has_key)    # walk-ins have a null person
        country = messy.stores[r["store_id"]]["country"]
        if r["loyalty_id"]:
            assert by_type["loyalty_id"][r["loyalty_id"].replace(" ", "").replace("-", "").upper()] == person
        if r["customer_phone"]:
            assert by_type["phone"][_e164(r["customer_phone"], country)] == person
        if r["customer_email"]:
            assert by_type["email"][r["customer_email"].strip().lower()] == person


def test_phones_are_valid_numbers(messy):
    phones = messy.keys[messy.keys.key_type == "phone"].key_value
    assert len(phones) > 100
    for raw in phones:
        n = phonenumbers.parse(raw, None)
        assert phonenumbers.is_valid_number(n), raw
        assert phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164) == raw


def test_true_churn_probability_carries_the_latent_signal(messy):
    people = pq.read_table(messy.sim_dir / "ground_truth/people.parquet").to_pandas()
    assert len(people) == PEOPLE
    p = people.true_churn_probability
    assert p.between(0, 1).all()
    gone = people.churned_during_sim | people.erased
    assert gone.any() and (p[gone] == 1.0).all()
    active = people[~gone]
    assert np.corrcoef(active.churn_hazard_per_day_end, active.true_churn_probability)[0, 1] > 0.1
    assert np.corrcoef(active.purchase_rate_per_day, active.true_churn_probability)[0, 1] < -0.3
    assert (people.truth_date == messy.cfg.end).all()


def test_true_churn_probability_is_calibrated_against_the_simulated_future():
    """Simulate 60 days and, with the same seed, 150: the first 60 days are identical, so the
    truth written after day 60 can be scored on what really happens in days 61-150."""
    from sklearn.metrics import roc_auc_score

    from customer360.demo import sim_reference as ref
    from customer360.demo.sim_behaviour import NEVER, simulate_behaviour, true_churn_probability
    from customer360.demo.sim_population import build_population

    short, long = (SimulationConfig(people=6000, days=d, start=START, seed=21) for d in (60, 150))
    pop = build_population(short, ref.build_stores(short))
    now = simulate_behaviour(short, pop)
    later = simulate_behaviour(long, build_population(long, ref.build_stores(long)))
    assert np.array_equal(now.o_person, later.o_person[later.o_day < 60])
    p = true_churn_probability(pop, now, now.churn_day == NEVER)
    ordered = np.zeros(pop.n, dtype=bool)
    ordered[later.o_person[later.o_day >= 60]] = True
    customers = np.zeros(pop.n, dtype=bool)
    customers[now.o_person] = True
    assert abs(p.mean() - (~ordered).mean()) < 0.03
    assert roc_auc_score(~ordered[customers], p[customers]) > 0.75


def test_hazard_rises_with_bad_experience_and_falls_with_engagement():
    base, ref = np.array([0.002]), np.array([2.0])
    h = lambda open_t=0, bad=0.0, eng=2.0: hazard(base, np.array([open_t]), np.array([bad]),
                                                  np.array([eng]), ref)[0]
    assert h(open_t=1) > h() and h(bad=2.0) > h() and h(eng=6.0) < h() < h(eng=0.0)


def test_deliver_replays_late_and_corrected_files(messy, tmp_path):
    landing = tmp_path / "replay"
    first = deliver(messy.sim_dir, landing, through=START)
    assert "pos/reference/stores.csv" in first and "pos/reference/products.csv" in first
    assert all(("date=" not in f) or START.isoformat() in f for f in first)
    schedule = messy.deliveries
    late_web = [d for d in schedule if d["path"].startswith("web/")
                and d["available_from"] > d["path"].split("date=")[1][:10]]
    corrected = [d for d in schedule if d["version"] > 1]
    assert late_web and corrected
    for i in range(1, DAYS + 3):
        day = START + dt.timedelta(days=i)
        changed = deliver(messy.sim_dir, landing, through=day)
        assert deliver(messy.sim_dir, landing, through=day) == []     # idempotent
        expected = sorted({d["path"] for d in schedule if d["available_from"] == day.isoformat()})
        assert changed == expected
        for d in late_web:
            if d["available_from"] > day.isoformat():
                assert not (landing / d["path"]).exists()
        for d in corrected:
            path = landing / d["path"]
            if d["path"].split("date=")[1][:10] <= day.isoformat() < d["available_from"]:
                assert path.read_bytes() == (messy.sim_dir / f"outbox/{d['path']}.v1").read_bytes()
    for d in corrected:
        new, old = (landing / d["path"]).read_bytes(), (messy.sim_dir / f"outbox/{d['path']}.v1").read_bytes()
        assert new != old and new.count(b"\n") > old.count(b"\n")
    # The replayed folder ends up equal to the one simulate(deliver_all=True) produced.
    replay = {p.relative_to(landing): p.read_bytes() for p in landing.rglob("*") if p.is_file()}
    full = {p.relative_to(messy.landing): p.read_bytes() for p in messy.landing.rglob("*") if p.is_file()}
    assert replay == full
    # A landing file that goes missing comes back.
    victim = next(iter(sorted(replay)))
    (landing / victim).unlink()
    assert deliver(messy.sim_dir, landing, through=START + dt.timedelta(days=DAYS + 3)) == [victim.as_posix()]


def test_a_new_simulation_replaces_the_previous_landing_files(tmp_path):
    big = run_sim(tmp_path, people=200, days=8, seed=1)
    before = {p for p in big.landing.rglob("*") if p.is_file()}
    own = tmp_path / "landing/pos/README.txt"     # not the simulator's: must survive
    own.write_text("mine")
    small = run_sim(tmp_path, people=50, days=3, seed=2)
    after = {p for p in small.landing.rglob("*") if p.is_file()}
    scheduled = {small.landing / d["path"] for d in small.deliveries}
    assert after == scheduled | {own} and before - after


def test_no_deliver_leaves_landing_empty(tmp_path):
    run = run_sim(tmp_path, people=50, days=3, deliver_all=False)
    assert not run.landing.exists() or not any(p.is_file() for p in run.landing.rglob("*"))
    assert (run.sim_dir / "deliveries.jsonl").exists() and run.counts["delivered_files"] == 0


def test_knob_overrides_and_docs():
    cfg = SimulationConfig.from_overrides(people=10, days=5, start=START, seed=3,
                                          overrides=["dup_contact_rate=0.2", "corrupt_files=2"])
    assert cfg.dup_contact_rate == 0.2 and cfg.corrupt_files == 2 and cfg.people == 10
    with pytest.raises(ValueError, match="unknown knob"):
        SimulationConfig.from_overrides(overrides=["no_such_knob=1"])
    with pytest.raises(ValueError, match="rate"):
        SimulationConfig.from_overrides(overrides=["walkin_rate=1.5"])
    docs = SimulationConfig.knob_docs()
    assert len(docs) >= 20 and all(doc and name for name, _, doc in docs)


# --- the landing validator finds exactly what was planted ------------------------------------

def _problems(landing: Path) -> set[tuple[str, int | None]]:
    validate = pytest.importorskip("customer360.ingest.landing.validate")
    report = validate.validate_landing(landing)
    out = set()
    for p in report.problems:
        f = Path(p.file)
        rel = (f.relative_to(landing) if f.is_absolute() else f).as_posix()
        out.add((rel, p.line))
    return out


def test_validator_finds_exactly_the_planted_defects(tmp_path):
    run = run_sim(tmp_path, people=500, days=8, **(MESSY | {"malformed_row_rate": 0.05,
                                                             "corrupt_files": 2}))
    problems = _problems(run.landing)
    planted = pq.read_table(run.sim_dir / "ground_truth/defects.parquet").to_pylist()
    assert {d["kind"] for d in planted} == {"corrupt_gzip", "malformed_json", "field_count_short",
                                            "field_count_long", "non_numeric_quantity",
                                            "bad_timestamp"}
    corrupt = {d["file"] for d in planted if d["kind"] == "corrupt_gzip"}
    lines = {(d["file"], d["line"]) for d in planted if d["kind"] != "corrupt_gzip"}
    assert len(corrupt) == 2
    assert {f for f, _ in problems if f in corrupt} == corrupt
    assert {p for p in problems if p[0] not in corrupt} == lines


def test_validator_finds_nothing_when_defects_are_off(tmp_path):
    run = run_sim(tmp_path, people=300, days=6, malformed_row_rate=0.0, corrupt_files=0)
    assert _problems(run.landing) == set()


def test_cli_simulate_and_knobs(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from customer360.cli import app

    monkeypatch.setenv("C360_HOME", str(tmp_path))
    monkeypatch.delenv("C360_LANDING", raising=False)
    runner = CliRunner()
    result = runner.invoke(app, ["simulate", "--people", "60", "--days", "4", "--start", "2026-03-02",
                                 "--seed", "5", "--knob", "return_rate=0", "--knob", "walkin_rate=1"])
    assert result.exit_code == 0, result.output
    assert "web events" in result.output and "walkin transactions" in result.output
    summary = json.loads((tmp_path / "simulation/ground_truth/summary.json").read_text())
    assert summary["return_lines"] == 0 and summary["config"]["walkin_rate"] == 1.0
    assert (tmp_path / "landing/pos/reference/stores.csv").exists()
    knobs = runner.invoke(app, ["simulate-knobs"])
    assert knobs.exit_code == 0 and "dup_contact_rate" in knobs.output
    bad = runner.invoke(app, ["simulate", "--knob", "nonsense=1"])
    assert bad.exit_code != 0
