"""A logical date in the future is refused everywhere a run can be started, before anything
is read or remembered: the CLI, every stage (what Airflow tasks call) and the extracts."""

from __future__ import annotations

import datetime as dt

import pytest
from typer.testing import CliRunner

from customer360.cli import app
from customer360.core.logical_date import FutureDateError, check_logical_date, latest_allowed
from customer360.core.settings import get_settings
from customer360.ingest.extract import run_extract
from customer360.pipeline.stages import STAGE_NAMES, run_stage

NOW = dt.datetime(2026, 12, 7, 11, 0, tzinfo=dt.timezone.utc)


def test_today_in_the_easternmost_zone_is_the_latest_day_allowed():
    assert latest_allowed(NOW) == dt.date(2026, 12, 8)  # 01:00 on the 8th at UTC+14
    assert latest_allowed(NOW.replace(hour=9)) == dt.date(2026, 12, 7)
    assert check_logical_date(dt.date(2026, 12, 8), NOW) == dt.date(2026, 12, 8)
    with pytest.raises(FutureDateError, match="2026-12-09 is in the future"):
        check_logical_date(dt.date(2026, 12, 9), NOW)


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
    return get_settings()


FUTURE = dt.date.today() + dt.timedelta(days=400)


@pytest.mark.parametrize("source", ["crm", "web", "pos"])
def test_extracts_refuse_a_future_date_and_remember_nothing(settings, source):
    with pytest.raises(FutureDateError):
        run_extract(source, settings, FUTURE)
    assert not (settings.home / "lake").exists()


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_every_stage_refuses_a_future_date(settings, name):
    with pytest.raises(FutureDateError):
        run_stage(name, FUTURE, "future", settings)


@pytest.mark.parametrize("args", [["extract", "crm"], ["run"], ["stage", "extract_web"]])
def test_the_cli_refuses_a_future_date_with_a_clear_message(settings, args):
    result = CliRunner().invoke(app, [*args, "--date", "2099-12-31"])
    assert result.exit_code == 2
    assert "2099-12-31 is in the future" in result.output


def test_backfill_refuses_a_range_ending_in_the_future(settings):
    result = CliRunner().invoke(app, ["backfill", "--start", "2026-01-01", "--end", "2099-12-31"])
    assert result.exit_code == 2 and "is in the future" in result.output
