"""The mock CRM over real HTTP, behaving like HubSpot's CRM API v3: list, search, v4 associations,
pipelines, auth, limits, the clock, the index lag and every fault knob.

tests/test_crm_hubspot_client.py checks the same server with HubSpot's own client.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time

import pytest
import requests

from customer360.demo.crm_server import FaultConfig, start_server

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)


def iso(t: dt.datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ms(t: dt.datetime) -> str:
    return str(int(t.timestamp() * 1000))


def contact(record_id: str, updated: dt.datetime, archived: bool = False, **props) -> dict:
    return {"id": record_id, "createdAt": iso(T0), "updatedAt": iso(updated), "archived": archived,
            "archivedAt": iso(updated) if archived else None,
            "properties": {"email": f"c{record_id}@example.com", "firstname": "A", "lastname": "B",
                           "createdate": iso(T0), "lastmodifieddate": iso(updated), "hs_object_id": record_id,
                           **props}}


def ticket(record_id: str, updated: dt.datetime, contacts: list[str], **props) -> dict:
    return {"id": record_id, "createdAt": iso(T0), "updatedAt": iso(updated), "archived": False,
            "archivedAt": None, "associations": {"contacts": contacts},
            "properties": {"subject": f"ticket {record_id}", "hs_pipeline": "0", "hs_pipeline_stage": "1",
                           "createdate": iso(T0), "hs_lastmodifieddate": iso(updated),
                           "hs_object_id": record_id, **props}}


def session(token: str | None) -> requests.Session:
    s = requests.Session()
    if token is not None:
        s.headers["Authorization"] = f"Bearer {token}"
    return s


def _follow(fetch) -> tuple[list[dict], list[dict]]:
    """Call ``fetch(after)`` page by page, following paging.next.after to the end; returns
    (records, raw pages)."""
    records, pages, after = [], [], None
    while True:
        resp = fetch({"after": after} if after else {})
        assert resp.status_code == 200, resp.text
        page = resp.json()
        pages.append(page)
        records.extend(page["results"])
        if "paging" not in page:
            return records, pages
        after = page["paging"]["next"]["after"]
        assert len(pages) < 1000


def get_all(srv, obj: str = "contacts", **params) -> tuple[list[dict], list[dict]]:
    s = session(srv.token)
    return _follow(lambda after: s.get(f"{srv.base_url}/crm/v3/objects/{obj}",
                                       params=dict(params, **after), timeout=10))


def search(srv, obj: str = "contacts", **body) -> requests.Response:
    return session(srv.token).post(f"{srv.base_url}/crm/v3/objects/{obj}/search", json=body, timeout=10)


def search_all(srv, obj: str = "contacts", **body) -> tuple[list[dict], list[dict]]:
    return _follow(lambda after: search(srv, obj, **body, **after))


def gte(prop: str, value: str) -> list[dict]:
    return [{"filters": [{"propertyName": prop, "operator": "GTE", "value": value}]}]


@pytest.fixture
def store(crm_server, write_crm_versions):
    """24 live contacts (ids 900/1000/10000 show numeric order), two versions of 1, two archived."""
    versions = [contact(str(i), T0 + dt.timedelta(hours=i)) for i in range(1, 21)]
    tie = T0 + dt.timedelta(hours=30)
    versions += [contact(i, tie) for i in ("10000", "1000", "900")]
    versions += [contact("1", T0 + dt.timedelta(hours=40), city="上海", phone=""),  # a newer version of 1
                 contact("21", T0 + dt.timedelta(hours=41), archived=True),
                 contact("22", T0 + dt.timedelta(hours=2)), contact("22", T0 + dt.timedelta(hours=42), archived=True),
                 contact("23", T0 + dt.timedelta(hours=43))]
    write_crm_versions(crm_server.data_dir, "contacts", versions)
    write_crm_versions(crm_server.data_dir, "tickets", [
        ticket("500001", T0 + dt.timedelta(hours=1), ["2"]),
        ticket("500002", T0 + dt.timedelta(hours=2), ["2", "3"]),
        ticket("500003", T0 + dt.timedelta(hours=3), [])])
    return versions


LIVE = [str(i) for i in range(1, 21)] + ["23", "900", "1000", "10000"]


# --------------------------------------------------------------------------- list

def test_list_pages_by_id_over_the_latest_live_versions(crm_server, store):
    records, pages = get_all(crm_server, limit=4)
    assert [r["id"] for r in records] == LIVE  # numeric id order, archived ones left out
    assert next(r for r in records if r["id"] == "1")["updatedAt"] == iso(T0 + dt.timedelta(hours=40))
    assert all(len(p["results"]) == 4 for p in pages) and len(pages) == 6
    assert "paging" not in pages[-1]
    # after is the id of the next record; the link is a full URL that continues the same query.
    first = pages[0]["paging"]["next"]
    assert first["after"] == "5"
    s = session(crm_server.token)
    via_link = s.get(first["link"], timeout=10).json()
    assert via_link == pages[1] and "limit=4" in first["link"]
    assert all(r["archived"] is False and "archivedAt" not in r for r in records)


def test_default_limit_is_10_and_over_100_is_400(crm_server, store):
    s = session(crm_server.token)
    url = f"{crm_server.base_url}/crm/v3/objects/contacts"
    assert len(s.get(url).json()["results"]) == 10
    assert len(s.get(url, params={"limit": 100}).json()["results"]) == 24
    resp = s.get(url, params={"limit": 101})
    assert resp.status_code == 400 and resp.json()["category"] == "VALIDATION_ERROR"


def test_default_properties_unless_asked(crm_server, store):
    records, _ = get_all(crm_server, limit=100)
    assert set(records[0]["properties"]) == {"createdate", "email", "firstname", "hs_object_id",
                                             "lastmodifieddate", "lastname"}
    one = lambda **q: next(r for r in get_all(crm_server, limit=100, **q)[0] if r["id"] == "1")  # noqa: E731
    # Comma-separated and repeated are the same; unknown names are ignored; a property the
    # portal has but this record lacks is null; "" stays ""; create/last-modified/id always come.
    comma = one(properties="city,phone,nosuchproperty")
    repeated = one(properties=["city", "phone", "nosuchproperty"])
    assert comma == repeated
    assert comma["properties"] == {"city": "上海", "phone": "", "createdate": iso(T0),
                                   "lastmodifieddate": iso(T0 + dt.timedelta(hours=40)), "hs_object_id": "1"}
    assert one(properties="city")["properties"]["city"] == "上海"
    other = next(r for r in get_all(crm_server, limit=100, properties="city")[0] if r["id"] == "2")
    assert other["properties"]["city"] is None


@pytest.mark.parametrize("flag", ["true", "True", "TRUE"])
def test_archived_true_lists_only_archived_with_archived_at(crm_server, store, flag):
    records, _ = get_all(crm_server, archived=flag, properties="email")
    assert [(r["id"], r["archived"], r["archivedAt"]) for r in records] == [
        ("21", True, iso(T0 + dt.timedelta(hours=41))), ("22", True, iso(T0 + dt.timedelta(hours=42)))]
    assert records[0]["properties"]["email"] == "c21@example.com"
    assert [r["id"] for r in get_all(crm_server, archived="False", limit=100)[0]] == LIVE


def test_associations_on_the_list_and_the_reverse(crm_server, store):
    tickets, _ = get_all(crm_server, "tickets", associations="contacts")
    blocks = {t["id"]: t.get("associations") for t in tickets}
    assert blocks == {
        "500001": {"contacts": {"results": [{"id": "2", "type": "ticket_to_contact"}]}},
        "500002": {"contacts": {"results": [{"id": "2", "type": "ticket_to_contact"},
                                            {"id": "3", "type": "ticket_to_contact"}]}},
        "500003": None}  # omitted when empty
    assert "associations" not in get_all(crm_server, "tickets")[0][0]
    contacts, _ = get_all(crm_server, limit=100, associations=["tickets"])
    two = next(c for c in contacts if c["id"] == "2")
    assert two["associations"]["tickets"]["results"] == [{"id": "500001", "type": "contact_to_ticket"},
                                                         {"id": "500002", "type": "contact_to_ticket"}]


def test_association_paging_continues_on_the_v4_endpoint(crm_server, store):
    crm_server.set_faults(assoc_page_size=1)
    tickets, _ = get_all(crm_server, "tickets", associations="contacts")
    block = next(t for t in tickets if t["id"] == "500002")["associations"]["contacts"]
    assert block["results"] == [{"id": "2", "type": "ticket_to_contact"}]
    rest = session(crm_server.token).get(block["paging"]["next"]["link"], timeout=10).json()
    assert rest["results"] == [{"toObjectId": 3, "associationTypes": [
        {"category": "HUBSPOT_DEFINED", "typeId": 16, "label": None}]}] and "paging" not in rest


def test_the_cursor_is_the_next_id_so_changes_do_not_move_it(crm_server, store, write_crm_versions):
    s = session(crm_server.token)
    url = f"{crm_server.base_url}/crm/v3/objects/contacts"
    first = s.get(url, params={"limit": 5}).json()
    write_crm_versions(crm_server.data_dir, "contacts",
                       store + [contact("3", T0 + dt.timedelta(hours=50)), contact("8", T0 + dt.timedelta(hours=51))])
    rest, _ = get_all(crm_server, limit=5, after=first["paging"]["next"]["after"])
    ids = [r["id"] for r in first["results"]] + [r["id"] for r in rest]
    assert ids == LIVE  # nothing skipped or repeated: the list has no time order
    assert next(r for r in rest if r["id"] == "8")["updatedAt"] == iso(T0 + dt.timedelta(hours=51))


def test_clock_serves_each_record_as_it_was(crm_server, store):
    crm_server.set_clock(iso(T0 + dt.timedelta(hours=10, minutes=30)))
    records, _ = get_all(crm_server, limit=100)
    assert [r["id"] for r in records] == [str(i) for i in range(1, 11)] + ["22"]
    assert records[0]["updatedAt"] == iso(T0 + dt.timedelta(hours=1))  # the old version of 1
    assert get_all(crm_server, archived="true")[0] == []  # 22 was not archived yet
    crm_server.set_clock(None)
    assert len(get_all(crm_server, limit=100)[0]) == 24
    assert crm_server.health()["clock"] is None


# --------------------------------------------------------------------------- search

def test_search_filters_sorts_and_pages_by_offset(crm_server, store):
    since = T0 + dt.timedelta(hours=18)
    records, pages = search_all(crm_server, filterGroups=gte("lastmodifieddate", ms(since)),
                                sorts=[{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}], limit=3)
    # Ascending on last-modified, the three sharing one instant by id, archived never returned.
    assert [r["id"] for r in records] == ["18", "19", "20", "900", "1000", "10000", "1", "23"]
    assert {p["total"] for p in pages} == {8}
    assert [p.get("paging", {}).get("next", {}).get("after") for p in pages] == ["3", "6", None]
    assert "link" not in pages[0]["paging"]["next"]
    assert set(records[0]["properties"]) == {"createdate", "email", "firstname", "hs_object_id",
                                             "lastmodifieddate", "lastname"}
    desc, _ = search_all(crm_server, filterGroups=gte("lastmodifieddate", ms(since)), sorts=["-lastmodifieddate"],
                         limit=200, properties=["city"])
    assert [r["id"] for r in desc] == ["23", "1", "900", "1000", "10000", "20", "19", "18"]
    assert set(desc[0]["properties"]) == {"city", "createdate", "hs_object_id", "lastmodifieddate"}
    # No sort: creation order (all share createdate here), then id.
    assert [r["id"] for r in search_all(crm_server, limit=100)[0]] == LIVE
    assert search(crm_server, limit=0).json() == {"total": 24, "results": []}  # a count, no paging


@pytest.mark.parametrize("flt, ids", [
    ({"operator": "GT", "value": "HOURS(18)"}, ["19", "20", "900", "1000", "10000", "1", "23"]),
    ({"operator": "LT", "value": "HOURS(3)"}, ["2"]),
    ({"operator": "LTE", "value": "HOURS(3)"}, ["2", "3"]),
    ({"operator": "EQ", "value": "HOURS(30)"}, ["900", "1000", "10000"]),
    ({"operator": "BETWEEN", "value": "HOURS(19)", "highValue": "HOURS(30)"}, ["19", "20", "900", "1000", "10000"]),
    ({"operator": "EQ", "value": "2026-03-02T06:00:00Z"}, ["900", "1000", "10000"]),  # ISO accepted too
])
def test_search_datetime_operators_in_epoch_ms(crm_server, store, flt, ids):
    def value(v):
        return ms(T0 + dt.timedelta(hours=int(v[6:-1]))) if v.startswith("HOURS(") else v

    flt = {k: value(v) if k in ("value", "highValue") else v for k, v in flt.items()}
    resp = search(crm_server, filterGroups=[{"filters": [{"propertyName": "lastmodifieddate", **flt}]}],
                  sorts=[{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}], limit=100)
    assert resp.status_code == 200, resp.text
    assert [r["id"] for r in resp.json()["results"]] == ids


def test_search_other_properties_and_groups(crm_server, store):
    def ids(groups, **body):
        resp = search(crm_server, filterGroups=groups, limit=100, **body)
        assert resp.status_code == 200, resp.text
        return [r["id"] for r in resp.json()["results"]]

    assert ids([{"filters": [{"propertyName": "city", "operator": "HAS_PROPERTY"}]}]) == ["1"]
    assert ids([{"filters": [{"propertyName": "phone", "operator": "HAS_PROPERTY"}]}]) == []  # "" is no value
    assert ids([{"filters": [{"propertyName": "hs_object_id", "operator": "GT", "value": "999"}]}]) == ["1000", "10000"]
    assert ids([{"filters": [{"propertyName": "email", "operator": "EQ", "value": "C5@EXAMPLE.COM"}]},
                {"filters": [{"propertyName": "hs_object_id", "operator": "IN", "values": ["7", "21"]}]}]) == ["5", "7"]
    assert ids([{"filters": [{"propertyName": "hs_object_id", "operator": "EQ", "value": "900"}]}],
               sorts=[{"propertyName": "hs_object_id", "direction": "DESCENDING"}]) == ["900"]
    # Tickets on their own last-modified property.
    resp = search(crm_server, "tickets", filterGroups=gte("hs_lastmodifieddate", ms(T0 + dt.timedelta(hours=2))))
    assert [r["id"] for r in resp.json()["results"]] == ["500002", "500003"]
    assert "associations" not in resp.json()["results"][0]  # search results carry none


def test_search_caps_at_ten_thousand_results(crm_server, write_crm_versions):
    versions = [ticket(str(i), T0 + dt.timedelta(seconds=i // 3), []) for i in range(1, 10_051)]
    write_crm_versions(crm_server.data_dir, "tickets", versions)
    body = {"filterGroups": gte("hs_lastmodifieddate", ms(T0)), "limit": 200,
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}]}
    after, seen, pages = None, [], 0
    while True:
        resp = search(crm_server, "tickets", **body, **({"after": after} if after else {}))
        if resp.status_code != 200:
            break
        page = resp.json()
        assert page["total"] == 10_050
        seen += [r["id"] for r in page["results"]]
        after, pages = page["paging"]["next"]["after"], pages + 1
    assert pages == 50 and len(seen) == 10_000 == len(set(seen)) and after == "10000"
    assert resp.status_code == 400
    error = resp.json()
    assert error["status"] == "error" and error["category"] == "VALIDATION_ERROR" and "10000" in error["message"]
    assert error["correlationId"] and resp.headers["x-hubspot-correlation-id"] == error["correlationId"]
    assert search(crm_server, "tickets", limit=10, after="9995").status_code == 400
    assert search(crm_server, "tickets", limit=10, after="9990").status_code == 200


def test_the_indexed_window_scan_agrees_with_a_full_scan(crm_server, write_crm_versions):
    """A window on the last-modified property sorted on it is answered from an index; adding a
    filter on another property (true for every record) forces the full scan: both must agree."""
    import random

    rng = random.Random(5)
    times = [T0 + dt.timedelta(milliseconds=rng.choice([0, 1, 1, 2, 500, 86_400_000]) + rng.randrange(4))
             for _ in range(400)]
    write_crm_versions(crm_server.data_dir, "contacts",
                       [contact(str(rng.randrange(1, 10**9)), t) for t in times])
    every = {"propertyName": "email", "operator": "HAS_PROPERTY"}
    sort = [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}]
    for filters in ([{"operator": "GTE", "value": ms(T0 + dt.timedelta(milliseconds=1))}],
                    [{"operator": "GT", "value": ms(T0)}, {"operator": "LT", "value": ms(T0 + dt.timedelta(seconds=1))}],
                    [{"operator": "EQ", "value": ms(T0 + dt.timedelta(milliseconds=2))}],
                    [{"operator": "BETWEEN", "value": ms(T0), "highValue": ms(T0 + dt.timedelta(milliseconds=3))}],
                    [{"operator": "LTE", "value": ms(T0 + dt.timedelta(milliseconds=1))}]):
        flts = [{"propertyName": "lastmodifieddate", **f} for f in filters]
        fast, fast_pages = search_all(crm_server, filterGroups=[{"filters": flts}], sorts=sort, limit=7)
        slow, slow_pages = search_all(crm_server, filterGroups=[{"filters": flts + [every]}], sorts=sort, limit=7)
        assert [r["id"] for r in fast] == [r["id"] for r in slow] and fast, filters
        assert [p["total"] for p in fast_pages] == [p["total"] for p in slow_pages]
        keys = [(r["updatedAt"], int(r["id"])) for r in fast]
        assert keys == sorted(keys)


@pytest.mark.parametrize("body", [
    {"limit": 201}, {"limit": "x"}, {"after": "abc"}, {"sorts": ["a", "b"]},
    {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "LIKE", "value": "x"}]}]},
    {"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": "yesterday"}]}]},
    {"filterGroups": [{"filters": [{"propertyName": "no_such_property", "operator": "EQ", "value": "1"}]}]},
    {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "BETWEEN", "value": "a"}]}]},
    {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}]}] * 6},
    {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}] * 7}]},
    {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}] * 5}] * 4},
    {"query": "x" * 3001},
])
def test_bad_search_requests_are_400(crm_server, store, body):
    resp = search(crm_server, **body)
    assert resp.status_code == 400 and resp.json()["category"] == "VALIDATION_ERROR", resp.text


def test_index_lag_hides_fresh_writes_from_search_not_from_the_list(crm_server, store, write_crm_versions):
    clock = T0 + dt.timedelta(hours=50)
    write_crm_versions(crm_server.data_dir, "contacts", store + [
        contact("5", clock - dt.timedelta(seconds=30), city="Paris"),  # written 30 s before the clock
        contact("30", clock - dt.timedelta(seconds=10))])             # created 10 s before the clock
    crm_server.set_clock(iso(clock))
    crm_server.set_faults(index_lag_seconds=60)
    body = {"filterGroups": gte("lastmodifieddate", ms(T0 + dt.timedelta(hours=45))), "limit": 100,
            "properties": ["city"]}
    assert search(crm_server, **body).json()["results"] == []  # neither write is searchable yet
    lagged = {r["id"]: r for r in search(crm_server, limit=100, properties=["city"]).json()["results"]}
    assert "30" not in lagged and lagged["5"]["properties"]["city"] is None  # the old version
    listed = {r["id"]: r for r in get_all(crm_server, limit=100, properties="city")[0]}
    assert listed["5"]["properties"]["city"] == "Paris" and "30" in listed
    crm_server.set_clock(iso(clock + dt.timedelta(seconds=60)))
    assert [r["id"] for r in search(crm_server, **body).json()["results"]] == ["5", "30"]


# --------------------------------------------------------------------------- v4, pipelines

def test_v4_batch_read_200_and_207(crm_server, store):
    s = session(crm_server.token)
    url = f"{crm_server.base_url}/crm/v4/associations/tickets/contacts/batch/read"
    ok = s.post(url, json={"inputs": [{"id": "500002"}]})
    assert ok.status_code == 200
    body = ok.json()
    assert body["status"] == "COMPLETE" and body["startedAt"] and body["completedAt"] and "errors" not in body
    assert body["results"] == [{"from": {"id": "500002"}, "to": [
        {"toObjectId": 2, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 16, "label": None}]},
        {"toObjectId": 3, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 16, "label": None}]}]}]
    partial = s.post(url, json={"inputs": [{"id": "500001"}, {"id": "500003"}, {"id": "42"}]})
    assert partial.status_code == 207
    body = partial.json()
    assert [r["from"]["id"] for r in body["results"]] == ["500001"] and body["numErrors"] == 2
    assert [e["context"]["fromObjectId"] for e in body["errors"]] == [["500003"], ["42"]]
    assert all(e["subCategory"] == "crm.associations.NO_ASSOCIATIONS_FOUND" and e["links"] == {}
               and e["errors"] == [] and e["status"] == "error" for e in body["errors"])
    reverse = s.post(f"{crm_server.base_url}/crm/v4/associations/contacts/tickets/batch/read",
                     json={"inputs": [{"id": "3"}]}).json()
    assert reverse["results"][0]["to"][0]["toObjectId"] == 500002
    assert reverse["results"][0]["to"][0]["associationTypes"][0]["typeId"] == 15
    assert s.post(url, json={"inputs": [{"id": str(i)} for i in range(1001)]}).status_code == 400


def test_ticket_pipelines(crm_server):
    resp = session(crm_server.token).get(f"{crm_server.base_url}/crm/v3/pipelines/tickets")
    default = resp.json()["results"][0]
    assert default["id"] == "0" and default["label"] == "Support Pipeline"
    assert [(s["id"], s["label"], s["metadata"]["ticketState"]) for s in default["stages"]] == [
        ("1", "New", "OPEN"), ("2", "Waiting on contact", "OPEN"), ("3", "Waiting on us", "OPEN"),
        ("4", "Closed", "CLOSED")]
    assert session(crm_server.token).get(f"{crm_server.base_url}/crm/v3/pipelines/0-5").json() == resp.json()


def test_read_one_record_by_id(crm_server, store):
    s = session(crm_server.token)
    url = f"{crm_server.base_url}/crm/v3/objects/contacts"
    one = s.get(f"{url}/1", params={"properties": "city", "associations": "tickets"}).json()
    assert one["properties"]["city"] == "上海" and "associations" not in one
    two = s.get(f"{url}/2", params={"associations": "tickets"}).json()
    assert [a["id"] for a in two["associations"]["tickets"]["results"]] == ["500001", "500002"]
    assert s.get(f"{url}/21").status_code == 404
    assert s.get(f"{url}/21", params={"archived": "true"}).json()["archivedAt"] == iso(T0 + dt.timedelta(hours=41))


# --------------------------------------------------------------------------- auth and errors

def test_bad_missing_or_expired_token_is_401_everywhere(crm_server, store):
    url = f"{crm_server.base_url}/crm/v3/objects/contacts"
    for s in (session(None), session("wrong-token"), session(crm_server.token + "x")):
        resp = s.get(url)
        assert resp.status_code == 401
        body = resp.json()
        assert body["category"] == "INVALID_AUTHENTICATION" and body["status"] == "error"
        assert resp.headers["x-hubspot-correlation-id"] == body["correlationId"]
        assert crm_server.token not in resp.text
    assert session(None).post(f"{crm_server.base_url}/_mock/clock", json={"as_of": None}).status_code == 401
    assert session("nope").get(f"{crm_server.base_url}/_mock/stats").status_code == 401
    assert session("nope").post(f"{url}/search", json={}).status_code == 401
    assert crm_server.stats()["by_status"] == {"401": 4}
    crm_server.set_faults(expired_token=True)
    resp = session(crm_server.token).get(url)
    assert resp.status_code == 401 and resp.json()["category"] == "EXPIRED_AUTHENTICATION"


def test_unknown_object_404_known_object_without_data_empty(crm_server, store):
    s = session(crm_server.token)
    resp = s.get(f"{crm_server.base_url}/crm/v3/objects/invoices")
    assert resp.status_code == 404 and resp.json()["status"] == "error"
    assert s.get(f"{crm_server.base_url}/crm/v3/objects/feedback_submissions").json() == {"results": []}
    assert search(crm_server, "feedback_submissions").json() == {"total": 0, "results": []}


@pytest.mark.parametrize("query", [{"after": "not-a-cursor"}, {"limit": "0"}, {"limit": "ten"},
                                   {"archived": "maybe"}])
def test_malformed_list_query_is_400(crm_server, store, query):
    resp = session(crm_server.token).get(f"{crm_server.base_url}/crm/v3/objects/contacts", params=query)
    assert resp.status_code == 400 and resp.json()["category"] == "VALIDATION_ERROR"


# --------------------------------------------------------------------------- limits

def test_ten_second_burst_limit_spares_search(crm_server, store):
    crm_server.set_faults(burst_per_10s=3)
    s = session(crm_server.token)
    url = f"{crm_server.base_url}/crm/v3/objects/contacts"
    first = s.get(url)
    assert first.headers["X-HubSpot-RateLimit-Max"] == "3" and first.headers["X-HubSpot-RateLimit-Remaining"] == "2"
    assert [s.get(url).status_code for _ in range(2)] == [200, 200]
    limited = s.get(url)
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 10
    body = limited.json()
    assert body["category"] == "RATE_LIMITS" and body["policyName"] == "TEN_SECONDLY_ROLLING"
    assert search(crm_server).status_code == 200  # search has its own limit
    crm_server.set_faults(burst_per_10s=3, rate_limit_retry_after=False)
    assert [s.get(url).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert "Retry-After" not in s.get(url).headers


def test_search_per_second_limit(crm_server, store):
    crm_server.set_faults(search_per_second=2)
    statuses = [search(crm_server).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = search(crm_server)
    assert limited.json()["message"] == "You have reached your secondly limit."
    assert limited.json()["policyName"] == "SECONDLY" and limited.headers["Retry-After"] == "1"
    assert session(crm_server.token).get(f"{crm_server.base_url}/crm/v3/objects/contacts").status_code == 200
    time.sleep(1.05)
    assert search(crm_server).status_code == 200
    assert crm_server.stats()["by_kind"]["search"] == {"200": 3, "429": 2}


# --------------------------------------------------------------------------- faults

def test_scripted_faults_come_in_order(crm_server, store):
    crm_server.set_faults(scripted=["429", "500", "502", "503", "504", "502html", "ok", "cut"],
                          retry_after_seconds=7)
    s = session(crm_server.token)
    url = f"{crm_server.base_url}/crm/v3/objects/contacts"
    resp = s.get(url)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "7"
    assert resp.json()["category"] == "RATE_LIMITS"
    assert [s.get(url).status_code for _ in range(4)] == [500, 502, 503, 504]
    html = s.get(url)
    assert html.status_code == 502 and html.headers["Content-Type"].startswith("text/html")
    assert s.get(url).status_code == 200
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        s.get(url)
    assert s.get(url).status_code == 200  # script used up, no random faults
    stats = crm_server.stats()
    assert stats["by_status"] == {"429": 1, "500": 1, "502": 2, "503": 1, "504": 1, "200": 3}
    assert stats["cut"] == 1 and stats["by_kind"]["list"]["200"] == 3


def test_faults_hit_search_and_v4_too(crm_server, store):
    crm_server.set_faults(scripted=["503", "cut"])
    assert search(crm_server).status_code == 503
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        session(crm_server.token).post(f"{crm_server.base_url}/crm/v4/associations/tickets/contacts/batch/read",
                                       json={"inputs": [{"id": "500001"}]})
    assert crm_server.stats()["by_kind"] == {"search": {"503": 1}, "assoc": {"200": 1}}


def test_cut_page_sends_less_than_its_content_length(crm_server, store):
    crm_server.set_faults(scripted=["cut"])
    with socket.create_connection(("127.0.0.1", crm_server.port), timeout=5) as sock:
        sock.sendall(f"GET /crm/v3/objects/contacts HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {crm_server.token}\r\n\r\n".encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    assert head.startswith(b"HTTP/1.1 200") and 0 < len(body) < length


def test_random_faults_follow_the_seed(crm_server, store):
    def statuses() -> list[int]:
        crm_server.set_faults(rate_429=0.2, rate_5xx=0.3, retry_after_seconds=0, seed=11)
        s = session(crm_server.token)
        return [s.get(f"{crm_server.base_url}/crm/v3/objects/contacts", params={"limit": 1}).status_code
                for _ in range(30)]

    first = statuses()
    assert first == statuses()
    assert {429, 200} <= set(first) and set(first) & {500, 502, 503, 504}
    assert crm_server.stats()["requests"] == 60
    crm_server.reset_stats()
    assert crm_server.stats()["requests"] == 0


def test_endless_429(crm_server, store):
    crm_server.set_faults(rate_429=1.0, retry_after_seconds=0)
    s = session(crm_server.token)
    assert {s.get(f"{crm_server.base_url}/crm/v3/objects/contacts").status_code for _ in range(20)} == {429}
    assert {search(crm_server).status_code for _ in range(5)} == {429}


def test_cursor_that_never_advances(crm_server, store):
    crm_server.set_faults(cursor_loop=True)
    s = session(crm_server.token)
    url = f"{crm_server.base_url}/crm/v3/objects/contacts"
    first = s.get(url, params={"limit": 5}).json()
    after = first["paging"]["next"]["after"]
    again = s.get(url, params={"limit": 5, "after": after}).json()
    assert again["paging"]["next"]["after"] == after
    assert s.get(url, params={"limit": 5, "after": after}).json() == again
    page = search(crm_server, limit=5, after="5").json()
    assert page["paging"]["next"]["after"] == "5"


def test_pages_that_never_end(crm_server, store):
    crm_server.set_faults(endless_pages=True)
    s = session(crm_server.token)
    url = f"{crm_server.base_url}/crm/v3/objects/contacts"
    page = s.get(url, params={"limit": 100}).json()
    afters = []
    for _ in range(5):
        assert "paging" in page
        afters.append(page["paging"]["next"]["after"])
        page = s.get(url, params={"limit": 100, "after": afters[-1]}).json()
        assert page["results"] == []
    assert len(set(afters)) == 5  # the cursor moves, the pages just never stop
    assert "paging" in search(crm_server, limit=100).json()


def test_a_hanging_request_is_bounded(crm_server, store):
    crm_server.set_faults(scripted=["hang"], hang_seconds=1.5)
    s = session(crm_server.token)
    url = f"{crm_server.base_url}/crm/v3/objects/contacts"
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        s.get(url, timeout=(2, 0.3))
    assert time.monotonic() - started < 1.4
    crm_server.set_faults(scripted=["hang"], hang_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ConnectionError):  # dropped unanswered once the hang ends
        session(crm_server.token).get(url, timeout=10)
    assert 0.4 < time.monotonic() - started < 5
    assert session(crm_server.token).get(url, timeout=10).status_code == 200
    assert crm_server.stats()["hung"] >= 1


def test_stop_ends_a_hanging_request(tmp_path, write_crm_versions):
    write_crm_versions(tmp_path, "contacts", [contact("1", T0)])
    srv = start_server(tmp_path, token="t0ken-abcdef", faults=FaultConfig(rate_hang=1.0, hang_seconds=60))
    import threading

    errors = []
    t = threading.Thread(target=lambda: errors.append(pytest.raises(
        requests.RequestException, session("t0ken-abcdef").get, f"{srv.base_url}/crm/v3/objects/contacts",
        timeout=30)))
    t.start()
    time.sleep(0.3)
    started = time.monotonic()
    srv.stop()
    t.join(10)
    assert not t.is_alive() and time.monotonic() - started < 8 and errors


def test_fault_settings_are_validated(crm_server):
    s = session(crm_server.token)
    for bad in ({"rate_429": 2}, {"scripted": ["boom"]}, {"rate_blip": 0.1}, {"hang_seconds": 1000},
                {"assoc_page_size": 0}, {"burst_per_10s": -1}):
        assert s.post(f"{crm_server.base_url}/_mock/faults", json=bad).status_code == 400, bad
    with pytest.raises(ValueError):
        FaultConfig(rate_429=0.6, rate_5xx=0.6)
    assert crm_server.faults()["index_lag_seconds"] == 0


# --------------------------------------------------------------------------- serving

def test_reloads_when_the_file_changes(crm_server, store, write_crm_versions):
    assert len(get_all(crm_server, limit=100)[0]) == 24
    write_crm_versions(crm_server.data_dir, "contacts", store[:3])
    assert [r["id"] for r in get_all(crm_server)[0]] == ["1", "2", "3"]
    assert search(crm_server).json()["total"] == 3


def test_stop_closes_the_port(tmp_path, write_crm_versions):
    write_crm_versions(tmp_path, "contacts", [contact("1", T0)])
    with start_server(tmp_path, token="t0ken-abcdef") as srv:
        s = session("t0ken-abcdef")
        assert s.get(f"{srv.base_url}/crm/v3/objects/contacts").status_code == 200
    with pytest.raises(requests.ConnectionError):
        s.get(f"{srv.base_url}/crm/v3/objects/contacts", timeout=2)


def test_serves_thousands_of_versions_quickly(tmp_path, write_crm_versions):
    versions = [contact(str(i % 6000 + 1), T0 + dt.timedelta(seconds=i)) for i in range(30000)]
    write_crm_versions(tmp_path, "contacts", versions)
    started = time.perf_counter()
    with start_server(tmp_path, token="t0ken-abcdef") as srv:
        records, pages = get_all(srv, limit=100)
        found, spages = search_all(srv, limit=200, filterGroups=gte("lastmodifieddate", ms(T0)),
                                   sorts=[{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}])
    assert len(records) == 6000 and len(pages) == 60 and len(found) == 6000 and len(spages) == 30
    assert time.perf_counter() - started < 20  # a few seconds here; generous for a busy machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_crm_server_serves_until_stopped(tmp_path, write_crm_versions):
    write_crm_versions(tmp_path / "simulation" / "crm", "contacts", [contact("7", T0)])
    port = free_port()
    env = os.environ | {"C360_HOME": str(tmp_path), "C360_CRM_TOKEN": "cli-token-123456"}
    proc = subprocess.Popen([sys.executable, "-m", "customer360.cli", "crm-server", "--port", str(port),
                             "--rate-429", "0", "--index-lag-seconds", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        s = session("cli-token-123456")
        deadline = time.monotonic() + 30
        while True:
            try:
                resp = s.get(f"http://127.0.0.1:{port}/crm/v3/objects/contacts", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
                time.sleep(0.1)
        assert [r["id"] for r in resp.json()["results"]] == ["7"]
        assert resp.headers["X-HubSpot-RateLimit-Max"] == "100"  # HubSpot's burst limit by default
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0]
    assert f"127.0.0.1:{port}" in output and "cli-token-123456" not in output
