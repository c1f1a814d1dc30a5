"""Check a landing folder (simulated or a real export) against docs/sources.md.

Every problem comes with file, line and reason. Errors are exactly what the loaders would
quarantine (the same parsing code: :mod:`web_events`, :mod:`pos_rows`), plus layout errors
that keep a file from being read at all; warnings are things the loaders accept (unknown
columns, events later than the contract allows, stray files).

    report = validate_landing(Path("data/landing"), through=date(2026, 3, 1))
    report.ok, report.problems, report.as_table()
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Sequence

import duckdb

from customer360.core.duck import connect
from customer360.core.settings import get_settings
from customer360.ingest.landing.layout import LandingFile, scan_landing
from customer360.ingest.landing.lines import ReadLimits, byte_batches, uncompressed_size
from customer360.ingest.landing.pos_rows import (ParsedCsv, Store, parse_pos_files, parse_products,
                                          parse_stores)
from customer360.ingest.landing.report import ERROR, WARN, Problem, ValidationReport
from customer360.ingest.landing.web_events import parse_web_files

__all__ = ["Problem", "ValidationReport", "validate_landing"]

BATCH_BYTES = 256 * 2**20


def _web_problems(con: duckdb.DuckDBPyConnection, files: Sequence[LandingFile],
                  report: ValidationReport, limits: ReadLimits) -> None:
    parsed = parse_web_files(con, files, limits)
    for fid, reason in parsed.unreadable.items():
        report.problems.append(Problem(files[fid].rel, None, reason, ERROR))
    for fid, ln, reason, warning in con.execute(f"""
            SELECT file_id, ln, reason, warning FROM {parsed.view}
            WHERE reason IS NOT NULL OR warning IS NOT NULL ORDER BY file_id, ln""").fetchall():
        report.problems.append(Problem(files[fid].rel, ln, reason or warning,
                                       ERROR if reason else WARN))
    counts = dict(con.execute(f"SELECT file_id, count(*) FILTER (WHERE NOT blank) "
                              f"FROM {parsed.view} GROUP BY file_id").fetchall())
    for fid, f in enumerate(files):
        if fid not in parsed.unreadable and not counts.get(fid):
            report.problems.append(Problem(f.rel, None, "file holds no events", WARN))
        report.records_checked += counts.get(fid, 0)
    report.files_checked += len(files)


def _csv_problems(con: duckdb.DuckDBPyConnection, parsed: ParsedCsv, report: ValidationReport,
                  empty_severity: str) -> None:
    for fid, reason in parsed.unreadable.items():
        report.problems.append(Problem(parsed.files[fid].rel, None, reason, ERROR))
    for fid, note in parsed.notes.items():
        report.problems.append(Problem(parsed.files[fid].rel, None, note, WARN))
    for fid, header in parsed.headers.items():
        rel = parsed.files[fid].rel
        if not header.names:
            report.problems.append(Problem(rel, None, "empty file (no header)", empty_severity))
            continue
        if header.error:
            report.problems.append(Problem(rel, 1, header.error, ERROR))
        if header.extra:
            names = ", ".join(n for n, _ in header.extra)
            report.problems.append(Problem(
                rel, 1, f"column(s) not in the contract: {names} (kept in _extra)", WARN))
    for fid, ln, reason in con.execute(f"SELECT file_id, ln, reason FROM {parsed.table} "
                                       f"WHERE reason IS NOT NULL ORDER BY file_id, ln"
                                       ).fetchall():
        report.problems.append(Problem(parsed.files[fid].rel, ln, reason, ERROR))
    report.records_checked += con.execute(f"SELECT count(*) FROM {parsed.table}").fetchone()[0]
    report.files_checked += len(parsed.files)


def _stores(con, stores_file: LandingFile | None, report: ValidationReport,
            limits: ReadLimits) -> dict[str, Store]:
    if stores_file is None:
        return {}
    parsed, stores = parse_stores(con, stores_file, limits)
    _csv_problems(con, parsed, report, ERROR)
    return stores


def validate_landing(path: Path, through: dt.date | None = None,
                     limits: ReadLimits | None = None) -> ValidationReport:
    """Check every file of the landing folder ``path`` (``date=`` folders up to ``through``);
    ``limits`` default to the settings' (the loaders' caps)."""
    limits = limits or ReadLimits.of(get_settings())
    scan = scan_landing(Path(path), through)
    report = ValidationReport(root=Path(path), problems=list(scan.problems))
    con = connect()
    try:
        for group in byte_batches(scan.web, lambda f: uncompressed_size(f.path), BATCH_BYTES):
            _web_problems(con, group, report, limits)
        stores = _stores(con, scan.stores, report, limits)
        if scan.products is not None:
            _csv_problems(con, parse_products(con, scan.products, limits), report, ERROR)
        for group in byte_batches(scan.pos, lambda f: uncompressed_size(f.path), BATCH_BYTES):
            _csv_problems(con, parse_pos_files(con, group, stores, limits), report, WARN)
    finally:
        con.close()
    return report
