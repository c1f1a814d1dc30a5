"""Conformance: HubSpot's own Python client (hubspot-api-client, a test-only dependency) reads the mock CRM.

The client runs with ``client_side_validation=True``, so its models reject a response HubSpot
would never send (a missing createdAt, total, results or paging.next.after, a bad enum, an
unparseable datetime). Every call passes lists for ``properties`` (a string is split into
characters by the client) and a ``_request_timeout`` (it has none by default). What the client
gets must be exactly what the store holds: the latest visible version of each record, its
properties as stored ("" kept, null for a property the record lacks), archived records only
through ``archived=True``, associations as the store has them.
"""

from __future__ import annotations

import datetime as dt

import pytest

hubspot = pytest.importorskip("hubspot")

from hubspot import HubSpot  # noqa: E402
from hubspot.crm.associations.v4 import (  # noqa: E402
    BatchInputPublicFetchAssociationsBatchRequest, PublicFetchAssociationsBatchRequest)
from hubspot.crm.contacts import ApiException, Filter, FilterGroup, PublicObjectSearchRequest  # noqa: E402
from hubspot.crm.contacts.exceptions import UnauthorizedException  # noqa: E402
from urllib3.util.retry import Retry  # noqa: E402

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
TIMEOUT = (2, 10)
CONTACT_PROPS = ["email", "firstname", "lastname", "phone", "mobilephone", "country", "city",
                 "lifecyclestage", "loyalty_id", "marketing_consent", "signup_channel",
                 "createdate", "lastmodifieddate", "hs_object_id"]
TICKET_PROPS = ["subject", "content", "hs_pipeline", "hs_pipeline_stage", "hs_ticket_priority",
                "hs_ticket_category", "closed_date", "createdate", "hs_lastmodifieddate", "hs_object_id"]
FEEDBACK_PROPS = ["hs_survey_type", "hs_value", "hs_content", "hs_submission_timestamp",
                  "createdate", "hs_lastmodifieddate", "hs_object_id"]


def iso(t: dt.datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ms(t: dt.datetime) -> str:
    return str(int(t.timestamp() * 1000))


def version(obj: str, rid: int, updated: dt.datetime, archived: bool = False, contact: int | None = None,
            **props) -> dict:
    last = "lastmodifieddate" if obj == "contacts" else "hs_lastmodifieddate"
    body = {"id": str(rid), "createdAt": iso(T0), "updatedAt": iso(updated), "archived": archived,
            "archivedAt": iso(updated) if archived else None,
            "properties": {"createdate": iso(T0), last: iso(updated), "hs_object_id": str(rid), **props}}
    if obj != "contacts":
        body["associations"] = {"contacts": [str(contact)] if contact else []}
    return body


def build_store() -> dict[str, list[dict]]:
    countries = ["China", "United Kingdom", "CN", ""]
    stages = ["subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity",
              "customer", "evangelist", "other"]
    contacts = []
    for i in range(1, 24):
        contacts.append(version(
            "contacts", i, T0 + dt.timedelta(hours=i), email=f"c{i}@example.com", firstname="明" if i % 3 else "Ann",
            lastname="" if i % 4 == 0 else "Li", phone="(021) 6234-5678" if i % 2 else "020 7946 0958",
            mobilephone=None, country=countries[i % 4], city="上海" if i % 2 else "", lifecyclestage=stages[i % 8],
            loyalty_id=f"L{i:05d}" if i % 5 else "", marketing_consent="true" if i % 2 else "false",
            signup_channel="web"))
    contacts.append(version("contacts", 7, T0 + dt.timedelta(days=2), email="new7@example.com", firstname="Seven",
                            lastname="Li", lifecyclestage="customer"))  # a newer version of 7
    contacts.append(version("contacts", 9, T0 + dt.timedelta(days=3), archived=True, email="c9@example.com"))
    contacts.append(version("contacts", 11, T0 + dt.timedelta(days=3, hours=1), archived=True))
    tickets = [version("tickets", 500_000 + i, T0 + dt.timedelta(hours=i, minutes=30), contact=i if i % 6 else None,
                       subject=f"订单 {i} 未到", content="Where is my parcel?" if i % 2 else "",
                       hs_pipeline="0", hs_pipeline_stage=str(1 + i % 4),
                       hs_ticket_priority=["LOW", "MEDIUM", "HIGH", "URGENT"][i % 4],
                       hs_ticket_category="DELIVERY_ISSUE", closed_date=iso(T0 + dt.timedelta(days=1)) if i % 4 == 3 else "")
               for i in range(1, 15)]
    feedback = [version("feedback_submissions", 900_000 + i, T0 + dt.timedelta(hours=i, minutes=45),
                        contact=i if i % 5 else None, hs_survey_type=["NPS", "CSAT", "CES"][i % 3],
                        hs_value=str(i % 11), hs_content="很好" if i % 2 else "",
                        hs_submission_timestamp=iso(T0 + dt.timedelta(hours=i)))
                for i in range(1, 12)]
    return {"contacts": contacts, "tickets": tickets, "feedback_submissions": feedback}


def latest(versions: list[dict], archived: bool = False) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for v in sorted(versions, key=lambda v: v["updatedAt"]):
        out[v["id"]] = v
    return {k: v for k, v in out.items() if v["archived"] == archived}


def expected_props(v: dict, names: list[str]) -> dict:
    return {n: v["properties"].get(n) for n in names}


@pytest.fixture
def served(crm_server, write_crm_versions):
    store = build_store()
    for obj, rows in store.items():
        write_crm_versions(crm_server.data_dir, obj, rows)
    return crm_server, store


@pytest.fixture
def client(served):
    server, _ = served
    return HubSpot(access_token=server.token, host=server.base_url, client_side_validation=True,
                   retry=Retry(total=3, allowed_methods=None, status_forcelist=(429, 502, 503, 504),
                               backoff_factor=0))


def page_all(get_page, **kwargs) -> tuple[list, int]:
    """Follow paging.next.after to the end with the client's models; returns (results, pages)."""
    results, after, pages = [], None, 0
    while True:
        page = get_page(after=after, _request_timeout=TIMEOUT, **kwargs)
        pages += 1
        results.extend(page.results)
        if page.paging is None or page.paging.next is None:
            return results, pages
        assert page.paging.next.after and page.paging.next.link
        after = page.paging.next.after


def parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_contacts_list_pages_with_the_clients_models(client, served):
    _, store = served
    want = latest(store["contacts"])
    got, pages = page_all(client.crm.contacts.basic_api.get_page, limit=5, properties=CONTACT_PROPS,
                          archived=False)
    assert [r.id for r in got] == sorted(want, key=int) and pages == -(-len(want) // 5)
    for r in got:
        v = want[r.id]
        assert r.properties == expected_props(v, CONTACT_PROPS)
        assert r.created_at == parse(v["createdAt"]) and r.updated_at == parse(v["updatedAt"])
        assert r.archived is False and r.archived_at is None
    assert next(r for r in got if r.id == "7").properties["email"] == "new7@example.com"
    # The client's own pager (limit 100 until paging.next is None), default properties only.
    every = client.crm.contacts.get_all(_request_timeout=TIMEOUT)
    assert [r.id for r in every] == [r.id for r in got]
    assert set(every[0].properties) == {"createdate", "email", "firstname", "hs_object_id",
                                        "lastmodifieddate", "lastname"}


def test_archived_contacts_come_only_with_archived_true(client, served):
    _, store = served
    want = latest(store["contacts"], archived=True)
    got, _ = page_all(client.crm.contacts.basic_api.get_page, limit=100, properties=["email"], archived=True)
    assert [r.id for r in got] == ["9", "11"] == sorted(want, key=int)
    for r in got:
        assert r.archived is True and r.archived_at == parse(want[r.id]["archivedAt"])
        assert r.properties["email"] == want[r.id]["properties"].get("email")


def test_tickets_list_with_contact_associations(client, served):
    _, store = served
    want = latest(store["tickets"])
    got, _ = page_all(client.crm.tickets.basic_api.get_page, limit=4, properties=TICKET_PROPS,
                      associations=["contacts"], archived=False)
    assert [r.id for r in got] == sorted(want, key=int)
    for r in got:
        assert r.properties == expected_props(want[r.id], TICKET_PROPS)
        contacts = want[r.id]["associations"]["contacts"]
        if contacts:
            assert [(a.id, a.type) for a in r.associations["contacts"].results] == \
                [(c, "ticket_to_contact") for c in contacts]
        else:
            assert r.associations is None


def test_feedback_submissions_through_the_objects_api(client, served):
    _, store = served
    want = latest(store["feedback_submissions"])
    got, _ = page_all(client.crm.objects.basic_api.get_page, object_type="feedback_submissions", limit=3,
                      properties=FEEDBACK_PROPS, associations=["contacts"], archived=False)
    assert [r.id for r in got] == sorted(want, key=int)
    for r in got:
        assert r.properties == expected_props(want[r.id], FEEDBACK_PROPS)
        contacts = want[r.id]["associations"]["contacts"]
        assert ([a.id for a in r.associations["contacts"].results] if r.associations else []) == contacts
        if contacts:
            assert r.associations["contacts"].results[0].type == "feedback_submission_to_contact"
    # Type ids work in the path too.
    by_type_id = client.crm.objects.basic_api.get_page(object_type="0-19", limit=100, _request_timeout=TIMEOUT)
    assert [r.id for r in by_type_id.results] == sorted(want, key=int)


def search_all(search_api, request_for, **kwargs) -> tuple[list, list[int]]:
    results, after, totals = [], None, []
    while True:
        page = search_api.do_search(public_object_search_request=request_for(after), _request_timeout=TIMEOUT,
                                    **kwargs)
        totals.append(page.total)
        results.extend(page.results)
        if page.paging is None or page.paging.next is None:
            return results, totals
        after = page.paging.next.after


@pytest.mark.parametrize("obj, props, last", [("contacts", CONTACT_PROPS, "lastmodifieddate"),
                                              ("tickets", TICKET_PROPS, "hs_lastmodifieddate"),
                                              ("feedback_submissions", FEEDBACK_PROPS, "hs_lastmodifieddate")])
def test_search_by_last_modified_with_the_clients_models(client, served, obj, props, last):
    _, store = served
    since = T0 + dt.timedelta(hours=5)
    want = {k: v for k, v in latest(store[obj]).items() if parse(v["updatedAt"]) >= since}

    def request_for(after):
        return PublicObjectSearchRequest(
            filter_groups=[FilterGroup(filters=[Filter(property_name=last, operator="GTE", value=ms(since))])],
            sorts=[{"propertyName": last, "direction": "ASCENDING"}], properties=props, limit=4, after=after)

    if obj == "contacts":
        got, totals = search_all(client.crm.contacts.search_api, request_for)
    elif obj == "tickets":
        got, totals = search_all(client.crm.tickets.search_api, request_for)
    else:
        got, totals = search_all(client.crm.objects.search_api, request_for, object_type=obj)
    assert set(totals) == {len(want)}
    assert [r.id for r in got] == sorted(want, key=lambda k: (want[k]["updatedAt"], int(k)))
    for r in got:
        assert r.properties == expected_props(want[r.id], props)
        assert r.updated_at == parse(want[r.id]["updatedAt"]) and not r.archived


def test_search_past_ten_thousand_is_an_api_exception(client, served):
    request = PublicObjectSearchRequest(limit=200, after="9900")
    with pytest.raises(ApiException) as err:
        client.crm.contacts.search_api.do_search(public_object_search_request=request, _request_timeout=TIMEOUT)
    assert err.value.status == 400 and "VALIDATION_ERROR" in err.value.body


def test_v4_batch_read_of_ticket_contacts(client, served):
    _, store = served
    want = latest(store["tickets"])
    inputs = [PublicFetchAssociationsBatchRequest(id=i) for i in sorted(want, key=int)]
    response = client.crm.associations.v4.batch_api.get_page(
        from_object_type="tickets", to_object_type="contacts",
        batch_input_public_fetch_associations_batch_request=BatchInputPublicFetchAssociationsBatchRequest(inputs=inputs),
        _request_timeout=TIMEOUT)
    got = {r._from.id: [t.to_object_id for t in r.to] for r in response.results}
    assert got == {k: v["associations"]["contacts"] for k, v in want.items() if v["associations"]["contacts"]}
    assert {t.association_types[0].type_id for r in response.results for t in r.to} == {16}
    # Tickets without a contact come back as 207 errors, which the strict models accept.
    none = sorted(k for k, v in want.items() if not v["associations"]["contacts"])
    assert response.num_errors == len(none) > 0 and response.status == "COMPLETE"
    assert sorted(e.context["fromObjectId"][0] for e in response.errors) == none
    assert {e.sub_category for e in response.errors} == {"crm.associations.NO_ASSOCIATIONS_FOUND"}
    # Feedback -> contact is typeId 98; one page of the per-object v4 endpoint.
    fb = client.crm.associations.v4.basic_api.get_page(object_type="feedback_submissions", object_id="900001",
                                                       to_object_type="contacts", _request_timeout=TIMEOUT)
    assert [(t.to_object_id, t.association_types[0].type_id) for t in fb.results] == [("1", 98)]


def test_ticket_pipelines(client, served):
    pipelines = client.crm.pipelines.pipelines_api.get_all(object_type="tickets", _request_timeout=TIMEOUT)
    default = next(p for p in pipelines.results if p.id == "0")
    assert [(s.id, s.label, s.metadata["ticketState"]) for s in default.stages] == [
        ("1", "New", "OPEN"), ("2", "Waiting on contact", "OPEN"), ("3", "Waiting on us", "OPEN"),
        ("4", "Closed", "CLOSED")]


def test_a_wrong_token_is_the_clients_unauthorized_exception(served):
    server, _ = served
    wrong = HubSpot(access_token="wrong-" + server.token, host=server.base_url, client_side_validation=True)
    with pytest.raises(UnauthorizedException) as err:
        wrong.crm.contacts.basic_api.get_page(limit=1, _request_timeout=TIMEOUT)
    assert err.value.status == 401 and "INVALID_AUTHENTICATION" in err.value.body


def test_the_client_retries_a_429_with_retry_after(client, served):
    server, store = served
    server.set_faults(scripted=["429", "503"], retry_after_seconds=0)
    page = client.crm.tickets.basic_api.get_page(limit=100, _request_timeout=TIMEOUT)
    assert len(page.results) == len(latest(store["tickets"]))
    assert server.stats()["by_status"] == {"429": 1, "503": 1, "200": 1}


def test_the_simulated_crm_read_whole_with_the_client(tmp_path):
    """Everything the simulator writes, paged with the client's models, is exactly the store."""
    import gzip
    import json

    from customer360.demo.crm_server import start_server
    from customer360.demo.simulator import SimulationConfig, simulate

    cfg = SimulationConfig.from_overrides(people=400, days=10, start=dt.date(2026, 3, 1), seed=3, overrides=[])
    simulate(cfg, landing=tmp_path / "landing", sim_dir=tmp_path / "sim", progress=False, deliver_all=False)
    crm = tmp_path / "sim" / "crm"
    with start_server(crm, token="conformance-token-1234") as server:
        hs = HubSpot(access_token=server.token, host=server.base_url, client_side_validation=True)
        apis = {"contacts": lambda **kw: hs.crm.contacts.basic_api.get_page(**kw),
                "tickets": lambda **kw: hs.crm.tickets.basic_api.get_page(**kw),
                "feedback_submissions": lambda **kw: hs.crm.objects.basic_api.get_page(
                    object_type="feedback_submissions", **kw)}
        for obj, get_page in apis.items():
            with gzip.open(crm / f"{obj}.jsonl.gz", "rt", encoding="utf-8") as fh:
                versions = [json.loads(line) for line in fh]
            names = sorted({p for v in versions for p in v["properties"]})
            assoc = ["contacts"] if obj != "contacts" else None
            for archived in (False, True):
                want = latest(versions, archived=archived)
                got, _ = page_all(get_page, limit=100, properties=names, archived=archived, associations=assoc)
                assert [r.id for r in got] == sorted(want, key=int), (obj, archived)
                for r in got:
                    v = want[r.id]
                    assert r.properties == {n: v["properties"].get(n) for n in names}, (obj, r.id)
                    assert r.updated_at == parse(v["updatedAt"]) and r.archived is archived
                    if archived:
                        assert r.archived_at == parse(v["archivedAt"])
                    if assoc:
                        linked = [a.id for a in r.associations["contacts"].results] if r.associations else []
                        assert linked == v["associations"]["contacts"]
            assert want or obj != "contacts"
