"""Model specs: one YAML a model in the repository's models/ folder.

A spec is declarative (features, target, windows, algorithm and hyperparameters, promotion
thresholds, drift limits); the code that reads it lives in this package. The spec's hash is
part of every model version, so editing a spec forces a retrain and shows up in the registry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from customer360.core.settings import REPO_ROOT, get_settings

KINDS = ("churn_classifier", "behavioural_segments", "item_item_recommender", "customer_value")


class SpecError(ValueError):
    """A model spec is missing or malformed; the message names the file and the key."""


def repo_root() -> Path:
    """The repository checkout (``Settings.repo_root``)."""
    return REPO_ROOT


def models_dir(settings: Any = None) -> Path:
    """Where the specs are: ``Settings.models_dir`` (``C360_MODELS_DIR``, else the repository's
    models/ folder; the package is installed editable from the repo)."""
    return (settings if settings is not None else get_settings()).models_dir


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    path: Path
    raw: dict

    @property
    def features(self) -> list[str]:
        return list(self.raw.get("features", []))

    @property
    def seed(self) -> int:
        return int(self.raw.get("algorithm", {}).get("seed", 0))

    @property
    def hash(self) -> str:
        """Stable over formatting and key order: the hash of the parsed content."""
        canonical = json.dumps(self.raw, sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:8]

    @property
    def retrain_every_days(self) -> int:
        return int(self.raw.get("retrain_every_days", 7))

    @property
    def promotion(self) -> dict:
        return dict(self.raw.get("promotion", {}))

    @property
    def drift(self) -> dict:
        return dict(self.raw.get("drift", {}))

    def section(self, key: str) -> dict:
        value = self.raw.get(key)
        if not isinstance(value, dict):
            raise SpecError(f"{self.path}: '{key}' must be a mapping")
        return value

    def with_overrides(self, **sections: Any) -> "ModelSpec":
        """A copy with some top-level sections replaced (tests, what-if runs)."""
        raw = json.loads(json.dumps(self.raw, default=str))
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(raw.get(key), dict):
                raw[key] = {**raw[key], **value}
            else:
                raw[key] = value
        return ModelSpec(self.name, self.kind, self.path, raw)


def load_spec(path: Path) -> ModelSpec:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping at the top level")
    for key in ("name", "kind", "algorithm", "promotion"):
        if key not in raw:
            raise SpecError(f"{path}: missing key '{key}'")
    if raw["kind"] not in KINDS:
        raise SpecError(f"{path}: kind must be one of {KINDS}, got {raw['kind']!r}")
    if raw["name"] != path.stem:
        raise SpecError(f"{path}: name {raw['name']!r} must match the file name")
    return ModelSpec(name=raw["name"], kind=raw["kind"], path=path, raw=raw)


def load_specs(directory: Path) -> dict[str, ModelSpec]:
    """Every spec in the folder, by kind (one model a kind)."""
    specs: dict[str, ModelSpec] = {}
    for path in sorted(directory.glob("*.yml")) + sorted(directory.glob("*.yaml")):
        spec = load_spec(path)
        if spec.kind in specs:
            raise SpecError(f"{path}: a second {spec.kind} spec ({specs[spec.kind].path})")
        specs[spec.kind] = spec
    missing = [k for k in KINDS if k not in specs]
    if missing:
        raise SpecError(f"{directory}: no spec for {missing}")
    return specs
