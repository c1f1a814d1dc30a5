"""The rules of POS files (docs/sources.md section 3), as vectorized DuckDB queries.

The validator reports what these rules call an error and the POS loader quarantines exactly
those rows. Values are kept as sent; the checks tolerate surrounding spaces (a till's export
may pad), so staging trims before it casts.
"""

from __future__ import annotations

import codecs
import zoneinfo
from dataclasses import dataclass, field
from typing import Sequence

import duckdb

from customer360.ingest.landing.csv_rows import CsvHeader, parse_csv_rows
from customer360.ingest.landing.duck import insert_rows, sql_str
from customer360.ingest.landing.layout import LandingFile
from customer360.ingest.landing.duck import python_encoding
from customer360.ingest.landing.lines import (ReadLimits, encoding_name, keep_lines,
                                              numbered_view, read_parsed, sniff_encoding)
from customer360.ingest.landing.pos_amounts import install_amount_macros

POS_COLUMNS = ("transaction_id", "line_no", "store_id", "business_date", "txn_ts", "txn_type",
               "loyalty_id", "customer_phone", "customer_email", "sku", "quantity",
               "unit_price", "discount_amount", "line_amount", "currency", "payment_method")
STORES_COLUMNS = ("store_id", "name", "city", "region", "country", "timezone", "file_encoding",
                  "opened_on")
PRODUCTS_COLUMNS = ("sku", "name", "category", "brand", "list_price")
TXN_TYPES = ("SALE", "RETURN", "VOID")
# Amounts as the store's locale writes them (pos_amounts); quantity is a plain number.
AMOUNT_COLUMNS = ("unit_price", "discount_amount", "line_amount")

_INTEGER = r"\d+"
_NUMBER = r"[+-]?(\d+(\.\d*)?|\.\d+)"
_LOCAL_TS = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"


@dataclass(frozen=True)
class Store:
    store_id: str
    timezone: str
    country: str | None
    file_encoding: str


@dataclass
class ParsedCsv:
    """Files read and checked: ``table`` has one row a data line with file_id, ln, raw_line,
    the entity's columns (text as sent), ``_extra`` and ``reason`` (NULL when the row is good);
    ``unreadable`` maps file_id to the reason a whole file could not be read."""

    files: list[LandingFile]
    columns: tuple[str, ...]
    table: str
    unreadable: dict[int, str] = field(default_factory=dict)
    headers: dict[int, CsvHeader] = field(default_factory=dict)
    blank_lines: dict[int, list[int]] = field(default_factory=dict)
    notes: dict[int, str] = field(default_factory=dict)       # loaded, but worth a warning
    mismatches: dict[int, str] = field(default_factory=dict)  # quarantined whole: encoding
    encodings: dict[int, str] = field(default_factory=dict)   # what each file was read as


def _shown(expr: str) -> str:
    return f"coalesce('''' || left({expr}, 40) || '''', 'null')"


def _not(cond: str) -> str:
    return f"NOT coalesce({cond}, false)"


def _missing(col: str) -> str:
    return f"CASE WHEN coalesce(trim({col}), '') = '' THEN 'missing {col}' END"


def _matches(col: str, pattern: str) -> str:
    return f"regexp_full_match(trim({col}), {sql_str(pattern)})"


def _one_of(col: str, values: Sequence[str]) -> str:
    return f"list_contains([{', '.join(sql_str(v) for v in values)}]::VARCHAR[], trim({col}))"


def _number(col: str) -> str:
    return (f"CASE WHEN {_not(_matches(col, _NUMBER))} "
            f"THEN '{col} is not a number: ' || {_shown(col)} END")


def _read(con, name: str, files: Sequence[LandingFile], declared: dict[int, str | None],
          columns: Sequence[str], skip: dict[int, str], limits: ReadLimits) -> ParsedCsv:
    """Lines of every readable file split into ``columns``. Each file is sniffed first
    (:func:`sniff_encoding`: a byte-order mark wins over ``declared``, a mismatch quarantines
    the file whole), then read in what it really is, grouped by encoding."""
    lines = f"{name}_lines"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {lines} (file_id INTEGER, "
                f"_nbytes BIGINT, line VARCHAR, bad_encoding BOOLEAN, line_error VARCHAR)")
    unreadable = dict(skip)
    shown: dict[int, str] = {}
    notes: dict[int, str] = {}
    mismatches: dict[int, str] = {}
    by_encoding: dict[str, list[int]] = {}
    for fid, f in enumerate(files):
        if fid in skip:
            continue
        size = f.path.stat().st_size
        if size > limits.max_bytes:  # sniffing reads the whole file: not past the cap
            unreadable[fid] = limits.size_reason(size)
            continue
        sniff = sniff_encoding(f.path.read_bytes(), declared[fid])
        same = declared[fid] is not None and python_encoding(sniff.read_as) == python_encoding(
            declared[fid])
        shown[fid] = declared[fid] if same else encoding_name(sniff.read_as)
        if sniff.note:
            notes[fid] = sniff.note
        if sniff.mismatch:
            mismatches[fid] = "file quarantined whole: " + sniff.mismatch
        by_encoding.setdefault(sniff.read_as, []).append(fid)
    for encoding, ids in by_encoding.items():
        unreadable |= read_parsed(con, lines, [files[i].path for i in ids], keep_lines,
                                  encoding=encoding, file_ids=ids, append=True, limits=limits)
    readable = {fid: enc for fid, enc in shown.items() if fid not in unreadable}
    rows = parse_csv_rows(con, numbered_view(con, lines), name, columns, readable,
                          {fid: r for fid, r in mismatches.items() if fid in readable})
    return ParsedCsv(list(files), tuple(columns), rows.table, unreadable, rows.headers,
                     rows.blank_lines, notes,
                     {fid: r for fid, r in mismatches.items() if fid in readable}, readable)


def _finish(con, parsed: ParsedCsv, rules: Sequence[str], joins: str = "",
            extra_select: str = "") -> None:
    """Add ``reason``: the structural problem (bad encoding, quoting, field count, header),
    else every rule the row breaks."""
    checks = ", ".join(rules)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {parsed.table} AS
        SELECT r.* {extra_select},
               CASE WHEN r.structural_reason IS NOT NULL THEN r.structural_reason
                    ELSE nullif(concat_ws('; ', {checks}), '') END AS reason
        FROM {parsed.table} r {joins}
    """)


def _distinct(con: duckdb.DuckDBPyConnection, table: str, col: str) -> list[str]:
    return [v for (v,) in con.execute(
        f"SELECT DISTINCT trim({col}) FROM {table} WHERE {col} IS NOT NULL").fetchall()]


def _valid_zones(values: Sequence[str]) -> list[str]:
    zones = zoneinfo.available_timezones()
    return [v for v in values if v in zones]


def _known_encodings(values: Sequence[str]) -> list[str]:
    out = []
    for v in values:
        try:
            codecs.lookup(v)
            out.append(v)
        except LookupError:
            pass
    return out


def parse_stores(con: duckdb.DuckDBPyConnection, file: LandingFile, limits: ReadLimits,
                 name: str = "pos_stores") -> tuple[ParsedCsv, dict[str, Store]]:
    """Check ``stores.csv``; return it parsed and the stores whose rows are good."""
    parsed = _read(con, name, [file], {0: None}, STORES_COLUMNS, {}, limits)
    zones = _valid_zones(_distinct(con, parsed.table, "timezone"))
    encodings = _known_encodings(_distinct(con, parsed.table, "file_encoding"))
    _finish(con, parsed, [
        _missing("store_id"),
        "CASE WHEN count(*) OVER (PARTITION BY trim(store_id)) > 1 "
        "THEN 'store_id ' || trim(store_id) || ' appears more than once' END",
        f"CASE WHEN {_not(_one_of('timezone', zones))} "
        f"THEN 'timezone is not an IANA time zone: ' || {_shown('timezone')} END",
        f"CASE WHEN {_not(_one_of('file_encoding', encodings))} "
        f"THEN 'file_encoding is not an encoding Python knows: ' || {_shown('file_encoding')} END",
    ])
    stores = {sid: Store(sid, tz, country, enc) for sid, tz, country, enc in con.execute(
        f"SELECT trim(store_id), trim(timezone), trim(country), trim(file_encoding) "
        f"FROM {parsed.table} WHERE reason IS NULL").fetchall()}
    return parsed, stores


def parse_products(con: duckdb.DuckDBPyConnection, file: LandingFile, limits: ReadLimits,
                   name: str = "pos_products") -> ParsedCsv:
    parsed = _read(con, name, [file], {0: None}, PRODUCTS_COLUMNS, {}, limits)
    install_amount_macros(con)
    # A catalogue belongs to no store, so its prices read with a decimal dot.
    _finish(con, parsed, [
        _missing("sku"),
        "CASE WHEN count(*) OVER (PARTITION BY trim(sku)) > 1 "
        "THEN 'sku ' || trim(sku) || ' appears more than once' END",
        "CASE WHEN c360_pos_amount(list_price, NULL) IS NULL "
        f"THEN 'list_price is not a number: ' || {_shown('list_price')} END",
    ])
    return parsed


def unknown_store_reason(file: LandingFile, stores: dict[str, Store]) -> str | None:
    if file.store_id in stores:
        return None
    return (f"store {file.store_id} has no valid row in pos/reference/stores.csv "
            f"(its time zone and encoding are unknown)")


def parse_pos_files(con: duckdb.DuckDBPyConnection, files: Sequence[LandingFile],
                    stores: dict[str, Store], limits: ReadLimits,
                    name: str = "pos_txn") -> ParsedCsv:
    """Read and check per-store daily files, each in its store's encoding. The table also
    gets the raw zone's load columns (_source_file, _folder_date, _store_timezone, ...)."""
    skip = {fid: r for fid, f in enumerate(files)
            if (r := unknown_store_reason(f, stores)) is not None}
    declared = {fid: (stores[f.store_id].file_encoding if fid not in skip else None)
                for fid, f in enumerate(files)}
    parsed = _read(con, name, files, declared, POS_COLUMNS, skip, limits)
    install_amount_macros(con)
    meta = f"{name}_files"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {meta} (file_id INTEGER, rel VARCHAR, "
                f"folder_date DATE, file_store VARCHAR, tz VARCHAR, country VARCHAR, "
                f"encoding VARCHAR)")
    insert_rows(con, meta, [
        (fid, f.rel, f.folder_date, f.store_id, stores[f.store_id].timezone,
         stores[f.store_id].country, stores[f.store_id].file_encoding)
        for fid, f in enumerate(files) if fid not in skip])
    _finish(con, parsed, [
        _missing("transaction_id"),
        f"CASE WHEN {_not(_matches('line_no', _INTEGER))} "
        f"THEN 'line_no is not an integer: ' || {_shown('line_no')} END",
        "CASE WHEN trim(store_id) IS DISTINCT FROM m.file_store THEN 'store_id ' || "
        f"{_shown('store_id')} || ' does not match the file name store_' || m.file_store "
        "|| '.csv' END",
        "CASE WHEN try_cast(trim(business_date) AS DATE) IS DISTINCT FROM m.folder_date "
        f"THEN 'business_date ' || {_shown('business_date')} || ' does not match its folder "
        "date=' || strftime(m.folder_date, '%Y-%m-%d') END",
        f"CASE WHEN {_not(_matches('txn_ts', _LOCAL_TS))} "
        "OR try_strptime(trim(txn_ts), '%Y-%m-%d %H:%M:%S') IS NULL "
        f"THEN 'txn_ts is not a local time YYYY-MM-DD HH:MM:SS: ' || {_shown('txn_ts')} END",
        f"CASE WHEN {_not(_one_of('txn_type', TXN_TYPES))} "
        f"THEN 'txn_type must be SALE, RETURN or VOID, got ' || {_shown('txn_type')} END",
        _number("quantity"),
        *[f"c360_pos_amount_problem({c}, m.country, currency, '{c}')" for c in AMOUNT_COLUMNS],
    ], joins=f"JOIN {meta} m USING (file_id)",
        extra_select=", m.rel AS _source_file, m.folder_date AS _folder_date, "
                     "m.tz AS _store_timezone, m.country AS _store_country, "
                     "m.encoding AS _file_encoding")
    _whole_transactions(con, parsed)
    return parsed


def _whole_transactions(con: duckdb.DuckDBPyConnection, parsed: ParsedCsv) -> None:
    """A transaction is one unit (docs/sources.md section 3): when any of its lines (same
    transaction_id in the same file) is rejected, its other lines are quarantined too, with a
    reason naming the first line at fault. A line whose transaction_id cannot be read (broken
    quoting, the id missing) belongs to no transaction and is rejected on its own."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {parsed.table} AS
        WITH bad AS (
            SELECT file_id, trim(transaction_id) AS txn, min(ln) AS ln,
                   arg_min(reason, ln) AS reason, count(*) AS n
            FROM {parsed.table}
            WHERE reason IS NOT NULL AND coalesce(trim(transaction_id), '') <> ''
            GROUP BY ALL
        )
        SELECT r.* EXCLUDE (reason),
               CASE WHEN r.reason IS NOT NULL THEN r.reason
                    WHEN b.txn IS NOT NULL
                    THEN 'transaction ' || b.txn || ' quarantined whole: line ' || b.ln || ': '
                         || b.reason || CASE WHEN b.n > 1 THEN ' (and ' || (b.n - 1)
                                              || ' more line(s) at fault)' ELSE '' END
               END AS reason
        FROM {parsed.table} r
        LEFT JOIN bad b ON b.file_id = r.file_id AND b.txn = trim(r.transaction_id)
    """)
