"""The simulated CRM store: every version of every contact, ticket and feedback submission.

``sim_dir/crm/<object>.jsonl.gz`` holds one line a version (CONTRACTS.md): properties are all
strings or null, ids strings of integers, times UTC ISO with milliseconds and Z. A record that
changes gets a new line with a later updatedAt: a ticket going pending then closed, a contact
becoming a customer, joining the loyalty programme, changing consent, or being erased (a last
version with ``archived: true``; its tickets and feedback stay as they are).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from customer360.demo import sim_keys
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
CONTACT_PROPS = ["email", "firstname", "lastname", "phone", "gender", "date_of_birth", "city",
                 "country", "loyalty_id", "lifecyclestage", "marketing_consent", "signup_channel"]
TICKET_PROPS = ["contact_id", "subject", "content", "category", "priority", "status", "closed_at"]
FEEDBACK_PROPS = ["contact_id", "survey_type", "score", "comment", "submitted_at"]
_CJK = "\u4e00-\u9fff"


@dataclass
class CrmResult:
    contact_person: dict[int, int] = field(default_factory=dict)   # contact id -> person
    emails: list[tuple[str, int]] = field(default_factory=list)     # canonical email -> person
    phones: list[tuple[str, int]] = field(default_factory=list)
    loyalty: list[tuple[str, int]] = field(default_factory=list)
    first_order_ms: np.ndarray | None = None
    counts: dict = field(default_factory=dict)


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
    con = sim_duck.connect()
    for name, df, props in (("contacts", contacts, CONTACT_PROPS), ("tickets", tickets, TICKET_PROPS),
                            ("feedback_submissions", feedback, FEEDBACK_PROPS)):
        _write_object(con, df, props, crm_dir / f"{name}.jsonl.gz")
    con.close()
    result.counts.update({
        "contacts": contact_rows,
        "contact_versions": len(contacts),
        "archived_contacts": int(contacts["archived"].sum()),
        "feedback_submissions": len(feedback),
        **_text_counts(tickets, feedback),
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
        "open_tickets_at_end": int((last["status"] != "closed").sum()),
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
    email_t, phone_t = typed(cfg, "crm-contact-keys", pop.email, pop.phone_nsn, pop.country,
                             np.ones(n, dtype=bool))
    no_email = (act.signup_channel == SIGNUP_STORE) & (rng.random(n) < 0.2)
    no_phone = (act.signup_channel != SIGNUP_STORE) & (rng.random(n) < 0.25)
    email_t = np.where(no_email, None, email_t)
    phone_t = np.where(no_phone, None, phone_t)
    gender = np.where(rng.random(n) < 0.1, None, pop.gender).astype(object)
    loyalty0 = np.where(_enrolled_by(act, act.contact_day), pop.loyalty, None)
    base = pd.DataFrame({
        "id": ident.primary_id[people], "person": people, "t": created[people],
        "createdAt": created[people], "email": email_t[people], "firstname": pop.firstname[people],
        "lastname": pop.lastname[people], "phone": phone_t[people], "gender": gender[people],
        "date_of_birth": pop.date_of_birth[people], "city": pop.city[people],
        "country": pop.country[people].astype(object), "loyalty_id": loyalty0[people],
        "lifecyclestage": stage0[people],
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
    dup_phone = sim_keys.messy_phones(pop.phone_nsn[dups], pop.country[dups],
                                      np.ones(len(dups), bool), rng_d.random(len(dups)))
    dup_phone = np.where((kind == DUP_PHONE_ONLY) | (rng_d.random(len(dups)) < 0.5), dup_phone, None)
    dup_df = pd.DataFrame({
        "id": ident.dup_id[dups], "person": dups, "t": ident.dup_created_ms[dups],
        "createdAt": ident.dup_created_ms[dups], "email": dup_email,
        "firstname": pop.firstname[dups], "lastname": pop.lastname[dups], "phone": dup_phone,
        "gender": None, "date_of_birth": None, "city": pop.city[dups],
        "country": pop.country[dups].astype(object), "loyalty_id": None, "lifecyclestage": "lead",
        "marketing_consent": "false",
        "signup_channel": np.where(kind == DUP_PHONE_ONLY, "store", "web").astype(object),
        "archived": False,
    })

    # Changes of primary contacts over the period.
    changes = []
    became = ever & (first_order < end_ms) & np.isin(stage0, ["lead", "subscriber", "other"]) \
        & (first_order >= created)
    p = np.flatnonzero(became)
    changes.append(pd.DataFrame({"person": p, "t": first_order[p] + 5 * MINUTE_MS,
                                 "lifecyclestage": "customer"}))
    # Evangelists: a promoter score from a customer.
    prom = act.f_nps & (act.f_score >= 9)
    if prom.any():
        fms = _feedback_ms(cfg, act)
        pp, tt = act.f_person[prom], fms[prom] + MINUTE_MS
        ok = (tt > first_order[pp]) | (stage0[pp] == "customer")
        df = pd.DataFrame({"person": pp[ok], "t": tt[ok]}).groupby("person", as_index=False)["t"].min()
        df["lifecyclestage"] = "evangelist"
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
    ch = ch.merge(base[["person", "id", "createdAt"]], on="person")
    ch = ch[ch["t"] > ch["createdAt"]]
    # Nothing changes after an erasure.
    erased_at = ident.archive_ms[ch["person"].to_numpy()]
    ch = ch[ch["t"].to_numpy() <= np.where(erased_at >= 0, erased_at, end_ms)]

    primary = pd.concat([base.assign(_order=0), ch.assign(_order=1)], ignore_index=True)
    primary = primary.sort_values(["id", "t", "_order"], kind="stable")
    cols = CONTACT_PROPS + ["archived"]
    primary[cols] = primary.groupby("id", sort=False)[cols].ffill()
    primary = primary.drop_duplicates(["id", "t"], keep="last")
    versions = pd.concat([primary.drop(columns="_order"), dup_df], ignore_index=True)
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
    phones = versions[["person"]][versions["phone"].notna()]
    result.phones = sorted({(pop.phone[p], int(p)) for p in phones["person"]})
    return versions, len(people) + len(dups)


def _enrolled_by(act: Activity, day: np.ndarray) -> np.ndarray:
    """Has a loyalty id on ``day`` (contacts created then carry it from their first version)."""
    return (act.enroll_day < NEVER) & (act.enroll_day <= np.maximum(day, -1))


def _feedback_ms(cfg: SimulationConfig, act: Activity) -> np.ndarray:
    t0 = start_of(cfg.start)
    offset = cfg.rng("crm-feedback-time").integers(8 * 3_600_000, DAY_MS, size=len(act.f_day))
    return t0 + act.f_day.astype(np.int64) * DAY_MS + offset


def _tickets(cfg, pop, act, ident, end_ms) -> pd.DataFrame:
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
    priority = np.array(["low", "medium", "high"], dtype=object)[rng.choice(3, size=m, p=[0.4, 0.45, 0.15])]
    chinese = cfg.rng("crm-ticket-language").random(m) < cfg.chinese_comment_share
    pii = cfg.rng("crm-ticket-pii").random(m) < cfg.pii_in_ticket_rate
    use_phone = rng.random(m) < 0.5
    person = act.t_person
    subject = np.empty(m, dtype=object)
    content = np.empty(m, dtype=object)
    for i in range(m):
        en, zh = ref.TICKET_TEXT[category[i]]
        subject[i], content[i] = zh if chinese[i] else en
        if pii[i]:
            contact = pop.phone[person[i]] if use_phone[i] else pop.email[person[i]]
            content[i] += " " + ref.PII_SENTENCE[int(chinese[i])].format(contact=contact)
    contact_id = ident.primary_id[person].astype(str).astype(object)
    resolve = act.t_resolve_ms
    closed = np.where(resolve >= 0, created + resolve, np.iinfo(np.int64).max)
    pending = np.where(resolve >= 0, created + (resolve * rng.uniform(0.2, 0.6, size=m)).astype(np.int64),
                       created + rng.integers(3_600_000, 2 * DAY_MS, size=m))
    goes_pending = rng.random(m) < 0.4
    base = dict(id=ids, createdAt=created, contact_id=contact_id, subject=subject, content=content,
                category=category, priority=priority)
    frames = [pd.DataFrame({**base, "t": created, "status": "open", "closed_at": None})]
    sel = goes_pending & (pending < end_ms) & (pending < closed) & (pending > created)
    frames.append(pd.DataFrame({k: v[sel] for k, v in base.items()} | {"t": pending[sel], "status": "pending",
                                                                        "closed_at": None}))
    sel = closed < end_ms
    frames.append(pd.DataFrame({k: v[sel] for k, v in base.items()} | {"t": closed[sel], "status": "closed",
                                                                        "closed_at": _iso(closed[sel])}))
    df = pd.concat(frames, ignore_index=True).sort_values(["id", "t"], kind="stable")
    df["updatedAt"] = df["t"]
    df["archived"] = False
    return df


def _feedback(cfg, act, ident, end_ms) -> pd.DataFrame:
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
    comment = np.empty(m, dtype=object)
    for i in range(m):
        if has_comment[i]:
            pool = ref.COMMENTS[names[band[i]]][int(chinese[i])]
            comment[i] = pool[int(pick[i] * len(pool))]
    df = pd.DataFrame({
        "id": ids, "t": submitted, "createdAt": submitted, "updatedAt": submitted,
        "contact_id": ident.primary_id[act.f_person].astype(str).astype(object),
        "survey_type": np.where(act.f_nps, "NPS", "CSAT").astype(object),
        "score": score.astype(str).astype(object), "comment": comment,
        "submitted_at": _iso(submitted), "archived": False,
    })
    return df[keep].sort_values("id", kind="stable")


def _write_object(con: duckdb.DuckDBPyConnection, df: pd.DataFrame, props: list[str], path: Path) -> None:
    """One JSON line a version, ordered by (updatedAt, id), gzipped with mtime 0."""
    tab = pa.table({
        "id": pa.array(df["id"].astype(np.int64).to_numpy()),
        "createdAt": pa.array(_iso(df["createdAt"].to_numpy()), pa.string()),
        "updatedAt": pa.array(_iso(df["updatedAt"].to_numpy()), pa.string()),
        "updated_ms": pa.array(df["updatedAt"].astype(np.int64).to_numpy()),
        "archived": pa.array(df["archived"].astype(bool).to_numpy()),
        **{p: pa.array(df[p].astype(object).where(df[p].notna(), None).to_numpy(), pa.string())
           for p in props},
    })
    con.register("versions", tab)
    fields = ", ".join(f"{p} := {p}" for p in props)
    rows = con.execute(f"""
        SELECT to_json(struct_pack(id := id::VARCHAR, properties := struct_pack({fields}),
                                   createdAt := createdAt, updatedAt := updatedAt,
                                   archived := archived)) || chr(10)
        FROM versions ORDER BY updated_ms, id""").to_arrow_table().column(0)
    con.unregister("versions")
    data = "".join(rows.to_pylist()).encode("utf-8")
    path.write_bytes(gzip.compress(data, 6, mtime=0))
