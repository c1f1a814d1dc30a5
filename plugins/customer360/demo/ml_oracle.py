"""The churn ceiling on simulated data: the AUC of the simulator's true churn probabilities.

Only for evaluation, never for training: with the demo simulator's ground truth
($C360_HOME/simulation/ground_truth/people.parquet and keys.parquet) it scores the same
customers as the model, so our AUC can be reported as a share of the best achievable.

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

KEY_COLUMNS = ("key_value", "identity_key", "source_key", "key", "record_id")


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


def expected_auc(truth: np.ndarray, score: np.ndarray) -> float | None:
    """The AUC a score is expected to get when each customer's outcome is Bernoulli(truth):
    sum over pairs i != j of truth_i (1 - truth_j) [score_i > score_j] (ties count half), over
    the same sum without the indicator. With truth as the score this is the ceiling."""
    p = np.asarray(truth, dtype=float)
    s = np.asarray(score, dtype=float)
    if p.size < 2:
        return None
    frame = pd.DataFrame({"s": s, "pos": p, "neg": 1 - p}).groupby("s", sort=True).sum()
    below = frame.neg.cumsum() - frame.neg  # negative weight strictly below each score
    numerator = float((frame.pos * (below + 0.5 * frame.neg)).sum() - 0.5 * np.sum(p * (1 - p)))
    denominator = float(p.sum() * (1 - p).sum() - np.sum(p * (1 - p)))
    return numerator / denominator if denominator > 0 else None


def _shares(model: float | None, oracle: float | None) -> dict:
    if not model or not oracle:
        return {}
    return {"auc_share_of_ceiling": model / oracle,
            "auc_above_chance_share_of_ceiling": (model - 0.5) / (oracle - 0.5) if oracle > 0.5 else None}


def ceiling_metrics(con: duckdb.DuckDBPyConnection, simulation_dir: Path, *, eval_snapshot, eval_rows: pd.DataFrame,
                    scoring_date, scoring_rows: pd.DataFrame) -> dict | None:
    """Compare the model with the simulator's true churn probabilities.

    The truth is dated (people.truth_date; the demo simulator dates it at its last day): it is
    P(no order in the horizon after that date). If that is the evaluation snapshot, the observed
    labels exist and both AUCs are measured on them. If it is the scoring date, the outcomes
    lie in the future, so both are *expected* AUCs under the true probabilities (see
    expected_auc). Rows: customer_id, p (model), recency_days; eval_rows also y.
    """
    files = ground_truth_files(simulation_dir)
    if files is None:
        return None
    people_path, keys_path = files
    people = pd.read_parquet(people_path)
    if not {"person_id", "true_churn_probability"} <= set(people.columns):
        log.warning("ground truth %s lacks person_id/true_churn_probability", people_path)
        return None
    truth_date = (pd.Timestamp(people["truth_date"].dropna().iloc[0]).date()
                  if "truth_date" in people.columns and people["truth_date"].notna().any() else scoring_date)
    truth = people[["person_id", "true_churn_probability"]].astype({"person_id": str})
    mapping = customer_people(con, keys_path)

    def covered(rows: pd.DataFrame) -> tuple[pd.DataFrame, float]:
        rows = rows.assign(customer_id=rows.customer_id.astype(str))
        joined = rows.merge(mapping, on="customer_id", how="left").merge(truth, on="person_id", how="left")
        kept = joined[joined.true_churn_probability.notna()]
        return kept, (len(kept) / len(rows) if len(rows) else 0.0)

    baseline = lambda rows: pd.to_numeric(rows.recency_days, errors="coerce").fillna(10_000).to_numpy(float)
    out: dict = {"truth_date": truth_date}
    if truth_date == eval_snapshot:
        rows, coverage = covered(eval_rows)
        y, p = rows.y.to_numpy(), rows.true_churn_probability.to_numpy()
        oracle, model = safe_auc(y, p), safe_auc(y, rows.p.to_numpy())
        out.update({"oracle_method": "observed labels at the evaluation snapshot",
                    "recency_baseline_roc_auc_vs_truth": safe_auc(y, baseline(rows))})
    elif truth_date == scoring_date:
        rows, coverage = covered(scoring_rows)
        p = rows.true_churn_probability.to_numpy()
        oracle, model = expected_auc(p, p), expected_auc(p, rows.p.to_numpy())
        out.update({"oracle_method": "expected AUC under the true probabilities at the scoring date",
                    "recency_baseline_roc_auc_vs_truth": expected_auc(p, baseline(rows))})
    else:
        out["oracle_note"] = (f"ground truth is for {truth_date}, neither the evaluation snapshot "
                              f"{eval_snapshot} nor the scoring date {scoring_date}")
        return out
    out.update({"oracle_coverage": coverage, "oracle_rows": int(len(rows)),
                "oracle_roc_auc": oracle, "model_roc_auc_vs_truth": model, **_shares(model, oracle)})
    return out


class SimulatorCeiling:
    """The ceiling as a churn evaluator for ``run_ml(..., churn_evaluators=[...])``: tests and
    benchmarks on simulated homes pass it; the production pipeline never does."""

    def __init__(self, simulation_dir: Path):
        self.simulation_dir = Path(simulation_dir)

    def __call__(self, con: duckdb.DuckDBPyConnection, **rows) -> dict | None:
        return ceiling_metrics(con, self.simulation_dir, **rows)
