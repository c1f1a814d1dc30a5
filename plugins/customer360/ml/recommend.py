"""Product recommendations from item-item affinity.

Two items are similar when the same customers bought both (co-purchase) or the same sessions
viewed both (co-view, anonymous sessions included); similarity is the cosine of their binary
incidence columns. A customer's profile is what they bought (decaying with age) and recently
viewed; an item's score is the profile's similarity-weighted sum, plus the profile's own weight
on an item they viewed (or bought, for products people rebuy), plus a small popularity prior
that breaks ties and fills short lists. What the customer just bought is excluded unless it is
a repeat-purchase product. Customers with no history get the most popular products.

Evaluation holds out the last `holdout_days`: fit on what came before, recommend for customers
who bought in the holdout, and count a hit when one of the top k was bought; the baseline is the
most-popular list under the same exclusion rule.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
from scipy import sparse

from customer360.ml.spec import ModelSpec
from customer360.ml.warehouse_io import find_table

MAX_DENSE_ITEMS = 5000  # below this the item-item matrix is multiplied as a dense array


@dataclass
class ItemItemModel:
    """Item similarities and item statistics; no customer data inside."""
    skus: np.ndarray
    similarity: sparse.csr_matrix
    popularity: np.ndarray        # 0..1, distinct recent buyers relative to the top item
    repeat: np.ndarray            # bool: a product people buy again
    trained_until: dt.date        # exclusive cutoff of the training data

    @property
    def n_items(self) -> int:
        return len(self.skus)


# --- data ------------------------------------------------------------------------------------

def load_purchases(con: duckdb.DuckDBPyConnection, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Sold lines of known customers with start <= ordered_at < end."""
    orders, lines = find_table(con, "fct_orders", ("marts",)), find_table(con, "fct_order_lines", ("marts",))
    return con.execute(f"""
        select cast(o.customer_id as varchar) as customer_id, cast(l.sku as varchar) as sku,
               cast(o.order_id as varchar) as order_id, cast(o.ordered_at as timestamp) as at
        from {lines} as l join {orders} as o on o.order_id = l.order_id
        where o.customer_id is not null and l.sku is not null
          and upper(coalesce(l.txn_type, 'SALE')) = 'SALE' and coalesce(l.quantity, 1) > 0
          and o.ordered_at >= ? and o.ordered_at < ?""", [start, end]).df()


def load_views(con: duckdb.DuckDBPyConnection, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Product views/adds with a session key (the session, or the device's day without one)."""
    table = find_table(con, "ml_product_views")
    if table is None:
        return pd.DataFrame(columns=["customer_id", "session_key", "sku", "at"])
    return con.execute(f"""
        select cast(customer_id as varchar) as customer_id,
               coalesce(cast(session_id as varchar),
                        anonymous_id || ':' || cast(event_date as varchar)) as session_key,
               cast(sku as varchar) as sku, cast(event_at as timestamp) as at
        from {table}
        where sku is not null and event_at >= ? and event_at < ?""", [start, end]).df()


def _between(frame: pd.DataFrame, start: dt.date, end: dt.date) -> pd.DataFrame:
    at = frame["at"]
    return frame[(at >= pd.Timestamp(start)) & (at < pd.Timestamp(end))]


# --- fitting ---------------------------------------------------------------------------------

def _incidence(rows: pd.Series, items: np.ndarray, n_items: int) -> sparse.csr_matrix:
    codes, uniques = pd.factorize(rows, sort=True)
    m = sparse.csr_matrix((np.ones(len(codes)), (codes, items)), shape=(len(uniques), n_items))
    m.data[:] = 1.0  # binary: bought / viewed at all
    return m


def _cosine(incidence: sparse.csr_matrix) -> sparse.csr_matrix:
    co = (incidence.T @ incidence).tocsr()
    norms = np.sqrt(co.diagonal())
    inv = sparse.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0))
    sim = (inv @ co @ inv).tocsr()
    sim.setdiag(0.0)
    sim.eliminate_zeros()
    return sim


def _keep_top_neighbours(sim: sparse.csr_matrix, k: int) -> sparse.csr_matrix:
    sim = sim.tocsr()
    if k <= 0 or sim.getnnz(axis=1).max(initial=0) <= k:
        return sim
    rows, cols, vals = [], [], []
    for i in range(sim.shape[0]):
        lo, hi = sim.indptr[i], sim.indptr[i + 1]
        idx, data = sim.indices[lo:hi], sim.data[lo:hi]
        if len(data) > k:
            top = np.argpartition(-data, k - 1)[:k]
            idx, data = idx[top], data[top]
        rows.append(np.full(len(idx), i))
        cols.append(idx)
        vals.append(data)
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=sim.shape)


def fit(purchases: pd.DataFrame, views: pd.DataFrame, spec: ModelSpec, cutoff: dt.date) -> ItemItemModel:
    """Learn from interactions in [cutoff - lookback_days, cutoff)."""
    windows, algo = spec.section("windows"), spec.section("algorithm")
    start = cutoff - dt.timedelta(days=int(windows["lookback_days"]))
    bought = _between(purchases, start, cutoff)
    viewed = _between(views, start, cutoff)
    skus = np.sort(pd.unique(pd.concat([bought.sku, viewed.sku], ignore_index=True).dropna())
                   .astype(object))
    index = pd.Index(skus)
    n = len(skus)

    sim = sparse.csr_matrix((n, n))
    if len(bought):
        sim = sim + _cosine(_incidence(bought.customer_id, index.get_indexer(bought.sku), n))
    if len(viewed):
        sim = sim + float(algo.get("co_view_weight", 0.5)) * _cosine(
            _incidence(viewed.session_key, index.get_indexer(viewed.sku), n))
    sim = _keep_top_neighbours(sim.tocsr(), int(algo.get("max_neighbours", 200)))

    recent = _between(bought, cutoff - dt.timedelta(days=int(windows["popularity_days"])), cutoff)
    if recent.empty:  # a quiet month: fall back to the whole window
        recent = bought
    buyers = recent.groupby("sku").customer_id.nunique()
    popularity = np.zeros(n)
    popularity[index.get_indexer(buyers.index)] = buyers.to_numpy()
    top = popularity.max(initial=0.0)
    popularity = popularity / top if top > 0 else popularity

    rebuy = algo.get("repeat_purchase", {})
    orders_per_buyer = bought.groupby(["sku", "customer_id"]).order_id.nunique()
    per_sku = orders_per_buyer.groupby(level="sku").agg(buyers="size", repeaters=lambda s: int((s >= 2).sum()))
    is_repeat = ((per_sku.buyers >= int(rebuy.get("min_buyers", 5)))
                 & (per_sku.repeaters / per_sku.buyers >= float(rebuy.get("min_repeat_share", 0.2))))
    repeat = np.zeros(n, dtype=bool)
    repeat[index.get_indexer(per_sku.index)] = is_repeat.to_numpy()
    return ItemItemModel(skus, sim, popularity, repeat, cutoff)


# --- scoring ---------------------------------------------------------------------------------

def _customer_matrix(frame: pd.DataFrame, customers: pd.Index, model: ItemItemModel,
                     weights: np.ndarray) -> sparse.csr_matrix:
    items = pd.Index(model.skus).get_indexer(frame.sku)
    rows = customers.get_indexer(frame.customer_id)
    keep = (items >= 0) & (rows >= 0)
    return sparse.csr_matrix((weights[keep], (rows[keep], items[keep])),
                             shape=(len(customers), model.n_items))


def recommend(model: ItemItemModel, purchases: pd.DataFrame, views: pd.DataFrame,
              customers, spec: ModelSpec, cutoff: dt.date, popularity_only: bool = False) -> pd.DataFrame:
    """Top-k (customer_id, rank, sku, score, source) for each customer, from their history before
    `cutoff`. popularity_only gives the baseline under the same exclusion rule."""
    windows, algo = spec.section("windows"), spec.section("algorithm")
    k = min(int(spec.raw.get("top_k", 5)), model.n_items)
    customers = pd.Index(pd.unique(pd.Series(customers, dtype=str)))
    if k == 0 or len(customers) == 0:
        return pd.DataFrame(columns=["customer_id", "rank", "sku", "score", "source"])

    history = _between(purchases, cutoff - dt.timedelta(days=int(windows["lookback_days"])), cutoff)
    age = (pd.Timestamp(cutoff) - history["at"]).dt.total_seconds().to_numpy() / 86400.0
    decay = 0.5 ** (age / float(algo.get("purchase_half_life_days", 60)))
    bought = _customer_matrix(history, customers, model, decay)
    bought.sum_duplicates()
    seen = _between(views[views.customer_id.notna()],
                    cutoff - dt.timedelta(days=int(windows["view_profile_days"])), cutoff)
    viewed = _customer_matrix(seen, customers, model, np.ones(len(seen)))
    viewed.sum_duplicates()
    viewed.data = float(algo.get("view_weight", 0.3)) * np.log1p(viewed.data)
    profile = (bought + viewed).tocsr()
    self_affinity = (viewed + bought @ sparse.diags(model.repeat.astype(float))).tocsr()

    recent = _between(history, cutoff - dt.timedelta(days=int(windows["exclude_recent_days"])), cutoff)
    excluded = _customer_matrix(recent, customers, model, np.ones(len(recent))).tocsr()
    excluded = (excluded @ sparse.diags((~model.repeat).astype(float))).tocsr()

    prior = float(algo.get("popularity_prior", 0.01)) * model.popularity
    similarity = model.similarity.toarray() if model.n_items <= MAX_DENSE_ITEMS else model.similarity
    has_history = np.asarray(profile.getnnz(axis=1) > 0)
    chunk = max(256, int(2e7 // max(model.n_items, 1)))
    out_rows, out_items, out_scores = [], [], []
    for lo in range(0, len(customers), chunk):
        hi = min(lo + chunk, len(customers))
        if popularity_only:
            scores = np.tile(model.popularity, (hi - lo, 1))
        else:
            affinity = profile[lo:hi] @ similarity
            affinity = affinity.toarray() if sparse.issparse(affinity) else np.asarray(affinity)
            scores = affinity + self_affinity[lo:hi].toarray() + prior
        scores[excluded[lo:hi].toarray() > 0] = -np.inf
        if model.n_items <= MAX_DENSE_ITEMS:  # a stable sort: ties go to the first sku
            top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        else:  # a full sort per row is too slow for a big catalogue; ties are then arbitrary
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1),
                                                     axis=1, kind="stable"), axis=1)
        out_items.append(top)
        out_scores.append(np.take_along_axis(scores, top, axis=1))
        out_rows.append(np.arange(lo, hi))
    rows = np.repeat(np.concatenate(out_rows), k)
    items = np.concatenate(out_items).ravel()
    scores = np.concatenate(out_scores).ravel()
    frame = pd.DataFrame({
        "customer_id": customers.to_numpy()[rows],
        "rank": np.tile(np.arange(1, k + 1), len(customers)),
        "sku": model.skus[items],
        "score": scores,
        "source": np.where(popularity_only | ~has_history[rows], "popular", "affinity"),
    })
    return frame[np.isfinite(frame.score)].reset_index(drop=True)


def evaluate(purchases: pd.DataFrame, views: pd.DataFrame, spec: ModelSpec, as_of: dt.date) -> dict:
    """Hit rate@k on the held-out last weeks, against the most-popular baseline."""
    windows = spec.section("windows")
    end = as_of + dt.timedelta(days=1)
    cutoff = end - dt.timedelta(days=int(windows["holdout_days"]))
    model = fit(purchases, views, spec, cutoff)
    held_out = _between(purchases, cutoff, end)
    before = pd.concat([_between(purchases, cutoff - dt.timedelta(days=int(windows["lookback_days"])), cutoff).customer_id,
                        _between(views, cutoff - dt.timedelta(days=int(windows["view_profile_days"])), cutoff).customer_id])
    customers = list(pd.Index(held_out.customer_id.unique()).intersection(pd.Index(before.dropna().unique()))
                     .sort_values())
    k = int(spec.raw.get("top_k", 5))
    out = {"k": k, "holdout_start": cutoff, "holdout_end": as_of, "eval_customers": len(customers),
           "items": model.n_items, "repeat_items": int(model.repeat.sum())}
    if not customers or model.n_items == 0:
        out.update({"hit_rate_at_k": None, "popularity_hit_rate_at_k": None, "lift_over_popularity": None})
        return out
    truth = held_out[held_out.customer_id.isin(customers)][["customer_id", "sku"]].drop_duplicates()

    def hit_rate(recs: pd.DataFrame) -> float:
        hits = recs.merge(truth, on=["customer_id", "sku"]).customer_id.nunique()
        return hits / len(customers)

    recs = recommend(model, purchases, views, customers, spec, cutoff)
    base = recommend(model, purchases, views, customers, spec, cutoff, popularity_only=True)
    hr, hr_base = hit_rate(recs), hit_rate(base)
    out.update({"hit_rate_at_k": hr, "popularity_hit_rate_at_k": hr_base,
                "lift_over_popularity": hr / hr_base if hr_base else (float("inf") if hr else None),
                "catalog_coverage": recs.sku.nunique() / model.n_items})
    return out
