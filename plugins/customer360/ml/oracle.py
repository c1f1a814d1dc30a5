"""The churn ceiling on simulated data: the AUC of the simulator's true churn probabilities.

Only for evaluation, never for training: with the demo simulator's ground truth
($C360_HOME/simulation/ground_truth/people.parquet and keys.parquet) it scores the same
evaluation rows as the model, so our AUC can be reported as a share of the best achievable.

Customers are tied to simulated people through the keys the warehouse keeps: CRM contact ids
(dim_customer / customer_360.crm_contact_ids), web anonymous ids (fct_web_sessions) and any
intermediate identity table with a customer_id and a key column. A customer takes the person
most of its keys point to.
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from customer360.ml.metrics import safe_auc
from customer360.ml.warehouse_io import columns_of, find_table

log = logging.getLogger(__name__)

KEY_COLUMNS = ("key_value", "identity_key", "source_key", "key")


def ground_truth_files(simulation_dir: Path) -> tuple[Path, Path] | None:
    gt = simulation_dir / "ground_truth"
    people, keys = gt / "people.parquet", gt / "keys.parquet"
    return (people, keys) if people.exists() and keys.exists() else None


def _key_sources(con: duckdb.DuckDBPyConnection) -> list[str]:
    """SELECTs of (customer_id, key_value) pairs from whatever the warehouse has."""
    selects = []
    for name in ("dim_customer", "customer_360"):
        table = find_table(con, name, ("marts",))
        if table and "crm_contact_ids" in (cols := columns_of(con, table)):
            if cols["crm_contact_ids"].endswith("[]"):
                expr = "unnest(crm_contact_ids)"
            else:
                expr = "unnest(string_split(regexp_replace(cast(crm_contact_ids as varchar), '[\\[\\]\" ]', '', 'g'), ','))"
            selects.append(f"select cast(customer_id as varchar) as customer_id, cast({expr} as varchar) "
                           f"as key_value from {table}")
    sessions = find_table(con, "fct_web_sessions", ("marts",))
    if sessions:
        selects.append(f"select distinct cast(customer_id as varchar) as customer_id, "
                       f"cast(anonymous_id as varchar) as key_value "
                       f"from {sessions} where customer_id is not null")
    for schema, name in con.execute("""
            select table_schema, table_name from information_schema.columns
            where table_schema like '%intermediate%' and column_name = 'customer_id'""").fetchall():
        cols = columns_of(con, f'"{schema}"."{name}"')
        key = next((k for k in KEY_COLUMNS if k in cols), None)
        if key:
            selects.append(f'select cast(customer_id as varchar) as customer_id, '
                           f'cast("{key}" as varchar) as key_value from "{schema}"."{name}"')
    return selects


def customer_people(con: duckdb.DuckDBPyConnection, keys_path: Path) -> pd.DataFrame:
    """customer_id -> person_id by majority of matching keys (identity keys written as
    '<type>:<value>' match on their value too)."""
    selects = _key_sources(con)
    if not selects:
        return pd.DataFrame(columns=["customer_id", "person_id"])
    union = " union all ".join(selects)
    return con.execute(f"""
        with pairs as ({union}),
        candidates as (
            select customer_id, key_value from pairs where key_value is not null
            union all
            select customer_id, regexp_extract(key_value, '^[^:]+:(.*)$', 1) from pairs
            where key_value like '%:%'
        ),
        truth as (
            select cast(key_value as varchar) as key_value, cast(person_id as varchar) as person_id
            from read_parquet(?)
        ),
        votes as (
            select c.customer_id, t.person_id, count(*) as n
            from candidates as c join truth as t on t.key_value = c.key_value
            group by 1, 2
        )
        select customer_id, arg_max(person_id, n) as person_id from votes group by 1
    """, [str(keys_path)]).df()


def ceiling_metrics(con: duckdb.DuckDBPyConnection, simulation_dir: Path, customer_ids: np.ndarray,
                    y: np.ndarray, model_probability: np.ndarray) -> dict | None:
    """Oracle AUC on the evaluation rows that map to a simulated person, the model's AUC on
    those same rows, and the model's share of the ceiling (plain and above chance)."""
    files = ground_truth_files(simulation_dir)
    if files is None:
        return None
    people_path, keys_path = files
    people = pd.read_parquet(people_path, columns=None)
    if not {"person_id", "true_churn_probability"} <= set(people.columns):
        log.warning("ground truth %s lacks person_id/true_churn_probability", people_path)
        return None
    mapping = customer_people(con, keys_path)
    rows = pd.DataFrame({"customer_id": np.asarray(customer_ids).astype(str), "y": y, "p": model_probability})
    rows = rows.merge(mapping, on="customer_id", how="left").merge(
        people[["person_id", "true_churn_probability"]].astype({"person_id": str}), on="person_id", how="left")
    covered = rows[rows.true_churn_probability.notna()]
    out = {"oracle_coverage": float(len(covered) / len(rows)) if len(rows) else 0.0,
           "oracle_rows": int(len(covered))}
    if "truth_date" in people.columns:
        out["truth_date"] = str(pd.Timestamp(people["truth_date"].iloc[0]).date())
    oracle = safe_auc(covered.y.to_numpy(), covered.true_churn_probability.to_numpy())
    model = safe_auc(covered.y.to_numpy(), covered.p.to_numpy())
    out.update({"oracle_roc_auc": oracle, "model_roc_auc_on_covered": model})
    if oracle and model:
        out["auc_share_of_ceiling"] = model / oracle
        out["auc_above_chance_share_of_ceiling"] = (model - 0.5) / (oracle - 0.5) if oracle > 0.5 else None
    return out
