"""The CRM property map: which of the portal's internal property names fills each of our columns,
and how the portal's enumeration values map to our categories (docs/sources.md section 1).

HubSpot property names are per portal (custom properties such as the loyalty id have the names
their admin gave them) and so are enumerations (ticket pipeline stage ids differ in every
portal), so both are configuration: ``config/crm_properties.yml`` at the repository root, or the
file the knob ``C360_CRM_PROPERTIES`` names. :func:`load_property_map` reads and validates it
(an error names the file and the key); :data:`DEFAULT_PROPERTY_MAP` holds HubSpot's standard
names, the same defaults the shipped file spells out (the simulator writes them).

The extractor asks for :meth:`ObjectProperties.request_properties`; staging reads the raw
``properties`` JSON through the same map (``warehouse.dbt_runner.build_env`` passes it to dbt as
``C360_CRM_PROPERTY_MAP``, :func:`to_json`); the raw gate reports a value outside a values map.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

OBJECTS = ("contacts", "tickets", "feedback_submissions")

# Every property a request always names, besides the mapped ones: the id and creation time
# HubSpot sends by default (the last-modified property is each object's own).
ALWAYS_REQUESTED = ("createdate", "hs_object_id")


class PropertyMapError(ValueError):
    """The property map file is missing or malformed; the message names the file and the key."""


# Our columns per object -> HubSpot's standard (or our default custom) internal name.
_DEFAULT_COLUMNS: dict[str, dict[str, str]] = {
    "contacts": {
        "email": "email",
        "first_name": "firstname",
        "last_name": "lastname",
        "phone": "phone",
        "mobile_phone": "mobilephone",
        "date_of_birth": "date_of_birth",
        "gender": "gender",
        "city": "city",
        "country": "country",
        "lifecycle_stage": "lifecyclestage",
        "loyalty_id": "loyalty_id",
        "marketing_consent": "marketing_consent",
        "signup_channel": "signup_channel",
    },
    "tickets": {
        "subject": "subject",
        "content": "content",
        "pipeline": "hs_pipeline",
        "status": "hs_pipeline_stage",
        "priority": "hs_ticket_priority",
        "category": "hs_ticket_category",
        "closed_at": "closed_date",
    },
    "feedback_submissions": {
        "survey_type": "hs_survey_type",
        "score": "hs_value",
        "comment": "hs_content",
        "submitted_at": "hs_submission_timestamp",
    },
}

_DEFAULT_VALUES: dict[str, dict[str, dict[str, str]]] = {
    "contacts": {
        "lifecycle_stage": {
            "subscriber": "subscriber",
            "lead": "lead",
            "marketingqualifiedlead": "lead",
            "salesqualifiedlead": "lead",
            "opportunity": "lead",
            "customer": "customer",
            "evangelist": "evangelist",
            "other": "other",
        },
    },
    "tickets": {
        # The default pipeline "0": 1 New, 2 Waiting on contact, 3 Waiting on us, 4 Closed.
        "status": {"1": "open", "2": "pending", "3": "open", "4": "closed"},
        "priority": {"LOW": "low", "MEDIUM": "medium", "HIGH": "high", "URGENT": "urgent"},
        "category": {
            "PRODUCT_ISSUE": "product",
            "BILLING_ISSUE": "billing",
            "FEATURE_REQUEST": "product",
            "GENERAL_INQUIRY": "other",
            "DELIVERY_ISSUE": "delivery",
            "ACCOUNT_ISSUE": "account",
        },
    },
    "feedback_submissions": {
        "survey_type": {"NPS": "NPS", "CSAT": "CSAT", "CES": "CES"},
    },
}

_DEFAULT_LAST_MODIFIED = {
    "contacts": "lastmodifieddate",
    "tickets": "hs_lastmodifieddate",
    "feedback_submissions": "hs_lastmodifieddate",
}
_DEFAULT_ASSOCIATIONS: dict[str, tuple[str, ...]] = {
    "contacts": (),
    "tickets": ("contacts",),
    "feedback_submissions": ("contacts",),
}

# The columns that may carry a values map, and the values staging and the marts know.
OUR_VALUES: dict[str, dict[str, tuple[str, ...]]] = {
    "contacts": {"lifecycle_stage": ("subscriber", "lead", "customer", "evangelist", "other")},
    "tickets": {
        "status": ("open", "pending", "closed"),
        "priority": ("low", "medium", "high", "urgent"),
        "category": ("billing", "delivery", "product", "account", "other"),
    },
    "feedback_submissions": {"survey_type": ("NPS", "CSAT", "CES")},
}
_ASSOCIABLE = ("contacts",)
_PROPERTY_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_")


@dataclass(frozen=True)
class ObjectProperties:
    """One CRM object's map (see the module docstring)."""

    object: str                          # contacts | tickets | feedback_submissions
    last_modified: str                   # lastmodifieddate (contacts) | hs_lastmodifieddate
    columns: dict[str, str]              # our column -> the portal's internal property name
    values: dict[str, dict[str, str]] = field(default_factory=dict)  # our column -> {portal -> ours}
    associations: tuple[str, ...] = ()   # ("contacts",) for tickets and feedback_submissions

    def request_properties(self) -> list[str]:
        """Every property to ask for: the mapped ones, the last-modified one, createdate and
        hs_object_id (sorted, unique)."""
        return sorted({*self.columns.values(), self.last_modified, *ALWAYS_REQUESTED})

    def prop(self, column: str) -> str:
        """The portal's internal name of one of our columns."""
        try:
            return self.columns[column]
        except KeyError:
            raise KeyError(f"{self.object} has no column {column!r} in the CRM property map "
                           f"(columns: {', '.join(sorted(self.columns))})") from None

    def sql(self, column: str) -> str:
        """DuckDB SQL of one of our columns out of a raw row's ``properties`` JSON: the portal's
        property as text, trimmed, with ``""`` (HubSpot's cleared value) as null. The raw gate
        and the erasure read raw rows with it; staging does the same in dbt (crm_prop)."""
        return f"nullif(trim(json_extract_string(properties, '$.\"{self.prop(column)}\"')), '')"

    def to_dict(self) -> dict[str, Any]:
        return {"last_modified": self.last_modified, "columns": dict(self.columns),
                "values": {c: dict(m) for c, m in self.values.items()},
                "associations": list(self.associations)}


def _defaults() -> dict[str, ObjectProperties]:
    return {
        obj: ObjectProperties(
            object=obj,
            last_modified=_DEFAULT_LAST_MODIFIED[obj],
            columns=dict(_DEFAULT_COLUMNS[obj]),
            values={c: dict(m) for c, m in _DEFAULT_VALUES[obj].items()},
            associations=_DEFAULT_ASSOCIATIONS[obj],
        )
        for obj in OBJECTS
    }


DEFAULT_PROPERTY_MAP: dict[str, ObjectProperties] = _defaults()


# --------------------------------------------------------------------------- loading

def _fail(path: Path, key: str, message: str) -> PropertyMapError:
    return PropertyMapError(f"{path}: {key}: {message}")


def _property_name(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, key, f"must be a property's internal name (a non-empty string), got {value!r}")
    name = value.strip()
    if not set(name) <= _PROPERTY_NAME_CHARS:
        raise _fail(path, key, f"{name!r} is not an internal property name (lower-case letters, "
                               "digits and _; the label shown in HubSpot is not the internal name)")
    return name


def _portal_value(path: Path, key: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        raise _fail(path, key, f"portal value {value!r} must be quoted in YAML (write \"{value}\")"
                    if value is not None else "a portal value cannot be empty")
    if isinstance(value, int):  # YAML reads 1: open as an int; HubSpot sends the string "1"
        return str(value)
    if not isinstance(value, str) or value == "":
        raise _fail(path, key, f"portal value must be a non-empty string, got {value!r}")
    return value


def _object(path: Path, obj: str, raw: Any) -> ObjectProperties:
    default = DEFAULT_PROPERTY_MAP[obj]
    if raw is None:
        return default
    if not isinstance(raw, Mapping):
        raise _fail(path, obj, f"must be a mapping (last_modified, columns, values, associations), got {type(raw).__name__}")
    unknown = set(raw) - {"last_modified", "columns", "values", "associations"}
    if unknown:
        raise _fail(path, f"{obj}.{sorted(unknown)[0]}",
                    "unknown key (expected last_modified, columns, values, associations)")

    last_modified = default.last_modified
    if raw.get("last_modified") is not None:
        last_modified = _property_name(path, f"{obj}.last_modified", raw["last_modified"])

    columns = dict(default.columns)
    given = raw.get("columns") or {}
    if not isinstance(given, Mapping):
        raise _fail(path, f"{obj}.columns", "must be a mapping of our column -> internal property name")
    for column, name in given.items():
        if column not in default.columns:
            raise _fail(path, f"{obj}.columns.{column}",
                        f"unknown column (known: {', '.join(sorted(default.columns))})")
        columns[column] = _property_name(path, f"{obj}.columns.{column}", name)
    seen: dict[str, str] = {}
    for column, name in columns.items():
        if name in seen:
            raise _fail(path, f"{obj}.columns.{column}",
                        f"property {name!r} is already mapped to column {seen[name]!r}")
        seen[name] = column

    values = {c: dict(m) for c, m in default.values.items()}
    given_values = raw.get("values") or {}
    if not isinstance(given_values, Mapping):
        raise _fail(path, f"{obj}.values", "must be a mapping of our column -> {portal value: our value}")
    allowed = OUR_VALUES.get(obj, {})
    for column, mapping in given_values.items():
        key = f"{obj}.values.{column}"
        if column not in allowed:
            raise _fail(path, key, "this column takes no values map (columns with one: "
                                   f"{', '.join(sorted(allowed)) or 'none'})")
        if not isinstance(mapping, Mapping) or not mapping:
            raise _fail(path, key, "must be a non-empty mapping of portal value -> our value")
        parsed: dict[str, str] = {}
        for portal, ours in mapping.items():
            portal_value = _portal_value(path, key, portal)
            if ours not in allowed[column]:
                raise _fail(path, f"{key}.{portal_value}",
                            f"{ours!r} is not one of our values ({', '.join(allowed[column])})")
            if portal_value in parsed:
                raise _fail(path, f"{key}.{portal_value}", "portal value given twice")
            parsed[portal_value] = ours
        values[column] = parsed

    associations = default.associations
    if "associations" in raw:
        given_assoc = raw["associations"] or []
        if (not isinstance(given_assoc, (list, tuple))
                or any(a not in _ASSOCIABLE for a in given_assoc) or obj in given_assoc):
            raise _fail(path, f"{obj}.associations",
                        f"must be a list of objects among {list(_ASSOCIABLE)} (not the object itself), "
                        f"got {given_assoc!r}")
        associations = tuple(dict.fromkeys(given_assoc))
    if obj != "contacts" and "contacts" not in associations:
        raise _fail(path, f"{obj}.associations",
                    "must include contacts: a record's contact comes from its association")
    return ObjectProperties(object=obj, last_modified=last_modified, columns=columns,
                            values=values, associations=associations)


def load_property_file(path: str | Path) -> dict[str, ObjectProperties]:
    """The map in ``path``, validated; an object or key the file leaves out keeps its default."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PropertyMapError(f"{path}: the CRM property map does not exist (knob C360_CRM_PROPERTIES)") from None
    except OSError as exc:
        raise PropertyMapError(f"{path}: cannot read the CRM property map: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PropertyMapError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise PropertyMapError(f"{path}: must be a mapping with keys {', '.join(OBJECTS)}")
    unknown = set(data) - set(OBJECTS)
    if unknown:
        raise _fail(path, str(sorted(unknown)[0]), f"unknown object (expected {', '.join(OBJECTS)})")
    return {obj: _object(path, obj, data.get(obj)) for obj in OBJECTS}


def load_property_map(settings) -> dict[str, ObjectProperties]:
    """The map of the file ``settings.crm_properties`` names (knob ``C360_CRM_PROPERTIES``)."""
    return load_property_file(settings.crm_properties)


def to_json(property_map: Mapping[str, ObjectProperties]) -> str:
    """The map as the JSON dbt reads (``C360_CRM_PROPERTY_MAP``): {object: {last_modified,
    columns, values, associations}}."""
    return json.dumps({obj: props.to_dict() for obj, props in property_map.items()},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
