"""Day-by-day behaviour of the population, vectorized over people (one numpy step a day).

Each day an active person may churn, order (online or in a store), visit the website, sign up,
open a ticket, or answer a survey. The churn hazard is the person's base hazard moved by their
recent experience::

    hazard = base * exp(0.5 * open_tickets + 0.45 * bad_experience - 0.35 * (engagement - ref))

``bad_experience`` grows with every ticket and every low score and fades (3 %/day);
``engagement`` grows with visits and orders and fades (5 %/day). Churned people stop ordering
and mostly stop visiting. The result is event logs (whole-period arrays) plus the end state
from which each person's true churn probability for the next 90 days is computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from customer360.demo import sim_reference as ref
from customer360.demo.sim_config import SimulationConfig
from customer360.demo.sim_population import STORE, WEB, Population

NEVER = np.iinfo(np.int32).max
HORIZON_DAYS = 90
_ENG_DECAY, _BAD_DECAY = 0.95, 0.97
_W_OPEN, _W_BAD, _W_ENG = 0.5, 0.45, 0.35
_CHURNED_VISIT_FACTOR = 0.08
# Monday..Sunday
_WEB_WEEK = np.array([0.95, 0.95, 0.95, 1.0, 1.05, 1.15, 0.95])
_STORE_WEEK = np.array([0.8, 0.8, 0.85, 0.95, 1.1, 1.35, 1.15])
SIGNUP_WEB, SIGNUP_STORE, SIGNUP_REFERRAL, SIGNUP_CAMPAIGN = 0, 1, 2, 3
SIGNUP_NAMES = np.array(["web", "store", "referral", "campaign"])


@dataclass
class Activity:
    """Everything that happened, as parallel arrays (one row an occurrence)."""
    # sessions: a web visit; at most one order and one sign-up each (the day's first session)
    s_person: np.ndarray
    s_day: np.ndarray
    s_order: np.ndarray          # bool: this session places the person's web order of the day
    s_signup: np.ndarray         # bool: the person signs up in this session
    s_exposure: np.ndarray       # int8 bit mask: bit e = this session shows experiment e
    # orders
    o_person: np.ndarray
    o_day: np.ndarray
    o_web: np.ndarray            # bool
    # tickets
    t_person: np.ndarray
    t_day: np.ndarray
    t_offset_ms: np.ndarray      # creation time within the day
    t_resolve_ms: np.ndarray     # time to close, -1 if it stays open
    t_from_order: np.ndarray     # 0 background, 1 web order, 2 store order
    # feedback
    f_person: np.ndarray
    f_day: np.ndarray
    f_nps: np.ndarray            # bool: NPS (else CSAT)
    f_score: np.ndarray
    # per person
    contact_day: np.ndarray      # day the CRM contact appears (-1: before the first day; NEVER)
    signup_channel: np.ndarray   # SIGNUP_* code
    enroll_day: np.ndarray       # loyalty id from this day (-1 before the first day; NEVER)
    churn_day: np.ndarray        # NEVER if still active
    hazard_end: np.ndarray
    open_tickets_end: np.ndarray
    bad_end: np.ndarray
    engagement_end: np.ndarray
    # A/B tests (sim_reference.EXPERIMENTS): per experiment and person
    exp_variation: np.ndarray    # (experiments, people) variation index (0 = control)
    exp_exposed_day: np.ndarray  # (experiments, people) day first shown, NEVER if never
    exp_true_lift: np.ndarray    # (experiments,) relative rise of the daily purchase probability
    extra: dict = field(default_factory=dict)


def _cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)


def hazard(base: np.ndarray, open_t: np.ndarray, bad: np.ndarray, eng: np.ndarray,
           eng_ref: np.ndarray) -> np.ndarray:
    z = _W_OPEN * np.minimum(open_t, 3) + _W_BAD * np.minimum(bad, 6) \
        - _W_ENG * (np.minimum(eng, 8) - eng_ref)
    return np.minimum(base * np.exp(z), 0.3)


def simulate_behaviour(cfg: SimulationConfig, pop: Population,
                       tick: Callable[[int], None] = lambda n: None) -> Activity:
    rng = cfg.rng("behaviour")
    n, days = pop.n, cfg.days
    weekday0 = cfg.start.weekday()
    week_web = _WEB_WEEK[(weekday0 + np.arange(days)) % 7]
    week_store = _STORE_WEEK[(weekday0 + np.arange(days)) % 7]

    # A person's typical engagement (steady state of the decayed count): the hazard is moved
    # by how far recent engagement is above or below it, so quiet spells raise the risk.
    steady = (pop.visit_rate + 2 * pop.purchase_rate) / (1 - _ENG_DECAY)
    eng_ref = np.full(n, float(np.median(steady)))
    eng = steady.copy()
    bad = np.zeros(n)
    open_t = np.zeros(n, dtype=np.int32)
    alive = np.ones(n, dtype=bool)
    churn_day = np.full(n, NEVER, dtype=np.int32)
    contact_day = np.where(pop.existing, -1, NEVER).astype(np.int32)
    signup_channel = np.where(pop.channel_pref == STORE, SIGNUP_STORE, SIGNUP_WEB).astype(np.int8)
    referral = rng.random(n)
    signup_channel[pop.existing & (referral < 0.1)] = SIGNUP_REFERRAL
    signup_channel[pop.existing & (referral > 0.88)] = SIGNUP_CAMPAIGN
    enroll_day = np.where(pop.enrolled_at_start, -1, NEVER).astype(np.int32)
    closes: list[list[np.ndarray]] = [[] for _ in range(days)]
    S: dict[str, list] = {k: [] for k in ("sp", "sd", "so", "ss", "sx", "op", "od", "ow", "tp", "td",
                                          "to", "tr", "tf", "fp", "fd", "fn", "fs")}
    store_side = pop.channel_pref != WEB
    # A/B tests: their own random stream, so the rest of the behaviour draws what it drew
    # before experiments existed; only the treatment's effect on purchases changes outcomes.
    exp_rng = cfg.rng("experiments")
    n_exp = len(ref.EXPERIMENTS)
    variation = (exp_rng.random((n_exp, n)) < 0.5).astype(np.int8)
    exposed_day = np.full((n_exp, n), NEVER, dtype=np.int32)
    true_lift = np.zeros(n_exp)
    true_lift[1] = cfg.experiment_lift
    window = cfg.experiment_window_days

    for d in range(days):
        if closes[d]:
            np.subtract.at(open_t, np.concatenate(closes[d]), 1)
        h = hazard(pop.base_hazard, open_t, bad, eng, eng_ref)
        churn_now = alive & (rng.random(n) < h)
        alive &= ~churn_now
        churn_day[churn_now] = d

        wk = np.where(pop.web_share > 0.5, week_web[d], week_store[d])
        # the treatment's effect lasts `window` days after the day of exposure
        since = d - exposed_day
        boost = 1.0 + (true_lift[:, None] * ((variation == 1) & (since >= 1) & (since <= window))).sum(axis=0)
        orders = alive & (rng.random(n) < pop.purchase_rate * wk * boost)
        web_o = orders & (rng.random(n) < pop.web_share)
        store_o = orders & ~web_o
        visits = rng.poisson(pop.visit_rate * week_web[d] * np.where(alive, 1.0, _CHURNED_VISIT_FACTOR))
        visits = np.maximum(np.minimum(visits, 3), web_o.astype(np.int64))

        # Sign-ups: buying online needs an account; some visitors sign up anyway; some store
        # customers join the loyalty programme at the till (that creates their contact too).
        no_contact = contact_day > d
        su_web = no_contact & (web_o | ((visits > 0) & (rng.random(n) < 0.03)))
        su_store = no_contact & store_o & ~su_web & (rng.random(n) < 0.3)
        contact_day[su_web | su_store] = d
        u = rng.random(n)
        signup_channel[su_web] = np.where(u[su_web] < 0.1, SIGNUP_REFERRAL,
                                          np.where(u[su_web] > 0.85, SIGNUP_CAMPAIGN, SIGNUP_WEB))
        signup_channel[su_store] = SIGNUP_STORE
        join = store_o & (enroll_day > d) & (su_store | ((contact_day < d) & (rng.random(n) < 0.1)))
        enroll_day[join] = d
        has_contact = contact_day <= d

        # Tickets: orders go wrong more often for people who are harder to please.
        p_ticket = np.where(orders, 0.02 + 0.25 * (1 - pop.satisfaction) ** 2, 0.0) + 0.0004 * alive
        new_t = has_contact & (rng.random(n) < p_ticket)
        tp = np.flatnonzero(new_t)
        if len(tp):
            offset = rng.integers(0, 86_400_000, size=len(tp))
            stuck = rng.random(len(tp)) < 0.07
            hours = np.maximum(rng.lognormal(np.log(20.0), 1.0, size=len(tp)), 0.1)
            resolve = np.where(stuck, -1, (hours * 3_600_000).astype(np.int64))
            close_day = d + (offset + resolve) // 86_400_000
            for cd in np.unique(close_day[(resolve >= 0) & (close_day < days)]):
                closes[cd].append(tp[(resolve >= 0) & (close_day == cd)])
            open_t[tp] += 1
            S["tp"].append(tp); S["td"].append(np.full(len(tp), d)); S["to"].append(offset)
            S["tr"].append(resolve)
            S["tf"].append(np.where(web_o[tp], 1, np.where(store_o[tp], 2, 0)))

        # Surveys after some orders, plus a few relationship NPS surveys.
        fb = has_contact & ((orders & (rng.random(n) < 0.25)) | (alive & (rng.random(n) < 0.001)))
        fp = np.flatnonzero(fb)
        low = np.zeros(n, dtype=bool)
        if len(fp):
            latent = (pop.satisfaction[fp] - 0.12 * np.minimum(open_t[fp], 3)
                      - 0.08 * np.minimum(bad[fp], 5) + 0.12 * rng.standard_normal(len(fp)))
            nps = rng.random(len(fp)) < 0.4
            score = np.where(nps, np.clip(np.round(latent * 10 + 1.5), 0, 10),
                             np.clip(np.round(1 + latent * 4.6), 1, 5)).astype(np.int64)
            low[fp] = np.where(nps, score <= 6, score <= 2)
            S["fp"].append(fp); S["fd"].append(np.full(len(fp), d)); S["fn"].append(nps)
            S["fs"].append(score)

        eng = eng * _ENG_DECAY + visits + 2 * orders
        bad = bad * _BAD_DECAY + new_t + 1.5 * low

        shown = np.zeros(n, dtype=np.int8)
        for e in range(n_exp):
            new = (visits > 0) & (exposed_day[e] == NEVER) & (exp_rng.random(n) < cfg.experiment_exposure_rate)
            exposed_day[e, new] = d
            shown |= (new.astype(np.int8) << e)
        sp = np.flatnonzero(visits)
        if len(sp):
            reps = visits[sp]
            sess_person = np.repeat(sp, reps)
            first = np.concatenate([[True], sess_person[1:] != sess_person[:-1]])
            S["sp"].append(sess_person); S["sd"].append(np.full(len(sess_person), d))
            S["so"].append(first & web_o[sess_person]); S["ss"].append(first & su_web[sess_person])
            S["sx"].append(np.where(first, shown[sess_person], 0))
        op = np.flatnonzero(orders)
        S["op"].append(op); S["od"].append(np.full(len(op), d)); S["ow"].append(web_o[op])
        tick(1)

    h_end = hazard(pop.base_hazard, open_t, bad, eng, eng_ref)
    act = Activity(
        s_person=_cat(S["sp"], np.int64), s_day=_cat(S["sd"], np.int32),
        s_order=_cat(S["so"], bool), s_signup=_cat(S["ss"], bool),
        s_exposure=_cat(S["sx"], np.int8),
        o_person=_cat(S["op"], np.int64), o_day=_cat(S["od"], np.int32), o_web=_cat(S["ow"], bool),
        t_person=_cat(S["tp"], np.int64), t_day=_cat(S["td"], np.int32),
        t_offset_ms=_cat(S["to"], np.int64), t_resolve_ms=_cat(S["tr"], np.int64),
        t_from_order=_cat(S["tf"], np.int8),
        f_person=_cat(S["fp"], np.int64), f_day=_cat(S["fd"], np.int32), f_nps=_cat(S["fn"], bool),
        f_score=_cat(S["fs"], np.int64),
        contact_day=contact_day, signup_channel=signup_channel, enroll_day=enroll_day,
        churn_day=churn_day, hazard_end=h_end, open_tickets_end=open_t, bad_end=bad,
        engagement_end=eng, exp_variation=variation, exp_exposed_day=exposed_day,
        exp_true_lift=true_lift,
    )
    act.extra["eng_ref"] = eng_ref
    act.extra["mean_week_factor"] = float(np.mean(_WEB_WEEK))
    return act


def true_churn_probability(pop: Population, act: Activity, active: np.ndarray) -> np.ndarray:
    """P(no order in the 90 days after the last day), from the end state.

    Each future day an active person first churns with the hazard, else orders with their
    purchase rate. The hazard follows the state's expected path: tickets get resolved
    (about 30 % a day), bad experiences fade, engagement drifts to the person's own level.
    Inactive people (churned or erased) never order again: probability 1.
    """
    q = pop.purchase_rate * act.extra["mean_week_factor"]
    eng_level = (pop.visit_rate * act.extra["mean_week_factor"] + 2 * q) / (1 - _ENG_DECAY)
    open_t = act.open_tickets_end.astype(float)
    bad, eng = act.bad_end.copy(), act.engagement_end.copy()
    p_no_order = np.zeros(pop.n)
    still = np.ones(pop.n)          # P(alive and no order so far)
    for _ in range(HORIZON_DAYS):
        h = hazard(pop.base_hazard, open_t, bad, eng, act.extra["eng_ref"])
        p_no_order += still * h
        still *= (1 - h) * (1 - q)
        open_t *= 0.7
        bad *= _BAD_DECAY
        eng = eng * _ENG_DECAY + (1 - _ENG_DECAY) * eng_level
    return np.where(active, p_no_order + still, 1.0)
