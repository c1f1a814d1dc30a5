"""The simulated CRM store: every version of every contact, ticket and feedback submission,
shaped as HubSpot's CRM API v3 serves them.

``sim_dir/crm/<object>.jsonl.gz`` holds one line a version (docs/sources.md section 1, the
store crm_server serves): ``{"id", "properties", "createdAt", "updatedAt", "archived",
"archivedAt"}`` plus ``"associations": {"contacts": [id]}`` for tickets and feedback
submissions. Properties carry HubSpot's internal names (createdate, lastmodifieddate or
hs_lastmodifieddate, hs_object_id, the custom loyalty_id, marketing_consent, signup_channel),
every value a string, null or ``""``; ids are strings of integers, times UTC ISO with
milliseconds and Z, and ``updatedAt`` equals the last-modified property. A record that changes
gets a new line with a later updatedAt: a ticket moving through pipeline stages, a contact
moving through lifecycle stages, joining the loyalty programme, changing consent, touched by a
bulk import (many contacts sharing one millisecond), or being erased (a last version with
``archived: true`` and ``archivedAt``; its tickets and feedback stay as they are).

Real value shapes, each behind a knob (sim_config): ``""`` for empty values, free-text
countries, mobiles typed in national format, landlines in ``phone`` with the mobile in
``mobilephone``, phones no parser can read, HubSpot's lifecycle stages, CES surveys.
"""

from __future__ import annotations

import datetime as dt
import gzip
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import phonenumbers
import pyarrow as pa

from customer360.demo import sim_keys
from customer360.ingest.crm_properties import DEFAULT_PROPERTY_MAP
from customer360.demo import sim_duck
from customer360.demo import sim_reference as ref
from customer360.demo.sim_behaviour import NEVER, SIGNUP_NAMES, SIGNUP_STORE, Activity
from customer360.demo.sim_config import SimulationConfig
from customer360.demo.sim_identity import DUP_CASE, DUP_PHONE_ONLY, Identity, typed
from customer360.demo.sim_pos import PosResult
from customer360.demo.sim_population import Population, start_of
from customer360.demo.sim_web import WebResult

DAY_MS = 86_400_000
MINUTE_MS = 60_000
FIRST_TICKET_ID = 500_001
FIRST_FEEDBACK_ID = 900_001
# The frames below use our column names; the store gets HubSpot's internal names through the
# default property map (what the extractor requests from a portal left at the defaults).
PROPERTY_MAP = DEFAULT_PROPERTY_MAP
# HubSpot's lifecycle stages (subscriber, lead, marketingqualifiedlead, salesqualifiedlead,
# opportunity, customer, evangelist, other); the funnel ones sit between lead and customer.
FUNNEL_STAGES = ["marketingqualifiedlead", "salesqualifiedlead", "opportunity"]
# The default ticket pipeline "0": 1 New, 2 Waiting on contact, 3 Waiting on us, 4 Closed.
TICKET_PIPELINE = "0"
STAGE_NEW, STAGE_WAITING_CONTACT, STAGE_WAITING_US, STAGE_CLOSED = "1", "2", "3", "4"
TICKET_PRIORITIES = ["LOW", "MEDIUM", "HIGH", "URGENT"]
# Our ticket categories -> the portal's hs_ticket_category options (HubSpot's defaults
# PRODUCT_ISSUE, BILLING_ISSUE, GENERAL_INQUIRY, plus two options this portal added).
TICKET_CATEGORY_VALUES = {"billing": "BILLING_ISSUE", "delivery": "DELIVERY_ISSUE",
                          "product": "PRODUCT_ISSUE", "account": "ACCOUNT_ISSUE",
                          "other": "GENERAL_INQUIRY"}
_CJK = "\u4e00-\u9fff"


@dataclass
class CrmResult:
    contact_person: dict[int, int] = field(default_factory=dict)   # contact id -> person
    emails: list[tuple[str, int]] = field(default_factory=list)     # canonical email -> person
    phones: list[tuple[str, int]] = field(default_factory=list)     # E.164 -> person
    loyalty: list[tuple[str, int]] = field(default_factory=list)
    # Every non-empty phone field of a contact: what was typed and the E.164 number it means
    # (None when nothing can be read from it).
    phone_fields: pa.Table | None = None
    first_order_ms: np.ndarray | None = None
    counts: dict = field(default_factory=dict)
    # one row a ticket or survey comment: source, source_id, language, true_topic,
    # true_sentiment, has_pii (what the text analytics are scored on)
    texts: pd.DataFrame | None = None


def _iso(ms: np.ndarray) -> np.ndarray:
    """UTC ISO-8601 with milliseconds and Z, vectorized through numpy datetime64."""
    ms = np.asarray(ms, dtype=np.int64)
    text = np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms")
    return np.char.add(text.astype(str), "Z").astype(object)


def write_crm(cfg: SimulationConfig, pop: Population, act: Activity, ident: Identity,
              web: WebResult, pos: PosResult, crm_dir: Path) -> CrmResult:
    crm_dir.mkdir(parents=True, exist_ok=True)
    t0 = start_of(cfg.start)
    end_ms = t0 + cfg.days * DAY_MS
    result = CrmResult()
    first_order = _first_orders(pop, act, web, pos)
    result.first_order_ms = first_order
    contacts, contact_rows = _contacts(cfg, pop, act, ident, web, pos, first_order, end_ms, result)
    tickets = _tickets(cfg, pop, act, ident, end_ms)
    feedback = _feedback(cfg, act, ident, end_ms)
    result.texts = pd.concat([tickets.attrs.pop("truth"), feedback.attrs.pop("truth")], ignore_index=True)
    con = sim_duck.connect()
    empty = 0
    for name, df in (("contacts", contacts), ("tickets", tickets), ("feedback_submissions", feedback)):
        empty += _write_object(cfg, con, name, df, crm_dir / f"{name}.jsonl.gz")
    con.close()
    ever = contacts.drop_duplicates("id")
    funnel = contacts.loc[contacts["lifecycle_stage"].isin(FUNNEL_STAGES), "id"].nunique()
    result.counts.update({
        "contacts": contact_rows,
        "contact_versions": len(contacts),
        "archived_contacts": int(contacts["archived"].sum()),
        "feedback_submissions": len(feedback),
        "ces_surveys": int((feedback["survey_type"] == "CES").sum()),
        "empty_string_records": empty,
        "free_text_countries": int((~ever["country"].isin(list(sim_keys.CALLING_CODE))).sum()),
        "funnel_stage_contacts": int(funnel),
        "lifecycle_stages": int(contacts["lifecycle_stage"].nunique()),
        **_text_counts(tickets, feedback),
        "traditional_chinese_texts": int((result.texts["language"] == "zh-Hant").sum()),
    })
    return result


def _text_counts(tickets: pd.DataFrame, feedback: pd.DataFrame) -> dict:
    cjk = f"[{_CJK}]"
    first = tickets.drop_duplicates("id")
    last = tickets.drop_duplicates("id", keep="last")
    comment = feedback["comment"]
    chinese = comment.str.contains(cjk, regex=True, na=False)
    return {
        "tickets": len(first),
        "ticket_versions": len(tickets),
        "open_tickets_at_end": int((last["status"] != STAGE_CLOSED).sum()),
        "chinese_tickets": int(first["content"].str.contains(cjk, regex=True).sum()),
        "tickets_with_pii": int(first["content"].str.contains(r"@|\+?\d[\d -]{7,}\d", regex=True).sum()),
        "chinese_comments": int(chinese.sum()),
        "english_comments": int((comment.notna() & ~chinese).sum()),
    }


def _first_orders(pop, act, web, pos) -> np.ndarray:
    first = np.full(pop.n, np.iinfo(np.int64).max, dtype=np.int64)
    if len(web.orders.ms):
        np.minimum.at(first, web.orders.person, web.orders.ms)
    store = pos.order_utc_ms >= 0
    np.minimum.at(first, act.o_person[store], pos.order_utc_ms[store])
    return first


def _contacts(cfg, pop, act, ident, web, pos, first_order, end_ms, result) -> tuple[pd.DataFrame, int]:
    n = pop.n
    t0 = start_of(cfg.start)
    ever = ident.primary_id >= 0
    people = np.flatnonzero(ever)
    # Creation times: before the first day, the sign-up event, or a minute after the till sale.
    created = ident.pre_created_ms.copy()
    sign = web.session_signup_ms >= 0
    created[web.session_person[sign]] = web.session_signup_ms[sign] + 800
    store_sign = (act.signup_channel == SIGNUP_STORE) & (act.contact_day >= 0) & ever
    o_store = pos.order_utc_ms >= 0
    on_signup_day = o_store & (act.o_day == act.contact_day[act.o_person]) & store_sign[act.o_person]
    created[act.o_person[on_signup_day]] = pos.order_utc_ms[on_signup_day] + 2 * MINUTE_MS
    missing = ever & (created < 0)   # safety net: a contact always has a creation time
    created[missing] = t0 + np.maximum(act.contact_day[missing], 0).astype(np.int64) * DAY_MS + 43_200_000

    rng = cfg.rng("crm-contacts")
    stage0 = np.where(pop.existing,
                      rng.choice(np.array(["customer", "lead", "subscriber", "other"], dtype=object),
                                 size=n, p=[0.8, 0.1, 0.07, 0.03]),
                      np.where(act.signup_channel == SIGNUP_STORE, "customer", "lead")).astype(object)
    # HubSpot's funnel: some older leads and subscribers are further down it; some new leads
    # become marketing-qualified before they buy (a change below).
    u_funnel, pick_funnel, t_funnel = cfg.rng("crm-funnel").random((3, n))
    funnel = u_funnel < cfg.funnel_stage_rate
    deeper = funnel & pop.existing & np.isin(stage0, ["lead", "subscriber"])
    stage0[deeper] = np.array(FUNNEL_STAGES, dtype=object)[(pick_funnel[deeper] * 3).astype(int)]
    email_t, phone_t = typed(cfg, "crm-contact-keys", pop.email, pop.phone_nsn, pop.country,
                             np.zeros(n, dtype=bool))
    no_email = (act.signup_channel == SIGNUP_STORE) & (rng.random(n) < 0.2)
    no_phone = (act.signup_channel != SIGNUP_STORE) & (rng.random(n) < 0.25)
    email_t = np.where(no_email, None, email_t)
    phone_t, mobile_t, phone_e164, mobile_e164 = _phone_fields(cfg, pop, phone_t, ~no_phone)
    country_t = _countries(cfg, "crm-country-text", pop.country)
    gender = np.where(rng.random(n) < 0.1, None, pop.gender).astype(object)
    loyalty0 = np.where(_enrolled_by(act, act.contact_day), pop.loyalty, None)
    base = pd.DataFrame({
        "id": ident.primary_id[people], "person": people, "t": created[people],
        "createdAt": created[people], "email": email_t[people], "first_name": pop.firstname[people],
        "last_name": pop.lastname[people], "phone": phone_t[people], "mobile_phone": mobile_t[people],
        "gender": gender[people], "date_of_birth": pop.date_of_birth[people],
        "city": pop.city[people], "country": country_t[people], "loyalty_id": loyalty0[people],
        "lifecycle_stage": stage0[people],
        "marketing_consent": np.where(pop.consent[people], "true", "false").astype(object),
        "signup_channel": SIGNUP_NAMES[act.signup_channel[people]].astype(object),
        "archived": False,
    })

    # Second contacts.
    dups = np.flatnonzero(ident.dup_id >= 0)
    rng_d = cfg.rng("crm-dups")
    kind = ident.dup_kind[dups]
    dup_email = ident.dup_email[dups].copy()
    case = kind == DUP_CASE
    if case.any():   # the same address typed differently: that difference is the duplicate
        dup_email[case] = sim_keys.messy_emails(dup_email[case], rng_d.random(int(case.sum())))
    local = cfg.rng("crm-dup-national").random(len(dups)) < cfg.national_phone_rate
    dup_phone = sim_keys.messy_phones(pop.phone_nsn[dups], pop.country[dups], local,
                                      rng_d.random(len(dups)))
    dup_phone = _readable_at_home(dup_phone, pop.phone_nsn[dups], pop.country[dups])
    dup_phone = np.where((kind == DUP_PHONE_ONLY) | (rng_d.random(len(dups)) < 0.5), dup_phone, None)
    dup_df = pd.DataFrame({
        "id": ident.dup_id[dups], "person": dups, "t": ident.dup_created_ms[dups],
        "createdAt": ident.dup_created_ms[dups], "email": dup_email,
        "first_name": pop.firstname[dups], "last_name": pop.lastname[dups], "phone": dup_phone,
        "mobile_phone": None, "gender": None, "date_of_birth": None, "city": pop.city[dups],
        "country": _countries(cfg, "crm-dup-country-text", pop.country[dups]), "loyalty_id": None,
        "lifecycle_stage": "lead", "marketing_consent": "false",
        "signup_channel": np.where(kind == DUP_PHONE_ONLY, "store", "web").astype(object),
        "archived": False,
    })

    # Changes of primary contacts over the period.
    changes = []
    mql = np.flatnonzero(ever & funnel & ~pop.existing & (stage0 == "lead"))
    t_mql = created[mql] + (3_600_000 + t_funnel[mql] * 5 * DAY_MS).astype(np.int64)
    ok = t_mql < first_order[mql]
    changes.append(pd.DataFrame({"person": mql[ok], "t": t_mql[ok],
                                 "lifecycle_stage": "marketingqualifiedlead"}))
    became = ever & (first_order < end_ms) & np.isin(stage0, ["lead", "subscriber", "other",
                                                                *FUNNEL_STAGES]) \
        & (first_order >= created)
    p = np.flatnonzero(became)
    changes.append(pd.DataFrame({"person": p, "t": first_order[p] + 5 * MINUTE_MS,
                                 "lifecycle_stage": "customer"}))
    # Evangelists: a promoter score from a customer.
    prom = act.f_nps & (act.f_score >= 9)
    if prom.any():
        fms = _feedback_ms(cfg, act)
        pp, tt = act.f_person[prom], fms[prom] + MINUTE_MS
        ok = (tt > first_order[pp]) | (stage0[pp] == "customer")
        df = pd.DataFrame({"person": pp[ok], "t": tt[ok]}).groupby("person", as_index=False)["t"].min()
        df["lifecycle_stage"] = "evangelist"
        changes.append(df)
    # Loyalty enrolment after the contact existed: the loyalty id is added at the till.
    later = ever & (act.enroll_day < NEVER) & (act.enroll_day >= 0) & (act.enroll_day > act.contact_day)
    on_enroll = o_store & (act.o_day == act.enroll_day[act.o_person]) & later[act.o_person]
    changes.append(pd.DataFrame({"person": act.o_person[on_enroll],
                                 "t": pos.order_utc_ms[on_enroll] + 3 * MINUTE_MS,
                                 "loyalty_id": pop.loyalty[act.o_person[on_enroll]]}))
    flip = np.flatnonzero(ident.consent_day < NEVER)
    tflip = (t0 + ident.consent_day[flip].astype(np.int64) * DAY_MS
             + cfg.rng("crm-consent").integers(0, DAY_MS, size=len(flip)))
    changes.append(pd.DataFrame({"person": flip, "t": tflip, "marketing_consent": np.where(
        pop.consent[flip], "false", "true").astype(object)}))
    erased = np.flatnonzero(ident.archive_ms >= 0)
    changes.append(pd.DataFrame({"person": erased, "t": ident.archive_ms[erased], "archived": True}))
    ch = pd.concat(changes, ignore_index=True).astype({"person": np.int64, "t": np.int64})
    ch = ch[(ch["t"] < end_ms)]
    ch = ch.merge(base[["person", "id"]], on="person")
    ch = ch[ch["t"] > created[ch["person"].to_numpy()]]
    # Nothing changes after an erasure.
    erased_at = ident.archive_ms[ch["person"].to_numpy()]
    ch = ch[ch["t"].to_numpy() <= np.where(erased_at >= 0, erased_at, end_ms)]
    bulk, bulk_ms = _bulk_import(cfg, pd.concat([base, dup_df], ignore_index=True), ident, end_ms)

    cols = [c for c in base.columns if c not in ("id", "t")]
    versions = pd.concat([base.assign(_order=0), dup_df.assign(_order=0), ch.assign(_order=1),
                          bulk.assign(_order=1)], ignore_index=True)
    versions = versions.sort_values(["id", "t", "_order"], kind="stable")
    versions[cols] = versions.groupby("id", sort=False)[cols].ffill()
    versions = versions.drop_duplicates(["id", "t"], keep="last").drop(columns="_order")
    versions = versions.sort_values(["id", "t"], kind="stable").reset_index(drop=True)
    versions["person"] = versions["person"].astype(np.int64)
    versions["createdAt"] = versions["createdAt"].astype(np.int64)
    versions["archived"] = versions["archived"].fillna(False).astype(bool)
    versions["updatedAt"] = versions["t"]

    for pid, person in zip(ident.primary_id[people], people):
        result.contact_person[int(pid)] = int(person)
    for did, person in zip(ident.dup_id[dups], dups):
        result.contact_person[int(did)] = int(person)
    emails = versions[["email", "person"]].dropna()
    result.emails = sorted({(e.strip().lower(), int(p)) for e, p in emails.itertuples(index=False)})
    loyalty = versions[["loyalty_id", "person"]].dropna()
    result.loyalty = sorted({(v, int(p)) for v, p in loyalty.itertuples(index=False)})
    fields = _phone_truth(pop, ident, people, dups, phone_t, mobile_t, phone_e164, mobile_e164,
                          country_t, dup_phone, dup_df["country"].to_numpy())
    result.phone_fields = fields
    persons = fields.column("person_index").to_numpy()
    e164 = fields.column("e164").to_pylist()
    result.phones = sorted({(e, int(p)) for e, p in zip(e164, persons) if e is not None})
    kinds = fields.column("shape").to_pylist()
    result.counts.update({
        "unparseable_phones": kinds.count("unparseable"),
        "national_phones": kinds.count("national"),
        "landline_phones": kinds.count("landline"),
        "bulk_update_contacts": int((versions["t"] == bulk_ms).sum()) if bulk_ms is not None else 0,
        "bulk_update_at": str(_iso(np.array([bulk_ms]))[0]) if bulk_ms is not None else None,
    })
    return versions, len(people) + len(dups)


def _countries(cfg: SimulationConfig, stream: str, iso: np.ndarray) -> np.ndarray:
    """The contact's country as typed: the ISO code, or (at the knob's rate) free text."""
    u, pick = cfg.rng(stream).random((2, len(iso)))
    out = np.asarray(iso).astype(object)
    sel = u < cfg.free_text_country_rate
    if sel.any():
        out[sel] = sim_keys.free_text_countries(np.asarray(iso)[sel], pick[sel])
    return out


def _readable_at_home(typed_: np.ndarray, nsn: np.ndarray, country: np.ndarray) -> np.ndarray:
    """A contact types their own number as it is dialled at home: "00852 ..." means another
    country in Hong Kong (and in Japan or the US, where 00 is not the international prefix),
    so such a typing becomes "+852 ..." and every field reads back, with the contact's own
    country, to the number the ground truth holds."""
    out = np.asarray(typed_, dtype=object).copy()
    for i, raw in enumerate(out):
        if raw is None or not raw.startswith("00"):
            continue
        e164 = f"+{sim_keys.CALLING_CODE[country[i]]}{nsn[i]}"
        number = phonenumbers.parse(raw, country[i])
        if phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) != e164:
            out[i] = f"+{sim_keys.CALLING_CODE[country[i]]} {nsn[i]}"
    return out


def _phone_fields(cfg, pop, phone_t, has_phone):
    """phone and mobilephone as typed per person, with the E.164 number each means (None when
    empty or unreadable). National formats, landlines and unreadable fields at their rates."""
    n = pop.n
    u_nat, pick_nat, u_land, pick_land, u_bad, pick_bad = cfg.rng("crm-phone-shapes").random((6, n))
    phone_t = _readable_at_home(phone_t, pop.phone_nsn, pop.country)
    national = u_nat < cfg.national_phone_rate
    if national.any():
        phone_t[national] = sim_keys.national_phones(pop.phone_nsn[national], pop.country[national],
                                                     pick_nat[national])
    phone_e164 = pop.phone.astype(object).copy()
    mobile_t = np.full(n, None, dtype=object)
    mobile_e164 = np.full(n, None, dtype=object)
    land = has_phone & (u_land < cfg.landline_phone_rate)
    if land.any():
        mobile_t[land], mobile_e164[land] = phone_t[land], phone_e164[land]
        nsn = sim_keys.landline_numbers(cfg.rng("crm-landlines"), pop.country[land],
                                        taken=set(pop.phone))
        phone_t[land] = [sim_keys.landline_national(s, c, u)
                         for s, c, u in zip(nsn, pop.country[land], pick_land[land])]
        phone_e164[land] = sim_keys.e164(nsn, pop.country[land])
    bad = has_phone & (u_bad < cfg.unparseable_phone_rate)
    if bad.any():
        phone_t[bad] = sim_keys.unparseable_phones(pop.phone_nsn[bad], pick_bad[bad])
        phone_e164[bad] = None
    phone_t[~has_phone] = None
    phone_e164[~has_phone] = None
    return phone_t, mobile_t, phone_e164, mobile_e164


def _phone_truth(pop, ident, people, dups, phone_t, mobile_t, phone_e164, mobile_e164,
                 country_t, dup_phone, dup_country) -> pa.Table:
    """One row a non-empty phone field: contact id, property, the text, the country as typed,
    the number's country (ISO), the E.164 number it means and its shape (international,
    national, landline or unparseable)."""
    def shape(raw, e164, landline):
        if e164 is None:
            return "unparseable"
        if landline:
            return "landline"
        return "international" if raw.lstrip().startswith(("+", "00", "(+")) else "national"

    spec = PROPERTY_MAP["contacts"]
    phone, mobile = spec.prop("phone"), spec.prop("mobile_phone")
    rows = []
    for cid, person in zip(ident.primary_id[people], people):
        for prop, typed_, e164 in ((phone, phone_t, phone_e164), (mobile, mobile_t, mobile_e164)):
            raw = typed_[person]
            if raw is not None:
                landline = prop == phone and mobile_t[person] is not None
                rows.append((int(cid), int(person), prop, raw, country_t[person], pop.country[person],
                             e164[person], shape(raw, e164[person], landline)))
    for cid, person, raw, country in zip(ident.dup_id[dups], dups, dup_phone, dup_country):
        if raw is not None:
            rows.append((int(cid), int(person), phone, raw, country, pop.country[person],
                         pop.phone[person], shape(raw, pop.phone[person], False)))
    rows.sort(key=lambda r: (r[0], r[2]))
    names = ["contact_id", "person_index", "property", "value", "country_typed", "country",
             "e164", "shape"]
    cols = list(zip(*rows)) if rows else [()] * len(names)
    return pa.table({name: pa.array([str(v) for v in col] if name == "contact_id" else list(col),
                                    pa.int64() if name == "person_index" else pa.string())
                     for name, col in zip(names, cols)})


def _bulk_import(cfg, heads: pd.DataFrame, ident: Identity, end_ms: int):
    """A bulk import in the middle of the period: up to ``bulk_update_contacts`` contacts that
    exist then (and are not erased) get a new version at the same millisecond."""
    empty = pd.DataFrame({"id": pd.Series(dtype=np.int64), "person": pd.Series(dtype=np.int64),
                          "t": pd.Series(dtype=np.int64)})
    if cfg.bulk_update_contacts <= 0:
        return empty, None
    rng = cfg.rng("crm-bulk-import")
    at = start_of(cfg.start) + (cfg.days // 2) * DAY_MS + 2 * 3_600_000 + int(rng.integers(0, 3_600_000))
    if at >= end_ms:
        return empty, None
    archive = np.where(heads["id"].to_numpy() == ident.primary_id[heads["person"].to_numpy()],
                       ident.archive_ms[heads["person"].to_numpy()], -1)
    ok = (heads["createdAt"].to_numpy() < at) & ((archive < 0) | (archive > at))
    ids = np.sort(heads["id"].to_numpy()[ok])
    k = min(cfg.bulk_update_contacts, len(ids))
    if not k:
        return empty, None
    chosen = np.sort(rng.choice(ids, size=k, replace=False))
    person = heads.set_index("id").loc[chosen, "person"].to_numpy()
    return pd.DataFrame({"id": chosen, "person": person, "t": np.full(k, at, dtype=np.int64)}), at


def _enrolled_by(act: Activity, day: np.ndarray) -> np.ndarray:
    """Has a loyalty id on ``day`` (contacts created then carry it from their first version)."""
    return (act.enroll_day < NEVER) & (act.enroll_day <= np.maximum(day, -1))


def _feedback_ms(cfg: SimulationConfig, act: Activity) -> np.ndarray:
    t0 = start_of(cfg.start)
    offset = cfg.rng("crm-feedback-time").integers(8 * 3_600_000, DAY_MS, size=len(act.f_day))
    return t0 + act.f_day.astype(np.int64) * DAY_MS + offset


def _tickets(cfg, pop, act, ident, end_ms) -> pd.DataFrame:
    """Tickets in the default pipeline "0": created New ("1"), some Waiting on contact ("2") or
    on us ("3"), then Closed ("4") with closed_date. The contact is an association."""
    t0 = start_of(cfg.start)
    m = len(act.t_person)
    created = t0 + act.t_day.astype(np.int64) * DAY_MS + act.t_offset_ms
    order = np.argsort(created, kind="stable")
    ids = np.empty(m, dtype=np.int64)
    ids[order] = FIRST_TICKET_ID + np.arange(m)
    rng = cfg.rng("crm-tickets")
    src = act.t_from_order
    u = rng.random(m)
    cats = np.array(ref.TICKET_CATEGORIES, dtype=object)   # billing, delivery, product, account, other
    cat_idx = np.where(src == 1, np.select([u < 0.45, u < 0.8], [1, 2], 0),      # web order
                       np.where(src == 2, np.where(u < 0.6, 2, 0),                 # store order
                                np.select([u < 0.5, u < 0.7], [3, 0], 4)))         # no order
    category = cats[cat_idx]
    priority = np.array(TICKET_PRIORITIES, dtype=object)[
        rng.choice(4, size=m, p=[0.4, 0.45, 0.11, 0.04])]
    chinese = cfg.rng("crm-ticket-language").random(m) < cfg.chinese_comment_share
    pii = cfg.rng("crm-ticket-pii").random(m) < cfg.pii_in_ticket_rate
    use_phone = rng.random(m) < 0.5
    person = act.t_person
    subject = np.empty(m, dtype=object)
    content = np.empty(m, dtype=object)
    traditional = chinese & (cfg.rng("crm-ticket-script").random(m) < cfg.traditional_chinese_share)
    # a third of the tickets with personal data carry a greeted name or an identity number
    # instead of (besides) the contact detail
    extra_kind, extra_pick = cfg.rng("crm-ticket-pii-kind").random((2, m))
    for i in range(m):
        en, zh = ref.TICKET_TEXT[category[i]]
        subject[i], content[i] = zh if chinese[i] else en
        if pii[i]:
            contact = pop.phone[person[i]] if use_phone[i] else pop.email[person[i]]
            content[i] += " " + ref.PII_SENTENCE[int(chinese[i])].format(contact=contact)
            if extra_kind[i] < 1 / 3:
                names = ref.GREETED_NAMES[int(chinese[i])]
                template = ref.PII_EXTRA[int(chinese[i])][int(extra_pick[i] * 2)]
                content[i] += " " + template.format(name=names[int(extra_pick[i] * len(names))],
                                                    id=resident_id(int(ids[i])))
        if traditional[i]:
            subject[i], content[i] = to_traditional(subject[i]), to_traditional(content[i])
    contact_id = ident.primary_id[person].astype(str).astype(object)
    resolve = act.t_resolve_ms
    closed = np.where(resolve >= 0, created + resolve, np.iinfo(np.int64).max)
    pending = np.where(resolve >= 0, created + (resolve * rng.uniform(0.2, 0.6, size=m)).astype(np.int64),
                       created + rng.integers(3_600_000, 2 * DAY_MS, size=m))
    goes_pending = rng.random(m) < 0.4
    waiting = np.where(cfg.rng("crm-ticket-waiting").random(m) < 0.6, STAGE_WAITING_CONTACT,
                       STAGE_WAITING_US).astype(object)
    base = dict(id=ids, createdAt=created, contact=contact_id, subject=subject, content=content,
                category=np.array([TICKET_CATEGORY_VALUES[c] for c in category], dtype=object),
                priority=priority)
    frames = [pd.DataFrame({**base, "t": created, "status": STAGE_NEW, "closed_at": None})]
    sel = goes_pending & (pending < end_ms) & (pending < closed) & (pending > created)
    frames.append(pd.DataFrame({k: v[sel] for k, v in base.items()}
                               | {"t": pending[sel], "status": waiting[sel], "closed_at": None}))
    sel = closed < end_ms
    frames.append(pd.DataFrame({k: v[sel] for k, v in base.items()}
                               | {"t": closed[sel], "status": STAGE_CLOSED,
                                  "closed_at": _iso(closed[sel])}))
    df = pd.concat(frames, ignore_index=True).sort_values(["id", "t"], kind="stable")
    truth = [ref.TICKET_TRUTH[c] for c in category]
    df.attrs["truth"] = pd.DataFrame({
        "source": "ticket", "source_id": ids.astype(str),
        "language": np.where(traditional, "zh-Hant", np.where(chinese, "zh-Hans", "en")),
        "true_topic": [t for t, _ in truth], "true_sentiment": [s_ for _, s_ in truth], "has_pii": pii})
    df["pipeline"] = TICKET_PIPELINE
    df["updatedAt"] = df["t"]
    df["archived"] = False
    return df


def _feedback(cfg, act, ident, end_ms) -> pd.DataFrame:
    """Survey responses: NPS (0-10), CSAT (1-5) and, at ces_survey_share of the CSAT ones, CES
    (1-7, the same experience on HubSpot's effort scale). The contact is an association."""
    m = len(act.f_person)
    submitted = _feedback_ms(cfg, act)
    keep = submitted < end_ms
    order = np.argsort(submitted, kind="stable")
    ids = np.empty(m, dtype=np.int64)
    ids[order] = FIRST_FEEDBACK_ID + np.arange(m)
    score = act.f_score
    band = np.where(act.f_nps, np.select([score <= 6, score <= 8], [0, 1], 2),
                    np.select([score <= 2, score == 3], [0, 1], 2))
    rng = cfg.rng("crm-feedback")
    has_comment = rng.random(m) < 0.6
    chinese = cfg.rng("crm-feedback-language").random(m) < cfg.chinese_comment_share
    pick = rng.random(m)
    names = ("bad", "mid", "good")
    traditional = chinese & (cfg.rng("crm-feedback-script").random(m) < cfg.traditional_chinese_share)
    comment = np.empty(m, dtype=object)
    true_topic = np.full(m, None, dtype=object)
    for i in range(m):
        if has_comment[i]:
            pool = ref.COMMENTS[names[band[i]]]
            true_topic[i], en, zh = pool[int(pick[i] * len(pool))]
            comment[i] = (to_traditional(zh) if traditional[i] else zh) if chinese[i] else en
    u_ces, up = cfg.rng("crm-ces").random((2, m))
    ces = ~act.f_nps & (u_ces < cfg.ces_survey_share)
    csat = np.clip(score, 1, 5)
    ces_value = np.array([1, 2, 4, 5, 6])[csat - 1] + ((csat != 3) & (up < 0.5))
    value = np.where(ces, ces_value, score)
    df = pd.DataFrame({
        "id": ids, "t": submitted, "createdAt": submitted, "updatedAt": submitted,
        "contact": ident.primary_id[act.f_person].astype(str).astype(object),
        "survey_type": np.where(act.f_nps, "NPS", np.where(ces, "CES", "CSAT")).astype(object),
        "score": value.astype(str).astype(object), "comment": comment,
        "submitted_at": _iso(submitted), "archived": False,
    })
    out = df[keep].sort_values("id", kind="stable")
    with_text = keep & has_comment
    out.attrs["truth"] = pd.DataFrame({
        "source": "survey", "source_id": ids[with_text].astype(str),
        "language": np.where(traditional, "zh-Hant", np.where(chinese, "zh-Hans", "en"))[with_text],
        "true_topic": true_topic[with_text],
        "true_sentiment": np.array([ref.COMMENT_SENTIMENT[names[b]] for b in band])[with_text]
        if m else np.array([], dtype=object),
        "has_pii": False})
    return out


def resident_id(seed: int) -> str:
    """A GB 11643 identity number with a valid check character (a Beijing region code and a
    birth date drawn from the seed), so that masking is tested on what it must find."""
    rng = np.random.default_rng(seed)
    born = dt.date(1960, 1, 1) + dt.timedelta(days=int(rng.integers(0, 15_000)))
    body = f"110105{born:%Y%m%d}{int(rng.integers(0, 1000)):03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights)) % 11]


@lru_cache(maxsize=1)
def _t2t():
    import opencc

    return opencc.OpenCC("s2t").convert


def to_traditional(text: str) -> str:
    return _t2t()(text)


def _write_object(cfg: SimulationConfig, con: duckdb.DuckDBPyConnection, obj: str,
                  df: pd.DataFrame, path: Path) -> int:
    """One JSON line a version, ordered by (updatedAt, id), gzipped with mtime 0. Our columns
    become the portal's properties through the default map; createdate, the last-modified
    property and hs_object_id come from createdAt, updatedAt and id; the records picked at
    empty_string_rate send "" for every empty property. Returns how many records send a ""."""
    spec = PROPERTY_MAP[obj]
    ids = df["id"].astype(np.int64).to_numpy()
    created, updated = _iso(df["createdAt"].to_numpy()), _iso(df["updatedAt"].to_numpy())
    derived = {"createdate": created, spec.last_modified: updated,
               "hs_object_id": ids.astype(str).astype(object)}
    source = {prop: column for column, prop in spec.columns.items()}
    props = [*spec.columns.values(), *(p for p in derived if p not in source)]
    unique = np.unique(ids)
    blank_ids = unique[cfg.rng("crm-empty-strings", obj).random(len(unique)) < cfg.empty_string_rate]
    blank = np.isin(ids, blank_ids)
    columns, any_blank = {}, np.zeros(len(df), dtype=bool)
    for p in props:
        if p in source:
            col = df[source[p]]
            values = col.astype(object).where(col.notna(), None).to_numpy()
        else:
            values = derived[p]
        missing = np.array([v is None for v in values], dtype=bool)
        values = np.where(blank & missing, "", values)
        any_blank |= blank & missing
        columns[p] = pa.array(values, pa.string())
    archived = df["archived"].astype(bool).to_numpy()
    tab = pa.table({
        "id": pa.array(ids),
        "createdAt": pa.array(created, pa.string()),
        "updatedAt": pa.array(updated, pa.string()),
        "archivedAt": pa.array(np.where(archived, updated, None), pa.string()),
        "updated_ms": pa.array(df["updatedAt"].astype(np.int64).to_numpy()),
        "archived": pa.array(archived),
        **({"contact": pa.array(df["contact"].to_numpy(), pa.string())} if "contact" in df else {}),
        **columns,
    })
    con.register("versions", tab)
    fields = ", ".join(f'"{p}" := "{p}"' for p in props)
    assoc = ", associations := struct_pack(contacts := [contact])" if "contact" in df else ""
    rows = con.execute(f"""
        SELECT to_json(struct_pack(id := id::VARCHAR, properties := struct_pack({fields}),
                                   createdAt := createdAt, updatedAt := updatedAt,
                                   archived := archived, archivedAt := archivedAt{assoc})) || chr(10)
        FROM versions ORDER BY updated_ms, id""").to_arrow_table().column(0)
    con.unregister("versions")
    data = "".join(rows.to_pylist()).encode("utf-8")
    path.write_bytes(gzip.compress(data, 6, mtime=0))
    return int(len(np.unique(ids[any_blank])))
