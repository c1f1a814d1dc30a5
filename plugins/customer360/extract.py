"""One entry point for the three extract tasks, shared by the CLI and the DAG."""

from __future__ import annotations

import datetime as dt

from customer360.lake import Reconciliation
from customer360.settings import Settings

SOURCES = ("crm", "web", "pos")


class ExtractError(RuntimeError):
    """An extract failed in a way a retry will not fix (bad token, unreadable reference data)."""


def run_extract(source: str, settings: Settings, logical_date: dt.date) -> list[Reconciliation]:
    if source == "crm":
        from customer360.sources.crm import extract_crm
        return extract_crm(settings, logical_date)
    if source == "web":
        from customer360.sources.web import load_web
        return load_web(settings, logical_date)
    if source == "pos":
        from customer360.sources.pos import load_pos
        return load_pos(settings, logical_date)
    raise ExtractError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
