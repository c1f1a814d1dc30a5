"""Recommendations: item-item affinity beats the most-popular list on held-out weeks, never
re-recommends a just-bought product unless people rebuy it, and falls back to popularity."""

from __future__ import annotations

import datetime as dt

import duckdb
import pandas as pd
import pytest

from customer360.ml import recommend
from customer360.ml.spec import load_specs, repo_root
from customer360.demo.ml_synthetic import SyntheticConfig, build_home

CFG = SyntheticConfig(people=600, days=240, seed=31)
END = CFG.as_of + dt.timedelta(days=1)


@pytest.fixture(scope="module")
def spec():
    return load_specs(repo_root() / "models")["item_item_recommender"]


@pytest.fixture(scope="module")
def interactions(tmp_path_factory, spec):
    home = tmp_path_factory.mktemp("recs")
    build_home(home, CFG, ground_truth=False)
    with duckdb.connect(str(home / "warehouse" / "c360.duckdb"), read_only=True) as con:
        start = END - dt.timedelta(days=400)
        return recommend.load_purchases(con, start, END), recommend.load_views(con, start, END)


def test_affinity_beats_the_popularity_baseline_on_held_out_weeks(interactions, spec):
    purchases, views = interactions
    metrics = recommend.evaluate(purchases, views, spec, CFG.as_of)
    assert metrics["eval_customers"] >= 50
    assert metrics["holdout_start"] == END - dt.timedelta(days=spec.section("windows")["holdout_days"])
    assert metrics["hit_rate_at_k"] > metrics["popularity_hit_rate_at_k"]
    assert metrics["lift_over_popularity"] >= 1.2
    assert metrics["catalog_coverage"] > 0.2  # not the same five products for everyone


def test_evaluation_only_learns_from_before_the_holdout(interactions, spec):
    purchases, views = interactions
    cutoff = END - dt.timedelta(days=spec.section("windows")["holdout_days"])
    full = recommend.fit(purchases, views, spec, cutoff)
    # removing everything after the cutoff changes nothing the model knows
    trimmed = recommend.fit(purchases[purchases["at"] < pd.Timestamp(cutoff)],
                            views[views["at"] < pd.Timestamp(cutoff)], spec, cutoff)
    assert list(full.skus) == list(trimmed.skus)
    assert (full.similarity != trimmed.similarity).nnz == 0


def test_just_bought_products_are_excluded_unless_people_rebuy_them(interactions, spec):
    purchases, views = interactions
    model = recommend.fit(purchases, views, spec, END)
    repeat = set(model.skus[model.repeat])
    assert repeat and len(repeat) < len(model.skus)  # consumables rebuy; most products do not
    customers = sorted(purchases.customer_id.unique())
    recs = recommend.recommend(model, purchases, views, customers, spec, END)
    assert recs.groupby("customer_id").size().eq(5).all()
    assert all(list(r) == [1, 2, 3, 4, 5] for _, r in recs.groupby("customer_id")["rank"])
    recent = purchases[purchases["at"] >= pd.Timestamp(END - dt.timedelta(
        days=spec.section("windows")["exclude_recent_days"]))][["customer_id", "sku"]].drop_duplicates()
    again = recs.merge(recent, on=["customer_id", "sku"])
    assert not again.empty                    # repeat products do come back...
    assert set(again.sku) <= repeat           # ...and only those


def test_customers_without_history_get_the_most_popular_products(interactions, spec):
    purchases, views = interactions
    model = recommend.fit(purchases, views, spec, END)
    recs = recommend.recommend(model, purchases, views, ["NOBODY-1", "NOBODY-2"], spec, END)
    top = list(model.skus[(-model.popularity).argsort(kind="stable")[:5]])
    for _, group in recs.groupby("customer_id"):
        assert list(group.sort_values("rank").sku) == top
        assert (group.source == "popular").all()
