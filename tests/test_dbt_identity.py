"""Identity resolution: known links and non-links, stable customer ids, the cluster-size
guard, and pairwise scores against the fixture's ground truth."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from tests import warehouse_fixtures as wf
from customer360.demo.identity_eval import pairwise_from_labels, pairwise_scores
from customer360.core.settings import Settings
from customer360.warehouse.dbt_runner import build_warehouse, read_run_results, run_dbt
from customer360.warehouse.identity_clusters import cluster_keys, keyed_id_maker

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Built:
    settings: Settings
    db1: Path
    db2: Path
    scores1: dict
    scores2: dict


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    home = tmp_path_factory.mktemp("c360_identity")
    with pytest.MonkeyPatch.context() as mp:
        settings = wf.use_home(mp, home)
        wf.write_ground_truth(settings)
        wf.land_first_load(settings)
        build_warehouse(settings, logical_date=wf.LOAD_1, tests=False)
        scores1 = pairwise_scores(settings)
        db1 = wf.copy_warehouse(settings, home / "after_load_1.duckdb")
        wf.land_second_load(settings)
        build_warehouse(settings, logical_date=wf.LOAD_2, tests=False)
        yield Built(settings, db1, settings.warehouse_path, scores1, pairwise_scores(settings))


def ids_by_key(db: Path) -> dict[str, str]:
    return dict(wf.query(db, "select identity_key, customer_id from intermediate.int_identity__clusters"))


def record_customer(db: Path, record_type: str, record_id: str) -> str | None:
    rows = wf.query(db, "select customer_id from intermediate.int_identity__record_customers "
                        "where record_type = ? and record_id = ?", [record_type, record_id])
    return rows[0][0] if rows else None


def test_known_links_join_one_person(built):
    ids = ids_by_key(built.db2)
    ann = ids["contact:1001"]
    assert ids["contact:1002"] == ann  # duplicate contact: same email in another case
    assert ids["loyalty:LY00012345"] == ann  # "LY0001-2345" in the CRM, " ly 0001 2345 " typed
    assert ids["phone:+8613800138000"] == ann
    assert ids["anon:anon-ann"] == ann  # logged in as 1001
    assert record_customer(built.db2, "pos_transaction", "T-1002") == ann  # phone sans +86
    assert record_customer(built.db2, "web_order", "W-5001") == ann
    carol = ids["contact:1004"]
    assert ids["anon:anon-carol"] == carol  # identify with her email, never logged in
    assert record_customer(built.db2, "web_order", "W-5002") == carol
    bob = ids["contact:1003"]
    assert record_customer(built.db2, "pos_transaction", "T-2001") == bob  # "212-555-0101"
    assert record_customer(built.db2, "pos_transaction", "T-2002") == bob  # " BOB@example.com"


def test_non_links_stay_apart(built):
    ids = ids_by_key(built.db2)
    people = {ids[f"contact:{c}"] for c in ("1001", "1003", "1004", "1005", "1007", "1008")}
    assert len(people) == 6
    # the household computer both ann and bob log in on links neither of them
    assert "anon:anon-family" not in ids
    assert wf.query(built.db2, "select reason, contact_count from intermediate.int_identity__ambiguous_keys "
                               "where identity_key = 'anon:anon-family'") == [("shared_device", 2)]
    sessions = dict(wf.query(built.db2, "select user_id, customer_id from marts.fct_web_sessions "
                                        "where anonymous_id = 'anon-family'"))
    assert sessions == {"1001": ids["contact:1001"], "1003": ids["contact:1003"], None: None}
    for record_type, record_id in (("pos_transaction", "T-3001"), ("pos_transaction", "T-1003"),
                                   ("web_order", "W-5003")):
        assert record_customer(built.db2, record_type, record_id) is None
    assert wf.scalar(built.db2, "select count(*) from intermediate.int_identity__clusters "
                                "where customer_id = ?", [ids["contact:1005"]]) == 3  # dan alone


def test_customer_ids_survive_new_data(built):
    before, after = ids_by_key(built.db1), ids_by_key(built.db2)
    for contact in ("1001", "1003", "1004", "1005"):
        assert after[f"contact:{contact}"] == before[f"contact:{contact}"]
    # eve was a phone seen at the till; her new contact is a smaller key, her id stays
    assert after["contact:1007"] == before["phone:+8613912345678"]
    # frank's contact and his loyalty card merge: the bigger cluster's id survives
    assert after["loyalty:LYF77"] == after["contact:1008"] == before["contact:1008"]
    assert before["loyalty:LYF77"] != before["contact:1008"]
    assert before["loyalty:LYF77"] not in set(after.values())
    # the erased contact's keys are gone, and so is its customer
    assert "contact:1006" not in after and before["contact:1006"] not in set(after.values())


def test_new_ids_are_keyed_hashes_of_the_smallest_key(built):
    ids = ids_by_key(built.db1)
    expected = "c_" + hmac.new(wf.PII_KEY.encode(), b"contact:1005", hashlib.sha256).hexdigest()[:16]
    assert ids["contact:1005"] == expected  # dan: contact:1005 < email:... < phone:...


def test_clusters_equal_the_pandas_reference_on_both_loads(built):
    """The SQL model and customer360.warehouse.identity_clusters agree on the fixture's
    graph: load 1 from nothing, load 2 remembering load 1 (a merge, an erasure, a new
    contact on a till-only customer)."""
    def graph(db: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
        with duckdb.connect(str(db), read_only=True) as con:
            return (con.execute("select identity_key, key_type from intermediate.int_identity__nodes").df(),
                    con.execute("select left_key, right_key from intermediate.int_identity__edges").df())

    def clusters(db: Path) -> pd.DataFrame:
        with duckdb.connect(str(db), read_only=True) as con:
            return con.execute("select identity_key, key_type, customer_id, cluster_size "
                               "from intermediate.int_identity__clusters order by identity_key").df()

    new_id = keyed_id_maker(wf.PII_KEY.encode())
    nothing = pd.DataFrame({"identity_key": pd.Series(dtype="str"), "previous_id": pd.Series(dtype="str")})
    first = clusters(built.db1)
    pd.testing.assert_frame_equal(first, cluster_keys(*graph(built.db1), nothing, new_id),
                                  check_dtype=False)
    remembered = first.rename(columns={"customer_id": "previous_id"})[["identity_key", "previous_id"]]
    second = cluster_keys(*graph(built.db2), remembered, new_id)
    pd.testing.assert_frame_equal(clusters(built.db2), second, check_dtype=False)
    assert set(first["customer_id"]) - set(second["customer_id"])  # the merge retired an id


def test_a_too_large_cluster_fails_the_build(built):
    outcome = run_dbt(built.settings, ["test", "--select", "int_identity__clusters",
                                       "--vars", json.dumps({"identity_max_cluster_keys": 5})])
    assert not outcome.success
    failed = {n.name: n.failures for n in read_run_results(built.settings).failed}
    assert len(failed) == 1
    name, failing_customers = failed.popitem()
    assert name.startswith("max_group_size_int_identity__clusters_customer_id")
    assert failing_customers == 1  # ann's 6 keys; everyone else has at most 5


def test_pairwise_scores_against_the_ground_truth(built):
    # load 1: frank's contact and card are not linked yet - one true pair missed, none wrong
    assert built.scores1["precision"] == 1.0
    assert built.scores1["correct_pairs"] == built.scores1["true_pairs"] - 1
    # load 2: every true pair the contract's keys allow is found, and nothing else
    s = built.scores2
    assert (s["precision"], s["recall"], s["recall_reachable"]) == (1.0, 1.0, 1.0)
    # ann and bob 5 records each (10 pairs each), eve and frank 3 (3 each), carol 2 (1)
    assert s["true_pairs"] == 10 + 10 + 3 + 3 + 1
    # walk-ins and the anonymous order are scored only in "all", each alone
    assert s["all"]["records"] == s["records"] + 3


def test_pairwise_counts_match_enumerating_every_pair():
    rng = random.Random(7)
    truth = pd.Series([rng.randrange(12) for _ in range(80)])
    predicted = pd.Series([rng.choice([None, *range(15)]) for _ in range(80)])
    scores = pairwise_from_labels(truth, predicted)
    true_pairs = predicted_pairs = correct = 0
    for i, j in itertools.combinations(range(80), 2):
        same_truth = truth[i] == truth[j]
        same_pred = predicted[i] is not None and predicted[i] == predicted[j]
        true_pairs += same_truth
        predicted_pairs += same_pred
        correct += same_truth and same_pred
    assert (scores["true_pairs"], scores["predicted_pairs"], scores["correct_pairs"]) == (
        true_pairs, predicted_pairs, correct)
    assert scores["precision"] == pytest.approx(correct / predicted_pairs)
    assert scores["recall"] == pytest.approx(correct / true_pairs)


def test_benchmark_prints_the_scores(built):
    env = {"PATH": "/usr/bin:/bin", "C360_HOME": str(built.settings.home),
           "C360_PII_KEY": wf.PII_KEY, "HOME": str(built.settings.home)}
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_identity.py")],
                         env=env, capture_output=True, text=True, timeout=120, check=True)
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert last["precision"] == 1.0 and last["recall"] == 1.0
    assert "precision" in out.stdout and wf.PII_KEY not in out.stdout + out.stderr
