"""The CRM raw suites read properties through the CRM property map (config/crm_properties.yml).

A portal names its properties and enumeration values its own way, so the suites under
``expectations/raw/crm_*.yml`` never spell a portal name. :func:`apply_property_map` fills in,
from the map of the suite's object (``target.entity``):

- ``{prop:COLUMN}`` in a ``derive`` expression: the property of our column as text, trimmed,
  with ``""`` (HubSpot's cleared value) as null;
- ``{mapped:COLUMN}``: the same through the column's values map (our value, null outside it);
- ``"{portal_values:COLUMN}"`` as an expectation's ``value_set``: the portal values the map knows,
  so a value outside the map is reported with the value itself.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

from customer360.ingest.crm_properties import ObjectProperties
from customer360.quality.suites import Suite, SuiteError

_PLACEHOLDER = re.compile(r"\{(prop|mapped):([a-z_]+)\}")
_VALUES = re.compile(r"^\{portal_values:([a-z_]+)\}$")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def mapped_sql(props: ObjectProperties, column: str) -> str:
    values = props.values.get(column) or {}
    text = props.sql(column)
    if not values:
        return text
    whens = " ".join(f"WHEN {_literal(k)} THEN {_literal(v)}" for k, v in sorted(values.items()))
    return f"(CASE {text} {whens} END)"


def _expand(suite: Suite, props: ObjectProperties, expr: str) -> str:
    def one(match: re.Match) -> str:
        kind, column = match.groups()
        if column not in props.columns:
            raise SuiteError(f"{suite.path}: {{{kind}:{column}}}: {props.object} has no column "
                             f"{column!r} in the CRM property map")
        return props.sql(column) if kind == "prop" else mapped_sql(props, column)

    return _PLACEHOLDER.sub(one, expr)


def _kwargs(suite: Suite, props: ObjectProperties, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(kwargs)
    value_set = out.get("value_set")
    if isinstance(value_set, str) and (match := _VALUES.match(value_set.strip())):
        column = match.group(1)
        if column not in props.values:
            raise SuiteError(f"{suite.path}: {value_set}: {props.object}.{column} has no values map")
        out["value_set"] = sorted(props.values[column])
    return out


def apply_property_map(suite: Suite, property_map: Mapping[str, ObjectProperties]) -> Suite:
    """``suite`` with its placeholders filled from the map of its object (a raw CRM suite), or
    ``suite`` itself when it is not one."""
    if suite.kind != "raw" or suite.target.get("source") != "crm":
        return suite
    entity = suite.target["entity"]
    if entity not in property_map:
        raise SuiteError(f"{suite.path}: the CRM property map has no object {entity!r}")
    props = property_map[entity]
    target = dict(suite.target)
    target["derive"] = {name: _expand(suite, props, str(expr))
                        for name, expr in (suite.target.get("derive") or {}).items()}
    specs = tuple(dataclasses.replace(spec, kwargs=_kwargs(suite, props, spec.kwargs))
                  for spec in suite.expectations)
    return dataclasses.replace(suite, target=target, expectations=specs)
