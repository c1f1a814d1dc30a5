"""Expectation suites: the YAML files under ``expectations/<stage>/`` read into plain objects.

A suite file names what it validates (``target``), optionally a column contract
(``columns``: name -> type family, checked against the table or batch schema before any
data is read) and a list of expectations. Each expectation is a Great Expectations 1.x
expectation type with its keyword arguments, a severity (``error`` stops the gate, ``warn``
is recorded and reported) and, for raw batches, a scope: ``row`` failures quarantine the
offending rows and the run goes on, ``batch`` failures stop the gate.

The directory is ``Settings.expectations_dir``: ``C360_EXPECTATIONS_DIR`` or ``expectations/``
at the top of the repository.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from customer360.core.layers import GATES
from customer360.core.settings import Settings, get_settings

STAGES = tuple(GATES)  # the gates, one folder of suites each
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10x faster
SEVERITIES = ("error", "warn")
SCOPES = ("row", "batch")
# Type families a column contract may name, and the DuckDB type families each accepts.
TYPE_FAMILIES = {
    "string": {"string"},
    "integer": {"integer"},
    "number": {"integer", "float", "decimal"},
    "boolean": {"boolean"},
    "date": {"date"},
    "timestamp": {"timestamp"},
    "temporal": {"date", "timestamp"},
    "id": {"string", "integer"},
    "list": {"list"},
    "json": {"json", "string"},
    "any": {"string", "integer", "float", "decimal", "boolean", "date", "timestamp", "list",
            "json", "struct", "other"},
}


class SuiteError(ValueError):
    """A suite file is malformed; the message names the file and the problem."""


def expectations_dir(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).expectations_dir


def gx_class_name(expectation_type: str) -> str:
    """``expect_column_values_to_be_in_set`` -> ``ExpectColumnValuesToBeInSet``."""
    return "".join(part.capitalize() for part in expectation_type.split("_"))


@dataclass(frozen=True)
class ExpectationSpec:
    type: str
    kwargs: dict[str, Any]
    severity: str = "error"
    scope: str = "batch"
    description: str = ""
    generated: bool = False   # made from the suite's column contract, not written by hand

    @property
    def column(self) -> str | None:
        return self.kwargs.get("column")

    def label(self) -> str:
        """The expectation as a reader would write it: type(column=..., key=value...)."""
        shown = []
        for key, value in self.kwargs.items():
            if isinstance(value, (list, tuple)) and len(value) > 8:
                value = f"[{', '.join(map(str, value[:8]))}, ... {len(value)} values]"
            elif isinstance(value, (list, tuple)):
                value = f"[{', '.join(map(str, value))}]"
            shown.append(f"{key}={value}")
        return f"{self.type}({', '.join(shown)})"


@dataclass(frozen=True)
class Suite:
    name: str
    stage: str
    path: Path
    target: dict[str, Any]
    expectations: tuple[ExpectationSpec, ...]
    columns: dict[str, str] = field(default_factory=dict)
    key_columns: tuple[str, ...] = ()
    pii_columns: tuple[str, ...] = ()
    description: str = ""
    # Raw suites: a row-level expectation failing on more than this share of a batch's rows
    # (and more than min_rows) means the source broke its contract: the gate stops instead.
    quarantine_max_share: float = 0.05
    quarantine_min_rows: int = 20

    @property
    def kind(self) -> str:
        """How the target is read: raw batch, warehouse table, SQL query or a computed metric."""
        for key in ("metric", "sql", "table", "entity"):
            if key in self.target:
                return {"entity": "raw"}.get(key, key)
        raise AssertionError("unreachable: checked at load")


def _spec(path: Path, index: int, raw: Any, default_scope: str) -> ExpectationSpec:
    where = f"{path}: expectation #{index + 1}"
    if not isinstance(raw, dict) or "type" not in raw:
        raise SuiteError(f"{where}: needs at least 'type' (a Great Expectations expectation name)")
    etype = str(raw["type"]).strip()
    if not re.fullmatch(r"expect_[a-z0-9_]+", etype):
        raise SuiteError(f"{where}: type {etype!r} is not an expect_... name")
    kwargs = raw.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise SuiteError(f"{where}: kwargs must be a mapping")
    severity = raw.get("severity", "error")
    if severity not in SEVERITIES:
        raise SuiteError(f"{where}: severity must be one of {SEVERITIES}, got {severity!r}")
    scope = raw.get("scope", default_scope)
    if scope not in SCOPES:
        raise SuiteError(f"{where}: scope must be one of {SCOPES}, got {scope!r}")
    return ExpectationSpec(type=etype, kwargs=dict(kwargs), severity=severity, scope=scope,
                           description=str(raw.get("description", "")).strip())


def _contract_specs(columns: dict[str, str], severity: str) -> list[ExpectationSpec]:
    """The column contract as two expectations on the target's schema, not its data: a frame
    of one row per contract column the target has (column_name, type_family). The required
    columns are all there, and each has a type of its family."""
    if not columns:
        return []
    pairs = [[name, actual] for name, family in columns.items() for actual in sorted(TYPE_FAMILIES[family])]
    return [
        ExpectationSpec("expect_column_distinct_values_to_contain_set",
                        {"column": "column_name", "value_set": list(columns)}, severity, "batch",
                        "contract: the required columns are present", True),
        ExpectationSpec("expect_column_pair_values_to_be_in_set",
                        {"column_A": "column_name", "column_B": "type_family",
                         "value_pairs_set": pairs}, severity, "batch",
                        "contract: each column has a type of its family", True),
    ]


def load_suite(path: Path) -> Suite:
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or "suite" not in doc or "target" not in doc:
        raise SuiteError(f"{path}: needs 'suite' (its name) and 'target' (what it validates)")
    stage = doc.get("stage") or path.parent.name
    if stage not in STAGES:
        raise SuiteError(f"{path}: stage must be one of {STAGES}, got {stage!r}")
    target = doc["target"]
    if not isinstance(target, dict) or not ({"metric", "sql", "table", "entity"} & set(target)):
        raise SuiteError(f"{path}: target needs one of metric, sql, table, or source+entity")
    if "entity" in target and "source" not in target:
        raise SuiteError(f"{path}: a raw target needs both source and entity")
    columns = doc.get("columns") or {}
    if not isinstance(columns, dict):
        raise SuiteError(f"{path}: columns must map a column name to a type family")
    for name, family in columns.items():
        if family not in TYPE_FAMILIES:
            raise SuiteError(f"{path}: column {name}: type family {family!r} is not one of "
                             f"{sorted(TYPE_FAMILIES)}")
    default_scope = "row" if "entity" in target else "batch"
    specs = _contract_specs(columns, doc.get("columns_severity", "error"))
    specs += [_spec(path, i, raw, default_scope) for i, raw in enumerate(doc.get("expectations") or [])]
    quarantine = doc.get("quarantine") or {}
    return Suite(
        name=str(doc["suite"]),
        stage=stage,
        path=path,
        target=dict(target),
        expectations=tuple(specs),
        columns={str(k): str(v) for k, v in columns.items()},
        key_columns=tuple(doc.get("key_columns") or ()),
        pii_columns=tuple(doc.get("pii_columns") or ()),
        description=str(doc.get("description", "")).strip(),
        quarantine_max_share=float(quarantine.get("max_share", 0.05)),
        quarantine_min_rows=int(quarantine.get("min_rows", 20)),
    )


def load_suites(stage: str, directory: Path | None = None) -> list[Suite]:
    """Every suite of a stage, in file-name order; names must be unique."""
    if stage not in STAGES:
        raise SuiteError(f"unknown gate stage {stage!r}: expected one of {STAGES}")
    folder = (directory or expectations_dir()) / stage
    if not folder.is_dir():
        raise SuiteError(f"no suites for stage {stage!r}: {folder} does not exist")
    suites = [load_suite(p) for p in sorted(folder.glob("*.y*ml"))]
    seen: dict[str, Path] = {}
    for suite in suites:
        if suite.name in seen:
            raise SuiteError(f"suite name {suite.name!r} is used by both {seen[suite.name]} "
                             f"and {suite.path}")
        seen[suite.name] = suite.path
    return suites
