"""Drift: the population stability index of a model's scores and top inputs against the
previous run, recorded in ml.ml_drift. The gate is a warning (the run goes on): a shifted
population is worth a look, not a reason to stop publishing."""

from __future__ import annotations

import datetime as dt
import json
import duckdb
import numpy as np
import pandas as pd

from customer360.ml.metrics import categorical_profile, numeric_profile, psi_against
from customer360.ml.registry import to_json

def _reference(con: duckdb.DuckDBPyConnection, model_name: str, variable: str,
               before: dt.date) -> tuple[dt.date, dict] | None:
    row = con.execute("""
        select logical_date, profile::varchar from ml.ml_drift
        where model_name = ? and variable = ? and logical_date < ? and profile is not null
        order by logical_date desc limit 1""", [model_name, variable, before]).fetchone()
    return (row[0], json.loads(row[1])) if row else None


def measure(con: duckdb.DuckDBPyConnection, logical_date: dt.date, model_name: str,
            model_version: str, numeric: dict[str, np.ndarray], categorical: dict[str, object],
            psi_warn: float, bins: int = 10) -> tuple[pd.DataFrame, list[str]]:
    """Profile each variable, compare it with the previous run's profile, and return the
    ml_drift rows and the warnings."""
    rows, warnings = [], []
    variables = [(name, numeric_profile(values, bins), values) for name, values in numeric.items()]
    variables += [(name, categorical_profile(values), values) for name, values in categorical.items()]
    for name, profile, values in variables:
        ref = _reference(con, model_name, name, logical_date)
        psi = psi_against(ref[1], values) if ref else None
        status = "no_reference" if psi is None else ("warn" if psi > psi_warn else "ok")
        if status == "warn":
            warnings.append(f"{model_name}: PSI of {name} is {psi:.3f} (> {psi_warn}) versus {ref[0]}")
        rows.append({"logical_date": logical_date, "model_name": model_name,
                     "model_version": model_version, "variable": name, "psi": psi,
                     "status": status, "reference_date": ref[0] if ref else None,
                     "profile": to_json(profile)})
    frame = pd.DataFrame(rows, columns=["logical_date", "model_name", "model_version", "variable",
                                        "psi", "status", "reference_date", "profile"])
    return frame, warnings
