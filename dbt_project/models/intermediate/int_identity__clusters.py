"""One customer_id per person: connected components of the identity graph, with ids that
survive from run to run.

Components come from scipy's sparse-graph connected_components over int_identity__edges.
Ids are stable because the model reads its own previous version (dbt.this) before it is
replaced, and each component keeps an id its keys already had:

- no key had an id              -> a new id, "c_" + HMAC(min key) (keyed: ids reveal no PII)
- its keys had one id           -> that id                             (id_status "kept")
- its keys had several ids      -> the id most of its keys had, ties to the smallest id;
                                   the others retire                   (id_status "merged")
- a previous cluster split      -> the part holding most of the old id's keys keeps it
                                   (ties: the part with the smallest key); other parts get
                                   a new id                            (id_status "split")

A new id never reuses an id that exists or existed in the previous version. The table is a
plain table rebuilt every run (not incremental), so a key that disappears (an erased contact)
disappears here too; --full-refresh does not reset ids, dropping the warehouse does.
"""

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from customer360.settings import get_settings
from customer360.sql_functions import make_pii_hasher

SCHEMA = pa.schema([
    ("identity_key", pa.string()),
    ("key_type", pa.string()),
    ("customer_id", pa.string()),
    ("cluster_size", pa.int64()),
    ("id_status", pa.string()),
])
PERSON_KEY_TYPES = ("contact", "email", "phone", "loyalty")


def previous_ids(session, this) -> pd.DataFrame:
    exists = session.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [this.schema, this.identifier]).fetchone()[0]
    if not exists:
        return pd.DataFrame({"identity_key": pd.Series(dtype="str"),
                             "previous_id": pd.Series(dtype="str")})
    return session.sql(
        f"select identity_key, customer_id as previous_id from {this}").df()


def components(nodes: pd.DataFrame, edges: pd.DataFrame) -> np.ndarray:
    index = pd.Index(nodes["identity_key"])
    left = index.get_indexer(edges["left_key"])
    right = index.get_indexer(edges["right_key"])
    keep = (left >= 0) & (right >= 0)
    n = len(index)
    graph = coo_matrix((np.ones(keep.sum(), dtype=np.int8), (left[keep], right[keep])),
                       shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels


def assign_ids(keys: pd.DataFrame, previous: pd.DataFrame, new_id) -> pd.DataFrame:
    """keys: identity_key, key_type, component -> adds customer_id and id_status."""
    keys = keys.merge(previous, on="identity_key", how="left")
    min_key = keys.groupby("component")["identity_key"].min().rename("min_key")

    votes = (keys.dropna(subset=["previous_id"])
             .groupby(["component", "previous_id"]).size().rename("votes").reset_index())
    distinct_ids = votes.groupby("component").size().rename("previous_ids")
    # each component's candidate: the id most of its keys had, ties to the smallest id
    candidate = (votes.sort_values(["component", "votes", "previous_id"],
                                   ascending=[True, False, True])
                 .drop_duplicates("component")
                 .join(min_key, on="component"))
    # an id claimed by several components (a split): most keys wins, ties to the smallest key
    winner = (candidate.sort_values(["previous_id", "votes", "min_key"],
                                    ascending=[True, False, True])
              .drop_duplicates("previous_id")
              .set_index("component")["previous_id"])

    comp = pd.DataFrame(index=min_key.index).join(min_key).join(distinct_ids)
    comp["previous_ids"] = comp["previous_ids"].fillna(0).astype("int64")
    comp["customer_id"] = winner.reindex(comp.index)
    comp["id_status"] = np.select(
        [comp["customer_id"].notna() & (comp["previous_ids"] > 1),
         comp["customer_id"].notna(),
         comp["previous_ids"] > 0],
        ["merged", "kept", "split"], default="new")

    taken = set(previous["previous_id"].dropna()) | set(comp["customer_id"].dropna())
    fresh = comp["customer_id"].isna()
    comp.loc[fresh, "customer_id"] = [new_id(k, taken) for k in comp.loc[fresh, "min_key"]]

    out = keys.join(comp[["customer_id", "id_status"]], on="component")
    out["cluster_size"] = out.groupby("component")["identity_key"].transform("size")
    return out


def id_maker():
    hasher = make_pii_hasher(get_settings().pii_key())

    def new_id(min_key, taken):
        salt = 0
        while True:
            candidate = "c_" + hasher(min_key if salt == 0 else f"{min_key}#{salt}")[:16]
            if candidate not in taken:
                taken.add(candidate)
                return candidate
            salt += 1

    return new_id


def model(dbt, session):
    dbt.config(materialized="table")
    nodes = dbt.ref("int_identity__nodes").project("identity_key, key_type").df()
    edges = dbt.ref("int_identity__edges").project("left_key, right_key").df()
    if nodes.empty:
        return SCHEMA.empty_table()
    nodes = nodes.sort_values("identity_key", ignore_index=True)
    nodes["component"] = components(nodes, edges)
    # a cluster of devices alone is a visitor, not a customer
    is_person = nodes["key_type"].isin(PERSON_KEY_TYPES)
    nodes = nodes[is_person.groupby(nodes["component"]).transform("any")]
    out = assign_ids(nodes, previous_ids(session, dbt.this), id_maker())
    out = out[[f.name for f in SCHEMA]].sort_values("identity_key")
    return pa.Table.from_pandas(out, schema=SCHEMA, preserve_index=False)
