"""Synthetic marts with a known churn mechanism, for the ML tests and benchmark.

The demo simulator (customer360.demo) produces realistic, messy sources; this generator skips
the sources and writes the marts the ML stage reads (docs/marts.md column names) directly, with a
latent behaviour whose churn probability is known exactly, so a test can compare a model's AUC
with the best achievable one.

Each person has: a sign-up day; a daily order rate `lam`; a daily hazard `h` of silently
leaving for good, driven by a dissatisfaction score z (which also drives tickets, slow
resolutions, low NPS and returns); a browsing rate (dead customers stop browsing, which is
why recent sessions carry signal); a store/web preference; two favourite product categories
(purchases and views come mostly from them, which is what item-item affinity can learn and a
popularity list cannot); category 0 holds consumables that people rebuy.

Every day: the alive may die, then the alive may order. So for someone alive at the end of
day T the probability of no order in the next H days is exactly
    sum_{k<H} a^k h + a^H,  a = (1 - h)(1 - lam),
and 1 for someone already dead: people.parquet's true_churn_probability at truth_date (the
last day by default, as the demo simulator dates its truth).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from customer360.core import duck
from customer360.core.settings import get_settings

CONSUMABLE_CATEGORY = 0


@dataclass(frozen=True)
class SyntheticConfig:
    people: int = 600
    days: int = 240
    start: dt.date = dt.date(2025, 1, 1)
    seed: int = 7
    categories: int = 8
    skus_per_category: int = 15
    browser_share: float = 0.15            # people who browse a lot and rarely buy
    anonymous_session_share: float = 0.25  # sessions never linked to a customer
    session_rate_scale: float = 1.0
    horizon_days: int = 90
    # "end": the truth is about the horizon after the last day, as the demo simulator writes
    # it; "eval": about the horizon after the latest fully labelled snapshot (observed labels)
    truth_at: str = "end"

    @property
    def as_of(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days - 1)

    @property
    def truth_date(self) -> dt.date:
        if self.truth_at == "end":
            return self.as_of
        return self.as_of - dt.timedelta(days=self.horizon_days)


@dataclass
class SyntheticData:
    config: SyntheticConfig
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    people: pd.DataFrame | None = None
    keys: pd.DataFrame | None = None


def _no_order_probability(lam: np.ndarray, h: np.ndarray, horizon: int) -> np.ndarray:
    a = (1 - h) * (1 - lam)
    return h * (1 - a ** horizon) / (1 - a) + a ** horizon


def _category_skus(rng: np.random.Generator, n: int, cat: np.ndarray, cfg: SyntheticConfig,
                   favourite: np.ndarray) -> np.ndarray:
    """A product index within each row's category: a skewed pick, or the favourite
    consumable for most consumable purchases."""
    ranks = np.arange(cfg.skus_per_category)
    weights = 1.0 / (ranks + 1.0) ** 0.8
    cdf = np.cumsum(weights / weights.sum())
    idx = np.minimum(np.searchsorted(cdf, rng.random(n)), cfg.skus_per_category - 1)
    rebuy = (cat == CONSUMABLE_CATEGORY) & (rng.random(n) < 0.7)
    return np.where(rebuy, favourite, idx)


def _pick_categories(rng: np.random.Generator, n: int, c1: np.ndarray, c2: np.ndarray,
                     cfg: SyntheticConfig) -> np.ndarray:
    u = rng.random(n)
    other = rng.integers(0, cfg.categories, n)
    return np.where(u < 0.5, c1, np.where(u < 0.8, c2, other))


def generate(cfg: SyntheticConfig = SyntheticConfig()) -> SyntheticData:
    rng = np.random.default_rng(cfg.seed)
    n, days = cfg.people, cfg.days

    signup = rng.integers(0, max(1, int(days * 0.5)), n)
    z = rng.normal(size=n)
    browser = rng.random(n) < cfg.browser_share
    lam = np.where(browser, 0.002, rng.gamma(2.0, 1 / 60, n))
    lam = np.minimum(lam, 0.3)
    h = np.minimum(0.004 * np.exp(0.9 * z), 0.05)
    session_rate = np.where(browser, 0.35, 0.05 + 3 * lam) * cfg.session_rate_scale
    p_store = rng.beta(1.2, 1.2, n)
    c1 = rng.integers(0, cfg.categories, n)
    c2 = (c1 + rng.integers(1, cfg.categories, n)) % cfg.categories
    favourite = rng.integers(0, cfg.skus_per_category, n)
    consent = rng.random(n) < 0.6
    devices = 1 + (rng.random(n) < 0.3)

    alive = np.ones(n, dtype=bool)
    truth_day = (cfg.truth_date - cfg.start).days
    alive_at_truth = np.zeros(n, dtype=bool)
    order_person, order_day, session_person, session_day, session_count = [], [], [], [], []
    ticket_person, ticket_day = [], []
    for d in range(days):
        signed = signup <= d
        # one draw a person a day for each process, so the streams do not depend on who is alive
        dies = rng.random(n) < h
        buys = rng.random(n) < lam
        sessions = rng.poisson(session_rate)
        complains = rng.random(n) < 0.0015 * np.exp(0.7 * z)
        alive &= ~(signed & dies)
        active = alive & signed
        who = np.flatnonzero(active & buys)
        order_person.append(who)
        order_day.append(np.full(who.size, d))
        s_who = np.flatnonzero(active & (sessions > 0))
        session_person.append(s_who)
        session_day.append(np.full(s_who.size, d))
        session_count.append(sessions[s_who])
        t_who = np.flatnonzero(active & complains)
        ticket_person.append(t_who)
        ticket_day.append(np.full(t_who.size, d))
        if d == truth_day:
            alive_at_truth = alive.copy()

    rng2 = np.random.default_rng([cfg.seed, 1])
    start = pd.Timestamp(cfg.start)
    end = start + pd.Timedelta(days=days)

    # --- orders and lines
    op = np.concatenate(order_person)
    od = np.concatenate(order_day)
    n_orders = op.size
    store = rng2.random(n_orders) < p_store[op]
    order_ts = start + pd.to_timedelta(od, unit="D") + pd.to_timedelta(
        rng2.integers(8 * 3600, 22 * 3600, n_orders), unit="s")
    n_lines = 1 + rng2.poisson(0.6, n_orders)
    line_order = np.repeat(np.arange(n_orders), n_lines)
    line_no = np.arange(line_order.size) - np.repeat(np.cumsum(n_lines) - n_lines, n_lines) + 1
    lp = op[line_order]
    cat = _pick_categories(rng2, line_order.size, c1[lp], c2[lp], cfg)
    idx = _category_skus(rng2, line_order.size, cat, cfg, favourite[lp])
    sku_code = cat * 1000 + idx
    price_of = np.round(np.exp(rng2.normal(4.0, 0.6, cfg.categories * 1000)), 2)
    qty = 1 + (rng2.random(line_order.size) < 0.15)
    unit_price = price_of[sku_code]
    line_amount = np.round(unit_price * qty, 2)
    gross = np.bincount(line_order, weights=line_amount, minlength=n_orders)
    returns = rng2.random(n_orders) < 0.04 * np.exp(0.6 * z[op])
    returned = np.where(returns, np.round(gross * rng2.uniform(0.3, 1.0, n_orders), 2), 0.0)

    orders = pd.DataFrame({
        "order_no": np.arange(n_orders), "person": op, "channel": np.where(store, "store", "web"),
        "store_id": np.where(store, (op % 5) + 1, 0), "ordered_at": order_ts,
        "item_count": np.bincount(line_order, weights=qty, minlength=n_orders).astype(int),
        "gross_amount": np.round(gross, 2), "discount_amount": 0.0, "returned_amount": returned,
        "net_amount": np.round(gross - returned, 2)})
    lines = pd.DataFrame({
        "order_no": line_order, "line_no": line_no, "sku_code": sku_code, "quantity": qty,
        "unit_price": unit_price, "line_amount": line_amount, "txn_type": "SALE"})

    # --- web sessions: the person's own sessions, plus one converting session per web order
    sp = np.repeat(np.concatenate(session_person), np.concatenate(session_count))
    sd = np.repeat(np.concatenate(session_day), np.concatenate(session_count))
    web_orders = orders[orders.channel == "web"]
    sp = np.concatenate([sp, web_orders.person.to_numpy()])
    n_plain = sd.size
    s_start = np.concatenate([
        (start + pd.to_timedelta(sd, unit="D")
         + pd.to_timedelta(rng2.integers(0, 86000, n_plain), unit="s")).to_numpy(),
        (web_orders.ordered_at - pd.Timedelta(minutes=10)).to_numpy()])
    converted = np.r_[np.zeros(n_plain, dtype=bool), np.ones(len(web_orders), dtype=bool)]
    order_of_session = np.r_[np.full(n_plain, -1), web_orders.order_no.to_numpy()]
    n_sessions = sp.size
    duration_s = np.where(converted, 11 * 60, rng2.integers(60, 40 * 60, n_sessions))
    duration = pd.to_timedelta(duration_s, unit="s").to_numpy()
    logged_in = converted | (rng2.random(n_sessions) >= cfg.anonymous_session_share)
    device = rng2.integers(0, devices[sp])
    n_views = 1 + rng2.poisson(2.0, n_sessions)
    sessions = pd.DataFrame({
        "session_no": np.arange(n_sessions), "person": sp, "device": device,
        "started_at": s_start, "ended_at": s_start + duration, "logged_in": logged_in,
        "page_views": 1 + rng2.poisson(3.0, n_sessions), "converted": converted})
    sessions["events"] = sessions.page_views + n_views

    # --- product events: browsing within the favourite categories; a converting session also
    # views and adds what its order bought
    ev_session = np.repeat(np.arange(n_sessions), n_views)
    ev_person = sp[ev_session]
    ev_cat = _pick_categories(rng2, ev_session.size, c1[ev_person], c2[ev_person], cfg)
    ev_idx = _category_skus(rng2, ev_session.size, ev_cat, cfg, favourite[ev_person])
    browse = pd.DataFrame({"session_no": ev_session, "sku_code": ev_cat * 1000 + ev_idx,
                           "event_name": "Product Viewed"})
    bought = lines.merge(pd.DataFrame({"session_no": np.flatnonzero(order_of_session >= 0),
                                       "order_no": order_of_session[order_of_session >= 0]}),
                         on="order_no")[["session_no", "sku_code"]]
    events = pd.concat([browse, bought.assign(event_name="Product Viewed"),
                        bought.assign(event_name="Product Added")], ignore_index=True)
    s_started = sessions.started_at.to_numpy()[events.session_no]
    s_len = (sessions.ended_at - sessions.started_at).dt.total_seconds().to_numpy()[events.session_no]
    events["event_at"] = s_started + pd.to_timedelta(
        (rng2.random(len(events)) * s_len).astype(int), unit="s")
    events = pd.concat([events, pd.DataFrame({  # one page call a session, without a sku
        "session_no": np.arange(n_sessions), "sku_code": -1, "event_name": None,
        "event_at": sessions.started_at})], ignore_index=True)

    # --- tickets and feedback, driven by dissatisfaction z
    tp = np.concatenate(ticket_person)
    td = np.concatenate(ticket_day)
    created = start + pd.to_timedelta(td, unit="D") + pd.to_timedelta(
        rng2.integers(0, 86000, tp.size), unit="s")
    hours = rng2.exponential(20 * np.exp(0.5 * z[tp]))
    closed = created + pd.to_timedelta(np.round(hours * 3600), unit="s")
    tickets = pd.DataFrame({
        "ticket_no": np.arange(tp.size), "person": tp, "created_at": created,
        "closed_at": np.where(closed < end, closed, pd.NaT),
        "category": rng2.choice(["billing", "delivery", "product", "account", "other"], tp.size),
        "priority": np.where(rng2.random(tp.size) < 0.15 + 0.1 * (z[tp] > 1), "high",
                             np.where(rng2.random(tp.size) < 0.5, "medium", "low"))})
    tickets["closed_at"] = pd.to_datetime(tickets.closed_at)

    nps_rows = orders[rng2.random(n_orders) < 0.15]
    nps_score = np.clip(np.round(8 - 1.8 * z[nps_rows.person] + rng2.normal(0, 1.2, len(nps_rows))), 0, 10)
    closed_t = tickets[tickets.closed_at.notna()]
    csat_rows = closed_t[rng2.random(len(closed_t)) < 0.5]
    csat_score = np.clip(np.round(4 - 0.8 * z[csat_rows.person] + rng2.normal(0, 0.7, len(csat_rows))), 1, 5)
    feedback = pd.concat([
        pd.DataFrame({"person": nps_rows.person.to_numpy(), "survey_type": "NPS", "score": nps_score,
                      "submitted_at": nps_rows.ordered_at.to_numpy()
                      + pd.to_timedelta(rng2.integers(3600, 3 * 86400, len(nps_rows)), unit="s")}),
        pd.DataFrame({"person": csat_rows.person.to_numpy(), "survey_type": "CSAT", "score": csat_score,
                      "submitted_at": csat_rows.closed_at.to_numpy() + pd.Timedelta(hours=2)}),
    ], ignore_index=True)
    feedback = feedback[feedback.submitted_at < end].reset_index(drop=True)
    feedback["feedback_no"] = np.arange(len(feedback))

    # --- CRM versions: created at sign-up; some people change their consent later
    signed_up = np.flatnonzero(signup < days)
    first = pd.DataFrame({"person": signed_up, "valid_from": start + pd.to_timedelta(signup[signed_up], unit="D")
                          + pd.Timedelta(hours=9), "marketing_consent": consent[signed_up]})
    flips = signed_up[rng2.random(signed_up.size) < 0.1]
    flip_day = signup[flips] + rng2.integers(1, days, flips.size)
    keep = flip_day < days
    second = pd.DataFrame({"person": flips[keep], "valid_from": start + pd.to_timedelta(flip_day[keep], unit="D")
                           + pd.Timedelta(hours=9), "marketing_consent": ~consent[flips[keep]]})
    versions = pd.concat([first, second], ignore_index=True).sort_values(["person", "valid_from"])
    versions["valid_to"] = versions.groupby("person").valid_from.shift(-1)
    versions["signup_channel"] = np.where(p_store[versions.person] > 0.5, "store", "web")

    truth = np.where(alive_at_truth, _no_order_probability(lam, h, cfg.horizon_days), 1.0)
    people = pd.DataFrame({
        "person_id": [f"P{i:07d}" for i in range(n)], "true_churn_probability": truth,
        "alive_at_truth_date": alive_at_truth, "truth_date": cfg.truth_date,
        "order_rate_per_day": lam, "daily_churn_hazard": h, "dissatisfaction": z})
    keys = pd.concat([
        pd.DataFrame({"key_type": "crm_contact_id", "key_value": [str(100000 + i) for i in range(n)],
                      "person_id": people.person_id}),
        pd.DataFrame({"key_type": "anonymous_id",
                      "key_value": [f"anon-{i}-{d}" for i in range(n) for d in range(devices[i])],
                      "person_id": [f"P{i:07d}" for i in range(n) for _ in range(devices[i])]}),
    ], ignore_index=True)

    return SyntheticData(cfg, {"orders": orders, "lines": lines, "sessions": sessions,
                               "events": events, "tickets": tickets, "feedback": feedback,
                               "versions": versions}, people, keys)


# The marts as docs/marts.md names them; integer codes become the warehouse's string ids here.
_MARTS_SQL = {
    "marts.fct_orders": """
        select 'O' || order_no as order_id, 'C' || lpad(person::varchar, 7, '0') as customer_id,
               channel, case when store_id > 0 then 'S' || store_id end as store_id,
               ordered_at, cast(ordered_at as date) as order_date, item_count, gross_amount,
               discount_amount, returned_amount, net_amount, 'purchase' as order_kind
        from orders""",
    "marts.fct_order_lines": """
        select 'O' || order_no as order_id, line_no,
               'SKU-' || lpad(sku_code::varchar, 5, '0') as sku, quantity, unit_price,
               line_amount, txn_type
        from lines""",
    "marts.fct_web_sessions": """
        select 'S' || session_no as session_id,
               case when logged_in then 'C' || lpad(person::varchar, 7, '0') end as customer_id,
               'anon-' || person || '-' || device as anonymous_id, started_at, ended_at,
               page_views, events, converted
        from sessions""",
    "staging.stg_web__events": """
        select 'M' || row_number() over (order by e.event_at, e.session_no, e.sku_code) as message_id,
               case when e.event_name is null then 'page' else 'track' end as event_type,
               e.event_name, 'anon-' || s.person || '-' || s.device as anonymous_id,
               case when s.logged_in then (100000 + s.person)::varchar end as user_id,
               e.event_at,
               case when e.sku_code >= 0 then 'SKU-' || lpad(e.sku_code::varchar, 5, '0') end as sku
        from events as e join sessions as s using (session_no)""",
    "marts.fct_tickets": """
        select 'T' || ticket_no as ticket_id, 'C' || lpad(person::varchar, 7, '0') as customer_id,
               category, priority, case when closed_at is null then 'open' else 'closed' end as status,
               created_at, closed_at,
               round(date_diff('second', created_at, closed_at) / 3600.0, 2) as resolution_hours
        from tickets""",
    "marts.fct_feedback": """
        select 'F' || feedback_no as feedback_id, 'C' || lpad(person::varchar, 7, '0') as customer_id,
               survey_type, score,
               case when survey_type = 'NPS' then case when score >= 9 then 'promoter'
                    when score >= 7 then 'passive' else 'detractor' end end as nps_category,
               submitted_at
        from feedback""",
    "marts.dim_customer": """
        select 'C' || lpad(person::varchar, 7, '0') as customer_id, valid_from, valid_to,
               valid_to is null as is_current, marketing_consent, signup_channel,
               [(100000 + person)::varchar] as crm_contact_ids
        from versions""",
}


def write_warehouse(data: SyntheticData, path: Path) -> None:
    """Create the marts (and staging.stg_web__events) in a DuckDB file, replacing them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with duck.connect(path=path) as con:
        for schema in ("marts", "staging"):
            con.execute(f"create schema if not exists {schema}")
        for name, frame in data.tables.items():
            con.register(name, frame)
        for table, sql in _MARTS_SQL.items():
            con.execute(f"create or replace table {table} as {sql}")


def write_ground_truth(data: SyntheticData, simulation_dir: Path) -> Path:
    """people.parquet and keys.parquet where the demo simulator puts them."""
    out = simulation_dir / "ground_truth"
    out.mkdir(parents=True, exist_ok=True)
    data.people.to_parquet(out / "people.parquet", index=False)
    data.keys.to_parquet(out / "keys.parquet", index=False)
    return out


def truncate_warehouse(path: Path, last_day: dt.date) -> None:
    """Make the warehouse look as it did at the end of `last_day`: drop later facts, reopen
    tickets closed later and end later CRM versions."""
    cutoff = f"timestamp '{last_day + dt.timedelta(days=1)}'"
    with duck.connect(path=path) as con:
        con.execute(f"delete from marts.fct_order_lines where order_id in "
                    f"(select order_id from marts.fct_orders where ordered_at >= {cutoff})")
        con.execute(f"delete from marts.fct_orders where ordered_at >= {cutoff}")
        con.execute(f"delete from marts.fct_web_sessions where started_at >= {cutoff}")
        con.execute(f"delete from staging.stg_web__events where event_at >= {cutoff}")
        con.execute(f"delete from marts.fct_tickets where created_at >= {cutoff}")
        con.execute(f"update marts.fct_tickets set closed_at = null, status = 'open', "
                    f"resolution_hours = null where closed_at >= {cutoff}")
        con.execute(f"delete from marts.fct_feedback where submitted_at >= {cutoff}")
        con.execute(f"delete from marts.dim_customer where valid_from >= {cutoff}")
        con.execute(f"update marts.dim_customer set valid_to = null, is_current = true "
                    f"where valid_to >= {cutoff}")


def build_home(home: Path, cfg: SyntheticConfig = SyntheticConfig(), last_day: dt.date | None = None,
               ground_truth: bool = True, data: SyntheticData | None = None) -> SyntheticData:
    """A C360_HOME as the ML stage finds it after `dbt build --select ml`: synthetic marts (cut
    at `last_day` if given), the ml feature models built from the dbt SQL, and the simulator's
    ground truth."""
    from customer360.demo.ml_dbt_render import build_ml_models

    data = data or generate(cfg)
    layout = get_settings(home=home)
    warehouse = layout.warehouse_path
    write_warehouse(data, warehouse)
    if last_day is not None:
        truncate_warehouse(warehouse, last_day)
    if ground_truth:
        write_ground_truth(data, layout.simulation_dir)
    with duck.connect(path=warehouse) as con:
        build_ml_models(con, {"as_of_date": str(last_day or cfg.as_of)})
    return data
