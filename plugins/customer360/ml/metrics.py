"""Evaluation measures shared by the models: classification metrics with a lift table, and the
population stability index used for drift."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

PSI_EPSILON = 1e-4  # an empty bin would make the log infinite


def safe_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, score))


def lift_table(y: np.ndarray, probability: np.ndarray, bins: int = 10) -> list[dict]:
    """Customers ranked by probability, cut into equal bins (bin 1 = highest risk): the churn
    rate in each, its lift over the overall rate, and the cumulative share of churners caught."""
    frame = pd.DataFrame({"y": np.asarray(y, dtype=float), "p": np.asarray(probability, dtype=float)})
    frame = frame.sort_values("p", ascending=False, kind="mergesort").reset_index(drop=True)
    frame["bin"] = (np.arange(len(frame)) * bins // max(len(frame), 1)) + 1
    overall = frame.y.mean() if len(frame) else float("nan")
    total = frame.y.sum()
    rows, caught = [], 0.0
    for b, part in frame.groupby("bin", sort=True):
        caught += part.y.sum()
        rate = part.y.mean()
        rows.append({"bin": int(b), "customers": int(len(part)), "mean_probability": float(part.p.mean()),
                     "churn_rate": float(rate), "lift": float(rate / overall) if overall else None,
                     "cumulative_capture": float(caught / total) if total else None})
    return rows


def classification_metrics(y: np.ndarray, probability: np.ndarray, bins: int = 10) -> dict:
    y = np.asarray(y, dtype=int)
    p = np.asarray(probability, dtype=float)
    out = {"rows": int(len(y)), "positives": int(y.sum()), "base_rate": float(y.mean()) if len(y) else None,
           "roc_auc": safe_auc(y, p), "brier": float(brier_score_loss(y, p)) if len(y) else None,
           "pr_auc": float(average_precision_score(y, p)) if len(np.unique(y)) > 1 else None}
    out["lift_table"] = lift_table(y, p, bins)
    out["top_decile_lift"] = out["lift_table"][0]["lift"] if out["lift_table"] else None
    return out


# --- drift ---------------------------------------------------------------------------------

def numeric_profile(values: np.ndarray, bins: int = 10) -> dict:
    """Quantile bin edges of a numeric variable and the share in each bin (+ the missing share);
    the next run measures its own values against these edges."""
    v = np.asarray(values, dtype=float)
    present = v[np.isfinite(v)]
    if present.size == 0:
        return {"kind": "numeric", "edges": [], "shares": [], "missing": 1.0}
    edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
    return {"kind": "numeric", "edges": [float(e) for e in edges],
            "shares": _numeric_shares(v, edges), "missing": float(1 - present.size / v.size)}


def _numeric_shares(v: np.ndarray, edges: np.ndarray) -> list[float]:
    present = v[np.isfinite(v)]
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    return [float(c / v.size) for c in counts]


def categorical_profile(values) -> dict:
    s = pd.Series(values).astype("string").fillna("<missing>")
    shares = s.value_counts(normalize=True).sort_index()
    return {"kind": "categorical", "shares": {str(k): float(x) for k, x in shares.items()}}


def _psi(current: list[float], reference: list[float]) -> float:
    c = np.maximum(np.asarray(current, dtype=float), PSI_EPSILON)
    r = np.maximum(np.asarray(reference, dtype=float), PSI_EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


def psi_against(reference: dict, values) -> float | None:
    """Population stability index of `values` against a stored profile."""
    if reference.get("kind") == "categorical":
        cur = categorical_profile(values)["shares"]
        cats = sorted(set(cur) | set(reference["shares"]))
        return _psi([cur.get(c, 0.0) for c in cats], [reference["shares"].get(c, 0.0) for c in cats])
    edges = np.asarray(reference.get("edges", []), dtype=float)
    if not reference.get("shares"):
        return None
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return None
    cur = _numeric_shares(v, edges) + [float(np.mean(~np.isfinite(v)))]
    ref = list(reference["shares"]) + [float(reference.get("missing", 0.0))]
    value = _psi(cur, ref)
    return value if math.isfinite(value) else None
