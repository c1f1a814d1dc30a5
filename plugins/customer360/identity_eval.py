"""How well identity resolution finds people: pairwise precision and recall of the warehouse's
customer_id against the simulator's ground truth.

Records scored: CRM contacts, POS transactions and web orders present in the warehouse's
staging layer (the ones the pipeline could see). Two records form a *true pair* when the same
person is behind them, a *predicted pair* when they got the same customer_id; a record without
a customer_id is alone. Pairs are counted from the contingency table of (person, customer) -
sum of C(n, 2) over cells, rows and columns - never by listing pairs.

Two scopes: ``linkable`` keeps the records whose source carries a person key the contract
links on (every contact; a till transaction with a loyalty id, phone or email; a web order
placed logged in or from a device someone logged in or identified on, shared devices
excepted); ``all`` keeps every record, walk-ins and anonymous orders included.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from customer360.settings import Settings

TRUTH_RECORD_TYPES = {"crm_contact_id": "crm_contact", "pos_transaction_id": "pos_transaction",
                      "web_order_id": "web_order"}

# Records the warehouse saw, with whether their source carries a linking key.
_RECORDS_SQL = """
with devices_linked as (
    select distinct substr(identity_key, 6) as anonymous_id
    from intermediate.int_identity__observations
    where key_type = 'anon'
      and identity_key not in (select identity_key from intermediate.int_identity__ambiguous_keys)
),
web_orders as (
    select order_id, user_id, anonymous_id
    from (select order_id, user_id, anonymous_id,
                 row_number() over (partition by order_id order by event_at, message_id) as rn
          from staging.stg_web__events
          where event_name = 'Order Completed' and order_id is not null)
    where rn = 1
)
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


def _pairs(counts: np.ndarray) -> int:
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def pairwise_from_labels(truth: pd.Series, predicted: pd.Series) -> dict:
    """Pairwise scores of ``predicted`` cluster labels against ``truth`` labels (one entry per
    record, aligned; a null predicted label means the record is alone)."""
    frame = pd.DataFrame({"truth": truth.to_numpy(), "predicted": predicted.to_numpy()})
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


def scored_records(settings: Settings) -> pd.DataFrame:
    """record_type, record_id, person_id, customer_id, linkable for every record scored."""
    truth = pd.read_parquet(ground_truth_path(settings), columns=["key_type", "key_value",
                                                                   "person_id"])
    truth = truth[truth["key_type"].isin(TRUTH_RECORD_TYPES)]
    truth = truth.assign(record_type=truth["key_type"].map(TRUTH_RECORD_TYPES),
                         record_id=truth["key_value"].astype(str))
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        records = con.sql(_RECORDS_SQL).df()
        predicted = con.sql("select record_type, record_id, customer_id "
                            "from intermediate.int_identity__record_customers").df()
    scored = (records.merge(truth[["record_type", "record_id", "person_id"]],
                            on=["record_type", "record_id"], how="inner")
              .merge(predicted, on=["record_type", "record_id"], how="left"))
    return scored


def pairwise_scores(settings: Settings) -> dict:
    """Pairwise precision, recall and F1 of the built warehouse against the ground truth, on
    linkable records (top-level keys) and on all records (under ``"all"``), with counts."""
    scored = scored_records(settings)
    linkable = scored[scored["linkable"]]
    result = pairwise_from_labels(linkable["person_id"], linkable["customer_id"])
    result["scope"] = "linkable"
    result["by_record_type"] = scored.groupby("record_type").size().to_dict()
    result["all"] = pairwise_from_labels(scored["person_id"], scored["customer_id"])
    return result
