"""The model registry: ml.ml_model_runs in the warehouse plus artifacts on disk.

One row a training run (version, training window, features, metrics as JSON, promoted or not
and why). Artifacts live in $C360_HOME/artifacts/models/<name>/<version>/: model.joblib (the
fitted scikit-learn objects, no customer data), metadata.json and model_card.md.

The current ("champion") model of a name is its latest promoted run before the logical date
whose artifact exists. Looking only before the logical date makes a rerun of a date take the
same decisions as the first run (the rerun replaces that date's rows).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import joblib

from customer360.ml.spec import ModelSpec

HEURISTIC_SUFFIX = "heuristic"

RUNS_DDL = """
create table if not exists ml.ml_model_runs (
    model_name varchar not null,
    model_version varchar not null,
    kind varchar,
    logical_date date not null,
    trained_at timestamp,
    training_window_start date,
    training_window_end date,
    evaluation_window varchar,
    features json,
    hyperparameters json,
    metrics json,
    promoted boolean not null,
    decision varchar,
    compared_with varchar,
    spec_hash varchar,
    artifact_path varchar,
    train_rows bigint,
    eval_rows bigint,
    seconds double
)"""

DRIFT_DDL = """
create table if not exists ml.ml_drift (
    logical_date date not null,
    model_name varchar not null,
    model_version varchar,
    variable varchar not null,
    psi double,
    status varchar not null,
    reference_date date,
    profile json
)"""


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("create schema if not exists ml")
    con.execute(RUNS_DDL)
    con.execute(DRIFT_DDL)


@dataclass(frozen=True)
class RunRecord:
    model_name: str
    model_version: str
    logical_date: dt.date
    promoted: bool
    metrics: dict
    spec_hash: str | None
    artifact_path: str | None

    @property
    def artifact(self) -> Path | None:
        return Path(self.artifact_path) if self.artifact_path else None


def _records(rows) -> list[RunRecord]:
    return [RunRecord(r[0], r[1], r[2], bool(r[3]), json.loads(r[4]) if r[4] else {}, r[5], r[6])
            for r in rows]


def runs_before(con: duckdb.DuckDBPyConnection, model_name: str, before: dt.date) -> list[RunRecord]:
    """Runs of a model with a logical date before `before`, newest first."""
    rows = con.execute("""
        select model_name, model_version, logical_date, promoted, metrics::varchar, spec_hash,
               artifact_path
        from ml.ml_model_runs
        where model_name = ? and logical_date < ?
        order by logical_date desc, trained_at desc""", [model_name, before]).fetchall()
    return _records(rows)


def champion(con: duckdb.DuckDBPyConnection, model_name: str, before: dt.date) -> RunRecord | None:
    for run in runs_before(con, model_name, before):
        if run.promoted and run.artifact and (run.artifact / "model.joblib").exists():
            return run
    return None


def training_due(con: duckdb.DuckDBPyConnection, spec: ModelSpec, logical_date: dt.date) -> tuple[bool, str]:
    """Train when nothing was trained yet, the spec changed since the last training, the last
    training is at least retrain_every_days old, or the current model's artifact is gone.
    A refused candidate is not retried every day: the next try is at the normal cadence."""
    trained = [r for r in runs_before(con, spec.name, logical_date)
               if HEURISTIC_SUFFIX not in r.model_version]
    if not trained:
        return True, "never trained"
    last = trained[0]
    if last.spec_hash != spec.hash:
        return True, f"spec changed ({last.spec_hash} -> {spec.hash})"
    age = (logical_date - last.logical_date).days
    if age >= spec.retrain_every_days:
        return True, f"last training {age} days ago (every {spec.retrain_every_days})"
    if last.promoted and champion(con, spec.name, logical_date) is None:
        return True, f"artifact of {last.model_version} is missing"
    return False, f"last training {last.model_version} {age} days ago (every {spec.retrain_every_days})"


def model_version(spec: ModelSpec, logical_date: dt.date) -> str:
    """Same date and spec, same version: a rerun overwrites its own artifact and row."""
    return f"{logical_date:%Y%m%d}-{spec.hash}"


def artifact_dir(models_root: Path, model_name: str, version: str) -> Path:
    """``models_root``: ``Settings.model_artifacts_dir``."""
    return models_root / model_name / version


def jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return jsonable(value.item())
    return value


def to_json(value: Any) -> str:
    return json.dumps(jsonable(value), sort_keys=True)


def save_artifact(directory: Path, model: Any, metadata: dict, card: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, directory / "model.joblib", compress=3)
    (directory / "metadata.json").write_text(to_json(metadata) + "\n", encoding="utf-8")
    (directory / "model_card.md").write_text(card, encoding="utf-8")
    return directory


def load_model(directory: Path) -> Any:
    return joblib.load(directory / "model.joblib")


def save_companion(directory: Path, name: str, model: Any) -> Path:
    """A second model trained and promoted with the artifact's own (churn's repurchase model):
    beside model.joblib, so the champion's loaders keep reading one model."""
    path = directory / f"{name}.joblib"
    joblib.dump(model, path, compress=3)
    return path


def load_companion(directory: Path, name: str) -> Any | None:
    path = directory / f"{name}.joblib"
    return joblib.load(path) if path.exists() else None


def load_metadata(directory: Path) -> dict:
    path = directory / "metadata.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def meets_thresholds(spec: ModelSpec, metrics: dict) -> list[str]:
    """The spec's thresholds this model fails, as readable strings (empty: all met)."""
    failures = []
    for metric, bounds in spec.promotion.get("thresholds", {}).items():
        value = metrics.get(metric)
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            failures.append(f"{metric} unavailable")
            continue
        if "min" in bounds and value < bounds["min"]:
            failures.append(f"{metric} {value:.4f} < {bounds['min']}")
        if "max" in bounds and value > bounds["max"]:
            failures.append(f"{metric} {value:.4f} > {bounds['max']}")
    return failures


def decide_promotion(spec: ModelSpec, metrics: dict, champion_metrics: dict | None,
                     champion_version: str | None) -> tuple[bool, str]:
    """Promote when every threshold is met and the primary metric is not worse than the
    current model's (measured on the same evaluation data where possible) by more than the
    spec's tolerance."""
    failures = meets_thresholds(spec, metrics)
    if failures:
        return False, "below thresholds: " + "; ".join(failures)
    if champion_metrics is None:
        return True, "meets thresholds; no current model"
    key = spec.promotion.get("primary_metric")
    tolerance = float(spec.promotion.get("tolerance", 0.0))
    higher_is_better = bool(spec.promotion.get("higher_is_better", True))
    new, old = metrics.get(key), champion_metrics.get(key)
    if old is None:
        return True, f"meets thresholds; current model {champion_version} has no {key}"
    worse_by = (old - new) if higher_is_better else (new - old)
    if worse_by > tolerance:
        return False, (f"{key} {new:.4f} is worse than current model {champion_version}'s "
                       f"{old:.4f} by more than {tolerance}")
    return True, f"meets thresholds; {key} {new:.4f} vs current {old:.4f}"
