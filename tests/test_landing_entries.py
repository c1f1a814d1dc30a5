"""Landing entries that are not plain files are refused before anything reads them, and text
from the sources reaches the terminal as text, never as rich markup."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from typer.testing import CliRunner

from customer360.cli import app
from customer360.core.settings import get_settings
from customer360.ingest.landing.layout import scan_landing
from customer360.ingest.web import load_web
from tests.landing_fixtures import event, web_part_path, write_reference, write_web_part

DAY = dt.date(2026, 3, 10)


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("C360_LANDING", raising=False)
    return get_settings()


def _errors(scan) -> dict[str, str]:
    return {p.file: p.reason for p in scan.problems if p.severity == "error"}


def test_a_symlinked_part_file_is_refused_and_never_read(settings, tmp_path):
    outside = tmp_path / "secret.jsonl.gz"
    write_web_part(tmp_path / "elsewhere", DAY, 0, [event("m1", DAY)]).rename(outside)
    write_web_part(settings.landing, DAY, 0, [event("m2", DAY)])
    link = web_part_path(settings.landing, DAY, 1)
    link.symlink_to(outside)

    scan = scan_landing(settings.landing)
    rel = f"web/events/date={DAY.isoformat()}/part-0001.jsonl.gz"
    assert "symbolic link: refused" in _errors(scan)[rel]
    assert [f.rel for f in scan.web] == [f"web/events/date={DAY.isoformat()}/part-0000.jsonl.gz"]

    recs = load_web(settings, DAY)
    assert sum(r.read for r in recs) == 1  # m2 only


def test_a_symlinked_date_folder_and_a_fifo_are_refused(settings, tmp_path):
    real = tmp_path / "real-day"
    write_web_part(real, DAY, 0, [event("m1", DAY)])
    (settings.landing / "web" / "events").mkdir(parents=True)
    (settings.landing / "web" / "events" / "date=2026-03-11").symlink_to(
        real / "web" / "events" / f"date={DAY.isoformat()}")
    write_web_part(settings.landing, DAY, 0, [event("m2", DAY)])
    fifo = web_part_path(settings.landing, DAY, 7)
    os.mkfifo(fifo)  # reading it would block forever
    write_reference(settings.landing)
    stores = settings.landing / "pos" / "reference" / "stores.csv"
    stores.rename(tmp_path / "stores.csv")
    stores.symlink_to(tmp_path / "stores.csv")

    errors = _errors(scan_landing(settings.landing))
    assert "symbolic link: refused" in errors["web/events/date=2026-03-11"]
    assert "FIFO, socket or device" in errors[f"web/events/date={DAY.isoformat()}/part-0007.jsonl.gz"]
    assert "symbolic link: refused" in errors["pos/reference/stores.csv"]
    assert sum(r.read for r in load_web(settings, DAY)) == 1


def test_validate_landing_prints_source_text_literally(settings):
    # A type field that is rich markup; a closing tag alone makes rich raise on markup.
    write_web_part(settings.landing, DAY, 0, [event("m1", DAY, type="[/bold][red]x")])

    result = CliRunner().invoke(app, ["validate-landing"])

    assert result.exit_code == 1, result.output
    assert "[/bold][red]x" in result.output.replace("\n", "")
