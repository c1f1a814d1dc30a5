"""DuckDB helpers for reading landing files: encodings, SQL literals, row inserts.

Extract tasks and the landing validator read landing files in an in-memory DuckDB
(:func:`customer360.core.duck.connect`, session time zone UTC so that TIMESTAMPTZ
comparisons against folder dates mean UTC days), never the warehouse file, so they run in
parallel with each other.
"""

from __future__ import annotations

import codecs
import importlib.util
import logging
from pathlib import Path

import duckdb

from customer360.core.duck import load_extension, sql_str  # noqa: F401 (sql_str: for the loaders)

log = logging.getLogger(__name__)

# Encodings DuckDB's CSV reader knows by a different name than Python's canonical one.
_DUCKDB_ENCODING_NAMES = {"utf-8": "utf-8", "iso8859-1": "latin-1", "utf-16": "utf-16"}
_NATIVE_ENCODINGS = frozenset(_DUCKDB_ENCODING_NAMES)


def _encodings_extension() -> Path | None:
    """The ``encodings`` extension shipped as the duckdb-extension-encodings wheel (GB18030...)."""
    spec = importlib.util.find_spec("duckdb_extension_encodings")
    if spec is None or not spec.submodule_search_locations:
        return None
    pkg = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(pkg.glob(f"extensions/v{duckdb.__version__}/encodings.duckdb_extension"))
    return found[0] if found else None


def load_encodings(con: duckdb.DuckDBPyConnection) -> bool:
    """Load the ``encodings`` extension (GB18030 and friends for ``read_csv``) if it is
    installed; False when it is not. It is a 350 MB file that takes seconds to load, so
    callers only ask for it when they have enough non-UTF-8 text to win that time back."""
    loaded = con.execute("SELECT count(*) FROM duckdb_extensions() "
                         "WHERE extension_name = 'encodings' AND loaded").fetchone()[0]
    if loaded:
        return True
    ext = _encodings_extension()
    if ext is None:
        return False
    try:
        load_extension(con, ext)
        return True
    except duckdb.Error as exc:  # costs only speed: Python decodes those files instead
        log.warning("DuckDB encodings extension not loaded (%s); decoding in Python", exc)
        return False


def duckdb_reads_natively(encoding: str) -> bool:
    return python_encoding(encoding) in _NATIVE_ENCODINGS


def python_encoding(name: str) -> str | None:
    """Python's canonical name for an encoding, or None when Python does not know it."""
    try:
        return codecs.lookup(name.strip()).name
    except (LookupError, AttributeError):
        return None


def duckdb_encoding(name: str) -> str:
    """The name to give DuckDB's ``read_csv(encoding=...)`` for a Python-known encoding."""
    canonical = python_encoding(name) or name
    return _DUCKDB_ENCODING_NAMES.get(canonical, canonical)


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: list[tuple]) -> None:
    """INSERT ``rows`` (tuples in column order) into ``table``; nothing when there are none."""
    if rows:
        con.executemany(f"INSERT INTO {table} VALUES ({', '.join(['?'] * len(rows[0]))})", rows)
