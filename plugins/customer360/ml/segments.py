"""Behavioural segments: KMeans on standardized behaviour features, k chosen by silhouette,
names derived from the cluster centres, and ids that stay put from one run to the next.

Stability has three layers: (1) the previous run's k is kept unless another k is clearly
better (sticky_k_tolerance), (2) that k is warm-started from the previous centres, and (3) the
new clusters are matched to the previous ones by the Hungarian algorithm on centre distances;
a matched cluster inherits the previous segment_id and segment_name, an unmatched (or too
distant) one gets a new id and a name derived from its centre.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

from customer360.ml.spec import ModelSpec

# Words for telling apart two clusters that got the same name: (higher, lower) on a feature.
CONTRASTS = {
    "monetary_365d": ("bigger spenders", "smaller spenders"),
    "frequency_365d": ("more frequent", "less frequent"),
    "recency_days": ("less recent", "more recent"),
    "store_share": ("more in store", "more online"),
    "web_sessions_90d": ("heavier browsers", "lighter browsers"),
    "product_views_90d": ("more product views", "fewer product views"),
    "returns_share": ("more returns", "fewer returns"),
    "tickets_365d": ("more tickets", "fewer tickets"),
}


def source_columns(spec: ModelSpec) -> list[str]:
    return [f["column"] for f in spec.raw["features"]]


def transform(frame: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """The clustering inputs, one column a spec feature: filled, clipped, log1p'd."""
    out = {}
    for f in spec.raw["features"]:
        v = pd.to_numeric(frame[f["column"]], errors="coerce").astype(float).fillna(float(f.get("fill", 0)))
        v = v.clip(lower=f.get("clip_min"), upper=f.get("clip_max"))
        out[f["name"]] = np.log1p(v.clip(lower=0)) if f.get("log1p") else v
    return pd.DataFrame(out, index=frame.index)


def _original_units(centres: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    out = centres.copy()
    for f in spec.raw["features"]:
        if f.get("log1p"):
            out[f["name"]] = np.expm1(out[f["name"]])
    return out


@dataclass
class SegmentModel:
    """Everything needed to assign a customer to a segment; no customer data inside."""
    features: list[str]
    scaler: StandardScaler
    kmeans: KMeans
    segment_ids: list[int]             # cluster index -> segment_id
    segment_names: list[str]           # cluster index -> segment_name
    centres: pd.DataFrame              # cluster index -> centre in transformed units
    thresholds: dict = field(default_factory=dict)

    def assign(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        cluster = self.kmeans.predict(self.scaler.transform(X[self.features].to_numpy()))
        return np.asarray(self.segment_ids)[cluster], np.asarray(self.segment_names, dtype=object)[cluster]

    def describe(self) -> list[dict]:
        centres = self.centres.copy()
        centres.insert(0, "segment_name", self.segment_names)
        centres.insert(0, "segment_id", self.segment_ids)
        return centres.round(4).to_dict(orient="records")


def _sample(n: int, size: int, seed: int) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def silhouette(Z: np.ndarray, labels: np.ndarray, sample: np.ndarray) -> float | None:
    if len(np.unique(labels[sample])) < 2:
        return None
    return float(silhouette_score(Z[sample], labels[sample]))


def name_centres(centres_orig: pd.DataFrame, X_orig_buyers: pd.DataFrame, naming: dict) -> list[str]:
    """Readable names from centres in original units ("high-value omnichannel", "web browsers
    who rarely buy", ...); value levels are relative to the buyers' spend quantiles."""
    q_high = float(X_orig_buyers["monetary_365d"].quantile(naming["high_value_quantile"])) if len(X_orig_buyers) else 0
    q_low = float(X_orig_buyers["monetary_365d"].quantile(naming["low_value_quantile"])) if len(X_orig_buyers) else 0
    names = []
    for _, c in centres_orig.iterrows():
        if c.frequency_365d < naming["buyer_min_orders_365d"]:
            if c.web_sessions_90d >= naming["browser_min_sessions_90d"]:
                base = "web browsers who rarely buy"
            elif c.recency_days < 365:
                base = "lapsed buyers"
            else:
                base = "dormant contacts"
        else:
            value = ("high-value" if c.monetary_365d >= q_high
                     else "low-value" if c.monetary_365d <= q_low else "mid-value")
            channel = ("store shoppers" if c.store_share >= naming["store_share_store"]
                       else "web shoppers" if c.store_share <= naming["store_share_web"] else "omnichannel")
            lapsing = "lapsing " if c.recency_days >= naming["lapsing_recency_days"] else ""
            base = f"{lapsing}{value} {channel}"
        if c.returns_share >= naming["high_returns_share"]:
            base += " who return a lot"
        if c.tickets_365d >= naming["many_tickets_365d"]:
            base += " with service issues"
        names.append(base)
    return names


def make_unique(names: list[str], centres_scaled: np.ndarray, features: list[str],
                fixed: set[str] = frozenset()) -> list[str]:
    """Clusters sharing a name get a contrast on the feature where their centres differ most
    ("mid-value web shoppers, heavier browsers"); names in `fixed` (inherited) are taken."""
    out = list(names)
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        groups.setdefault(n, []).append(i)
    for name, members in groups.items():
        if len(members) == 1:
            continue  # unique among the new ones; a clash with an inherited name is numbered below
        spread = centres_scaled[members].max(axis=0) - centres_scaled[members].min(axis=0)
        j = int(np.argmax(spread))
        hi, lo = CONTRASTS.get(features[j], (f"higher {features[j]}", f"lower {features[j]}"))
        order = np.argsort(-centres_scaled[members, j], kind="stable")
        for rank, pos in enumerate(order):
            i = members[pos]
            word = hi if rank == 0 else lo if rank == len(members) - 1 else f"group {rank + 1}"
            out[i] = f"{name}, {word}"
    taken = set(fixed)
    for i, n in enumerate(out):  # last resort: numbering
        candidate, k = n, 2
        while candidate in taken:
            candidate, k = f"{n} ({k})", k + 1
        out[i] = candidate
        taken.add(candidate)
    return out


def _kmeans(Z: np.ndarray, k: int, spec: ModelSpec, init: np.ndarray | None = None) -> KMeans:
    algo = spec.section("algorithm")
    if init is not None:
        model = KMeans(n_clusters=k, init=init, n_init=1, random_state=spec.seed)
    else:
        model = KMeans(n_clusters=k, n_init=int(algo.get("n_init", 4)), random_state=spec.seed)
    return model.fit(Z)


def fit(frame: pd.DataFrame, spec: ModelSpec, previous: SegmentModel | None = None) -> tuple[SegmentModel, dict]:
    """Cluster the scoring population; returns the model and its metrics."""
    algo = spec.section("algorithm")
    X = transform(frame, spec)
    features = list(X.columns)
    scaler = StandardScaler().fit(X.to_numpy())
    Z = scaler.transform(X.to_numpy())
    sample = _sample(len(Z), int(algo.get("silhouette_sample", 5000)), spec.seed)
    k_lo, k_hi = (int(v) for v in algo.get("k_range", [3, 8]))
    k_hi = min(k_hi, max(2, len(np.unique(Z[sample], axis=0)) - 1))
    prev_k = len(previous.segment_ids) if previous is not None else None
    prev_init = None
    if previous is not None and previous.features == features:
        prev_init = scaler.transform(previous.centres[features].to_numpy())

    fitted, scores = {}, {}
    for k in range(k_lo, k_hi + 1):
        model = _kmeans(Z, k, spec, prev_init if k == prev_k and prev_init is not None else None)
        fitted[k] = model
        scores[k] = silhouette(Z, model.labels_, sample)
    valid = {k: s for k, s in scores.items() if s is not None}
    if not valid:
        raise ValueError("segments: no k in range gives two or more clusters")
    best_k = max(valid, key=lambda k: (valid[k], -k))
    tolerance = float(algo.get("sticky_k_tolerance", 0.0))
    if prev_k in valid and valid[prev_k] >= valid[best_k] - tolerance:
        best_k = prev_k
    km = fitted[best_k]
    centres = pd.DataFrame(scaler.inverse_transform(km.cluster_centers_), columns=features)

    # ids and names: inherit through Hungarian matching on centres (in today's scaled units)
    ids: list[int | None] = [None] * best_k
    names: list[str | None] = [None] * best_k
    matched = 0
    if previous is not None and previous.features == features:
        prev_scaled = scaler.transform(previous.centres[features].to_numpy())
        cost = np.linalg.norm(km.cluster_centers_[:, None, :] - prev_scaled[None, :, :], axis=2)
        rows, cols = linear_sum_assignment(cost)
        limit = float(spec.raw.get("stability", {}).get("match_max_distance", np.inf))
        for r, c in zip(rows, cols):
            if cost[r, c] <= limit:
                ids[r], names[r] = previous.segment_ids[c], previous.segment_names[c]
                matched += 1
    next_id = max([0, *(previous.segment_ids if previous else [])]) + 1
    for i in range(best_k):
        if ids[i] is None:
            ids[i], next_id = next_id, next_id + 1
    naming = spec.raw.get("naming", {})
    X_orig = _original_units(X, spec)
    derived = name_centres(_original_units(centres, spec),
                           X_orig[X_orig.frequency_365d > 0], naming)
    new = [i for i in range(best_k) if names[i] is None]
    inherited = {n for n in names if n is not None}
    unique = make_unique([derived[i] for i in new], km.cluster_centers_[new], features, inherited)
    for i, n in zip(new, unique):
        names[i] = n

    model = SegmentModel(features, scaler, km, [int(i) for i in ids], [str(n) for n in names], centres)
    labels = km.labels_
    metrics = {
        "k": best_k, "silhouette": valid[best_k],
        "silhouette_by_k": {str(k): v for k, v in scores.items()},
        "matched_to_previous": matched, "previous_k": prev_k,
        "segment_sizes": {model.segment_names[c]: int((labels == c).sum()) for c in range(best_k)},
        "rows": int(len(Z)),
    }
    return model, metrics


def silhouette_of(model: SegmentModel, frame: pd.DataFrame, spec: ModelSpec) -> float | None:
    """An existing model's silhouette on today's population (for the champion comparison)."""
    X = transform(frame, spec)
    if list(X.columns) != model.features:
        return None
    Z = model.scaler.transform(X.to_numpy())
    labels = model.kmeans.predict(Z)
    sample = _sample(len(Z), int(spec.section("algorithm").get("silhouette_sample", 5000)), spec.seed)
    return silhouette(Z, labels, sample)


def segments_frame(frame: pd.DataFrame, model: SegmentModel, spec: ModelSpec, model_version: str,
                   scored_at, rfm: pd.DataFrame | None = None) -> pd.DataFrame:
    ids, names = model.assign(transform(frame, spec))
    out = pd.DataFrame({
        "customer_id": frame["customer_id"].astype(str).to_numpy(),
        "segment_id": ids.astype(int),
        "segment_name": names.astype(str),
        "model_version": model_version,
        "scored_at": pd.Timestamp(scored_at),
        "as_of_date": frame["snapshot_date"].to_numpy(),
    })
    if rfm is not None and len(rfm):
        out = out.merge(rfm, on="customer_id", how="left")
    return out
