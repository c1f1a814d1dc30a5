"""The CRM property map (config/crm_properties.yml, knob C360_CRM_PROPERTIES): HubSpot's
standard names as defaults, a portal's own names and enumeration values as configuration,
validated with errors naming the file and the key; the same map reaches dbt
(C360_CRM_PROPERTY_MAP) and the raw gate. Also the free-text country -> ISO mapping national
phones are read with."""

from __future__ import annotations

import json

import duckdb
import pytest

from customer360.core.countries import country_code
from customer360.core.settings import REPO_ROOT, get_settings
from customer360.ingest.crm_properties import (DEFAULT_PROPERTY_MAP, OBJECTS, OUR_VALUES,
                                               ObjectProperties, PropertyMapError,
                                               load_property_file, load_property_map, to_json)
from customer360.quality.crm_map import apply_property_map
from customer360.quality.suites import load_suites
from customer360.warehouse.sql_functions import normalize_phone, register_functions


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.delenv("C360_CRM_PROPERTIES", raising=False)
    monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
    return monkeypatch


def write(tmp_path, text: str):
    path = tmp_path / "crm_properties.yml"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the defaults

def test_the_shipped_file_is_hubspots_defaults(env):
    settings = get_settings()
    assert settings.crm_properties == REPO_ROOT / "config" / "crm_properties.yml"
    assert load_property_map(settings) == DEFAULT_PROPERTY_MAP
    assert set(DEFAULT_PROPERTY_MAP) == set(OBJECTS)


def test_defaults_are_hubspots_standard_names():
    contacts, tickets, feedback = (DEFAULT_PROPERTY_MAP[o] for o in OBJECTS)
    assert contacts.last_modified == "lastmodifieddate"
    assert tickets.last_modified == feedback.last_modified == "hs_lastmodifieddate"
    assert contacts.associations == () and tickets.associations == feedback.associations == ("contacts",)
    assert contacts.request_properties() == sorted({
        "email", "firstname", "lastname", "phone", "mobilephone", "date_of_birth", "gender", "city",
        "country", "lifecyclestage", "createdate", "lastmodifieddate", "hs_object_id", "loyalty_id",
        "marketing_consent", "signup_channel"})
    assert tickets.request_properties() == sorted({
        "subject", "content", "hs_pipeline", "hs_pipeline_stage", "hs_ticket_priority",
        "hs_ticket_category", "createdate", "closed_date", "hs_lastmodifieddate", "hs_object_id"})
    assert feedback.request_properties() == sorted({
        "hs_survey_type", "hs_value", "hs_content", "hs_submission_timestamp", "createdate",
        "hs_lastmodifieddate", "hs_object_id"})
    # the portal's lifecycle stages all map, MQL/SQL/opportunity to lead
    assert contacts.values["lifecycle_stage"] == {
        "subscriber": "subscriber", "lead": "lead", "marketingqualifiedlead": "lead",
        "salesqualifiedlead": "lead", "opportunity": "lead", "customer": "customer",
        "evangelist": "evangelist", "other": "other"}
    assert tickets.values["status"] == {"1": "open", "2": "pending", "3": "open", "4": "closed"}
    assert tickets.values["priority"] == {"LOW": "low", "MEDIUM": "medium", "HIGH": "high", "URGENT": "urgent"}
    assert set(feedback.values["survey_type"]) == {"NPS", "CSAT", "CES"}
    for obj, columns in OUR_VALUES.items():
        for column, ours in columns.items():
            assert set(DEFAULT_PROPERTY_MAP[obj].values[column].values()) <= set(ours)


def test_the_map_is_frozen_and_sorted_unique():
    props = ObjectProperties("tickets", "hs_lastmodifieddate", {"a": "x", "b": "x"}, {}, ("contacts",))
    assert props.request_properties() == ["createdate", "hs_lastmodifieddate", "hs_object_id", "x"]
    with pytest.raises(Exception):
        props.object = "contacts"  # type: ignore[misc]


# --------------------------------------------------------------------------- a portal's own

def test_a_portal_file_overrides_names_and_values_and_keeps_the_rest(env, tmp_path):
    path = write(tmp_path, """
contacts:
  columns:
    loyalty_id: membership_number
    signup_channel: acquisition_source
tickets:
  values:
    status:
      1: open
      "88123": pending
      "88124": closed
""")
    env.setenv("C360_CRM_PROPERTIES", str(path))
    settings = get_settings()
    assert settings.crm_properties == path
    got = load_property_map(settings)
    assert got["contacts"].columns["loyalty_id"] == "membership_number"
    assert "membership_number" in got["contacts"].request_properties()
    assert got["contacts"].columns["email"] == "email"  # left out: the default
    assert got["tickets"].values["status"] == {"1": "open", "88123": "pending", "88124": "closed"}
    assert got["tickets"].values["priority"] == DEFAULT_PROPERTY_MAP["tickets"].values["priority"]
    assert got["feedback_submissions"] == DEFAULT_PROPERTY_MAP["feedback_submissions"]


@pytest.mark.parametrize(("text", "key", "says"), [
    ("contacts:\n  columns:\n    loyalty: x\n", "contacts.columns.loyalty", "unknown column"),
    ("contacts:\n  columns:\n    loyalty_id: Loyalty Id\n", "contacts.columns.loyalty_id", "internal"),
    ("contacts:\n  columns:\n    loyalty_id: email\n", "contacts.columns.", "already mapped"),
    ("contacts:\n  values:\n    lifecycle_stage:\n      vip: royalty\n", "contacts.values.lifecycle_stage.vip",
     "not one of our values"),
    ("contacts:\n  values:\n    city:\n      a: b\n", "contacts.values.city", "no values map"),
    ("tickets:\n  values:\n    status:\n      yes: open\n", "tickets.values.status", "quoted"),
    ("tickets:\n  values:\n    status: {}\n", "tickets.values.status", "non-empty"),
    ("tickets:\n  associations: []\n", "tickets.associations", "must include contacts"),
    ("tickets:\n  colums: {}\n", "tickets.colums", "unknown key"),
    ("deals:\n  columns: {}\n", "deals", "unknown object"),
    ("contacts: [1, 2]\n", "contacts", "must be a mapping"),
    ("contacts:\n  last_modified: ''\n", "contacts.last_modified", "internal name"),
])
def test_a_bad_file_names_the_file_and_the_key(tmp_path, text, key, says):
    path = write(tmp_path, text)
    with pytest.raises(PropertyMapError) as err:
        load_property_file(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and key in message and says in message, message


def test_a_missing_or_broken_file_says_which(tmp_path):
    with pytest.raises(PropertyMapError, match="does not exist.*C360_CRM_PROPERTIES"):
        load_property_file(tmp_path / "nope.yml")
    with pytest.raises(PropertyMapError, match="not valid YAML"):
        load_property_file(write(tmp_path, "contacts: [\n"))


# --------------------------------------------------------------------------- its users

def test_dbt_gets_the_map_as_json(env, tmp_path):
    from customer360.warehouse.dbt_runner import build_env

    path = write(tmp_path, "contacts:\n  columns:\n    loyalty_id: membership_number\n")
    env.setenv("C360_CRM_PROPERTIES", str(path))
    sent = json.loads(build_env(get_settings())["C360_CRM_PROPERTY_MAP"])
    assert sent["contacts"]["columns"]["loyalty_id"] == "membership_number"
    assert sent["tickets"]["values"]["status"]["4"] == "closed"
    assert sent["tickets"]["associations"] == ["contacts"]
    assert json.loads(to_json(DEFAULT_PROPERTY_MAP))["contacts"]["last_modified"] == "lastmodifieddate"


def test_the_raw_suites_read_through_the_map(tmp_path):
    custom = load_property_file(write(tmp_path, """
contacts:
  columns:
    lifecycle_stage: stage_x
  values:
    lifecycle_stage:
      gold: customer
"""))
    suites = {s.name: apply_property_map(s, custom) for s in load_suites("raw")}
    contacts = suites["raw.crm_contacts"]
    assert "'$.\"stage_x\"'" in contacts.target["derive"]["lifecycle_stage"]
    stage = next(e for e in contacts.expectations if e.column == "lifecycle_stage")
    assert stage.kwargs["value_set"] == ["gold"] and stage.severity == "warn"
    derived = json.dumps([s.target.get("derive") for s in suites.values()])
    assert "{prop:" not in derived and "{mapped:" not in derived
    # the derived columns are valid SQL on HubSpot-shaped rows: "" is missing, stage ids map
    tickets = suites["raw.crm_tickets"]
    derive = ", ".join(f"({e}) AS {n}" for n, e in tickets.target["derive"].items())
    row = duckdb.sql(f"""
        SELECT {derive} FROM (SELECT '{{"hs_pipeline_stage": "4", "closed_date": "", "hs_ticket_priority": "URGENT"}}'
                              AS properties, '{{"contacts": ["7", "8"]}}' AS associations)""").fetchone()
    got = dict(zip(tickets.target["derive"], row))
    assert got["status"] == "4" and got["priority"] == "URGENT" and got["contact_id"] == "7"
    assert got["closed_at_parses"] is True and got["closed_has_closed_at"] is False


# --------------------------------------------------------------------------- countries, phones

@pytest.mark.parametrize(("typed", "iso"), [
    ("China", "CN"), ("china ", "CN"), ("CN", "CN"), ("cn", "CN"), ("中国", "CN"), ("中國", "CN"),
    ("CHN", "CN"), ("Mainland China", "CN"), ("United Kingdom", "GB"), ("UK", "GB"), ("U.K.", "GB"),
    ("Great Britain", "GB"), ("GB", "GB"), ("英国", "GB"), ("Hong Kong", "HK"), ("香港", "HK"),
    ("HK", "HK"), ("United States", "US"), ("USA", "US"), ("美国", "US"), ("Singapore", "SG"),
    ("新加坡", "SG"), ("Taiwan", "TW"), ("Japan", "JP"), ("Côte d’Ivoire", "CI"),
    ("The Netherlands", "NL"), ("Germany", "DE"),
    ("", None), ("   ", None), (None, None), ("Atlantis", None), ("EU", None), ("ZZ", None), ("X", None),
])
def test_free_text_countries_become_iso_alpha_2(typed, iso):
    assert country_code(typed) == iso


def test_every_country_text_the_simulator_types_is_recognized():
    from customer360.demo.sim_keys import COUNTRY_TEXT

    assert {(iso, text): country_code(text) for iso, texts in COUNTRY_TEXT.items() for text in texts} == {
        (iso, text): iso for iso, texts in COUNTRY_TEXT.items() for text in texts}


@pytest.mark.parametrize(("raw", "country", "e164"), [
    ("(021) 6234-5678", "China", "+862162345678"),
    ("020 7946 0958", "United Kingdom", "+442079460958"),
    ("020 7946 0958", "UK", "+442079460958"),
    ("13800138000", "中国", "+8613800138000"),
    ("2345 6789", "Hong Kong", "+85223456789"),
    ("+86 138-0013-8000", "Atlantis", "+8613800138000"),  # international: no country needed
    ("(021) 6234-5678", None, None),                      # national, country unknown: unreadable
    ("12345", "CN", None),
    ("", "CN", None),
])
def test_national_phones_are_read_with_the_records_country(raw, country, e164):
    assert normalize_phone(raw, country) == e164


def test_the_sql_functions_take_free_text_countries():
    con = duckdb.connect()
    register_functions(con)
    assert con.execute("SELECT normalize_country('United Kingdom'), normalize_country(NULL), "
                       "normalize_phone('(021) 6234-5678', upper('China'))").fetchone() == (
        "GB", None, "+862162345678")


# --------------------------------------------------------------------------- erasure

def test_erasure_finds_tickets_by_their_associations_old_batches_by_contact_id():
    from customer360.privacy.erasure import _CRM_OWNER
    from customer360.privacy.person import crm_owner_predicate, json_association_predicate

    con = duckdb.connect()
    con.execute("CREATE TEMP TABLE p_contacts AS SELECT '1001' AS v")
    rows = con.execute("""
        CREATE TEMP TABLE t AS SELECT * FROM (VALUES
            ('T1', '{"hs_pipeline_stage": "1"}', '{"contacts": ["7", "1001"]}'),
            ('T2', '{"contact_id": "1001"}', NULL),
            ('T3', '{"hs_pipeline_stage": "1"}', '{"contacts": ["10012"]}'),
            ('T4', '{}', NULL)) AS t(id, properties, associations)""")
    own = crm_owner_predicate({"id", "properties", "associations"})
    assert [r[0] for r in con.execute(f"SELECT id FROM t WHERE {own} ORDER BY id").fetchall()] == ["T1", "T2"]
    assert crm_owner_predicate({"id"}) is None
    keys = con.execute(f"SELECT id, {_CRM_OWNER} FROM t ORDER BY ALL").fetchall()
    assert ("T1", "1001") in keys and ("T2", "1001") in keys and ("T3", "10012") in keys
    quarantined = [
        '{"id": "T9", "associations": "{\\"contacts\\": [\\"1001\\"]}"}',   # raw gate: to_json of the row
        '{"id": "T8", "associations": {"contacts": {"results": [{"id": "1001", "type": "ticket_to_contact"}]}}}',
        '{"id": "1001", "associations": {"contacts": ["5"]}}',              # its own id is not a contact
    ]
    found = [con.execute(f"SELECT {json_association_predicate('?')}", [t]).fetchone()[0] for t in quarantined]
    assert found == [True, True, False]
