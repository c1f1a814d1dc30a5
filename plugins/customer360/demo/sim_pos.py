"""Store POS: transactions from the store orders, one CSV per store per business day.

Each store order becomes a SALE transaction of one or more lines in the store's currency and
local time; some lines get a VOID line after them; some are returned 3-30 days later (a RETURN
transaction with negative quantity and amount). Customers identify themselves with a loyalty
id, a phone or an email as typed at the till, or not at all (walk-ins). Files are written in the
store's encoding (GB18030 for some mainland stores); some are re-sent corrected a day or two
later; a few lines are malformed on purpose. Files come as real tills export them (knobs in
sim_config): some with a UTF-8 byte-order mark, CRLF endings, a trailing empty line, amounts
printed with a currency sign and thousands separators, quoted payment methods holding commas;
and, on purpose, a GB18030 store's file in UTF-8 and a header repeating a column, which the
loader quarantines whole. Ground truth lists every line that cannot load (defects), the lines of
a transaction with a malformed line included: a transaction is loaded whole or not at all.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa

from customer360.demo import sim_keys
from customer360.demo import sim_duck
from customer360.demo import sim_reference as ref
from customer360.demo.sim_behaviour import Activity
from customer360.demo.sim_config import SimulationConfig
from customer360.demo.sim_delivery import Outbox
from customer360.demo.sim_identity import Identity
from customer360.demo.sim_population import Population

COLUMNS = ["transaction_id", "line_no", "store_id", "business_date", "txn_ts", "txn_type",
           "loyalty_id", "customer_phone", "customer_email", "sku", "quantity", "unit_price",
           "discount_amount", "line_amount", "currency", "payment_method"]
STORE_COLUMNS = ["store_id", "name", "city", "region", "country", "timezone", "file_encoding",
                 "opened_on"]
PRODUCT_COLUMNS = ["sku", "name", "category", "brand", "list_price"]
SALE, RETURN, VOID = 0, 1, 2
_OPEN_HOUR_WEIGHT = np.array([2, 3, 4, 4.5, 3.5, 3.5, 4, 4.5, 5, 5, 4, 2.5])  # 10:00..21:59
MALFORMED_KINDS = ["field_count_short", "field_count_long", "non_numeric_quantity", "bad_timestamp"]


@dataclass
class PosResult:
    order_utc_ms: np.ndarray                 # per store order (act order index), -1 for web orders
    txn_id: np.ndarray                       # every transaction (sales and returns)
    txn_person: np.ndarray                   # -1 for walk-ins
    key_rows: list[tuple[str, str, int]] = field(default_factory=list)  # (type, canonical, person)
    counts: dict = field(default_factory=dict)
    defects: list[dict] = field(default_factory=list)


def utc_offsets(cfg: SimulationConfig, stores: ref.Stores) -> np.ndarray:
    """Seconds east of UTC at local noon, per store and day (DST-aware)."""
    out = np.zeros((len(stores), cfg.days), dtype=np.int64)
    for s, zone in enumerate(stores.timezone):
        tz = ZoneInfo(zone)
        for d in range(cfg.days):
            day = cfg.start + dt.timedelta(days=d)
            out[s, d] = int(dt.datetime(day.year, day.month, day.day, 12, tzinfo=tz)
                            .utcoffset().total_seconds())
    return out


def _decimals(currency: np.ndarray) -> np.ndarray:
    return np.where(currency == "JPY", 0, 2)


def _round(x: np.ndarray, decimals: np.ndarray) -> np.ndarray:
    return np.where(decimals == 0, np.round(x), np.round(x, 2))


def write_pos(cfg: SimulationConfig, pop: Population, act: Activity, ident: Identity,
              stores: ref.Stores, products: ref.Products, outbox: Outbox) -> PosResult:
    counts = {k: 0 for k in ("store_transactions", "pos_lines", "pos_files", "return_lines",
                             "void_lines", "walkin_transactions", "messy_keys",
                             "corrected_pos_files", "malformed_pos_rows", "gb18030_files",
                             "bom_pos_files", "crlf_pos_files", "trailing_blank_pos_files",
                             "formatted_amount_pos_files", "quoted_comma_pos_lines",
                             "mismatched_encoding_pos_files", "repeated_header_pos_files",
                             "unloadable_pos_transactions", "unloadable_pos_lines")}
    t0_ms = int(dt.datetime(cfg.start.year, cfg.start.month, cfg.start.day,
                            tzinfo=dt.timezone.utc).timestamp() * 1000)
    offsets = utc_offsets(cfg, stores)

    # --- sale transactions -------------------------------------------------------------------
    rng = cfg.rng("pos-sales")
    order_idx = np.flatnonzero(~act.o_web)
    person = act.o_person[order_idx]
    day = act.o_day[order_idx].astype(np.int64)
    m = len(order_idx)
    store = pop.home_store[person].copy()
    away = rng.random(m) < 0.1
    for c in np.unique(stores.country):
        rows = np.flatnonzero(away & (stores.country[store] == c))
        store[rows] = rng.choice(np.flatnonzero(stores.country == c), size=len(rows))
    local_s = (10 + rng.choice(12, size=m, p=_OPEN_HOUR_WEIGHT / _OPEN_HOUR_WEIGHT.sum())) * 3600 \
        + rng.integers(0, 3600, size=m)
    walkin = cfg.rng("pos-walkin").random(m) < cfg.walkin_rate
    pay = rng.random(m)

    # --- returns: some sale lines come back 3-30 days later, to the same store ----------------
    n_items = 1 + np.minimum(rng.poisson(0.7, size=m), 8)
    line_txn = np.repeat(np.arange(m), n_items)
    n_lines = len(line_txn)
    sku = ref.pick_products(products, pop.taste[person[line_txn]], rng.random(n_lines), rng.random(n_lines))
    qty = np.where(rng.random(n_lines) < 0.85, 1, rng.integers(2, 4, size=n_lines))
    rng_r = cfg.rng("pos-returns")
    returned = rng_r.random(n_lines) < cfg.return_rate
    ret_day_txn = day + rng_r.integers(3, 31, size=m)
    ret_ok_txn = (ret_day_txn < cfg.days) & (ret_day_txn < ident.archive_day[person])
    returned &= ret_ok_txn[line_txn]
    ret_txn_src = np.unique(line_txn[returned])          # sale txn index of each return txn
    r = len(ret_txn_src)
    rng_r2 = cfg.rng("pos-return-times")
    ret_local_s = (10 + rng_r2.choice(12, size=r, p=_OPEN_HOUR_WEIGHT / _OPEN_HOUR_WEIGHT.sum())) * 3600 \
        + rng_r2.integers(0, 3600, size=r)

    # All transactions: sales then returns.
    T = m + r
    if T == 0:
        return PosResult(order_utc_ms=np.full(len(act.o_person), -1, dtype=np.int64),
                         txn_id=np.zeros(0, dtype=object), txn_person=np.zeros(0, dtype=np.int64),
                         counts=counts)
    t_person = np.concatenate([person, person[ret_txn_src]])
    t_day = np.concatenate([day, ret_day_txn[ret_txn_src]])
    t_store = np.concatenate([store, store[ret_txn_src]])
    t_local_s = np.concatenate([local_s, ret_local_s])
    t_walkin = np.concatenate([walkin, walkin[ret_txn_src]])
    t_pay = np.concatenate([pay, pay[ret_txn_src]])
    t_type = np.concatenate([np.full(m, SALE), np.full(r, RETURN)])
    t_utc_ms = (t0_ms + t_day * 86_400_000 + t_local_s * 1000
                - offsets[t_store, t_day] * 1000)

    # Transaction ids: per store and business day, numbered by time.
    order = np.lexsort((t_local_s, t_day, t_store))
    grp = t_store[order] * (cfg.days + 1) + t_day[order]
    first = np.concatenate([[True], grp[1:] != grp[:-1]])
    first_idx = np.flatnonzero(first)
    seq = np.empty(T, dtype=np.int64)
    seq[order] = np.arange(T) - np.repeat(first_idx, np.diff(np.append(first_idx, T))) + 1
    dates = np.array([(cfg.start + dt.timedelta(days=d)) for d in range(cfg.days)])
    ymd = np.array([d.strftime("%Y%m%d") for d in dates])
    iso = np.array([d.isoformat() for d in dates])
    txn_id = np.array([f"{stores.store_id[s]}-{ymd[d]}-{q:04d}" for s, d, q in zip(t_store, t_day, seq)],
                      dtype=object)

    # --- keys as typed at the till ----------------------------------------------------------
    loyalty, phone, email, key_rows, n_messy = _typed_keys(cfg, pop, act, stores, t_person, t_day,
                                                           t_store, t_walkin, txn_id)
    counts["messy_keys"] = n_messy

    # --- lines ------------------------------------------------------------------------------
    currency = stores.currency[t_store]
    dec = _decimals(currency)
    fx = np.array([ref.FX_FROM_CNY[c] for c in stores.currency])[t_store]
    unit = _round(products.list_price[sku] * fx[line_txn], dec[line_txn])
    disc_pct = np.where(rng.random(n_lines) < 0.2, rng.choice([0.1, 0.2], size=n_lines), 0.0)
    disc = _round(unit * qty * disc_pct, dec[line_txn])
    amount = unit * qty - disc
    pieces = [dict(txn=line_txn, sku=sku, qty=qty, unit=unit, disc=disc, amt=amount,
                   type=np.full(n_lines, SALE), rank=np.arange(n_lines) * 2.0)]
    # VOID: an item scanned and cancelled right after a sale line.
    rng_v = cfg.rng("pos-voids")
    v = np.flatnonzero(rng_v.random(n_lines) < cfg.void_rate)
    vsku = ref.pick_products(products, pop.taste[person[line_txn[v]]], rng_v.random(len(v)),
                             rng_v.random(len(v)))
    vunit = _round(products.list_price[vsku] * fx[line_txn[v]], dec[line_txn[v]])
    pieces.append(dict(txn=line_txn[v], sku=vsku, qty=np.ones(len(v), dtype=np.int64), unit=vunit,
                       disc=np.zeros(len(v)), amt=vunit, type=np.full(len(v), VOID), rank=v * 2.0 + 1))
    # RETURN lines, in the return transaction (index m + position of its source sale).
    rl = np.flatnonzero(returned)
    pieces.append(dict(txn=m + np.searchsorted(ret_txn_src, line_txn[rl]), sku=sku[rl], qty=-qty[rl],
                       unit=unit[rl], disc=-disc[rl], amt=-amount[rl], type=np.full(len(rl), RETURN),
                       rank=rl * 2.0))
    L = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
    counts["void_lines"] = len(v)
    counts["return_lines"] = len(rl)
    counts["store_transactions"] = T
    counts["walkin_transactions"] = int(t_walkin.sum())

    # File order: store, day, time, transaction, line.
    lt = L["txn"]
    order = np.lexsort((L["rank"], txn_id[lt].astype(str), t_local_s[lt], t_day[lt], t_store[lt]))
    L = {k: v[order] for k, v in L.items()}
    lt = L["txn"]
    n_all = len(lt)
    new_txn = np.concatenate([[True], lt[1:] != lt[:-1]])
    tf = np.flatnonzero(new_txn)
    line_no = np.arange(n_all) - np.repeat(tf, np.diff(np.append(tf, n_all))) + 1
    file_key = t_store[lt] * (cfg.days + 1) + t_day[lt]
    new_file = np.concatenate([[True], file_key[1:] != file_key[:-1]])
    ff = np.flatnonzero(new_file)
    phys = np.arange(n_all) - np.repeat(ff, np.diff(np.append(ff, n_all))) + 2  # header is line 1
    file_of_line = np.cumsum(new_file) - 1
    n_files = len(ff)
    # Till export shapes, drawn per file.
    u_fmt, u_bom, u_crlf, u_blank = cfg.rng("pos-till-shapes").random((4, n_files))
    formatted = u_fmt[file_of_line] < cfg.pos_formatted_amount_rate

    rng_m = cfg.rng("pos-malformed")
    malformed = rng_m.random(n_all) < cfg.malformed_row_rate
    # Kinds take turns, so a handful of bad rows already shows every kind.
    mal_kind = np.zeros(n_all, dtype=np.int64)
    mal_kind[malformed] = (np.arange(int(malformed.sum())) + rng_m.integers(len(MALFORMED_KINDS))) \
        % len(MALFORMED_KINDS)
    counts["malformed_pos_rows"] = int(malformed.sum())
    counts["pos_lines"] = n_all

    payment = np.where(stores.gb18030[t_store],
                       np.array(ref.PAYMENT_METHODS_ZH, dtype=object)[(t_pay * 4).astype(int) % 4],
                       _payment_en(stores, t_store, t_pay))
    local_ts = np.array([f"{iso[d]} {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"
                         for d, s in zip(t_day, t_local_s)], dtype=object)
    dl = dec[lt]
    cur_l = currency[lt]
    fmt = lambda x, d: _till_amounts(x, d, cur_l, formatted)
    quoted = (cfg.rng("pos-quoted-commas").random(n_all) < cfg.pos_quoted_comma_rate) \
        & ~stores.gb18030[t_store[lt]]
    pay_l = payment[lt].astype(object)
    pay_l[quoted] = 'card, "contactless"'
    counts["quoted_comma_pos_lines"] = int(quoted.sum())
    tab = pa.table({
        "transaction_id": txn_id[lt].astype(str), "line_no": line_no.astype(str),
        "store_id": stores.store_id[t_store[lt]], "business_date": iso[t_day[lt]],
        "txn_ts": local_ts[lt].astype(str),
        "txn_type": np.array(["SALE", "RETURN", "VOID"])[L["type"]],
        "loyalty_id": pa.array(loyalty[lt], pa.string()),
        "customer_phone": pa.array(phone[lt], pa.string()),
        "customer_email": pa.array(email[lt], pa.string()),
        "sku": products.sku[L["sku"]], "quantity": L["qty"].astype(str),
        "unit_price": fmt(L["unit"], dl), "discount_amount": fmt(L["disc"] + 0.0, dl),
        "line_amount": fmt(L["amt"], dl), "currency": currency[lt],
        "payment_method": pay_l.astype(str),
        "malformed": malformed, "mal_kind": mal_kind, "rid": np.arange(n_all),
    })
    lines = _csv_lines(tab)

    # --- files ------------------------------------------------------------------------------
    rng_c = cfg.rng("pos-corrected")
    defects: list[dict] = []
    header = ",".join(COLUMNS) + "\n"
    # Whole-file defects: a GB18030 store's file exported in UTF-8, a header repeating sku.
    rng_w = cfg.rng("pos-whole-file-defects")
    gb_files = [k for k in range(n_files) if stores.gb18030[t_store[lt[ff[k]]]]]
    mismatched = set(rng_w.permutation(gb_files)[:cfg.pos_mismatched_encoding_files].tolist())
    others = [k for k in range(n_files) if k not in mismatched]
    repeated = set(rng_w.permutation(others)[:cfg.pos_repeated_header_files].tolist())
    for k, (a, b) in enumerate(zip(ff, np.append(ff[1:], n_all))):
        s_i, d_i = int(t_store[lt[a]]), int(t_day[lt[a]])
        sid = stores.store_id[s_i]
        path = f"pos/date={iso[d_i]}/store_{sid}.csv"
        encoding = "gb18030" if stores.gb18030[s_i] else "utf-8"
        bom = u_bom[k] < cfg.pos_bom_file_rate and k not in mismatched and k not in repeated
        if k in mismatched or bom:
            encoding = "utf-8"
        eol = "\r\n" if u_crlf[k] < cfg.pos_crlf_file_rate else "\n"
        blank = u_blank[k] < cfg.pos_trailing_blank_rate
        file_header = header
        file_lines = lines[a:b]
        if k in repeated:
            file_header = header[:-1] + ",sku\n"
            file_lines = [ln[:-1] + "," + str(products.sku[L["sku"][a + j]]) + "\n"
                          for j, ln in enumerate(file_lines)]

        def export(body_lines: list[str]) -> bytes:
            text = (file_header + "".join(body_lines)).replace("\n", eol) + (eol if blank else "")
            return (b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding)

        final = export(file_lines)
        day = dates[d_i]
        txns = np.unique(lt[a:b])
        u, lag = rng_c.random(), int(rng_c.integers(1, 3))
        if len(txns) >= 2 and u < cfg.corrected_pos_file_rate:
            # The first file missed the last transactions (the till synced late).
            order_t = txns[np.argsort(t_local_s[txns], kind="stable")]
            missing = set(order_t[len(order_t) - max(1, int(round(0.3 * len(order_t)))):].tolist())
            keep = [i for i in range(b - a) if int(lt[a + i]) not in missing]
            first_version = export([file_lines[i] for i in keep])
            outbox.put(path, [(day, first_version), (day + dt.timedelta(days=lag), final)])
            counts["corrected_pos_files"] += 1
        else:
            outbox.put(path, [(day, final)])
        counts["pos_files"] += 1
        counts["gb18030_files"] += int(encoding == "gb18030")
        counts["bom_pos_files"] += int(bom)
        counts["crlf_pos_files"] += int(eol == "\r\n")
        counts["trailing_blank_pos_files"] += int(blank)
        counts["formatted_amount_pos_files"] += int(bool(formatted[a]))
        whole = ("mismatched_encoding" if k in mismatched
                 else "repeated_header_column" if k in repeated else None)
        if whole:
            # Every line is quarantined with the file's reason (the header too, for its column).
            counts["mismatched_encoding_pos_files" if k in mismatched
                   else "repeated_header_pos_files"] += 1
            defects += [{"file": path, "line": ln, "kind": whole}
                        for ln in ([1] if k in repeated else []) + list(range(2, 2 + b - a))]
            counts["unloadable_pos_transactions"] += len(txns)
            counts["unloadable_pos_lines"] += int(b - a)
            continue
        if bom and stores.gb18030[s_i]:
            defects.append({"file": path, "line": None, "kind": "bom_differs_from_declared"})
        bad = a + np.flatnonzero(malformed[a:b])
        for i in bad:
            defects.append({"file": path, "line": int(phys[i]),
                            "kind": MALFORMED_KINDS[int(mal_kind[i])]})
        # A transaction is one unit: its other lines are quarantined with it.
        bad_txns = set(lt[bad].tolist())
        for i in range(a, b):
            if int(lt[i]) in bad_txns and not malformed[i]:
                defects.append({"file": path, "line": int(phys[i]), "kind": "rejected_transaction"})
        counts["unloadable_pos_transactions"] += len(bad_txns)
        counts["unloadable_pos_lines"] += int(np.isin(lt[a:b], list(bad_txns)).sum())

    order_utc = np.full(len(act.o_person), -1, dtype=np.int64)
    order_utc[order_idx] = t_utc_ms[:m]
    return PosResult(order_utc_ms=order_utc, txn_id=txn_id,
                     txn_person=np.where(t_walkin, -1, t_person), key_rows=key_rows,
                     counts=counts, defects=defects)


# The sign a till prints before an amount in each store currency.
TILL_SIGNS = {"CNY": "¥", "JPY": "¥", "HKD": "HK$", "GBP": "£", "USD": "$"}


def _till_amounts(x: np.ndarray, decimals: np.ndarray, currency: np.ndarray,
                  formatted: np.ndarray) -> np.ndarray:
    """Amounts as text: plain ("1299.00"), or as a till prints them ("¥1,299.00", "-£12.50")."""
    out = np.where(decimals == 0, np.char.mod("%.0f", x), np.char.mod("%.2f", x)).astype(object)
    for i in np.flatnonzero(formatted):
        v = float(x[i])
        out[i] = (f"{'-' if v < 0 else ''}{TILL_SIGNS.get(str(currency[i]), '')}"
                  f"{abs(v):,.{int(decimals[i])}f}")
    return out.astype(str)


def _payment_en(stores: ref.Stores, t_store: np.ndarray, u: np.ndarray) -> np.ndarray:
    out = np.empty(len(t_store), dtype=object)
    for c, pool in ref.PAYMENT_METHODS_EN.items():
        rows = np.flatnonzero(stores.country[t_store] == c)
        out[rows] = np.array(pool, dtype=object)[(u[rows] * len(pool)).astype(int)]
    return out


def _typed_keys(cfg, pop, act, stores, t_person, t_day, t_store, t_walkin, txn_id):
    """loyalty_id / customer_phone / customer_email as typed, and the ground-truth key rows."""
    rng = cfg.rng("pos-keys")
    T = len(t_person)
    enrolled = act.enroll_day[t_person] <= t_day
    u1, u2 = rng.random(T), rng.random(T)
    has_loyalty = ~t_walkin & enrolled & (u1 < 0.85)
    has_phone = ~t_walkin & ((enrolled & (u2 < 0.3)) | (~enrolled & (u2 < 0.7)))
    has_email = ~t_walkin & ~enrolled & ~has_phone
    has_loyalty |= ~t_walkin & enrolled & ~has_phone & ~has_loyalty
    rng_m = cfg.rng("pos-messy")
    messy_l, messy_p, messy_e = (rng_m.random(T) < cfg.messy_key_format_rate for _ in range(3))
    pick = rng_m.random(T)
    loyalty = np.full(T, None, dtype=object)
    loyalty[has_loyalty] = pop.loyalty[t_person[has_loyalty]]
    sel = has_loyalty & messy_l
    loyalty[sel] = sim_keys.messy_loyalty(pop.loyalty[t_person[sel]], pick[sel])
    phone = np.full(T, None, dtype=object)
    phone[has_phone] = pop.phone[t_person[has_phone]]
    sel = has_phone & messy_p
    same_country = pop.country[t_person] == stores.country[t_store]
    phone[sel] = sim_keys.messy_phones(pop.phone_nsn[t_person[sel]], pop.country[t_person[sel]],
                                       same_country[sel], pick[sel])
    email = np.full(T, None, dtype=object)
    email[has_email] = pop.email[t_person[has_email]]
    sel = has_email & messy_e
    email[sel] = sim_keys.messy_emails(pop.email[t_person[sel]], pick[sel])
    n_messy = int((has_loyalty & messy_l).sum() + (has_phone & messy_p).sum() + (has_email & messy_e).sum())
    rows: list[tuple[str, str, int]] = []
    for kind, mask, canon in (("loyalty_id", has_loyalty, pop.loyalty), ("phone", has_phone, pop.phone),
                              ("email", has_email, pop.email)):
        for p in np.unique(t_person[mask]):
            rows.append((kind, canon[p], int(p)))
    return loyalty, phone, email, rows, n_messy


_CSV_SQL = r"""
CREATE OR REPLACE MACRO q(v) AS CASE WHEN v IS NULL THEN ''
  WHEN regexp_matches(v, '^\s|\s$|[",\n]') THEN '"' || replace(v, '"', '""') || '"' ELSE v END;
SELECT concat_ws(',',
    q(transaction_id), line_no, store_id, business_date,
    CASE WHEN malformed AND mal_kind = 3
         THEN CASE WHEN line_no::INT % 2 = 0 THEN business_date || ' 25:' || substr(txn_ts, 15)
                   ELSE strftime(strptime(txn_ts, '%Y-%m-%d %H:%M:%S'), '%d/%m/%Y %H:%M') END
         ELSE txn_ts END,
    txn_type, q(loyalty_id), q(customer_phone), q(customer_email), sku,
    CASE WHEN malformed AND mal_kind = 2 THEN (CASE WHEN quantity = '1' THEN 'one' ELSE quantity || 'x' END)
         ELSE quantity END,
    q(unit_price), q(discount_amount), q(line_amount), currency,
    CASE WHEN malformed AND mal_kind = 0 THEN NULL ELSE q(payment_method) END)
  || CASE WHEN malformed AND mal_kind = 1 THEN ',EXTRA' ELSE '' END || chr(10) AS line
FROM pos_lines
ORDER BY rid
"""


def _csv_lines(tab: pa.Table) -> list[str]:
    con = sim_duck.connect()
    con.register("pos_lines", tab)
    statements = _CSV_SQL.strip().split(";\n")
    con.execute(statements[0])
    out = con.execute(statements[1]).to_arrow_table().column(0).to_pylist()
    con.close()
    return out
