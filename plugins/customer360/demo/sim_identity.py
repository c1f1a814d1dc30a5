"""CRM identities: which contacts exist, when, with which ids; duplicate contacts; erasures
(archived contacts); consent changes.

Erasure is decided here because it changes behaviour: an erased person does nothing from that
day on, so their later activity is removed from the logs (their tickets and feedback stay).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from customer360.demo import sim_keys
from customer360.demo.sim_behaviour import NEVER, Activity
from customer360.demo.sim_config import SimulationConfig
from customer360.demo.sim_population import Population, start_of

DAY_MS = 86_400_000
FIRST_CONTACT_ID = 100_001
DUP_CASE, DUP_OTHER_EMAIL, DUP_PHONE_ONLY = 0, 1, 2


@dataclass
class Identity:
    primary_id: np.ndarray        # per person: contact id, -1 if never a contact
    dup_id: np.ndarray            # per person: second contact id or -1
    dup_day: np.ndarray           # day the second contact appears (negative: before the first day)
    dup_kind: np.ndarray          # DUP_* or -1
    dup_email: np.ndarray         # canonical email of the second contact (None for phone-only)
    archive_day: np.ndarray       # NEVER unless erased
    archive_ms: np.ndarray        # -1 unless erased
    consent_day: np.ndarray       # day marketing consent flips, NEVER if it doesn't
    pre_created_ms: np.ndarray    # per person: createdAt of a contact older than the first day, -1
    dup_created_ms: np.ndarray    # createdAt of the second contact (-1 if none)

    @property
    def dup_web(self) -> np.ndarray:
        """The second contact is a web account the person sometimes logs in with."""
        return (self.dup_id >= 0) & (self.dup_kind != DUP_PHONE_ONLY)


def build_identity(cfg: SimulationConfig, pop: Population, act: Activity) -> Identity:
    n, days = pop.n, cfg.days
    t0 = start_of(cfg.start)
    ever = act.contact_day < NEVER

    # Erasures: a random day after the contact exists.
    rng = cfg.rng("archive")
    eligible = np.flatnonzero(ever & (act.contact_day < days - 1))
    k = int(round(cfg.archived_contact_rate * ever.sum()))
    archive_day = np.full(n, NEVER, dtype=np.int32)
    archive_ms = np.full(n, -1, dtype=np.int64)
    if k and len(eligible):
        chosen = np.sort(rng.choice(eligible, size=min(k, len(eligible)), replace=False))
        lo = np.maximum(act.contact_day[chosen] + 1, 0)
        archive_day[chosen] = lo + (rng.random(len(chosen)) * (days - lo)).astype(np.int32)
        archive_ms[chosen] = (t0 + archive_day[chosen].astype(np.int64) * DAY_MS
                              + rng.integers(0, DAY_MS, size=len(chosen)))
    _drop_after_erasure(act, archive_day)

    # Second contacts for the same person.
    rng = cfg.rng("dup-contacts")
    k = int(round(cfg.dup_contact_rate * ever.sum()))
    dup_day = np.full(n, NEVER, dtype=np.int32)
    dup_kind = np.full(n, -1, dtype=np.int8)
    dup_email = np.full(n, None, dtype=object)
    dup_created = np.full(n, -1, dtype=np.int64)
    pre_created = np.where(act.contact_day < 0,
                           t0 - cfg.rng("contact-age").integers(DAY_MS, 3 * 365 * DAY_MS, size=n), -1)
    candidates = np.flatnonzero(ever & (act.contact_day < days - 1) & (archive_day == NEVER))
    if k and len(candidates):
        chosen = np.sort(rng.choice(candidates, size=min(k, len(candidates)), replace=False))
        before = (act.contact_day[chosen] < 0) & (rng.random(len(chosen)) < 0.5)
        lo = np.maximum(act.contact_day[chosen] + 1, 0)
        day = lo + (rng.random(len(chosen)) * (days - lo)).astype(np.int32)
        dup_day[chosen] = np.where(before, -1, day)
        created_in = t0 + day.astype(np.int64) * DAY_MS + rng.integers(0, DAY_MS, size=len(chosen))
        age = t0 - pre_created[chosen]
        created_before = pre_created[chosen] + (age * rng.random(len(chosen))).astype(np.int64)
        dup_created[chosen] = np.where(before, created_before, created_in)
        dup_kind[chosen] = rng.choice(3, size=len(chosen), p=[0.45, 0.3, 0.25])
        other = np.array([_other_domain(e) for e in pop.email[chosen]], dtype=object)
        dup_email[chosen] = np.where(dup_kind[chosen] == DUP_CASE, pop.email[chosen],
                                     np.where(dup_kind[chosen] == DUP_OTHER_EMAIL, other, None))

    # Contact ids grow with creation time, like an auto-increment (same-day order by person).
    primary_day = np.where(ever, act.contact_day, NEVER).astype(np.int64)
    key_primary = np.where(primary_day < 0, pre_created, t0 + primary_day * DAY_MS)
    key_dup = np.where(dup_day < 0, dup_created, t0 + dup_day.astype(np.int64) * DAY_MS)
    people = np.arange(n)
    has_dup = dup_kind >= 0
    keys = np.concatenate([key_primary[ever], key_dup[has_dup]])
    owners = np.concatenate([people[ever], people[has_dup]])
    is_dup = np.concatenate([np.zeros(ever.sum(), bool), np.ones(has_dup.sum(), bool)])
    order = np.lexsort((is_dup, owners, keys))
    ids = np.empty(len(order), dtype=np.int64)
    ids[order] = FIRST_CONTACT_ID + np.arange(len(order))
    primary_id = np.full(n, -1, dtype=np.int64)
    dup_id = np.full(n, -1, dtype=np.int64)
    primary_id[owners[~is_dup]] = ids[~is_dup]
    dup_id[owners[is_dup]] = ids[is_dup]

    # Marketing consent flips (an opt-out, or a late opt-in).
    rng = cfg.rng("consent")
    consent_day = np.full(n, NEVER, dtype=np.int32)
    cand = np.flatnonzero(ever & (act.contact_day < days - 1))
    k = int(round(cfg.consent_change_rate * ever.sum()))
    if k and len(cand):
        chosen = rng.choice(cand, size=min(k, len(cand)), replace=False)
        lo = np.maximum(act.contact_day[chosen] + 1, 0)
        consent_day[chosen] = lo + (rng.random(len(chosen)) * (days - lo)).astype(np.int32)
        consent_day[consent_day >= archive_day] = NEVER

    return Identity(primary_id=primary_id, dup_id=dup_id, dup_day=dup_day, dup_kind=dup_kind,
                    dup_email=dup_email, archive_day=archive_day, archive_ms=archive_ms,
                    consent_day=consent_day, pre_created_ms=pre_created, dup_created_ms=dup_created)


def _other_domain(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local}@{'outlook.com' if domain != 'outlook.com' else 'gmail.com'}"


def _drop_after_erasure(act: Activity, archive_day: np.ndarray) -> None:
    # every per-session array: one left out would no longer line up with s_person
    keep = act.s_day < archive_day[act.s_person]
    for name in ("s_person", "s_day", "s_order", "s_signup", "s_exposure"):
        setattr(act, name, getattr(act, name)[keep])
    keep = act.o_day < archive_day[act.o_person]
    for name in ("o_person", "o_day", "o_web"):
        setattr(act, name, getattr(act, name)[keep])
    keep = act.t_day < archive_day[act.t_person]
    for name in ("t_person", "t_day", "t_offset_ms", "t_resolve_ms", "t_from_order"):
        setattr(act, name, getattr(act, name)[keep])
    keep = act.f_day < archive_day[act.f_person]
    for name in ("f_person", "f_day", "f_nps", "f_score"):
        setattr(act, name, getattr(act, name)[keep])
    erased = archive_day < NEVER
    act.churn_day = np.where(erased, np.minimum(act.churn_day, archive_day), act.churn_day)
    act.enroll_day = np.where(act.enroll_day >= archive_day, NEVER, act.enroll_day).astype(np.int32)
    # an exposure on or after the erasure day was in a dropped session: it never happened
    act.exp_exposed_day = np.where(act.exp_exposed_day >= archive_day[None, :], NEVER,
                                   act.exp_exposed_day).astype(np.int32)


def typed(cfg: SimulationConfig, stream: str, canonical_email: np.ndarray, nsn: np.ndarray,
          country: np.ndarray, local: np.ndarray, salt: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Email and phone as a person types them into a form: canonical, or (at the messy rate)
    a variant. ``local``: the form is in the number's own country (national formats allowed)."""
    rng = cfg.rng(stream, salt)
    m = len(canonical_email)
    messy_e = rng.random(m) < cfg.messy_key_format_rate
    messy_p = rng.random(m) < cfg.messy_key_format_rate
    pick_e, pick_p = rng.random(m), rng.random(m)
    email = canonical_email.copy()
    has = np.array([e is not None for e in email], dtype=bool)
    sel = messy_e & has
    if sel.any():
        email[sel] = sim_keys.messy_emails(canonical_email[sel], pick_e[sel])
    phone = sim_keys.e164(nsn, country)
    if messy_p.any():
        phone[messy_p] = sim_keys.messy_phones(nsn[messy_p], country[messy_p], local[messy_p],
                                               pick_p[messy_p])
    return email, phone

