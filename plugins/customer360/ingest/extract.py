"""One entry point for the three extract tasks, shared by the CLI and the DAG."""

from __future__ import annotations

import datetime as dt

from customer360.ingest.raw_zone import Reconciliation
from customer360.core.logical_date import check_logical_date
from customer360.core.settings import Settings
from customer360.ingest.errors import ExtractError

__all__ = ["SOURCES", "ExtractError", "run_extract"]

SOURCES = ("crm", "web", "pos")


def run_extract(source: str, settings: Settings, logical_date: dt.date) -> list[Reconciliation]:
    check_logical_date(logical_date)
    if source == "crm":
        from customer360.ingest.crm import extract_crm
        return extract_crm(settings, logical_date)
    if source == "web":
        from customer360.ingest.web import load_web
        return load_web(settings, logical_date)
    if source == "pos":
        from customer360.ingest.pos import load_pos
        return load_pos(settings, logical_date)
    raise ExtractError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
