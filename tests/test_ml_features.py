"""The ml schema's point-in-time features (dbt_project/models/ml), built from synthetic marts.

The models are rendered and run by customer360.demo.ml_dbt_render (milliseconds, and independent of
the rest of the dbt project); the slow test at the end runs the same files through real dbt and
checks both give identical tables.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from customer360.demo.ml_dbt_render import build_ml_models
from customer360.ml.spec import load_specs, repo_root
from customer360.demo.ml_synthetic import SyntheticConfig, build_home, generate, write_warehouse

CFG = SyntheticConfig(people=300, days=200, seed=11)
LABEL_COLUMNS = ["label_known", "churn_label", "repurchase_30d_label"]


def _features(con) -> pd.DataFrame:
    return con.execute("select * from ml.ml_customer_features order by customer_id, snapshot_date").df()


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    build_home(tmp_path, CFG, ground_truth=False)
    return tmp_path / "warehouse" / "c360.duckdb"


def _snapshot(con, position: int) -> dt.date:
    dates = [r[0] for r in con.execute("select distinct snapshot_date from ml.ml_customer_features "
                                       "where not is_scoring_snapshot order by 1").fetchall()]
    return dates[position]


def _rebuild(con) -> None:
    build_ml_models(con, {"as_of_date": str(CFG.as_of)})


def test_training_features_do_not_move_when_later_data_changes(warehouse: Path):
    with duckdb.connect(str(warehouse)) as con:
        snapshot = _snapshot(con, 4)
        cutoff = f"timestamp '{snapshot + dt.timedelta(days=1)}'"
        before = _features(con)
        some = f"(select customer_id from ml.ml_customer_features where snapshot_date = date '{snapshot}' " \
               f"order by customer_id limit 60)"
        # Everything below happens at or after the cutoff of `snapshot`.
        con.execute(f"""insert into marts.fct_orders
            select 'LATE-' || customer_id, customer_id, 'store', 'S1', {cutoff} + interval 3 hour,
                   cast({cutoff} as date), 2, 500.0, 0, 120.0, 380.0, 'purchase' from {some}""")
        con.execute(f"""insert into marts.fct_orders
            select 'EDGE-' || customer_id, customer_id, 'web', null, {cutoff}, cast({cutoff} as date),
                   1, 50.0, 0, 0, 50.0, 'purchase' from {some}""")
        con.execute(f"""insert into marts.fct_orders values ('NEWCOMER', 'C9999999', 'web', null,
                    {cutoff} + interval 1 day, null, 1, 10.0, 0, 0, 10.0, 'purchase')""")
        con.execute(f"update marts.fct_tickets set closed_at = closed_at + interval 10 day where closed_at >= {cutoff}")
        con.execute(f"""insert into marts.fct_tickets
            select 'LATE-T-' || customer_id, customer_id, 'billing', 'high', 'open', {cutoff} + interval 1 day,
                   null, null from {some}""")
        con.execute(f"""insert into marts.fct_feedback
            select 'LATE-F-' || customer_id, customer_id, 'NPS', 0, 'detractor', {cutoff} + interval 2 hour
            from {some}""")
        con.execute(f"""insert into marts.dim_customer
            select customer_id, {cutoff} + interval 2 day, null, true, not marketing_consent, signup_channel,
                   crm_contact_ids
            from marts.dim_customer where valid_to is null and valid_from < {cutoff}""")
        con.execute(f"""update marts.dim_customer set valid_to = {cutoff} + interval 2 day, is_current = false
                        where valid_to is null and valid_from < {cutoff}""")
        con.execute(f"""insert into marts.fct_web_sessions
            select 'LATE-S-' || customer_id, customer_id, 'late-device-' || customer_id,
                   {cutoff} + interval 5 hour, {cutoff} + interval 6 hour, 3, 5, false from {some}""")
        con.execute(f"""insert into staging.stg_web__events
            select 'LATE-E-' || customer_id, 'track', 'Product Viewed', 'late-device-' || customer_id,
                   null, {cutoff} + interval 5 hour + interval 10 minute, 'SKU-00001' from {some}""")
        _rebuild(con)
        after = _features(con)

    key = ["customer_id", "snapshot_date"]
    old = before[pd.to_datetime(before.snapshot_date).dt.date <= snapshot].drop(columns=LABEL_COLUMNS)
    new = after[pd.to_datetime(after.snapshot_date).dt.date <= snapshot].drop(columns=LABEL_COLUMNS)
    pd.testing.assert_frame_equal(old.sort_values(key).reset_index(drop=True),
                                  new.sort_values(key).reset_index(drop=True), check_dtype=False)
    # the changes are real: the scoring snapshot and the labels of `snapshot` did move
    scoring_before = before[before.is_scoring_snapshot]
    scoring_after = after[after.is_scoring_snapshot]
    assert scoring_after.orders_lifetime.sum() == scoring_before.orders_lifetime.sum() + 2 * 60 + 1
    assert "C9999999" in set(scoring_after.customer_id)
    labels_before = before[pd.to_datetime(before.snapshot_date).dt.date == snapshot].churn_label
    labels_after = after[pd.to_datetime(after.snapshot_date).dt.date == snapshot].churn_label
    assert labels_after.sum() < labels_before.sum()


def test_cutoff_is_the_end_of_the_snapshot_day(warehouse: Path):
    """A fact one microsecond before the cutoff belongs to the snapshot; one at it does not."""
    with duckdb.connect(str(warehouse)) as con:
        snapshot = _snapshot(con, 4)
        cutoff = pd.Timestamp(snapshot + dt.timedelta(days=1))
        customer = con.execute(f"select min(customer_id) from ml.ml_customer_features "
                               f"where snapshot_date = date '{snapshot}' and orders_lifetime > 0").fetchone()[0]

        def orders_at_snapshot() -> int:
            return con.execute("select orders_lifetime from ml.ml_customer_features where customer_id = ? "
                               "and snapshot_date = ?", [customer, snapshot]).fetchone()[0]

        base = orders_at_snapshot()
        for order_id, at in (("AT-CUTOFF", cutoff), ("JUST-BEFORE", cutoff - pd.Timedelta(microseconds=1))):
            con.execute("insert into marts.fct_orders values (?, ?, 'web', null, ?, null, 1, 10.0, 0, 0, 10.0, 'purchase')",
                        [order_id, customer, at.to_pydatetime()])
            _rebuild(con)
            if order_id == "AT-CUTOFF":
                assert orders_at_snapshot() == base
        assert orders_at_snapshot() == base + 1


def test_a_customer_first_seen_after_the_scoring_date_is_scored_with_no_history(warehouse: Path):
    """A rerun of an earlier date sees customers that later data brought: customer_360 lists
    them, so the scoring snapshot holds them too, as known but without history; no labelled
    snapshot does."""
    with duckdb.connect(str(warehouse)) as con:
        later = pd.Timestamp(CFG.as_of + dt.timedelta(days=2))
        con.execute("insert into marts.fct_orders values ('LATER-1', 'C-LATER', 'web', null, ?, null, "
                    "1, 10.0, 0, 0, 10.0, 'purchase')", [later.to_pydatetime()])
        _rebuild(con)
        rows = con.execute("select snapshot_date, is_scoring_snapshot, tenure_days, orders_lifetime, "
                           "net_revenue_lifetime, recency_days from ml.ml_customer_features "
                           "where customer_id = 'C-LATER'").fetchall()
        assert rows == [(CFG.as_of, True, 0, 0, 0, None)]
        seen = con.execute("select count(*) from ml.ml_customer_features where is_scoring_snapshot "
                           "and tenure_days < 0").fetchone()[0]
        assert seen == 0


def test_a_return_at_the_till_is_not_an_order_but_counts_in_the_returns_share(warehouse: Path):
    with duckdb.connect(str(warehouse)) as con:
        customer, orders, gross = con.execute(
            "select customer_id, orders_lifetime, net_revenue_365d from ml.ml_customer_features "
            "where is_scoring_snapshot and orders_lifetime > 0 order by customer_id limit 1").fetchone()
        with_kind = _features(con)
        con.execute("alter table marts.fct_orders drop column order_kind")  # older marts: gross > 0
        _rebuild(con)
        pd.testing.assert_frame_equal(with_kind, _features(con))
        con.execute("alter table marts.fct_orders add column order_kind varchar default 'purchase'")
        con.execute("insert into marts.fct_orders values ('RET-1', ?, 'store', 'S1', ?, null, -1, 0, 0, 40.0, -40.0, "
                    "'return')", [customer, dt.datetime.combine(CFG.as_of, dt.time(12))])
        _rebuild(con)
        row = con.execute("select orders_lifetime, returns_share_365d, net_revenue_365d from ml.ml_customer_features "
                          "where customer_id = ? and is_scoring_snapshot", [customer]).fetchone()
    assert row[0] == orders and row[1] > 0 and row[2] == pytest.approx(gross - 40.0)


def test_ticket_open_at_the_cutoff_counts_as_open_whatever_its_status_now(warehouse: Path):
    with duckdb.connect(str(warehouse)) as con:
        snapshot = _snapshot(con, 4)
        cutoff = pd.Timestamp(snapshot + dt.timedelta(days=1))
        customer = con.execute(f"select min(customer_id) from ml.ml_customer_features "
                               f"where snapshot_date = date '{snapshot}'").fetchone()[0]
        con.execute("delete from marts.fct_tickets where customer_id = ?", [customer])
        con.execute("insert into marts.fct_tickets values ('T-X', ?, 'delivery', 'high', 'closed', ?, ?, 30.0)",
                    [customer, (cutoff - pd.Timedelta(hours=5)).to_pydatetime(),
                     (cutoff + pd.Timedelta(hours=25)).to_pydatetime()])
        _rebuild(con)
        row = con.execute("select open_tickets, tickets_90d, high_priority_tickets_365d, avg_resolution_hours_365d "
                          "from ml.ml_customer_features where customer_id = ? and snapshot_date = ?",
                          [customer, snapshot]).fetchone()
        assert row == (1, 1, 1, None)
        later = con.execute("select open_tickets, avg_resolution_hours_365d from ml.ml_customer_features "
                            "where customer_id = ? and is_scoring_snapshot", [customer]).fetchone()
        assert later == (0, 30.0)


def test_consent_is_the_version_valid_at_the_cutoff(warehouse: Path):
    with duckdb.connect(str(warehouse)) as con:
        snapshot = _snapshot(con, 6)
        cutoff = pd.Timestamp(snapshot + dt.timedelta(days=1))
        customer = con.execute(f"select min(customer_id) from ml.ml_customer_features "
                               f"where snapshot_date = date '{snapshot}'").fetchone()[0]
        con.execute("delete from marts.dim_customer where customer_id = ?", [customer])
        con.execute("insert into marts.dim_customer values (?, ?, ?, false, true, 'web', ['1']), "
                    "(?, ?, null, true, false, 'web', ['1'])",
                    [customer, (cutoff - pd.Timedelta(days=30)).to_pydatetime(), cutoff.to_pydatetime(),
                     customer, cutoff.to_pydatetime()])
        _rebuild(con)
        consent = dict(con.execute("select snapshot_date, marketing_consent from ml.ml_customer_features "
                                   "where customer_id = ?", [customer]).fetchall())
    assert consent[snapshot] == 1          # the opt-out happened at the cutoff, so after it
    assert consent[CFG.as_of] == 0


def test_spine_labels_only_fully_observed_snapshots(warehouse: Path):
    with duckdb.connect(str(warehouse)) as con:
        rows = con.execute("""select snapshot_date, bool_or(is_scoring_snapshot), bool_and(label_known),
                                     count(churn_label) from ml.ml_customer_features group by 1 order by 1""").fetchall()
    scoring = [r for r in rows if r[1]]
    assert [r[0] for r in scoring] == [CFG.as_of]
    labelled = [r for r in rows if not r[1]]
    assert labelled and all(r[2] and r[3] > 0 for r in labelled)
    assert all(r[0] + dt.timedelta(days=90) <= CFG.as_of for r in labelled)
    assert max(r[0] for r in labelled) == CFG.as_of - dt.timedelta(days=90)
    steps = {(b[0] - a[0]).days for a, b in zip(labelled, labelled[1:])}
    assert steps == {7}


def test_scoring_only_build_gives_the_same_scoring_rows(warehouse: Path, monkeypatch):
    """A day no model trains builds the scoring snapshot alone: its rows must equal the scoring
    rows of the full build, or scores would depend on the training cadence."""
    with duckdb.connect(str(warehouse)) as con:
        full = _features(con)
        monkeypatch.setenv("C360_ML_SCORING_ONLY", "1")
        _rebuild(con)
        scoring_only = _features(con)
    expected = full[full.is_scoring_snapshot].reset_index(drop=True)
    assert len(full) > 3 * len(expected) > 0  # the full build has labelled snapshots too
    assert scoring_only.is_scoring_snapshot.all()
    pd.testing.assert_frame_equal(scoring_only, expected)


def test_short_history_gives_only_the_scoring_snapshot(tmp_path: Path):
    cfg = SyntheticConfig(people=120, days=70, seed=3)
    build_home(tmp_path, cfg, ground_truth=False)
    with duckdb.connect(str(tmp_path / "warehouse" / "c360.duckdb")) as con:
        rows = con.execute("select distinct snapshot_date, is_scoring_snapshot from ml.ml_customer_features").fetchall()
    assert rows == [(cfg.as_of, True)]


def test_product_views_fall_back_to_the_properties_json(tmp_path: Path):
    """If staging has no sku column, the sku comes from the event's properties JSON text."""
    path = tmp_path / "c360.duckdb"
    write_warehouse(generate(SyntheticConfig(people=60, days=40, seed=5)), path)
    with duckdb.connect(str(path)) as con:
        expected = con.execute("select count(*) from staging.stg_web__events where sku is not null").fetchone()[0]
        con.execute("""create or replace table staging.stg_web__events as
                       select message_id, event_type, event_name, anonymous_id, user_id, event_at,
                              case when sku is not null then '{"sku": "' || sku || '", "price": 1}' end as properties
                       from staging.stg_web__events""")
        build_ml_models(con)
        got = con.execute("select count(*), count(distinct sku), count(customer_id) from ml.ml_product_views").fetchone()
    assert got[0] == expected and got[1] > 10 and got[2] > 0


def test_every_spec_input_is_a_feature_column(warehouse: Path):
    specs = load_specs(repo_root() / "models")
    with duckdb.connect(str(warehouse)) as con:
        columns = {c[0] for c in con.execute("describe ml.ml_customer_features").fetchall()}
    assert set(specs["churn_classifier"].features) <= columns
    assert {f["column"] for f in specs["behavioural_segments"].raw["features"]} <= columns
    assert specs["churn_classifier"].section("target")["column"] in columns


@pytest.mark.slow
def test_real_dbt_builds_the_same_tables(tmp_path: Path):
    """`dbt build --select ml` on a stub project (the ml models plus stand-ins for their
    upstream models, which are never built: --select ml only resolves them to the fixture
    tables) passes the yml tests and yields exactly what the renderer yields."""
    project = tmp_path / "project"
    (project / "models" / "stubs").mkdir(parents=True)
    (project / "macros").mkdir()
    ml_dir = repo_root() / "dbt_project" / "models" / "ml"
    (project / "models" / "ml").mkdir()
    for f in ml_dir.iterdir():
        (project / "models" / "ml" / f.name).write_text(f.read_text())
    (project / "macros" / "generate_schema_name.sql").write_text(
        (repo_root() / "dbt_project" / "macros" / "generate_schema_name.sql").read_text())
    for name in ("fct_orders", "fct_order_lines", "fct_web_sessions", "fct_tickets", "fct_feedback", "dim_customer"):
        (project / "models" / "stubs" / f"{name}.sql").write_text("{{ config(schema='marts') }} select 1 as stub")
    for name in ("stg_web__events", "stg_pos__products"):
        (project / "models" / "stubs" / f"{name}.sql").write_text("{{ config(schema='staging') }} select 1 as stub")
    for name in ("web_orders.sql", "engine.sql", "normalize.sql"):
        (project / "macros" / name).write_text(
            (repo_root() / "dbt_project" / "macros" / name).read_text())
    (project / "dbt_project.yml").write_text(
        "name: ml_check\nversion: '1.0.0'\nconfig-version: 2\nprofile: ml_check\n")
    (project / "profiles.yml").write_text(
        "ml_check:\n  target: t\n  outputs:\n    t:\n      type: duckdb\n"
        "      path: \"{{ env_var('ML_CHECK_DB') }}\"\n      schema: main\n      threads: 1\n"
        "      settings: {TimeZone: UTC}\n")
    db = tmp_path / "c360.duckdb"
    write_warehouse(generate(CFG), db)
    dbt = Path(sys.executable).with_name("dbt")
    proc = subprocess.run(
        [str(dbt), "build", "--select", "ml", "--vars", f"{{as_of_date: '{CFG.as_of}'}}",
         "--project-dir", str(project), "--profiles-dir", str(project),
         "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs")],
        env={**os.environ, "ML_CHECK_DB": str(db), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "PASS=13" in proc.stdout  # 2 models + 11 data tests (repurchase_30d_label among them)
    with duckdb.connect(str(db)) as con:
        by_dbt = _features(con)
        views_by_dbt = con.execute("select * from ml.ml_product_views order by message_id").df()
        build_ml_models(con, {"as_of_date": str(CFG.as_of)})
        pd.testing.assert_frame_equal(by_dbt, _features(con))
        pd.testing.assert_frame_equal(
            views_by_dbt, con.execute("select * from ml.ml_product_views order by message_id").df())
