"""Web analytics: sessions become Segment events, written as daily gzipped NDJSON part files.

Sessions (from the behaviour logs) are expanded into events with numpy: a landing page, browsing
(category pages, product pages with "Product Viewed", some "Product Added"), for buyers the
cart, checkout and "Order Completed", and for people who log in an ``identify`` call (or a
"Signed Up" then ``identify`` for new accounts). Events before the login carry no userId; after
it they carry the CRM contact id: the anonymousId -> userId link the warehouse uses.

DuckDB turns the event arrays into JSON lines (``to_json``) in file order; part files are byte
slices of its string buffer, gzipped with mtime 0 so the same seed gives the same bytes.
Messy cases: late events (folder 1-3 days after the timestamp), at-least-once duplicates (same
messageId), late part files (delivered 1-2 days after the folder's day), malformed lines
(truncated JSON), corrupt files (gzip stream cut short), shared devices.

Segment shapes beyond the browser's page/track/identify, each behind its knob: app sessions
(screen calls), server-side Order Completed (userId only), alias calls after a sign-up, group
calls (company accounts), products named by product_id only, and consent categoryPreferences
on a device's events.

Marketing and tests as the real tools send them: a campaign visit's UTM parameters are in
``context.campaign`` of the landing page's calls only (analytics.js reads the current URL);
A/B tests send "Experiment Viewed" (experiment_id/_name, variation_id/_name, Segment's A/B
spec) when they first show a person their variation; checkouts send "Checkout Started", also
when the cart is then abandoned.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import duckdb
import numpy as np
import pyarrow as pa

from customer360.demo import sim_duck
from customer360.demo import sim_reference as ref
from customer360.demo.sim_behaviour import Activity
from customer360.demo.sim_config import SimulationConfig
from customer360.demo.sim_delivery import Outbox
from customer360.demo.sim_identity import Identity, typed
from customer360.demo.sim_population import Population, start_of

DAY_MS = 86_400_000
K_PAGE, K_VIEWED, K_ADDED, K_ORDER, K_SIGNUP, K_IDENTIFY, K_GROUP, K_ALIAS, K_EXPERIMENT, K_CHECKOUT = range(10)
ABANDONED_CHECKOUT_RATE = 0.3   # sessions with an item added but no order that start a checkout
ACCOUNTS = 40   # company accounts (Segment groups) logged-in people can belong to
MODE_ANON, MODE_REMEMBERED, MODE_LOGIN, MODE_SIGNUP = range(4)
EVENTS_PER_CHUNK = 250_000   # bounds memory: ~1 KB of JSON an event, plus copies
GZIP_LEVEL = 3   # 2x faster than 6 on this JSON, files ~20 % larger
# Local hour of web visits (lunch and evening peaks).
_HOUR_WEIGHT = np.array([1, 0.5, 0.3, 0.2, 0.2, 0.3, 0.8, 1.5, 2.5, 3, 3.2, 3.5, 4.5, 4, 3.2, 3,
                         3.2, 3.5, 4, 5, 6, 6.5, 5, 3])


@dataclass
class WebOrders:
    person: np.ndarray
    day: np.ndarray
    session: np.ndarray          # global session index
    order_id: np.ndarray         # str
    currency: np.ndarray         # str
    revenue: np.ndarray          # float
    line_start: np.ndarray       # first line of each order
    line_count: np.ndarray
    line_sku: np.ndarray         # product index
    line_qty: np.ndarray
    line_price: np.ndarray
    ms: np.ndarray               # time of "Order Completed" (filled while expanding)


@dataclass
class WebResult:
    orders: WebOrders
    session_person: np.ndarray
    session_signup_ms: np.ndarray      # -1 unless the session signs the person up
    anon_rows: list[tuple[str, int]]   # (anonymousId, person) for every device a person used
    user_ids: np.ndarray               # every userId written
    counts: dict = field(default_factory=dict)
    defects: list[dict] = field(default_factory=list)   # planted: {"file", "line", "kind"}


def anonymous_ids(cfg: SimulationConfig, n_devices: int) -> np.ndarray:
    out = np.empty(n_devices, dtype=object)
    for d in range(n_devices):
        h = hashlib.md5(f"{cfg.seed}:device:{d}".encode()).hexdigest()
        out[d] = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"
    return out


def _web_orders(cfg: SimulationConfig, pop: Population, products: ref.Products,
                s_person: np.ndarray, s_day: np.ndarray, s_order: np.ndarray) -> WebOrders:
    rng = cfg.rng("web-orders")
    sess = np.flatnonzero(s_order)
    person = s_person[sess]
    m = len(sess)
    count = 1 + np.minimum(rng.poisson(0.6, size=m), 6)
    start = (np.cumsum(count) - count).astype(np.int64)
    line_person = np.repeat(person, count)
    n_lines = int(count.sum())
    sku = ref.pick_products(products, pop.taste[line_person], rng.random(n_lines), rng.random(n_lines))
    qty = np.where(rng.random(n_lines) < 0.88, 1, rng.integers(2, 4, size=n_lines))
    usd = rng.random(m) < cfg.web_usd_share
    rate = np.where(np.repeat(usd, count), ref.FX_FROM_CNY["USD"], 1.0)
    price = np.round(products.list_price[sku] * rate, 2)
    revenue = np.round(np.add.reduceat(price * qty, start) if m else np.zeros(0), 2)
    return WebOrders(person=person, day=s_day[sess], session=sess,
                     order_id=np.array([f"WO{i:09d}" for i in range(1, m + 1)], dtype=object),
                     currency=np.where(usd, "USD", "CNY").astype(object), revenue=revenue,
                     line_start=start, line_count=count, line_sku=sku, line_qty=qty,
                     line_price=price, ms=np.full(m, -1, dtype=np.int64))


@dataclass
class _Sessions:
    person: np.ndarray
    day: np.ndarray
    start_ms: np.ndarray
    device: np.ndarray
    campaign: np.ndarray
    referrer: np.ndarray
    mode: np.ndarray
    login_rank: np.ndarray
    user_id: np.ndarray
    order: np.ndarray            # order index or -1
    signup_ms: np.ndarray
    app: np.ndarray              # the session is in the shop's app (screen calls)
    server_order: np.ndarray     # its Order Completed comes from the back end
    alias: np.ndarray            # its sign-up is followed by an alias call
    group: np.ndarray            # its login is followed by a group call
    exposure: np.ndarray         # bit mask of the experiments it shows (Experiment Viewed)
    exp_arm: np.ndarray          # (experiments, people) row of the experiments table


def _sessions(cfg: SimulationConfig, pop: Population, act: Activity, ident: Identity,
              orders: WebOrders) -> _Sessions:
    rng = cfg.rng("web-sessions")
    p, day = act.s_person, act.s_day
    s = len(p)
    t0 = start_of(cfg.start)
    hour = rng.choice(24, size=s, p=_HOUR_WEIGHT / _HOUR_WEIGHT.sum())
    offset_h = _country_offset(pop.country[p])
    in_day = ((hour - offset_h) % 24) * 3_600_000 + rng.integers(0, 3_600_000, size=s)
    start = t0 + day.astype(np.int64) * DAY_MS + np.minimum(in_day, 22 * 3_600_000)

    pick = np.where(rng.random(s) < 0.6, 0, rng.integers(0, 3, size=s) % pop.device_count[p])
    device = pop.device_start[p] + pick
    shared = pop.shared_device[p]
    use_shared = (shared >= 0) & (rng.random(s) < 0.5)
    device = np.where(use_shared, shared, device)

    campaign = np.where(rng.random(s) < 0.25, rng.integers(1, len(ref.CAMPAIGNS), size=s), 0)
    campaign_ref = np.array([0, 3, 1, 2, 0, 4])
    referrer = np.where(campaign > 0, campaign_ref[campaign], rng.integers(0, len(ref.REFERRERS), size=s))

    has_contact = act.contact_day[p] <= day
    u = rng.random(s)
    mode = np.full(s, MODE_ANON, dtype=np.int8)
    ordered = act.s_order
    mode[has_contact & ~ordered & (u < 0.35)] = MODE_REMEMBERED
    mode[has_contact & ~ordered & (u >= 0.35) & (u < 0.6)] = MODE_LOGIN
    mode[has_contact & ordered] = np.where(u[has_contact & ordered] < 0.5, MODE_REMEMBERED, MODE_LOGIN)
    mode[act.s_signup] = MODE_SIGNUP
    login_rank = np.where(mode == MODE_REMEMBERED, -1.0,
                          np.where(mode == MODE_ANON, 9.0, rng.uniform(0.02, 1.0, size=s)))
    use_dup = ident.dup_web[p] & (day >= ident.dup_day[p]) & (rng.random(s) < 0.3) & (mode != MODE_SIGNUP)
    user_id = np.where(mode == MODE_ANON, -1, np.where(use_dup, ident.dup_id[p], ident.primary_id[p]))
    order = np.full(s, -1, dtype=np.int64)
    order[orders.session] = np.arange(len(orders.session))
    return _Sessions(person=p, day=day, start_ms=start, device=device, campaign=campaign,
                     referrer=referrer, mode=mode, login_rank=login_rank, user_id=user_id,
                     order=order, signup_ms=np.full(s, -1, dtype=np.int64),
                     app=cfg.rng("web-app").random(s) < cfg.app_session_share,
                     server_order=cfg.rng("web-server-side").random(s) < cfg.server_side_order_rate,
                     alias=cfg.rng("web-alias").random(s) < cfg.signup_alias_rate,
                     group=cfg.rng("web-group").random(s) < cfg.group_call_rate,
                     exposure=act.s_exposure,
                     exp_arm=(np.arange(len(ref.EXPERIMENTS))[:, None] * len(ref.VARIATIONS)
                              + act.exp_variation))


def _country_offset(country: np.ndarray) -> np.ndarray:
    out = np.zeros(len(country), dtype=np.int64)
    for c, off in zip(ref.COUNTRIES, ref.COUNTRY_UTC_OFFSET_H):
        out[country == c] = off
    return out


def _pick_category(rng: np.random.Generator, taste: np.ndarray) -> np.ndarray:
    u = rng.random(len(taste))
    return np.minimum((np.cumsum(taste, axis=1) < u[:, None]).sum(axis=1), len(ref.CATEGORIES) - 1)


def _expand(cfg: SimulationConfig, pop: Population, products: ref.Products, ses: _Sessions,
            orders: WebOrders, ix: np.ndarray, chunk: int) -> dict[str, np.ndarray]:
    """Events of the sessions ``ix``, in session order, with their times and page context."""
    rng = cfg.rng("web-events", chunk)
    ns = len(ix)
    person = ses.person[ix]
    n_prod = len(products)
    page_home, page_cart, page_checkout = 0, 7 + n_prod, 8 + n_prod
    pieces: list[tuple] = []   # (session, rank, kind, page, sku, qty)

    def add(sess, rank, kind, page=-1, sku=-1, qty=0):
        m = len(sess)
        pieces.append((sess, np.broadcast_to(rank, m), np.full(m, kind), np.broadcast_to(page, m),
                       np.broadcast_to(sku, m), np.broadcast_to(qty, m)))

    local = np.arange(ns)
    land_cat = _pick_category(rng, pop.taste[person])
    add(local, 0.0, K_PAGE, np.where(rng.random(ns) < 0.6, page_home, 1 + land_cat))
    extra = np.repeat(local, np.minimum(rng.poisson(0.8, size=ns), 8))
    add(extra, rng.uniform(0.01, 1.0, size=len(extra)), K_PAGE,
        1 + _pick_category(rng, pop.taste[person[extra]]))
    browse = np.repeat(local, np.minimum(rng.poisson(1.3, size=ns), 12))
    r = rng.uniform(0.01, 1.0, size=len(browse))
    sku = ref.pick_products(products, pop.taste[person[browse]], rng.random(len(browse)),
                            rng.random(len(browse)))
    add(browse, r, K_PAGE, 7 + sku)
    add(browse, r + 1e-7, K_VIEWED, 7 + sku, sku)
    added = rng.random(len(browse)) < 0.15
    add(browse[added], r[added] + 2e-7, K_ADDED, 7 + sku[added], sku[added], 1)

    # Experiment Viewed right after the landing page (the test platform decides on load);
    # qty carries the experiments-table row of the person's variation.
    for e in range(len(ref.EXPERIMENTS)):
        shown = local[(ses.exposure[ix] >> e) & 1 == 1]
        add(shown, 0.001 + e * 1e-7, K_EXPERIMENT, -1, -1, ses.exp_arm[e, person[shown]])
    # Some carts reach the checkout and are abandoned there (Checkout Started, no order).
    carts = np.unique(browse[added])
    abandoned = carts[(ses.order[ix][carts] < 0)
                      & (cfg.rng("web-abandoned", chunk).random(len(carts)) < ABANDONED_CHECKOUT_RATE)]
    add(abandoned, 1.05, K_PAGE, page_cart)
    add(abandoned, 1.1, K_PAGE, page_checkout)
    add(abandoned, 1.1 + 1e-7, K_CHECKOUT, page_checkout)
    with_order = local[ses.order[ix] >= 0]
    if len(with_order):
        o = ses.order[ix][with_order]
        cnt = orders.line_count[o]
        line = np.repeat(orders.line_start[o] - np.cumsum(cnt) + cnt, cnt) + np.arange(cnt.sum())
        osess = np.repeat(with_order, cnt)
        r = rng.uniform(0.01, 1.0, size=len(osess))
        lsku = orders.line_sku[line]
        add(osess, r, K_PAGE, 7 + lsku)
        add(osess, r + 1e-7, K_VIEWED, 7 + lsku, lsku)
        add(osess, r + 2e-7, K_ADDED, 7 + lsku, lsku, orders.line_qty[line])
        add(with_order, 1.05, K_PAGE, page_cart)
        add(with_order, 1.1, K_PAGE, page_checkout)
        add(with_order, 1.1 + 1e-7, K_CHECKOUT, page_checkout)
        add(with_order, 1.2, K_ORDER, page_checkout)
    rank_login = ses.login_rank[ix]
    signup = local[ses.mode[ix] == MODE_SIGNUP]
    add(signup, rank_login[signup], K_SIGNUP)
    add(signup, rank_login[signup] + 1e-7, K_IDENTIFY)
    aliased = signup[ses.alias[ix][signup]]
    add(aliased, rank_login[aliased] + 2e-7, K_ALIAS)
    login = local[ses.mode[ix] == MODE_LOGIN]
    add(login, rank_login[login], K_IDENTIFY)
    grouped = login[ses.group[ix][login]]
    add(grouped, rank_login[grouped] + 1e-7, K_GROUP)

    cols = [np.concatenate([p[i] for p in pieces]) for i in range(6)]
    order = np.lexsort((cols[1], cols[0]))
    sess, rank, kind, page, sku, qty = (c[order] for c in cols)
    n = len(sess)
    first = np.concatenate([[True], sess[1:] != sess[:-1]])
    first_idx = np.flatnonzero(first)
    pos = np.arange(n) - np.repeat(first_idx, np.diff(np.append(first_idx, n)))

    # Time: page views some seconds to minutes apart, track calls right after their page.
    gap = np.where(kind == K_PAGE, 2000 + np.minimum(rng.exponential(40_000, size=n), 600_000),
                   rng.integers(150, 2500, size=n)).astype(np.int64)
    gap[kind == K_ORDER] = rng.integers(20_000, 90_000, size=int((kind == K_ORDER).sum()))
    gap[first] = 0
    c = np.cumsum(gap)
    offset = c - np.repeat(c[first_idx], np.diff(np.append(first_idx, n)))
    # analytics.js reads the UTM parameters of the page's own URL into context.campaign: only
    # the landing page (the campaign link's target) and the calls made on it carry them.
    start = ses.start_ms[ix][sess]
    last = np.maximum.reduceat(start + offset, first_idx)
    day_end = start_of(cfg.start) + (ses.day[ix].astype(np.int64) + 1) * DAY_MS
    shift = np.maximum(0, last - (day_end[sess[first_idx]] - 10_000))
    ts = start + offset - np.repeat(shift, np.diff(np.append(first_idx, n)))

    is_page = kind == K_PAGE
    cur = np.maximum.accumulate(np.where(is_page, np.arange(n), -1))
    page_idx = np.flatnonzero(is_page)
    prev_page = np.full(n, -1, dtype=np.int64)
    same = sess[page_idx[1:]] == sess[page_idx[:-1]]
    prev_page[page_idx[1:]] = np.where(same, page[page_idx[:-1]], -1)
    cur_page = page[cur]
    on_landing = cur == np.repeat(first_idx, np.diff(np.append(first_idx, n)))
    ref_page = prev_page[cur]

    g = ix[sess]   # global session index
    uid = np.where(rank >= rank_login[sess], ses.user_id[g], -1)
    server = (kind == K_ORDER) & ses.server_order[g] & (uid >= 0)
    pid_only = np.isin(kind, (K_VIEWED, K_ADDED)) & (
        cfg.rng("web-product-id-only", chunk).random(n) < cfg.product_id_only_rate)
    return {
        "app": ses.app[g], "server": server, "pid_only": pid_only,
        "account": np.where(kind == K_GROUP, ses.person[g] % ACCOUNTS, -1).astype(np.int64),
        "session": g.astype(np.int64), "pos": pos.astype(np.int64), "kind": kind.astype(np.int8),
        "ts": ts.astype(np.int64), "user_id": uid.astype(np.int64),
        "device": ses.device[g].astype(np.int64), "sku": sku.astype(np.int64),
        "qty": np.where(kind == K_EXPERIMENT, 0, qty).astype(np.int64), "order": np.where(kind == K_ORDER, ses.order[g], -1).astype(np.int64),
        "cur_page": cur_page.astype(np.int64), "ref_page": ref_page.astype(np.int64),
        "ext_ref": ses.referrer[g].astype(np.int64), "campaign": np.where(on_landing, ses.campaign[g], 0).astype(np.int64),
        "experiment": np.where(kind == K_EXPERIMENT, qty, -1).astype(np.int64),
        "day": ses.day[g].astype(np.int64),
    }


def _deliver_times(cfg: SimulationConfig, ev: dict[str, np.ndarray], chunk: int,
                   counts: dict) -> dict[str, np.ndarray]:
    """receivedAt and folder day of each event; late arrivals; at-least-once duplicates."""
    n = len(ev["ts"])
    t0 = start_of(cfg.start)
    day = ev["day"]
    day_end = t0 + (day + 1) * DAY_MS - 1
    recv = np.minimum(ev["ts"] + cfg.rng("web-latency", chunk).integers(50, 1500, size=n), day_end)
    folder = day.copy()
    rng = cfg.rng("web-late", chunk)
    late = rng.random(n) < cfg.late_event_rate
    lag = np.minimum(rng.integers(1, 4, size=n), cfg.days - 1 - day)
    late &= lag >= 1
    folder = np.where(late, day + lag, folder)
    recv = np.where(late, np.minimum(ev["ts"] + lag * DAY_MS + rng.integers(0, 6 * 3_600_000, size=n),
                                     t0 + (folder + 1) * DAY_MS - 1), recv)
    ev = dict(ev, recv=recv, folder=folder, dup=np.zeros(n, dtype=np.int8))
    counts["late_events"] += int(late.sum())
    rng = cfg.rng("web-dup", chunk)
    dup = np.flatnonzero(rng.random(n) < cfg.dup_message_rate)
    if len(dup):
        copy = {k: v[dup] for k, v in ev.items()}
        copy["recv"] = np.minimum(copy["recv"] + rng.integers(1000, 900_000, size=len(dup)),
                                  t0 + (copy["folder"] + 1) * DAY_MS - 1)
        copy["dup"] = np.ones(len(dup), dtype=np.int8)
        ev = {k: np.concatenate([v, copy[k]]) for k, v in ev.items()}
        counts["duplicate_message_ids"] += len(dup)
    return ev


# Events are assembled by concatenating JSON fragments: everything that depends only on a
# device, page, product, campaign, order or logged-in session is rendered once (with to_json,
# which escapes) in the small tables below; per event only ids, times and numbers are added.
# Rendering nested structs with to_json per event cost ~2x the CPU.
_SQL = r"""
SELECT folder, part,
  CASE WHEN malformed THEN concat(left(line, length(line) // 2), chr(10)) ELSE line END AS line
FROM (
  SELECT folder, part, line_no, malformed, concat(
    '{"messageId":"', fmt_uuid(md5(concat($seed, ':msg:', session, ':', pos))),
    '","type":', CASE kind WHEN 0 THEN CASE WHEN app THEN concat('"screen","event":null,"name":', title_json)
                                            ELSE '"page","event":null' END
                           WHEN 5 THEN '"identify","event":null'
                           WHEN 6 THEN concat('"group","event":null,"groupId":', a.id_json)
                           WHEN 7 THEN concat('"alias","event":null,"previousId":', anonymous_json)
                           WHEN 1 THEN '"track","event":"Product Viewed"'
                           WHEN 2 THEN '"track","event":"Product Added"'
                           WHEN 3 THEN '"track","event":"Order Completed"'
                           WHEN 8 THEN '"track","event":"Experiment Viewed"'
                           WHEN 9 THEN '"track","event":"Checkout Started"'
                           ELSE '"track","event":"Signed Up"' END,
    ',"anonymousId":', CASE WHEN server THEN 'null' ELSE anonymous_json END,
    ',"userId":', CASE WHEN user_id >= 0 THEN concat('"', user_id, '"') ELSE 'null' END,
    ',"timestamp":"', iso_ms(ts), '","receivedAt":"', iso_ms(recv),
    '","context":', CASE WHEN server THEN '{"library":{"name":"analytics-python","version":"2.4.0"}'
                         WHEN app THEN '{"app":{"name":"Lumen","namespace":"com.lumen.shop","version":"3.2.0"}'
                         ELSE concat('{"page":', page_json) END,
    CASE WHEN server THEN '}'
         ELSE concat(CASE WHEN campaign_json IS NULL THEN '' ELSE concat(',"campaign":', campaign_json) END,
                     context_tail) END,
    ',"properties":', CASE kind
         WHEN 0 THEN CASE WHEN app THEN '{}' ELSE page_json END
         WHEN 1 THEN CASE WHEN pid_only THEN viewed_id_json ELSE viewed_json END
         WHEN 2 THEN concat('{"product_id":', sku_json,
                            CASE WHEN pid_only THEN '' ELSE concat(',"sku":', sku_json) END,
                            ',"quantity":', qty, ',"price":', price_json, '}')
         WHEN 3 THEN order_json
         WHEN 4 THEN '{"method":"email"}'
         WHEN 8 THEN x_json
         WHEN 9 THEN '{"currency":"CNY"}'
         ELSE 'null' END,
    ',"traits":', CASE kind WHEN 5 THEN traits_json WHEN 6 THEN a.account_traits_json ELSE 'null' END,
    '}', chr(10)) AS line
  FROM (
    SELECT e.*, d.anonymous_json, d.context_tail, c.json AS campaign_json,
      concat('{"path":', pc.path_json, ',"referrer":', coalesce(pr.url_json, x.url_json), ',',
             pc.title_url, '}') AS page_json,
      pc.title_json, p.sku_json, p.price_json, p.viewed_json, p.viewed_id_json,
      o.json AS order_json, t.json AS traits_json, xp.json AS x_json
    FROM ev e
    JOIN devices d ON d.device = e.device
    JOIN pages pc ON pc.page = e.cur_page
    LEFT JOIN pages pr ON pr.page = e.ref_page
    JOIN referrers x ON x.idx = e.ext_ref
    JOIN campaigns c ON c.idx = e.campaign
    LEFT JOIN products p ON p.idx = e.sku
    LEFT JOIN orders o ON o.idx = e."order"
    LEFT JOIN experiments xp ON xp.idx = e.experiment
    LEFT JOIN traits t ON t.session = e.session   -- one row per logged-in session (identify)
  ) AS e
  LEFT JOIN accounts a ON a.idx = e.account
)
ORDER BY folder, part, line_no
"""

_MACROS = r"""
CREATE OR REPLACE MACRO fmt_uuid(h) AS
  substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-a' || substr(h, 18, 3)
  || '-' || substr(h, 21, 12);
CREATE OR REPLACE MACRO iso_ms(ms) AS strftime(make_timestamp(ms * 1000), '%Y-%m-%dT%H:%M:%S.%gZ');
"""

_RENDER = r"""
CREATE TABLE devices AS SELECT device, to_json(anonymous_id) AS anonymous_json,
  ',"userAgent":' || to_json(user_agent) || ',"ip":' || to_json(ip) || ',"locale":' || to_json(locale)
  || CASE WHEN consent THEN ',"consent":{"categoryPreferences":{"Advertising":' || advertising
          || ',"Analytics":true,"Functional":true}}' ELSE '' END
  || '}' AS context_tail
FROM devices_arrow;
CREATE TABLE accounts AS SELECT idx, to_json(group_id) AS id_json,
  to_json(struct_pack(name := name, industry := industry, plan := plan)) AS account_traits_json
FROM accounts_arrow;
CREATE TABLE products AS SELECT idx, to_json(sku) AS sku_json, to_json(price) AS price_json,
  to_json(struct_pack(product_id := sku, sku := sku, name := name, category := category,
                      price := price, currency := 'CNY')) AS viewed_json,
  to_json(struct_pack(product_id := sku, name := name, category := category,
                      price := price, currency := 'CNY')) AS viewed_id_json
FROM products_arrow;
CREATE TABLE campaigns AS SELECT idx, CASE WHEN source IS NOT NULL THEN
  to_json(struct_pack(source := source, medium := medium, name := name)) END AS json
FROM campaigns_arrow;
CREATE TABLE experiments AS SELECT idx, to_json(struct_pack(experiment_id := experiment_id,
  experiment_name := experiment_name, variation_id := variation_id,
  variation_name := variation_name)) AS json
FROM experiments_arrow;
CREATE TABLE pages AS SELECT page, to_json(path) AS path_json, to_json(url) AS url_json,
  to_json(title) AS title_json,
  '"title":' || to_json(title) || ',"url":' || to_json(url) AS title_url
FROM pages_arrow;
CREATE TABLE referrers AS SELECT idx, to_json(url) AS url_json FROM referrers_arrow;
CREATE TABLE orders AS SELECT o.idx, to_json(struct_pack(order_id := o.order_id, revenue := o.revenue,
  currency := o.currency, products := l.products)) AS json
FROM orders_arrow o JOIN (
  -- an item names its product by sku, or (product_id_only_rate) by product_id alone
  SELECT l.order_idx, ('[' || string_agg(CASE WHEN l.pid_only
           THEN to_json(struct_pack(product_id := p.sku, quantity := l.qty, price := l.price))
           ELSE to_json(struct_pack(sku := p.sku, quantity := l.qty, price := l.price)) END, ','
           ORDER BY l.line_no) || ']')::JSON AS products
  FROM lines_arrow l JOIN products_arrow p ON p.idx = l.sku_idx GROUP BY l.order_idx) l
ON l.order_idx = o.idx;
CREATE TABLE traits AS SELECT session, to_json(struct_pack(email := email, phone := phone)) AS json
FROM traits_arrow;
"""


def _static_tables(con: duckdb.DuckDBPyConnection, cfg: SimulationConfig, pop: Population,
                   products: ref.Products, orders: WebOrders, traits: pa.Table) -> None:
    n_prod = len(products)
    paths, titles = ["/"], ["Lumen | Home"]
    for c in ref.CATEGORIES:
        paths.append(f"/c/{c}")
        titles.append(f"{c.title()} | Lumen")
    paths += [f"/p/{s}" for s in products.sku] + ["/cart", "/checkout"]
    titles += [f"{nm} | Lumen" for nm in products.name] + ["Cart | Lumen", "Checkout | Lumen"]
    assert len(paths) == 9 + n_prod
    n_dev = len(pop.device_ua)
    consent_rng = cfg.rng("web-consent")
    line_order = np.repeat(np.arange(len(orders.line_count)), orders.line_count)
    tables = {
        "pages": pa.table({"page": np.arange(len(paths)), "path": paths,
                           "url": [ref.SITE + p for p in paths], "title": titles}),
        "devices": pa.table({"device": np.arange(n_dev), "anonymous_id": anonymous_ids(cfg, n_dev),
                             "user_agent": ref.USER_AGENTS[pop.device_ua],
                             "locale": pop.device_locale.astype(str),
                             "ip": [f"{i >> 24}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
                                    for i in pop.device_ip.tolist()],
                             "consent": consent_rng.random(n_dev) < cfg.consent_device_share,
                             "advertising": np.where(consent_rng.random(n_dev) < 0.25,
                                                     "false", "true")}),
        "accounts": pa.table({"idx": np.arange(ACCOUNTS),
                              "group_id": [f"acct-{i:04d}" for i in range(ACCOUNTS)],
                              "name": [f"{ref.CATEGORIES[i % len(ref.CATEGORIES)].title()} "
                                       f"Trading {i:02d} 有限公司" for i in range(ACCOUNTS)],
                              "industry": [("retail", "hospitality", "education", "tech")[i % 4]
                                           for i in range(ACCOUNTS)],
                              "plan": [("team", "enterprise")[i % 2] for i in range(ACCOUNTS)]}),
        "products": pa.table({"idx": np.arange(n_prod), "sku": products.sku, "name": products.name,
                              "category": [ref.CATEGORIES[c] for c in products.category],
                              "price": pa.array(products.list_price).cast(pa.decimal128(12, 2))}),
        "orders": pa.table({"idx": np.arange(len(orders.order_id)),
                            "order_id": pa.array(orders.order_id.astype(str), pa.string()),
                            "revenue": pa.array(orders.revenue).cast(pa.decimal128(14, 2)),
                            "currency": pa.array(orders.currency.astype(str), pa.string())}),
        "lines": pa.table({"order_idx": line_order,
                           "line_no": np.arange(len(line_order))
                           - np.repeat(orders.line_start, orders.line_count),
                           "sku_idx": orders.line_sku, "qty": orders.line_qty,
                           "pid_only": cfg.rng("web-product-id-only-lines").random(len(line_order))
                           < cfg.product_id_only_rate,
                           "price": pa.array(orders.line_price).cast(pa.decimal128(12, 2))}),
        "campaigns": pa.table({"idx": np.arange(len(ref.CAMPAIGNS)),
                               "source": [c[0] for c in ref.CAMPAIGNS],
                               "medium": [c[1] for c in ref.CAMPAIGNS],
                               "name": [c[2] for c in ref.CAMPAIGNS]}),
        "experiments": pa.table({
            "idx": np.arange(len(ref.EXPERIMENTS) * len(ref.VARIATIONS)),
            "experiment_id": [x for x, _ in ref.EXPERIMENTS for _ in ref.VARIATIONS],
            "experiment_name": [nm for _, nm in ref.EXPERIMENTS for _ in ref.VARIATIONS],
            "variation_id": [v for _ in ref.EXPERIMENTS for v, _ in ref.VARIATIONS],
            "variation_name": [nm for _ in ref.EXPERIMENTS for _, nm in ref.VARIATIONS]}),
        "referrers": pa.table({"idx": np.arange(len(ref.REFERRERS)), "url": ref.REFERRERS}),
        "traits": traits,
    }
    for name, tab in tables.items():
        con.register(f"{name}_arrow", tab)
    con.execute(_MACROS)
    con.execute(_RENDER)
    for name in tables:
        con.unregister(f"{name}_arrow")


def _traits(cfg: SimulationConfig, pop: Population, ident: Identity, ses: _Sessions) -> pa.Table:
    """What each identify call sends: the logged-in contact's email (and often phone), as typed."""
    s = np.flatnonzero((ses.mode == MODE_LOGIN) | (ses.mode == MODE_SIGNUP))
    p = ses.person[s]
    dup = ses.user_id[s] == ident.dup_id[p]
    email = np.where(dup, ident.dup_email[p], pop.email[p])
    email_t, phone_t = typed(cfg, "web-traits", email, pop.phone_nsn[p], pop.country[p],
                             np.zeros(len(s), dtype=bool))
    phone_t = np.where(cfg.rng("web-traits-phone").random(len(s)) < 0.7, phone_t, None)
    return pa.table({"session": s.astype(np.int64), "email": pa.array(email_t, pa.string()),
                     "phone": pa.array(phone_t, pa.string())})


def write_web(cfg: SimulationConfig, pop: Population, act: Activity, ident: Identity,
              products: ref.Products, outbox: Outbox, tick: Callable[[int], None]) -> WebResult:
    counts = {"web_events": 0, "web_files": 0, "late_events": 0, "duplicate_message_ids": 0,
              "late_files": 0, "corrupt_files": 0, "malformed_web_lines": 0, "web_sessions": 0}
    orders = _web_orders(cfg, pop, products, act.s_person, act.s_day, act.s_order)
    ses = _sessions(cfg, pop, act, ident, orders)
    counts["web_sessions"] = len(ses.person)
    counts["web_orders"] = len(orders.order_id)
    days = cfg.days
    rng = cfg.rng("late-files")
    late_day = rng.random(days) < cfg.late_file_rate
    late_lag = rng.integers(1, 3, size=days)
    corrupt: set[tuple[int, int]] = set()
    if cfg.corrupt_files and days >= 3:
        slots = [(d, p) for d in range(days) for p in range(cfg.parts_per_day)]
        pick = cfg.rng("corrupt").choice(len(slots), size=min(cfg.corrupt_files, len(slots)), replace=False)
        corrupt = {slots[i] for i in sorted(pick)}
    result = WebResult(orders=orders, session_person=ses.person, session_signup_ms=ses.signup_ms,
                       anon_rows=[], user_ids=np.unique(ses.user_id[ses.user_id >= 0]), counts=counts)

    con = sim_duck.connect()
    _static_tables(con, cfg, pop, products, orders, _traits(cfg, pop, ident, ses))

    # Chunks of whole session days, sized by expected events; events landing in a later folder
    # (late arrivals) wait in `carry` until their folder's chunk is written.
    per_day = np.bincount(ses.day, minlength=days) * 8
    bounds, acc, lo = [], 0, 0
    for d in range(days):
        acc += per_day[d]
        if acc >= EVENTS_PER_CHUNK or d == days - 1:
            bounds.append((lo, d + 1))
            lo, acc = d + 1, 0
    day_first = np.searchsorted(ses.day, np.arange(days + 1))
    carry: dict[str, np.ndarray] | None = None
    with ThreadPoolExecutor(max_workers=2) as pool:
        for chunk, (a, b) in enumerate(bounds):
            ix = np.arange(day_first[a], day_first[b])
            ev = _expand(cfg, pop, products, ses, orders, ix, chunk) if len(ix) else None
            if ev is not None:
                _record_times(ev, ses, orders)
                ev = _deliver_times(cfg, ev, chunk, counts)
                if carry is not None:
                    ev = {k: np.concatenate([carry[k], v]) for k, v in ev.items()}
            else:
                ev = carry
            if ev is None:
                tick(b - a)
                continue
            now = ev["folder"] < b
            carry = {k: v[~now] for k, v in ev.items()}
            ev = {k: v[now] for k, v in ev.items()}
            _write_folders(cfg, con, ev, a, b, late_day, late_lag, corrupt, outbox, pool, result)
            tick(b - a)
    con.close()

    dev_person = np.unique(np.stack([ses.device, ses.person]), axis=1)
    anon = anonymous_ids(cfg, len(pop.device_ua))
    result.anon_rows = [(anon[d], int(p)) for d, p in dev_person.T]
    return result


def _record_times(ev: dict[str, np.ndarray], ses: _Sessions, orders: WebOrders) -> None:
    """Contacts created by a sign-up and orders take their times from the events."""
    k = ev["kind"] == K_SIGNUP
    ses.signup_ms[ev["session"][k]] = ev["ts"][k]
    k = ev["kind"] == K_ORDER
    orders.ms[ev["order"][k]] = ev["ts"][k]


def _write_folders(cfg: SimulationConfig, con: duckdb.DuckDBPyConnection, ev: dict[str, np.ndarray],
                   a: int, b: int, late_day: np.ndarray, late_lag: np.ndarray,
                   corrupt: set[tuple[int, int]], outbox: Outbox, pool: ThreadPoolExecutor,
                   result: WebResult) -> None:
    n = len(ev["ts"])
    if not n:
        return
    counts = result.counts
    P = cfg.parts_per_day
    part = np.zeros(n, dtype=np.int64)
    malformed = np.zeros(n, dtype=bool)
    by_folder = np.argsort(ev["folder"], kind="stable")
    starts = np.searchsorted(ev["folder"][by_folder], np.arange(a, b + 1))
    for f in range(a, b):
        rows = by_folder[starts[f - a]:starts[f - a + 1]]
        if not len(rows):
            continue
        rng = cfg.rng("web-parts", f)
        part[rows] = rng.integers(0, P, size=len(rows))
        if late_day[f]:
            move = rng.random(len(rows)) < 0.25
            part[rows[move]] = P
        bad = cfg.rng("web-malformed", f).random(len(rows)) < cfg.malformed_row_rate
        # A corrupt file is broken as a whole: no separately planted bad lines in it.
        in_corrupt = np.isin(part[rows], [q for (cf, q) in corrupt if cf == f])
        malformed[rows] = bad & ~in_corrupt
    order = np.lexsort((ev["dup"], ev["pos"], ev["session"], ev["recv"], part, ev["folder"]))
    key = ev["folder"][order] * (P + 1) + part[order]
    first = np.concatenate([[True], key[1:] != key[:-1]])
    first_idx = np.flatnonzero(first)
    line_no = np.empty(n, dtype=np.int64)
    line_no[order] = np.arange(n) - np.repeat(first_idx, np.diff(np.append(first_idx, n))) + 1

    tab = pa.table({"rid": np.arange(n), **{k: v for k, v in ev.items()}, "part": part,
                    "malformed": malformed, "line_no": line_no})
    con.register("ev", tab)
    counts["web_events"] += n
    counts["malformed_web_lines"] += int(malformed.sum())
    t0 = cfg.start
    mal_rows = np.flatnonzero(malformed)
    for r in mal_rows[np.lexsort((line_no[mal_rows], part[mal_rows], ev["folder"][mal_rows]))]:
        result.defects.append({"file": _part_path(t0, int(ev["folder"][r]), int(part[r])),
                               "line": int(line_no[r]), "kind": "malformed_json"})

    reader = con.execute(_SQL, {"seed": str(cfg.seed)}).to_arrow_reader(200_000)
    pending: list[bytes] = []
    current: tuple[int, int] | None = None
    futures = []

    def finish(key: tuple[int, int], data: list[bytes]):
        futures.append((key, pool.submit(gzip.compress, b"".join(data), GZIP_LEVEL, mtime=0)))

    for batch in reader:
        folders = batch.column(0).to_numpy()
        parts = batch.column(1).to_numpy()
        lines = batch.column(2)
        buffers = lines.buffers()
        width = np.int64 if pa.types.is_large_string(lines.type) else np.int32
        offsets = np.frombuffer(buffers[1], dtype=width)[lines.offset:lines.offset + len(lines) + 1]
        data = memoryview(buffers[2])
        k = folders * (P + 1) + parts
        cut = np.flatnonzero(np.concatenate([[True], k[1:] != k[:-1], [True]]))
        for s, e in zip(cut[:-1], cut[1:]):
            key = (int(folders[s]), int(parts[s]))
            if key != current:
                if current is not None:
                    finish(current, pending)
                current, pending = key, []
            pending.append(bytes(data[offsets[s]:offsets[e]]))
    if current is not None:
        finish(current, pending)
    for (f, q), fut in futures:
        blob = fut.result()
        path = _part_path(t0, f, q)
        if (f, q) in corrupt:
            # Cut the gzip stream short: readers fail with "unexpected end of stream".
            blob = blob[: max(20, int(len(blob) * 0.6))]
            counts["corrupt_files"] += 1
            result.defects.append({"file": path, "line": None, "kind": "corrupt_gzip"})
        available = t0 + dt.timedelta(days=f)
        if q == P:
            available += dt.timedelta(days=int(late_lag[f]))
            counts["late_files"] += 1
        outbox.put(path, [(available, blob)])
        counts["web_files"] += 1


def _part_path(start: dt.date, folder: int, part: int) -> str:
    day = start + dt.timedelta(days=folder)
    return f"web/events/date={day.isoformat()}/part-{part:04d}.jsonl.gz"
