"""The demo source simulator: determinism, the docs/sources.md layout, the CRM store shaped as
HubSpot serves it (internal property names, associations, archivedAt, "" values, free-text
countries, national and unreadable phones, lifecycle stages, a bulk import's shared
millisecond), every messy case behind its knob (present when on, absent at 0, checked from the
files, in its stated share), ground truth coverage, delivery replay, and that the landing
validator finds exactly the planted defects."""

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
CONTACT_PROPS = {"email", "firstname", "lastname", "phone", "mobilephone", "date_of_birth", "gender",
                 "city", "country", "lifecyclestage", "createdate", "lastmodifieddate",
                 "hs_object_id", "loyalty_id", "marketing_consent", "signup_channel"}
TICKET_PROPS = {"subject", "content", "hs_pipeline", "hs_pipeline_stage", "hs_ticket_priority",
                "hs_ticket_category", "createdate", "closed_date", "hs_lastmodifieddate",
                "hs_object_id"}
FEEDBACK_PROPS = {"hs_survey_type", "hs_value", "hs_content", "hs_submission_timestamp",
                  "createdate", "hs_lastmodifieddate", "hs_object_id"}
LAST_MODIFIED = {"contacts": "lastmodifieddate", "tickets": "hs_lastmodifieddate",
                 "feedback_submissions": "hs_lastmodifieddate"}
LIFECYCLE_STAGES = {"subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead",
                    "opportunity", "customer", "evangelist", "other"}
FUNNEL_STAGES = {"marketingqualifiedlead", "salesqualifiedlead", "opportunity"}
ISO_COUNTRIES = {"CN", "HK", "JP", "GB", "US"}
# This test's own reading of free-text countries (independent of the simulator's list): every
# country the simulator types must be one of these.
COUNTRY_NAMES = {
    "CN": {"cn", "china", "中国", "prc", "people's republic of china", "mainland china",
           "中华人民共和国"},
    "HK": {"hk", "hong kong", "香港", "hong kong sar", "hong kong, china"},
    "JP": {"jp", "japan", "日本"},
    "GB": {"gb", "uk", "u.k.", "united kingdom", "great britain", "england", "英国"},
    "US": {"us", "usa", "u.s.", "u.s.a.", "united states", "united states of america", "美国"},
}
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
             store_timezones=5, server_side_order_rate=0.5, app_session_share=0.3,
             signup_alias_rate=0.8, product_id_only_rate=0.3, consent_device_share=0.5,
             group_call_rate=0.3, pos_bom_file_rate=0.2, pos_quoted_comma_rate=0.1)


@dataclass
class Run:
    cfg: SimulationConfig
    landing: Path
    sim_dir: Path
    counts: dict

    @cached_property
    def stores(self) -> dict[str, dict]:
        text = _reference_text(self.landing / "pos/reference/stores.csv")
        return {r["store_id"]: r for r in csv.DictReader(io.StringIO(text, newline=""))}

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
    def pos_files(self) -> dict[str, tuple[bytes, str]]:
        """Every POS file's bytes and how it really is encoded ("utf-8-sig" with a BOM; "utf-8"
        for a GB18030 store's file that is valid UTF-8 text: the mismatched-encoding case)."""
        out = {}
        for path in sorted((self.landing / "pos").glob("date=*/store_*.csv")):
            data = path.read_bytes()
            declared = self.stores[path.stem.removeprefix("store_")]["file_encoding"].lower()
            if data.startswith(b"\xef\xbb\xbf"):
                encoding = "utf-8-sig"
            elif declared == "gb18030" and not data.isascii() and _utf8(data):
                encoding = "utf-8"
            else:
                encoding = declared
            out[path.relative_to(self.landing).as_posix()] = (data, encoding)
        return out

    def mismatched_files(self) -> list[str]:
        return [f for f, (_, enc) in self.pos_files.items()
                if enc == "utf-8" and self.stores[f.split("store_")[1][:-4]]["file_encoding"] == "GB18030"]

    def repeated_header_files(self) -> list[str]:
        out = []
        for f, (data, enc) in self.pos_files.items():
            header = next(csv.reader(io.StringIO(data.decode(enc), newline="")))
            out += [f] if len(header) != len(set(header)) else []
        return out

    @cached_property
    def all_pos(self) -> list[tuple[str, int, list[str]]]:
        """(file, physical line, fields) of every data row of every file, decoded as it really
        is, blank lines left out (a repeated-header file's rows have the extra field last)."""
        out = []
        for rel, (data, encoding) in self.pos_files.items():
            rows = list(csv.reader(io.StringIO(data.decode(encoding), newline="")))
            assert rows[0][:len(POS_COLUMNS)] == POS_COLUMNS, rel
            out += [(rel, i, r) for i, r in enumerate(rows[1:], start=2) if r]
        return out

    @property
    def pos(self) -> list[tuple[str, int, list[str]]]:
        """The rows of the files the loader can read (not the mismatched-encoding or
        repeated-header ones)."""
        unloadable = set(self.mismatched_files()) | set(self.repeated_header_files())
        return [row for row in self.all_pos if row[0] not in unloadable]

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


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _reference_text(path: Path) -> str:
    """A reference file (no declared encoding): UTF-8, else GB18030."""
    data = path.read_bytes()
    return data.decode("utf-8-sig") if _utf8(data) else data.decode("gb18030")


def _amount(text: str) -> float:
    """A till amount as printed ("-HK$1,299.00", "¥88", "12.50") as a number."""
    m = re.fullmatch(r"(-?)(?:¥|HK\$|£|\$)?([\d,]+(?:\.\d+)?)", text)
    assert m, text
    return float(m.group(1) + m.group(2).replace(",", ""))


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


def _region(country: str | None) -> str | None:
    """The ISO code a contact's free-text country means (None when empty or unknown)."""
    text = (country or "").strip().lower()
    return next((iso for iso, names in COUNTRY_NAMES.items() if text in names), None)


def _readable(raw: str | None, country: str | None) -> str | None:
    """The E.164 number a phone field means with the contact's country as the default region,
    None when empty or nothing valid can be read from it."""
    if not raw:
        return None
    try:
        number = phonenumbers.parse(raw, _region(country))
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _national(raw: str) -> bool:
    """Typed without any international prefix: only the contact's country makes it readable."""
    try:
        phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return not raw.lstrip().startswith(("+", "00", "(+"))
    return False


def _mobile_field(p: dict) -> str | None:
    """The field holding the contact's mobile: mobilephone when set (phone is then a landline)."""
    return p["mobilephone"] or p["phone"]


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
        if phone := _readable(_mobile_field(p), p["country"]):
            by_key["p:" + phone].add(cid)
    return sum(len(ids) - 1 for ids in by_key.values())


def n_archived(run: Run) -> int:
    return sum(r["archived"] for r in run.crm("contacts"))


def n_shared_devices(run: Run) -> int:
    person = run.person_of("web_user_id")
    people = defaultdict(set)
    for _, e in run.events:
        if e["userId"] and e["anonymousId"]:
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


def n_bom_files(run: Run) -> int:
    return sum(data.startswith(b"\xef\xbb\xbf") for data, _ in run.pos_files.values())


def n_crlf_files(run: Run) -> int:
    return sum(b"\r\n" in data for data, _ in run.pos_files.values())


def n_trailing_blank_files(run: Run) -> int:
    return sum(data.endswith((b"\n\n", b"\r\n\r\n")) for data, _ in run.pos_files.values())


def n_formatted_amounts(run: Run) -> int:
    return sum(bool(re.search(r"[^\d.-]", r["line_amount"])) for r in run.good_pos)


def n_quoted_commas(run: Run) -> int:
    return sum("," in r["payment_method"] and '"' in r["payment_method"] for r in run.good_pos)


def n_mismatched_files(run: Run) -> int:
    return len(run.mismatched_files())


def n_repeated_headers(run: Run) -> int:
    return len(run.repeated_header_files())


def n_gb18030_references(run: Run) -> int:
    return sum(not _utf8((run.landing / "pos/reference" / name).read_bytes())
               for name in ("stores.csv", "products.csv"))


def n_returns(run: Run) -> int:
    return sum(r["txn_type"] == "RETURN" for r in run.good_pos)


def n_voids(run: Run) -> int:
    return sum(r["txn_type"] == "VOID" for r in run.good_pos)


def n_malformed(run: Run) -> int:
    return sum(_pos_defect(r) is not None for _, _, r in run.pos) + \
        sum(e is None for _, _, e in run.web[0])


def n_chinese_text(run: Run) -> int:
    texts = [r["properties"]["hs_content"] for r in run.crm("feedback_submissions")]
    texts += [r["properties"]["content"] for r in run.crm("tickets")]
    return sum(bool(t and CJK.search(t)) for t in texts)


def n_traditional_text(run: Run) -> int:
    import opencc

    simplified = opencc.OpenCC("t2s").convert
    texts = [r["properties"]["hs_content"] for r in run.crm("feedback_submissions")]
    texts += [r["properties"]["content"] for r in run.crm("tickets")]
    return sum(bool(t and CJK.search(t) and simplified(t) != t) for t in texts)


def n_pii_tickets(run: Run) -> int:
    return sum(bool(re.search(r"@|\d{6,}", r["properties"]["content"].replace(" ", "")))
               for r in run.crm("tickets"))


def n_consent_changes(run: Run) -> int:
    seen = defaultdict(set)
    for r in run.crm("contacts"):
        seen[r["id"]].add(r["properties"]["marketing_consent"])
    return sum(len(v) > 1 for v in seen.values())


def n_empty_strings(run: Run) -> int:
    return sum(v == "" for obj in LAST_MODIFIED for r in run.crm(obj) for v in r["properties"].values())


def n_free_text_countries(run: Run) -> int:
    return sum(bool(r["properties"]["country"]) and r["properties"]["country"] not in ISO_COUNTRIES
               for r in _latest(run.crm("contacts")).values())


def n_national_phones(run: Run) -> int:
    """Contacts whose mobile is typed so that only their own country makes it readable."""
    n = 0
    for r in _latest(run.crm("contacts")).values():
        p = r["properties"]
        raw = _mobile_field(p)
        n += bool(raw) and _national(raw) and _readable(raw, p["country"]) is not None
    return n


def n_landlines(run: Run) -> int:
    return sum(bool(r["properties"]["mobilephone"]) for r in _latest(run.crm("contacts")).values())


def n_unparseable_phones(run: Run) -> int:
    contacts = [r["properties"] for r in _latest(run.crm("contacts")).values()]
    return sum(bool(p["phone"]) and _readable(p["phone"], p["country"]) is None for p in contacts)


def n_funnel_contacts(run: Run) -> int:
    return len({r["id"] for r in run.crm("contacts") if r["properties"]["lifecyclestage"] in FUNNEL_STAGES})


def n_bulk_update(run: Run) -> int:
    """Contact versions in the largest group sharing one lastmodifieddate (chance gives a few)."""
    biggest = max(Counter(r["properties"]["lastmodifieddate"] for r in run.crm("contacts")).values())
    return biggest if biggest >= 10 else 0


def n_ces(run: Run) -> int:
    return sum(r["properties"]["hs_survey_type"] == "CES" for r in run.crm("feedback_submissions"))


def n_existing_contacts(run: Run) -> int:
    return sum(r["createdAt"] < START.isoformat() for r in _latest(run.crm("contacts")).values())


def n_usd_orders(run: Run) -> int:
    return sum(e.get("event") == "Order Completed" and e["properties"]["currency"] == "USD"
               for _, e in run.events)


def n_server_side_orders(run: Run) -> int:
    return sum(e["type"] == "track" and e["anonymousId"] is None and bool(e["userId"])
               for _, e in run.events)


def n_screens(run: Run) -> int:
    return sum(e["type"] == "screen" for _, e in run.events)


def n_aliases(run: Run) -> int:
    return sum(e["type"] == "alias" for _, e in run.events)


def n_product_id_only(run: Run) -> int:
    n = 0
    for _, e in run.events:
        p = e["properties"] or {}
        n += "product_id" in p and "sku" not in p
        n += sum("sku" not in item for item in p.get("products") or [])
    return n


def n_consent_events(run: Run) -> int:
    return sum("consent" in (e["context"] or {}) for _, e in run.events)


def n_group_calls(run: Run) -> int:
    return sum(e["type"] == "group" for _, e in run.events)


def n_experiment_views(run: Run) -> int:
    return sum(e.get("event") == "Experiment Viewed" for _, e in run.events)


def n_extra_timezones(run: Run) -> int:
    return len({s["timezone"] for s in run.stores.values()}) - 1


DETECTORS = {
    "dup_contact_rate": n_dup_contacts, "archived_contact_rate": n_archived,
    "shared_device_rate": n_shared_devices, "messy_key_format_rate": n_messy_keys,
    "walkin_rate": n_walkins, "dup_message_rate": n_dup_messages,
    "late_event_rate": n_late_events, "late_file_rate": n_late_files, "corrupt_files": n_corrupt,
    "corrected_pos_file_rate": n_corrected, "gb18030_store_share": n_gb18030_files,
    "return_rate": n_returns, "void_rate": n_voids, "malformed_row_rate": n_malformed,
    "chinese_comment_share": n_chinese_text, "traditional_chinese_share": n_traditional_text,
    "pii_in_ticket_rate": n_pii_tickets,
    "consent_change_rate": n_consent_changes, "existing_customer_share": n_existing_contacts,
    "web_usd_share": n_usd_orders, "store_timezones": n_extra_timezones,
    "empty_string_rate": n_empty_strings, "free_text_country_rate": n_free_text_countries,
    "national_phone_rate": n_national_phones, "landline_phone_rate": n_landlines,
    "unparseable_phone_rate": n_unparseable_phones, "funnel_stage_rate": n_funnel_contacts,
    "bulk_update_contacts": n_bulk_update, "ces_survey_share": n_ces,
    "server_side_order_rate": n_server_side_orders, "app_session_share": n_screens,
    "signup_alias_rate": n_aliases, "product_id_only_rate": n_product_id_only,
    "consent_device_share": n_consent_events, "group_call_rate": n_group_calls,
    "pos_bom_file_rate": n_bom_files, "pos_crlf_file_rate": n_crlf_files,
    "pos_trailing_blank_rate": n_trailing_blank_files,
    "pos_formatted_amount_rate": n_formatted_amounts, "pos_quoted_comma_rate": n_quoted_commas,
    "pos_mismatched_encoding_files": n_mismatched_files,
    "pos_repeated_header_files": n_repeated_headers,
    "gb18030_reference_files": n_gb18030_references,
    "experiment_exposure_rate": n_experiment_views,
}
OFF = {"store_timezones": 1}


def test_every_messy_knob_has_a_detector():
    knobs = {name for name, _, _ in SimulationConfig.knob_docs()}
    behaviour = {"stores", "parts_per_day", "products", "mean_days_between_orders",
                 "mean_days_between_visits", "churn_90d", "experiment_lift",
                 "experiment_window_days"}
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
    assert c["bom_pos_files"] == n_bom_files(messy) > 0
    assert c["crlf_pos_files"] == n_crlf_files(messy) > 0
    assert c["trailing_blank_pos_files"] == n_trailing_blank_files(messy) > 0
    assert c["quoted_comma_pos_lines"] >= n_quoted_commas(messy) > 0
    assert c["mismatched_encoding_pos_files"] == n_mismatched_files(messy) == 1
    assert c["repeated_header_pos_files"] == n_repeated_headers(messy) == 1
    assert c["unparseable_phones"] == n_unparseable_phones(messy) > 0
    assert c["landline_phones"] == n_landlines(messy) > 0
    assert c["national_phones"] == n_national_phones(messy) > 0
    assert c["free_text_countries"] == n_free_text_countries(messy) > 0
    assert c["funnel_stage_contacts"] == n_funnel_contacts(messy) > 0
    assert c["bulk_update_contacts"] == n_bulk_update(messy) == 200
    assert c["ces_surveys"] == n_ces(messy) > 0
    assert c["lifecycle_stages"] == len({r["properties"]["lifecyclestage"] for r in messy.crm("contacts")})


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
    products = list(csv.DictReader(io.StringIO(
        _reference_text(messy.landing / "pos/reference/products.csv"), newline="")))
    assert list(products[0]) == ["sku", "name", "category", "brand", "list_price"]
    assert any(CJK.search(p["name"]) for p in products)
    assert list(next(iter(messy.stores.values()))) == [
        "store_id", "name", "city", "region", "country", "timezone", "file_encoding", "opened_on"]


def test_pos_rows_follow_the_contract(messy):
    skus = {r["sku"] for r in csv.DictReader(io.StringIO(
        _reference_text(messy.landing / "pos/reference/products.csv"), newline=""))}
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
        qty, amount = int(r["quantity"]), _amount(r["line_amount"])
        if r["txn_type"] == "RETURN":
            assert qty < 0 and amount < 0
        else:
            assert qty > 0 and amount >= 0
    # A RETURN is of a product the same person bought earlier in a store (all rows: a
    # malformed row keeps its transaction id, date, type and sku).
    person = messy.person_of("pos_transaction_id")
    bought = defaultdict(list)
    for _, _, r in messy.all_pos:
        if r[5] == "SALE" and person[r[0]] == person[r[0]]:
            bought[(person[r[0]], r[9])].append(r[3])
    returns = [r for _, _, r in messy.all_pos
               if r[5] == "RETURN" and person[r[0]] == person[r[0]]]
    assert returns
    for r in returns:
        assert any(d < r[3] for d in bought[(person[r[0]], r[9])]), r


def test_gb18030_store_files_hold_chinese_and_are_not_utf8(messy):
    gb = [s for s, r in messy.stores.items() if r["file_encoding"] == "GB18030"]
    assert gb and all(CJK.search(messy.stores[s]["name"]) for s in gb)
    # (but for the files exported in UTF-8 on purpose: BOM and mismatched-encoding knobs)
    files = [p for s in gb for p in (messy.landing / "pos").glob(f"date=*/store_{s}.csv")
             if messy.pos_files[p.relative_to(messy.landing).as_posix()][1] == "gb18030"]
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
        assert e["type"] in {"page", "track", "identify", "screen", "group", "alias"}
        assert e["anonymousId"] or e["userId"]
        assert ISO_MS.match(e["timestamp"]) and ISO_MS.match(e["receivedAt"])
        assert e["timestamp"] <= e["receivedAt"] and e["receivedAt"][:10] == folder_day
        assert (dt.date.fromisoformat(folder_day) - dt.date.fromisoformat(e["timestamp"][:10])).days <= 3
        if e["anonymousId"] is None:   # server-side: the back end's library, no browser context
            assert e["context"] == {"library": {"name": "analytics-python", "version": "2.4.0"}}
        else:
            assert {"userAgent", "ip", "locale"} <= set(e["context"])
            # UTM parameters, when the landing URL had them (analytics.js leaves campaign out)
            if "campaign" in e["context"]:
                campaign = e["context"]["campaign"]
                assert set(campaign) == {"source", "medium", "name"} and all(campaign.values())
        if e["type"] == "screen":
            assert e["name"] and "page" not in e["context"]
        elif e["anonymousId"] is not None and "page" in e["context"]:
            assert {"url", "path", "referrer", "title"} <= set(e["context"]["page"])
        if e["type"] == "alias":
            assert e["previousId"] == e["anonymousId"] and e["userId"]
        if e["type"] == "group":
            assert e["userId"] and e["groupId"].startswith("acct-") and e["traits"]["name"]
        if "consent" in e["context"]:
            prefs = e["context"]["consent"]["categoryPreferences"]
            assert set(prefs) == {"Advertising", "Analytics", "Functional"}
        if e["type"] == "track":
            assert e["event"] in {"Product Viewed", "Product Added", "Order Completed", "Signed Up",
                                  "Experiment Viewed", "Checkout Started"}
        if e.get("event") == "Experiment Viewed":   # Segment's A/B testing spec
            assert set(e["properties"]) == {"experiment_id", "experiment_name", "variation_id",
                                            "variation_name"} and all(e["properties"].values())
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
    """The store holds HubSpot-shaped versions: internal property names, every value a string,
    null or "", create/last-modified/hs_object_id echoing the record, archivedAt exactly on
    archived versions, the contact of a ticket or a survey response as an association."""
    start = START.isoformat()
    contacts = _latest(messy.crm("contacts"))
    for obj, props in (("contacts", CONTACT_PROPS), ("tickets", TICKET_PROPS),
                       ("feedback_submissions", FEEDBACK_PROPS)):
        records = messy.crm(obj)
        assert records, obj
        last = {}
        for r in records:
            keys = {"id", "properties", "createdAt", "updatedAt", "archived", "archivedAt"}
            assert set(r) == (keys if obj == "contacts" else keys | {"associations"})
            assert r["id"].isdigit() and ISO_MS.match(r["createdAt"]) and ISO_MS.match(r["updatedAt"])
            p = r["properties"]
            assert set(p) == props
            assert all(v is None or isinstance(v, str) for v in p.values())
            assert p["hs_object_id"] == r["id"] and p["createdate"] == r["createdAt"]
            assert p[LAST_MODIFIED[obj]] == r["updatedAt"]
            assert (r["archivedAt"] is not None) == r["archived"]
            if r["archived"]:
                assert r["archivedAt"] == r["updatedAt"]
            if obj != "contacts":
                assert list(r["associations"]) == ["contacts"]
                assert len(r["associations"]["contacts"]) == 1
                assert r["associations"]["contacts"][0] in contacts
            if r["id"] in last:
                prev = last[r["id"]]
                assert r["updatedAt"] > prev["updatedAt"] and r["createdAt"] == prev["createdAt"]
                assert not prev["archived"], "nothing comes after an erasure"
            last[r["id"]] = r
        order = [(r["updatedAt"], int(r["id"])) for r in records]
        assert order == sorted(order)
    assert any(r["createdAt"] < start for r in contacts.values())
    assert any(r["createdAt"] >= start for r in contacts.values())
    for r in messy.crm("contacts"):
        p = r["properties"]
        assert p["lifecyclestage"] in LIFECYCLE_STAGES
        assert p["marketing_consent"] in {"true", "false"}
        assert p["signup_channel"] in {"web", "store", "referral", "campaign"}
        assert p["country"] and _region(p["country"]), p["country"]
    tickets = messy.crm("tickets")
    assert {r["properties"]["hs_pipeline_stage"] for r in tickets} >= {"1", "4"}
    assert {r["properties"]["hs_pipeline_stage"] for r in tickets} <= {"1", "2", "3", "4"}
    for r in tickets:
        p = r["properties"]
        assert p["hs_pipeline"] == "0"
        assert p["hs_ticket_priority"] in {"LOW", "MEDIUM", "HIGH", "URGENT"}
        assert re.fullmatch(r"[A-Z_]+", p["hs_ticket_category"])
        assert (p["hs_pipeline_stage"] == "4") == bool(p["closed_date"])
        if p["closed_date"]:
            assert ISO_MS.match(p["closed_date"]) and p["closed_date"] == r["updatedAt"]
    ranges = {"NPS": range(0, 11), "CSAT": range(1, 6), "CES": range(1, 8)}
    for r in messy.crm("feedback_submissions"):
        p = r["properties"]
        assert int(p["hs_value"]) in ranges[p["hs_survey_type"]]
        assert p["hs_submission_timestamp"] == r["createdAt"]
    comments = [r["properties"]["hs_content"] for r in messy.crm("feedback_submissions")
                if r["properties"]["hs_content"]]
    assert any(CJK.search(c) for c in comments) and any(not CJK.search(c) for c in comments)


def test_crm_store_speaks_the_default_property_map(messy):
    """The simulator writes what the extractor asks a portal left at the defaults for, and
    every enumeration value it writes is one the default map reads."""
    from customer360.ingest.crm_properties import DEFAULT_PROPERTY_MAP

    expected = {"contacts": CONTACT_PROPS, "tickets": TICKET_PROPS,
                "feedback_submissions": FEEDBACK_PROPS}
    for obj, spec in DEFAULT_PROPERTY_MAP.items():
        assert set(spec.request_properties()) == expected[obj], obj
        assert spec.last_modified == LAST_MODIFIED[obj]
        records = messy.crm(obj)
        for column, mapping in spec.values.items():
            seen = {r["properties"][spec.columns[column]] for r in records} - {None, ""}
            assert seen and seen <= set(mapping), (obj, column, seen - set(mapping))


@pytest.fixture(scope="module")
def shares(tmp_path_factory) -> Run:
    """A larger run at the default knobs, to check each CRM value shape's share."""
    return run_sim(tmp_path_factory.mktemp("shares"), people=4000, days=20, seed=3)


def _within(count: int, total: int, rate: float) -> bool:
    """``count`` of ``total`` is a plausible binomial draw at ``rate`` (4 sigma, at least 2)."""
    sigma = (total * rate * (1 - rate)) ** 0.5
    return abs(count - total * rate) <= max(4 * sigma, 2)


def test_crm_value_shapes_appear_in_their_shares(shares):
    cfg, c = shares.cfg, shares.counts
    contacts = _latest(shares.crm("contacts"))
    first = {}
    for r in shares.crm("contacts"):
        first.setdefault(r["id"], r)
    assert len(contacts) > 1500
    # Free-text countries, every one readable by a small mapping.
    free = [p["country"] for p in (r["properties"] for r in contacts.values())
            if p["country"] not in ISO_COUNTRIES]
    assert _within(len(free), len(contacts), cfg.free_text_country_rate)
    assert all(_region(x) for x in free) and {"China", "United Kingdom", "中国", "UK"} <= set(free)
    # "" instead of null on a share of records: a record is all-"" or all-null in its empties.
    for obj in LAST_MODIFIED:
        latest = _latest(shares.crm(obj)).values()
        blanks = [r for r in latest if any(v in ("", None) for v in r["properties"].values())]
        with_empty = [r for r in blanks if "" in r["properties"].values()]
        assert not any(None in r["properties"].values() for r in with_empty), obj
        assert _within(len(with_empty), len(blanks), cfg.empty_string_rate), obj
    assert c["empty_string_records"] == sum(
        any("" in r["properties"].values() for r in versions)
        for obj in LAST_MODIFIED
        for versions in _group(shares.crm(obj)).values())
    # Phones: landlines with the mobile moved, national mobiles, unreadable fields.
    with_phone = [r["properties"] for r in contacts.values() if r["properties"]["phone"]]
    landlines = [p for p in with_phone if p["mobilephone"]]
    assert _within(len(landlines), len(with_phone), cfg.landline_phone_rate)
    assert all(_readable(p["phone"], p["country"]) and _national(p["phone"]) for p in landlines
               if _readable(p["phone"], p["country"]))
    assert any(re.fullmatch(r"\(0\d{2}\) \d{4}-\d{4}", p["phone"]) for p in landlines)   # (021) 6234-5678
    assert any(re.fullmatch(r"020 \d{4} \d{4}", p["phone"]) for p in landlines)         # 020 7946 0958
    assert _within(n_unparseable_phones(shares), len(with_phone), cfg.unparseable_phone_rate)
    assert c["unparseable_phones"] == n_unparseable_phones(shares) > 0
    mobiles = [p for p in (r["properties"] for r in contacts.values()) if _mobile_field(p)]
    national = n_national_phones(shares)
    assert abs(national / len(mobiles) - cfg.national_phone_rate) < 0.06   # second contacts dilute it
    # Every lifecycle stage HubSpot has; the funnel ones on about their share of older leads.
    assert {r["properties"]["lifecyclestage"] for r in shares.crm("contacts")} == LIFECYCLE_STAGES
    older = [r["properties"]["lifecyclestage"] for r in first.values() if r["createdAt"] < START.isoformat()
             and r["properties"]["lifecyclestage"] in {"lead", "subscriber"} | FUNNEL_STAGES]
    assert abs(sum(s in FUNNEL_STAGES for s in older) / len(older) - cfg.funnel_stage_rate) < 0.1
    # One bulk import: exactly the knob's contacts share one millisecond.
    stamps = Counter(r["properties"]["lastmodifieddate"] for r in shares.crm("contacts"))
    stamp, n = stamps.most_common(1)[0]
    assert n == cfg.bulk_update_contacts == c["bulk_update_contacts"] and stamp == c["bulk_update_at"]
    # CES among the non-NPS surveys; archived contacts carry archivedAt.
    surveys = [r["properties"]["hs_survey_type"] for r in shares.crm("feedback_submissions")]
    assert _within(surveys.count("CES"), len(surveys) - surveys.count("NPS"), cfg.ces_survey_share)
    archived = [r for r in shares.crm("contacts") if r["archived"]]
    assert len(archived) == c["archived_contacts"] > 0 and all(r["archivedAt"] for r in archived)


def _group(records: list[dict]) -> dict[str, list[dict]]:
    out = defaultdict(list)
    for r in records:
        out[r["id"]].append(r)
    return out


def test_crm_phone_ground_truth_gives_the_number_each_field_means(shares):
    """crm_phones.parquet: each phone field as typed, with the E.164 number it means (read with
    the contact's own free-text country), null exactly for the unreadable ones; keys.parquet
    links every readable one to its person."""
    fields = pq.read_table(shares.sim_dir / "ground_truth/crm_phones.parquet").to_pandas()
    fields = fields.astype(object).where(fields.notna(), None)
    latest = _latest(shares.crm("contacts"))
    person = shares.person_of("crm_contact_id")
    phone_person = shares.person_of("phone")
    assert set(fields["shape"]) == {"international", "national", "landline", "unparseable"}
    # The pipeline's own country reader knows every country the simulator types.
    from customer360.core.countries import country_code
    assert all(country_code(t) == iso for t, iso in zip(fields["country_typed"], fields["country"]))
    assert (fields["shape"] == "unparseable").sum() == shares.counts["unparseable_phones"]
    for f in fields.itertuples(index=False):
        p = latest[f.contact_id]["properties"]
        assert p[f.property] == f.value and p["country"] == f.country_typed
        assert _region(f.country_typed) == f.country
        assert _readable(f.value, f.country_typed) == f.e164
        assert f.person_id == person[f.contact_id]
        if f.e164 is not None:
            assert phone_person[f.e164] == f.person_id
    typed = {(cid, prop) for cid, r in latest.items() for prop in ("phone", "mobilephone")
             if r["properties"][prop]}
    assert typed == set(zip(fields["contact_id"], fields["property"]))


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
        assert e["anonymousId"] in anon_people or (e["anonymousId"] is None and e["userId"])
        if e["type"] == "alias":   # an alias links a device the truth already gives the person
            assert users[e["userId"]] in anon_people[e["previousId"]]
        if e["userId"] and e["anonymousId"]:
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


def test_experiment_viewed_events_match_the_ground_truth(tmp_path):
    """Every exposure in ground_truth/experiments.parquet is one Experiment Viewed event with
    that experiment and variation on one of the person's devices, and there are no others.
    Erased (archived) contacts stay on: dropping their sessions after the erasure day once left
    the per-session exposure mask out of step with the sessions (views with the wrong
    experiment, on the wrong people)."""
    run = run_sim(tmp_path, people=800, days=30, seed=22, archived_contact_rate=0.05,
                  shared_device_rate=0.0, dup_message_rate=0.0, malformed_row_rate=0.0,
                  corrupt_files=0, experiment_exposure_rate=0.3)
    truth = pq.read_table(run.sim_dir / "ground_truth/experiments.parquet").to_pandas()
    assert run.counts["erased_people"] > 0 and len(truth) > 100
    person_of_device = run.person_of("anonymous_id")
    views = [e for _, e in run.events if e.get("event") == "Experiment Viewed"]
    assert len({e["messageId"] for e in views}) == len(views)
    seen = Counter((int(person_of_device[e["anonymousId"]]), e["properties"]["experiment_id"],
                    e["properties"]["variation_id"], e["timestamp"][:10]) for e in views)
    expected = Counter(zip(truth.person_id, truth.experiment_id, truth.variation_id,
                           truth.exposed_date.astype(str)))
    assert seen == expected


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
                                            "bad_timestamp", "rejected_transaction",
                                            "mismatched_encoding", "repeated_header_column",
                                            "bom_differs_from_declared"}
    corrupt = {d["file"] for d in planted if d["kind"] == "corrupt_gzip"}
    lines = {(d["file"], d["line"]) for d in planted if d["kind"] != "corrupt_gzip"}
    assert len(corrupt) == 2
    assert {f for f, _ in problems if f in corrupt} == corrupt
    assert {p for p in problems if p[0] not in corrupt} == lines


def test_validator_finds_nothing_when_defects_are_off(tmp_path):
    run = run_sim(tmp_path, people=300, days=6, malformed_row_rate=0.0, corrupt_files=0,
                  pos_mismatched_encoding_files=0, pos_repeated_header_files=0,
                  pos_bom_file_rate=0.0)
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
