"""Connected components of the identity graph and customer ids that survive from run to run,
in pandas and scipy: the reference for the SQL model ``int_identity__clusters``
(dbt_project/macros/identity_clusters.sql), which runs on DuckDB and Spark alike.

The warehouse no longer runs this module (it was a dbt Python model, which dbt-spark runs only
on Databricks); it stays as the test oracle: tests/test_dbt_identity_sql.py runs both on the
same graphs and across runs, and the property tests check the rules here.

Id rules, per component of the new graph:

- no key had an id              -> a new id, "c_" + the first 16 hex of HMAC-SHA256(PII key,
                                   smallest key): ids reveal no PII, and rebuilding from
                                   nothing gives the same ids
- its keys had one id           -> that id
- its keys had several ids      -> the id most of its keys had, ties to the smallest id; the
                                   others retire (a merge)
- a previous cluster split      -> the part holding most of the old id's keys keeps it (ties:
                                   the part with the smallest key); the other parts get new ids

A new id never equals an id that exists or existed in the previous version.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from customer360.core.settings import get_settings
from customer360.warehouse.sql_functions import make_pii_hasher

NewId = Callable[[str, set], str]
PERSON_KEY_TYPES = ("contact", "email", "phone", "loyalty")


def component_labels(keys: pd.Series, left: pd.Series, right: pd.Series) -> np.ndarray:
    """Component number of each key, given edges (left[i], right[i]); unknown keys ignored."""
    index = pd.Index(keys)
    lo, hi = index.get_indexer(left), index.get_indexer(right)
    keep = (lo >= 0) & (hi >= 0)
    n = len(index)
    graph = coo_matrix((np.ones(int(keep.sum()), dtype=np.int8), (lo[keep], hi[keep])),
                       shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels


def assign_ids(keys: pd.DataFrame, previous: pd.DataFrame, new_id: NewId) -> pd.DataFrame:
    """``keys`` (identity_key, component) and ``previous`` (identity_key, previous_id) ->
    ``keys`` with customer_id and cluster_size."""
    keys = keys.merge(previous[["identity_key", "previous_id"]], on="identity_key", how="left")
    min_key = keys.groupby("component")["identity_key"].min().rename("min_key")

    votes = (keys.dropna(subset=["previous_id"])
             .groupby(["component", "previous_id"]).size().rename("votes").reset_index())
    candidate = (votes.sort_values(["component", "votes", "previous_id"],
                                   ascending=[True, False, True])
                 .drop_duplicates("component")
                 .join(min_key, on="component"))
    winner = (candidate.sort_values(["previous_id", "votes", "min_key"],
                                    ascending=[True, False, True])
              .drop_duplicates("previous_id")
              .set_index("component")["previous_id"])

    comp = min_key.to_frame()
    comp["customer_id"] = winner.reindex(comp.index)
    taken = set(previous["previous_id"].dropna()) | set(comp["customer_id"].dropna())
    fresh = comp["customer_id"].isna()
    comp.loc[fresh, "customer_id"] = [new_id(k, taken) for k in comp.loc[fresh, "min_key"]]

    out = keys.drop(columns="previous_id").join(comp[["customer_id"]], on="component")
    out["cluster_size"] = out.groupby("component")["identity_key"].transform("size")
    return out


def cluster_keys(nodes: pd.DataFrame, edges: pd.DataFrame, previous: pd.DataFrame,
                 new_id: NewId) -> pd.DataFrame:
    """The whole model: ``nodes`` (identity_key, key_type), ``edges`` (left_key, right_key) and
    the previous version's (identity_key, previous_id) -> (identity_key, key_type,
    customer_id, cluster_size), one row per key of a component holding a person key."""
    columns = ["identity_key", "key_type", "customer_id", "cluster_size"]
    if nodes.empty:
        return pd.DataFrame({c: pd.Series(dtype="str" if c != "cluster_size" else "int64")
                             for c in columns})
    nodes = nodes[["identity_key", "key_type"]].sort_values("identity_key", ignore_index=True)
    nodes["component"] = component_labels(nodes["identity_key"], edges["left_key"],
                                          edges["right_key"])
    # a cluster of devices alone is a visitor, not a customer
    is_person = nodes["key_type"].isin(PERSON_KEY_TYPES)
    nodes = nodes[is_person.groupby(nodes["component"]).transform("any")]
    out = assign_ids(nodes, previous, new_id)
    return out[columns].sort_values("identity_key", ignore_index=True)


def keyed_id_maker(key: bytes | None = None) -> NewId:
    """New ids from HMAC-SHA256 of the component's smallest key (salted on a collision)."""
    hasher = make_pii_hasher(key if key is not None else get_settings().pii_key())

    def new_id(min_key: str, taken: set) -> str:
        salt = 0
        while True:
            candidate = "c_" + hasher(min_key if salt == 0 else f"{min_key}#{salt}")[:16]
            if candidate not in taken:
                taken.add(candidate)
                return candidate
            salt += 1

    return new_id
