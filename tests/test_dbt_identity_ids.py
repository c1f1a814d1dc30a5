"""The customer-id rules of customer360.warehouse.identity_clusters on tiny hand-made graphs (no dbt)."""

from __future__ import annotations

import hashlib
import hmac

import pandas as pd

from customer360.warehouse.identity_clusters import assign_ids, component_labels, keyed_id_maker

KEY = b"test-pii-key-0123456789abcdef"


def clusters(edges: list[tuple[str, str]], singles: tuple[str, ...] = (),
             previous: dict[str, str] | None = None, new_id=None) -> dict[str, str]:
    keys = sorted({k for e in edges for k in e} | set(singles))
    frame = pd.DataFrame({"identity_key": keys})
    left = pd.Series([a for a, _ in edges], dtype="str")
    right = pd.Series([b for _, b in edges], dtype="str")
    frame["component"] = component_labels(frame["identity_key"], left, right)
    prev = pd.DataFrame({"identity_key": list((previous or {}).keys()),
                         "previous_id": list((previous or {}).values())}, dtype="str")
    out = assign_ids(frame, prev, new_id or keyed_id_maker(KEY))
    return dict(zip(out["identity_key"], out["customer_id"]))


def expected_id(min_key: str) -> str:
    return "c_" + hmac.new(KEY, min_key.encode(), hashlib.sha256).hexdigest()[:16]


def test_new_components_get_keyed_hashes_of_their_smallest_key():
    ids = clusters([("contact:1", "email:a@x.com"), ("email:a@x.com", "phone:+1")],
                   singles=("contact:2",))
    assert ids == {"contact:1": expected_id("contact:1"), "email:a@x.com": expected_id("contact:1"),
                   "phone:+1": expected_id("contact:1"), "contact:2": expected_id("contact:2")}


def test_a_component_keeps_its_id_when_a_smaller_key_joins():
    ids = clusters([("contact:0", "phone:+1")], previous={"phone:+1": "c_old"})
    assert ids == {"contact:0": "c_old", "phone:+1": "c_old"}


def test_a_merge_keeps_the_id_most_keys_had_and_retires_the_other():
    previous = {"contact:1": "c_big", "email:a": "c_big", "loyalty:L": "c_small"}
    ids = clusters([("contact:1", "email:a"), ("email:a", "loyalty:L")], previous=previous)
    assert set(ids.values()) == {"c_big"}


def test_a_merge_of_equal_sizes_keeps_the_smallest_id():
    previous = {"contact:1": "c_b", "loyalty:L": "c_a"}
    assert set(clusters([("contact:1", "loyalty:L")], previous=previous).values()) == {"c_a"}


def test_a_split_leaves_the_id_with_the_larger_part_and_a_new_one_elsewhere():
    # the old cluster {contact:1, email:a, contact:2} loses the link to contact:2
    previous = {"contact:1": "c_old", "email:a": "c_old", "contact:2": "c_old"}
    ids = clusters([("contact:1", "email:a")], singles=("contact:2",), previous=previous)
    assert ids["contact:1"] == ids["email:a"] == "c_old"
    assert ids["contact:2"] == expected_id("contact:2")


def test_a_new_id_never_reuses_an_existing_or_retired_id():
    def colliding(min_key: str, taken: set) -> str:  # always proposes a taken id first
        for candidate in ("c_old", "c_retired", f"c_{min_key}"):
            if candidate not in taken:
                taken.add(candidate)
                return candidate
        raise AssertionError("no free id")

    previous = {"contact:1": "c_old", "contact:9": "c_retired"}
    ids = clusters([("contact:1", "email:a")], singles=("contact:2",), previous=previous,
                   new_id=colliding)
    assert ids["contact:1"] == "c_old"
    assert ids["contact:2"] == "c_contact:2"


def test_hash_collisions_are_salted():
    maker = keyed_id_maker(KEY)
    first = expected_id("contact:1")
    assert maker("contact:1", {first}) != first
    assert maker("contact:1", {first}).startswith("c_")
