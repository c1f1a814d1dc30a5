"""How well identity resolution finds people: pairwise precision and recall of the warehouse's
customer_id against the simulator's ground truth.

Records scored: CRM contacts, POS transactions and web orders present in the warehouse's
staging layer (the ones the pipeline could see). Two records form a *true pair* when the same
person is behind them, a *predicted pair* when they got the same customer_id; a record without
a customer_id is alone. Pairs are counted from the contingency table of (person, customer) -
sum of C(n, 2) over cells, rows and columns - never by listing pairs.

Scopes: ``linkable`` keeps the records whose source carries a person key the contract
links on (every contact; a till transaction with a loyalty id, phone or email; a web order
placed logged in or from a device someone logged in or identified on, shared devices
excepted); ``all`` keeps every record, walk-ins and anonymous orders included. And
``recall_reachable`` counts only the true pairs the contract's links can connect at all: two
records of one person joined by a chain of keys that the data shows together (a contact's
email, a till receipt's phone, a login) where every key in the chain truly is that person's
and no key is a device the data shows two contact ids logging in on (docs/sources.md: such a
device may be two people, so nothing can rest on it) - the recall "on the links the contract
makes possible".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from customer360.core import duck
from customer360.core.settings import Settings

TRUTH_RECORD_TYPES = {"crm_contact_id": "crm_contact", "pos_transaction_id": "pos_transaction",
                      "web_order_id": "web_order"}
# ground-truth key types -> the warehouse's identity key prefixes
TRUTH_KEY_PREFIXES = {"crm_contact_id": "contact", "web_user_id": "contact", "email": "email",
                      "phone": "phone", "loyalty_id": "loyalty", "anonymous_id": "anon"}

# A web order is its first Order Completed event (as int_identity__record_customers reads it);
# a CTE for SQL that scores or exports the same records (benchmarks/bench_splink.py).
WEB_ORDERS_CTE = """web_orders as (
    select order_id, user_id, anonymous_id
    from (select order_id, user_id, anonymous_id,
                 row_number() over (partition by order_id order by event_at, message_id) as rn
          from staging.stg_web__events
          where event_name = 'Order Completed' and order_id is not null)
    where rn = 1
)"""

# Records the warehouse saw, with whether their source carries a linking key.
_RECORDS_SQL = """
with devices_linked as (
    select distinct substr(identity_key, 6) as anonymous_id
    from intermediate.int_identity__observations
    where key_type = 'anon'
      and identity_key not in (select identity_key from intermediate.int_identity__ambiguous_keys)
),
{web_orders}
select 'crm_contact' as record_type, contact_id as record_id, true as linkable
from staging.stg_crm__contacts where not is_archived
union all
select 'pos_transaction', transaction_id,
       bool_or(loyalty_id is not null or customer_phone is not null or customer_email is not null)
from staging.stg_pos__transactions group by transaction_id
union all
select 'web_order', order_id,
       user_id is not null or anonymous_id in (select anonymous_id from devices_linked)
from web_orders
"""
_RECORDS_SQL = _RECORDS_SQL.replace("{web_orders}", WEB_ORDERS_CTE)

# Every record's keys as the warehouse saw them (ambiguous keys included), web orders too.
_EVIDENCE_SQL = """
select record_type, record_id, identity_key
from intermediate.int_identity__observations
union all
select 'web_order', order_id, key
from (select order_id, user_id, anonymous_id,
             row_number() over (partition by order_id order by event_at, message_id) as rn
      from staging.stg_web__events
      where event_name = 'Order Completed' and order_id is not null) as orders,
     unnest(['contact:' || user_id, 'anon:' || anonymous_id]) as keys(key)
where rn = 1 and key is not null
"""


def _pairs(counts: np.ndarray) -> int:
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def pairwise_from_labels(truth: pd.Series, predicted: pd.Series) -> dict:
    """Pairwise scores of ``predicted`` cluster labels against ``truth`` labels (one entry per
    record, aligned; a null predicted label means the record is alone)."""
    frame = pd.DataFrame({"truth": truth.to_numpy(dtype=object),
                          "predicted": predicted.to_numpy(dtype=object)})
    alone = frame["predicted"].isna()
    frame.loc[alone, "predicted"] = [f"__alone_{i}" for i in range(int(alone.sum()))]
    true_pairs = _pairs(frame.groupby("truth").size().to_numpy())
    predicted_pairs = _pairs(frame.groupby("predicted").size().to_numpy())
    correct = _pairs(frame.groupby(["truth", "predicted"]).size().to_numpy())
    precision = correct / predicted_pairs if predicted_pairs else 1.0
    recall = correct / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "records": len(frame),
            "true_pairs": true_pairs, "predicted_pairs": predicted_pairs,
            "correct_pairs": correct}


def ground_truth_path(settings: Settings) -> Path:
    return settings.simulation_dir / "ground_truth" / "keys.parquet"


def _read_truth(settings: Settings) -> pd.DataFrame:
    columns = ["key_type", "key_value", "person_id"]
    truth = pd.read_parquet(ground_truth_path(settings))
    if "is_shared_device" not in truth.columns:
        truth["is_shared_device"] = False
    truth = truth[columns + ["is_shared_device"]].dropna(subset=["key_value", "person_id"])
    return truth.assign(key_value=truth["key_value"].astype(str),
                        person_id=truth["person_id"].astype(str))


def scored_records(settings: Settings) -> pd.DataFrame:
    """record_type, record_id, person_id, customer_id, linkable for every record scored."""
    truth = _read_truth(settings)
    truth = truth[truth["key_type"].isin(TRUTH_RECORD_TYPES)]
    truth = truth.assign(record_type=truth["key_type"].map(TRUTH_RECORD_TYPES),
                         record_id=truth["key_value"])
    with duck.connect(settings, settings.warehouse_path, read_only=True) as con:
        records = con.sql(_RECORDS_SQL).df()
        predicted = con.sql("select record_type, record_id, customer_id "
                            "from intermediate.int_identity__record_customers").df()
        evidence = con.sql(_EVIDENCE_SQL).df()
    scored = (records.merge(truth[["record_type", "record_id", "person_id"]],
                            on=["record_type", "record_id"], how="inner")
              .merge(predicted, on=["record_type", "record_id"], how="left"))
    scored["reachable_group"] = _reachable_groups(scored, evidence, _read_truth(settings))
    return scored


def _reachable_groups(scored: pd.DataFrame, evidence: pd.DataFrame,
                      truth: pd.DataFrame) -> np.ndarray:
    """For each scored record, a label shared exactly by the records of the same person that
    true links connect (see the module docstring)."""
    keys = truth[truth["key_type"].isin(TRUTH_KEY_PREFIXES) & ~truth["is_shared_device"]]
    keys = keys.assign(identity_key=keys["key_type"].map(TRUTH_KEY_PREFIXES) + ":" + keys["key_value"])
    keys = keys.drop_duplicates(["identity_key", "person_id"])
    keys = keys[~keys["identity_key"].duplicated(keep=False)]  # a key of two people links none
    key_person = keys.set_index("identity_key")["person_id"]

    logins = evidence[evidence["record_type"] == "web_login"]
    login_users = logins.assign(user=logins["record_id"].str.split("|").str[-1])
    devices = login_users[login_users["identity_key"].str.startswith("anon:")]
    shared = devices.groupby("identity_key")["user"].nunique()
    shared = set(shared[shared >= 2].index)

    ev = evidence[~evidence["identity_key"].isin(shared)]
    ev = ev.assign(key_person=ev["identity_key"].map(key_person)).dropna(subset=["key_person"])
    ev = ev.merge(scored[["record_type", "record_id", "person_id"]],
                  on=["record_type", "record_id"], how="left")
    # a scored record links to its keys of the same person; any other record (a login, an
    # identify call) links its keys that belong to one same person
    is_scored = ev["person_id"].notna()
    ev = ev[~is_scored | (ev["person_id"] == ev["key_person"])]
    ev = ev.assign(node=np.where(ev["person_id"].notna(),
                                 "rec:" + ev["record_type"] + ":" + ev["record_id"],
                                 "grp:" + ev["record_type"] + ":" + ev["record_id"] + ":"
                                 + ev["key_person"]))

    record_nodes = "rec:" + scored["record_type"] + ":" + scored["record_id"]
    index = pd.Index(pd.concat([record_nodes, ev["node"], ev["identity_key"]]).unique())
    left, right = index.get_indexer(ev["node"]), index.get_indexer(ev["identity_key"])
    graph = coo_matrix((np.ones(len(ev), dtype=np.int8), (left, right)),
                       shape=(len(index), len(index)))
    _, labels = connected_components(graph, directed=False)
    return labels[index.get_indexer(record_nodes)]


def pairwise_scores(settings: Settings) -> dict:
    """Pairwise precision, recall and F1 of the built warehouse against the ground truth, on
    linkable records (top-level keys) and on all records (under ``"all"``), with counts."""
    scored = scored_records(settings)
    linkable = scored[scored["linkable"]]
    result = pairwise_from_labels(linkable["person_id"], linkable["customer_id"])
    result["scope"] = "linkable"
    reachable = pairwise_from_labels(scored["reachable_group"].astype(str), scored["customer_id"])
    result["recall_reachable"] = reachable["recall"]
    result["reachable_pairs"] = reachable["true_pairs"]
    result["by_record_type"] = scored.groupby("record_type").size().to_dict()
    result["all"] = pairwise_from_labels(scored["person_id"], scored["customer_id"])
    return result
