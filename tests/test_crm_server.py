"""The mock CRM server over real HTTP: paging, ordering, updatedAfter, clock, auth and faults."""

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


def contact(record_id: str, updated: dt.datetime, archived: bool = False, **props) -> dict:
    return {"id": record_id, "properties": {"email": f"c{record_id}@example.com", **props},
            "createdAt": iso(T0), "updatedAt": iso(updated), "archived": archived}


def session(token: str | None) -> requests.Session:
    s = requests.Session()
    if token is not None:
        s.headers["Authorization"] = f"Bearer {token}"
    return s


def get_all(srv, obj: str = "contacts", **params) -> tuple[list[dict], list[dict]]:
    """Follow the cursor to the end; returns (records, raw pages)."""
    s = session(srv.token)
    records, pages, after = [], [], None
    while True:
        query = dict(params, **({"after": after} if after else {}))
        resp = s.get(f"{srv.base_url}/crm/v3/objects/{obj}", params=query, timeout=10)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        pages.append(page)
        records.extend(page["results"])
        if "paging" not in page:
            return records, pages
        after = page["paging"]["next"]["after"]


def order_key(r: dict) -> tuple:
    return (r["updatedAt"], int(r["id"]))


@pytest.fixture
def store(crm_server, write_crm_versions):
    """24 contacts: three share one instant (ids 900/1000/10000 show numeric order); two versions of 1."""
    versions = [contact(str(i), T0 + dt.timedelta(hours=i)) for i in range(1, 21)]
    tie = T0 + dt.timedelta(hours=30)
    versions += [contact(i, tie) for i in ("10000", "1000", "900")]
    versions += [contact("1", T0 + dt.timedelta(hours=40), city="上海"),  # a newer version of 1
                 contact("21", T0 + dt.timedelta(hours=41), archived=True)]
    write_crm_versions(crm_server.data_dir, "contacts", versions)
    return versions


def test_pages_cover_every_latest_version_once_in_order(crm_server, store):
    records, pages = get_all(crm_server, limit=4)
    # id 1 twice in the file, served once: its newest version.
    assert len(records) == len({r["id"] for r in store}) == 24
    assert [r["id"] for r in records] == [r["id"] for r in sorted(records, key=order_key)]
    assert next(r for r in records if r["id"] == "1")["properties"]["city"] == "上海"
    # Numeric ids compare as numbers within one instant (a text sort would give 1000, 10000, 900).
    tied = [r["id"] for r in records if r["updatedAt"] == iso(T0 + dt.timedelta(hours=30))]
    assert tied == ["900", "1000", "10000"]
    assert all(len(p["results"]) == 4 for p in pages[:-1]) and len(pages) == 6
    assert "paging" not in pages[-1] and all("paging" in p for p in pages[:-1])
    assert records[-1]["archived"] is True


def test_limit_defaults_to_and_is_capped_at_100(crm_server, write_crm_versions):
    write_crm_versions(crm_server.data_dir, "tickets",
                       [contact(str(i), T0 + dt.timedelta(seconds=i)) for i in range(250)])
    s = session(crm_server.token)
    url = f"{crm_server.base_url}/crm/v3/objects/tickets"
    assert len(s.get(url).json()["results"]) == 100
    assert len(s.get(url, params={"limit": 500}).json()["results"]) == 100
    records, pages = get_all(crm_server, "tickets", limit=100)
    assert len(records) == 250 and [len(p["results"]) for p in pages] == [100, 100, 50]


def test_updated_after_is_inclusive_and_combines_with_the_cursor(crm_server, store):
    boundary = T0 + dt.timedelta(hours=30)  # the instant three records share
    records, _ = get_all(crm_server, limit=2, updatedAfter=iso(boundary))
    assert [r["id"] for r in records] == ["900", "1000", "10000", "1", "21"]
    # Same instant written with an offset instead of Z.
    same, _ = get_all(crm_server, limit=2, updatedAfter="2026-03-02T14:00:00+08:00")
    assert same == records
    # One microsecond later excludes the whole tie group.
    later, _ = get_all(crm_server, updatedAfter="2026-03-02T06:00:00.000001Z")
    assert [r["id"] for r in later] == ["1", "21"]


def test_cursor_is_a_stable_position_when_records_change(crm_server, store, write_crm_versions):
    s = session(crm_server.token)
    url = f"{crm_server.base_url}/crm/v3/objects/contacts"
    first = s.get(url, params={"limit": 5}).json()
    # Record 3 (on the first page) and 8 (not read yet) change after the first page was read.
    write_crm_versions(crm_server.data_dir, "contacts",
                       store + [contact("3", T0 + dt.timedelta(hours=50)),
                                contact("8", T0 + dt.timedelta(hours=51))])
    rest, _ = get_all(crm_server, limit=5, after=first["paging"]["next"]["after"])
    ids = [r["id"] for r in first["results"]] + [r["id"] for r in rest]
    # Nothing skipped, 8 only at its new position, 3 again at the end (a new version).
    assert ids[:5] == ["2", "3", "4", "5", "6"]
    assert ids.count("8") == 1 and ids[-2:] == ["3", "8"]
    assert set(ids) == {r["id"] for r in store}


def test_clock_serves_each_record_as_it_was(crm_server, store):
    crm_server.set_clock(iso(T0 + dt.timedelta(hours=10, minutes=30)))
    records, _ = get_all(crm_server)
    assert [r["id"] for r in records] == [str(i) for i in range(1, 11)]
    assert records[0]["updatedAt"] == iso(T0 + dt.timedelta(hours=1))  # the old version of 1
    crm_server.set_clock(None)
    records, _ = get_all(crm_server)
    assert len(records) == 24 and records[-2]["id"] == "1"
    assert crm_server.health()["clock"] is None


def test_bad_or_missing_token_is_401_everywhere(crm_server, store):
    url = f"{crm_server.base_url}/crm/v3/objects/contacts"
    for s in (session(None), session("wrong-token"), session(crm_server.token + "x")):
        resp = s.get(url)
        assert resp.status_code == 401
        assert resp.json()["category"] == "INVALID_AUTHENTICATION"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert crm_server.token not in resp.text
    assert session(None).post(f"{crm_server.base_url}/_mock/clock", json={"as_of": None}).status_code == 401
    assert session("nope").get(f"{crm_server.base_url}/_mock/stats").status_code == 401
    assert crm_server.stats()["by_status"] == {"401": 3}


def test_unknown_object_404_known_object_without_data_empty(crm_server, store):
    s = session(crm_server.token)
    resp = s.get(f"{crm_server.base_url}/crm/v3/objects/invoices")
    assert resp.status_code == 404 and resp.json()["status"] == "error"
    assert s.get(f"{crm_server.base_url}/crm/v3/objects/feedback_submissions").json() == {"results": []}


@pytest.mark.parametrize("query", [{"after": "not-a-cursor"}, {"updatedAfter": "yesterday"},
                                   {"limit": "0"}, {"limit": "ten"}])
def test_malformed_query_is_400(crm_server, store, query):
    resp = session(crm_server.token).get(f"{crm_server.base_url}/crm/v3/objects/contacts", params=query)
    assert resp.status_code == 400 and resp.json()["category"] == "VALIDATION_ERROR"


def test_scripted_faults_come_in_order(crm_server, store):
    crm_server.set_faults(scripted=["429", "500", "502", "503", "ok", "cut"], retry_after_seconds=7)
    s = session(crm_server.token)
    url = f"{crm_server.base_url}/crm/v3/objects/contacts"
    resp = s.get(url)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "7"
    assert [s.get(url).status_code for _ in range(4)] == [500, 502, 503, 200]
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        s.get(url)
    assert s.get(url).status_code == 200  # script used up, no random faults
    stats = crm_server.stats()
    assert stats["by_status"] == {"429": 1, "500": 1, "502": 1, "503": 1, "200": 3}
    assert stats["cut"] == 1


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
    assert {429, 200} <= set(first) and set(first) & {500, 502, 503}
    assert crm_server.stats()["requests"] == 60
    crm_server.reset_stats()
    assert crm_server.stats()["requests"] == 0


def test_fault_settings_are_validated(crm_server):
    s = session(crm_server.token)
    for bad in ({"rate_429": 2}, {"scripted": ["boom"]}, {"rate_blip": 0.1}):
        assert s.post(f"{crm_server.base_url}/_mock/faults", json=bad).status_code == 400
    with pytest.raises(ValueError):
        FaultConfig(rate_429=0.6, rate_5xx=0.6)


def test_reloads_when_the_file_changes(crm_server, store, write_crm_versions):
    assert len(get_all(crm_server)[0]) == 24
    write_crm_versions(crm_server.data_dir, "contacts", store[:3])
    assert [r["id"] for r in get_all(crm_server)[0]] == ["1", "2", "3"]


def test_stop_closes_the_port(tmp_path, write_crm_versions):
    write_crm_versions(tmp_path, "contacts", [contact("1", T0)])
    with start_server(tmp_path, token="t0ken-abcdef") as srv:
        s = session("t0ken-abcdef")
        assert s.get(f"{srv.base_url}/crm/v3/objects/contacts").status_code == 200
    with pytest.raises(requests.ConnectionError):
        s.get(f"{srv.base_url}/crm/v3/objects/contacts", timeout=2)


def test_loads_thousands_of_versions_quickly(tmp_path, write_crm_versions):
    versions = [contact(str(i % 6000), T0 + dt.timedelta(seconds=i)) for i in range(30000)]
    write_crm_versions(tmp_path, "contacts", versions)
    started = time.perf_counter()
    with start_server(tmp_path, token="t0ken-abcdef") as srv:
        records, pages = get_all(srv, limit=100)
    assert len(records) == 6000 and len(pages) == 60
    assert time.perf_counter() - started < 10  # measured ~1 s here; generous for a busy machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_crm_server_serves_until_stopped(tmp_path, write_crm_versions):
    write_crm_versions(tmp_path / "simulation" / "crm", "contacts", [contact("7", T0)])
    port = free_port()
    env = os.environ | {"C360_HOME": str(tmp_path), "C360_CRM_TOKEN": "cli-token-123456"}
    proc = subprocess.Popen([sys.executable, "-m", "customer360.cli", "crm-server", "--port", str(port),
                             "--rate-429", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
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
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0]
    assert f"127.0.0.1:{port}" in output and "cli-token-123456" not in output
