"""Behavioural segments: readable names, k in range, and ids that survive a re-run on data a
week newer (warm start + Hungarian matching of centres)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from customer360.ml import segments
from customer360.ml.spec import load_specs, repo_root
from customer360.demo.ml_synthetic import SyntheticConfig, build_home, generate

CFG = SyntheticConfig(people=600, days=247, seed=21)
FIRST_RUN = CFG.as_of - dt.timedelta(days=7)


def _population(home: Path) -> pd.DataFrame:
    with duckdb.connect(str(home / "warehouse" / "c360.duckdb"), read_only=True) as con:
        return con.execute("select * from ml.ml_customer_features where is_scoring_snapshot "
                           "order by customer_id").df()


@pytest.fixture(scope="module")
def populations(tmp_path_factory):
    """The same people seen on two dates a week apart (the second has a week more data)."""
    data = generate(CFG)
    week_ago, today = tmp_path_factory.mktemp("seg_a"), tmp_path_factory.mktemp("seg_b")
    build_home(week_ago, CFG, last_day=FIRST_RUN, ground_truth=False, data=data)
    build_home(today, CFG, ground_truth=False, data=data)
    return _population(week_ago), _population(today)


@pytest.fixture(scope="module")
def spec():
    return load_specs(repo_root() / "models")["behavioural_segments"]


@pytest.fixture(autouse=True)
def one_thread():
    with threadpool_limits(limits=1):
        yield


def _assignments(model, frame, spec) -> pd.Series:
    ids, _ = model.assign(segments.transform(frame, spec))
    return pd.Series(ids, index=frame.customer_id.to_numpy())


def test_names_are_readable_unique_and_k_in_range(populations, spec):
    _, today = populations
    model, metrics = segments.fit(today, spec)
    k_lo, k_hi = spec.section("algorithm")["k_range"]
    assert k_lo <= metrics["k"] <= k_hi
    assert metrics["silhouette"] >= spec.promotion["thresholds"]["silhouette"]["min"]
    names = model.segment_names
    assert len(set(names)) == len(names) == metrics["k"]
    assert all(n and n == n.strip() and not n[0].isdigit() for n in names)
    # the synthetic population has people who browse a lot and rarely buy: they get that name
    assert any("web browsers who rarely buy" in n for n in names)
    assert sorted(model.segment_ids) == list(range(1, metrics["k"] + 1))
    assert sum(metrics["segment_sizes"].values()) == len(today)


def test_segment_ids_and_names_are_stable_across_two_runs(populations, spec):
    week_ago, today = populations
    first, _ = segments.fit(week_ago, spec)
    second, metrics = segments.fit(today, spec, previous=first)
    assert metrics["k"] == len(first.segment_ids) and metrics["matched_to_previous"] == metrics["k"]
    assert dict(zip(second.segment_ids, second.segment_names)) == dict(zip(first.segment_ids, first.segment_names))
    before, after = _assignments(first, week_ago, spec), _assignments(second, today, spec)
    common = before.index.intersection(after.index)
    assert len(common) > 0.9 * len(before)
    agreement = float((before[common] == after[common]).mean())
    assert agreement >= 0.9, agreement


def test_hungarian_matching_carries_ids_to_the_closest_new_clusters(populations, spec):
    """With a different k there is no warm start: ids must follow the centres."""
    week_ago, today = populations
    four = spec.with_overrides(algorithm={"k_range": [4, 4]})
    five = spec.with_overrides(algorithm={"k_range": [5, 5]}, stability={"match_max_distance": 10.0})
    first, _ = segments.fit(week_ago, four)
    # ids that are not 1..k and not in centre order, so only matching can reproduce them
    first = dataclasses.replace(first, segment_ids=[40, 10, 30, 20])
    second, metrics = segments.fit(today, five, previous=first)
    assert metrics["matched_to_previous"] == 4
    assert sorted(second.segment_ids) == [10, 20, 30, 40, 41]  # the new cluster gets a new id
    before, after = _assignments(first, week_ago, four), _assignments(second, today, five)
    common = before.index.intersection(after.index)
    for segment_id in (10, 20, 30, 40):  # most members of an inherited segment stay in it
        members = common[(after[common] == segment_id).to_numpy()]
        if len(members) >= 20:
            assert (before[members] == segment_id).mean() >= 0.6


def test_far_clusters_are_not_matched(populations, spec):
    week_ago, today = populations
    first, _ = segments.fit(week_ago, spec)
    strict = spec.with_overrides(stability={"match_max_distance": 0.0})
    moved = dataclasses.replace(first, centres=first.centres + 5.0)  # every centre far away
    second, metrics = segments.fit(today, strict, previous=moved)
    assert metrics["matched_to_previous"] == 0
    assert min(second.segment_ids) > max(first.segment_ids)


def test_make_unique_contrasts_clusters_with_the_same_name():
    centres = np.array([[0.0, 2.0], [0.0, -2.0], [1.0, 0.0]])
    names = segments.make_unique(["mid-value web shoppers", "mid-value web shoppers", "lapsed buyers"],
                                 centres, ["monetary_365d", "web_sessions_90d"], fixed={"lapsed buyers"})
    assert names == ["mid-value web shoppers, heavier browsers", "mid-value web shoppers, lighter browsers",
                     "lapsed buyers (2)"]
