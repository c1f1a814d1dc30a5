"""A deep search of a folder for strings: where, on disk, is this email, phone, name or secret?

``grep`` is not enough: Parquet pages and DuckDB blocks are compressed, gzip files are
compressed, joblib artifacts are zlib streams. Every file is searched as raw bytes (which
also covers freed pages of SQLite and DuckDB files, and any text format) and, by its kind,
as decoded content:

- Parquet: every value of every row (the row cast to text), through DuckDB;
- DuckDB: every value of every table, and the file must have no free blocks (a freed block
  can hold a deleted value in compressed form that a byte search would not see);
- SQLite: every text value of every table;
- gzip / zlib (joblib) streams: the decompressed bytes.

Matching ignores ASCII case, and text is searched in UTF-8 and GB18030. Used by the erasure
tests and by ``c360 erase --verify``; it reads everything, so it is for proof, not for speed.
"""

from __future__ import annotations

import sqlite3
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import duckdb

from customer360.core import duck
from customer360.privacy.person import PersonKeys
from customer360.core.settings import Settings

_DUCKDB_MAGIC = b"DUCK"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class Hit:
    path: str      # relative to the searched root
    where: str     # bytes, parquet, duckdb:<schema.table>, sqlite:<table>, gzip, zlib, free blocks
    needle: int    # index of the needle found (the needle itself is not repeated here)

    def __str__(self) -> str:
        return f"{self.path} ({self.where}): needle #{self.needle}"


def _encodings(needle: str) -> set[bytes]:
    out = set()
    for enc in ("utf-8", "gb18030"):
        try:
            out.add(needle.lower().encode(enc))
        except UnicodeEncodeError:
            pass
    return out


def _bytes_hits(data: bytes, needles: list[set[bytes]]) -> list[int]:
    low = data.lower()
    return [i for i, forms in enumerate(needles) if any(f in low for f in forms)]


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _duck_rows_hits(con: duckdb.DuckDBPyConnection, relation: str, needles: list[str]) -> list[int]:
    """Which needles occur in any value of ``relation`` (each row cast to its text form)."""
    checks = ", ".join(f"bool_or(contains(t, {_sql_str(n.lower())}))" for n in needles)
    row = con.execute(f"SELECT {checks} FROM (SELECT lower(CAST(r AS VARCHAR)) AS t "
                      f"FROM {relation} AS r)").fetchone()
    return [i for i, found in enumerate(row) if found]


def _parquet(path: Path, needles: list[str]) -> list[Hit]:
    con = duck.connect()
    try:
        relation = f"read_parquet({_sql_str(str(path))}, hive_partitioning = false)"
        return [Hit("", "parquet", i) for i in _duck_rows_hits(con, relation, needles)]
    finally:
        con.close()


def _duckdb(path: Path, needles: list[str]) -> list[Hit]:
    hits = []
    con = duck.connect()
    try:
        con.execute(f"ATTACH {_sql_str(str(path))} AS scanned (READ_ONLY)")
        tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables() "
                             "WHERE database_name = 'scanned'").fetchall()
        for schema, table in tables:
            relation = f'scanned."{schema}"."{table}"'
            hits += [Hit("", f"duckdb:{schema}.{table}", i) for i in _duck_rows_hits(con, relation, needles)]
        free = con.execute("SELECT free_blocks FROM pragma_database_size() "
                           "WHERE database_name = 'scanned'").fetchone()[0]
        if free:
            hits.append(Hit("", f"free blocks ({free}): deleted values may survive", -1))
    finally:
        con.close()
    return hits


def _sqlite(path: Path, needles: list[str]) -> list[Hit]:
    hits = []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            found: set[int] = set()
            for row in db.execute(f'SELECT * FROM "{table}"'):
                text = " ".join(str(v) for v in row if v is not None).lower()
                found.update(i for i, n in enumerate(needles) if n.lower() in text)
            hits += [Hit("", f"sqlite:{table}", i) for i in sorted(found)]
    finally:
        db.close()
    return hits


def _inflated(data: bytes, gzipped: bool) -> bytes:
    inflater = zlib.decompressobj(wbits=31 if gzipped else 15)
    try:
        return inflater.decompress(data)
    except zlib.error:
        return b""


def scan_file(path: Path, needles: list[str]) -> list[tuple[str, int]]:
    """(where, needle index) of every needle found in one file."""
    data = path.read_bytes()
    forms = [_encodings(n) for n in needles]
    found = [("bytes", i) for i in _bytes_hits(data, forms)]
    head = data[:16]
    try:
        if head.startswith(_PARQUET_MAGIC):
            found += [(h.where, h.needle) for h in _parquet(path, needles)]
        elif data[8:12] == _DUCKDB_MAGIC:
            found += [(h.where, h.needle) for h in _duckdb(path, needles)]
        elif head.startswith(_SQLITE_MAGIC):
            found += [(h.where, h.needle) for h in _sqlite(path, needles)]
        elif head.startswith(b"\x1f\x8b"):
            found += [("gzip", i) for i in _bytes_hits(_inflated(data, True), forms)]
        elif head[:1] == b"\x78":  # a zlib stream (joblib's compressed pickles)
            found += [("zlib", i) for i in _bytes_hits(_inflated(data, False), forms)]
    except (duckdb.Error, sqlite3.Error, OSError) as exc:
        found.append((f"unreadable as its kind: {type(exc).__name__}", -1))
    return found


def scan_tree(root: Path, needles: list[str], exclude: Iterable[Path] = ()) -> list[Hit]:
    """Every occurrence of any of ``needles`` in any file under ``root`` (but ``exclude``)."""
    needles = [n for n in needles if n]
    excluded = [Path(p).resolve() for p in exclude]
    hits = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        resolved = path.resolve()
        if any(resolved == e or e in resolved.parents for e in excluded):
            continue
        for where, i in scan_file(path, needles):
            hits.append(Hit(str(path.relative_to(root)), where, i))
    return hits


def person_strings(person: PersonKeys) -> list[str]:
    """What an erased person must not leave behind: emails, phones (E.164 and national
    digits), loyalty ids and full names."""
    needles = person.needles()
    return sorted(set(needles.text) | set(needles.names) | set(needles.alnum) | set(needles.digits)
                  | set(person.phones) | set(person.emails))


def verify_erased(settings: Settings, person: PersonKeys) -> dict:
    """Search the whole home (and the landing folder) for the person; the demo's simulated
    sources are the sources' systems and are not searched. Returns counts and where."""
    roots = [settings.home]
    if settings.home not in settings.landing.parents and settings.landing != settings.home:
        roots.append(settings.landing)
    strings = person_strings(person)
    hits = []
    files = 0
    for root in roots:
        if root.exists():
            files += sum(1 for p in root.rglob("*") if p.is_file())
            hits += scan_tree(root, strings, exclude=[settings.simulation_dir])
    found = [h for h in hits if h.needle >= 0]
    return {"files": files, "hits": len(found),
            "where": sorted({f"{h.path} ({h.where})" for h in found})[:20],
            # the audit store frees blocks too; it never holds personal values (masked)
            "duckdb_free_blocks": sorted(h.path for h in hits if h.needle < 0)}

