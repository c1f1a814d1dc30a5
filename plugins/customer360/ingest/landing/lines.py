"""Read landing files as numbered physical lines into a DuckDB table.

Both loaders and the validator start here, so "line 12 of file X" means the same thing
everywhere, and a malformed line can be quarantined with its exact text. The fast path is
DuckDB's CSV reader with one VARCHAR column and a delimiter that cannot occur in valid data
(a raw control character): it decompresses and decodes in C++, several files in parallel.
Whatever that path cannot vouch for goes through Python's own gzip and codecs, file by file:

* Text in an encoding DuckDB does not read natively (GB18030...) needs DuckDB's encodings
  extension, which takes seconds to load: it is loaded only for a lot of such text.
* DuckDB stops silently at the end of a truncated gzip stream, so every gzip file's trailer
  (ISIZE, the uncompressed length) is compared with the bytes DuckDB read; on a mismatch
  Python decompresses the file, which checks the CRC and the end-of-stream marker.
* A file that is not gzip, not in its encoding, or otherwise unreadable by DuckDB: Python
  decodes it, line by line if need be, so one bad line does not cost the whole file.

Before either path, every file is read once as a stream (:func:`measure_file`), counting
its decompressed bytes and the length of each line, so that neither path ever holds more than
the caps allow (:class:`ReadLimits`, from ``C360_MAX_DECOMPRESSED_BYTES`` and
``C360_MAX_LINE_BYTES``): a file past the size cap is refused whole with the reason (a gzip
bomb is stopped after reading the cap, whatever its trailer claims), and a file with an
over-long line is read by the Python path as a stream, that line kept only as a short prefix
with the reason and line number (``line_error``), the rest of the file loaded as usual.

Lines are numbered without a window function (which would make DuckDB run the rest of the
query on one thread): with insertion order preserved (DuckDB's default), a file's lines get
consecutive ``rowid``s in file order, so a line's number is its rowid minus its file's first
rowid plus one (:func:`numbered_view`). Every line is stored, blank ones included, so the
numbers are physical line numbers. Files that cannot be read at all are returned with the
reason instead.

The line source every parse step reads has ``file_id``, ``line`` (NULL when blank),
``bad_encoding`` and ``line_error`` (NULL, or why the line was not kept: it is too long).
"""

from __future__ import annotations

import codecs
import gzip
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import duckdb
import pyarrow as pa

from customer360.ingest.landing.duck import (duckdb_encoding, duckdb_reads_natively, load_encodings,
                                      python_encoding, sql_str)

log = logging.getLogger(__name__)

# A raw control character never occurs in valid JSON and hardly in a CSV export; a line that
# holds one makes DuckDB see two columns and fail, which sends the file to the Python path.
_NO_DELIMITER = "\x01"
# Below this much text in an encoding DuckDB does not read natively, Python decodes it: the
# DuckDB encodings extension takes seconds to load.
EXTENSION_WORTH_BYTES = 64 * 2**20


# DuckDB's own default: a smaller max_line_size would send files with allowed lines to Python.
_DUCKDB_MAX_LINE_SIZE = 2_097_152
# How much a stream is read at a time, and how much of an over-long line is kept to show.
STREAM_CHUNK_BYTES = 2**20
SHOWN_PREFIX_BYTES = 200
# Lines handed to DuckDB at a time from the Python path (bounds that path's Arrow copy).
_PYTHON_BATCH_LINES = 100_000
_PYTHON_SCHEMA = pa.schema([("line", pa.string()), ("bad_encoding", pa.bool_()),
                            ("line_error", pa.string())])


@dataclass(frozen=True)
class ReadLimits:
    """The caps on what one landing file may hold once decompressed (docs/sources.md)."""

    max_bytes: int  # C360_MAX_DECOMPRESSED_BYTES
    max_line: int   # C360_MAX_LINE_BYTES

    @classmethod
    def of(cls, settings) -> "ReadLimits":
        return cls(settings.max_decompressed_bytes, settings.max_line_bytes)

    def size_reason(self, seen: int) -> str:
        return (f"decompressed size exceeds C360_MAX_DECOMPRESSED_BYTES ({self.max_bytes} "
                f"bytes): {seen} bytes read before stopping; file quarantined whole")

    def line_reason(self, ln: int, length: int | None) -> str:
        size = f"{length} bytes" if length is not None else "longer"
        return (f"line {ln} is longer than C360_MAX_LINE_BYTES ({self.max_line} bytes): "
                f"{size}; only its first {SHOWN_PREFIX_BYTES} bytes are kept")


@dataclass(frozen=True)
class FileMeasure:
    """What :func:`measure_file` saw: decompressed bytes, and the over-long lines
    {line number: length in bytes, without the line break}."""

    n_bytes: int
    long_lines: dict[int, int] = field(default_factory=dict)


def _open(path: Path, gzipped: bool):
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _gzip_reason(exc: Exception) -> str:
    if isinstance(exc, EOFError):
        return f"truncated gzip file: {exc}"
    return f"corrupt gzip file: {exc}"


def measure_file(path: Path, gzipped: bool, limits: ReadLimits) -> FileMeasure | str:
    """Read ``path`` once as a stream (memory: one chunk), or the reason it cannot be read:
    past the size cap, or a gzip stream that is corrupt or cut short.

    Python's gzip module and not DuckDB's reader: DuckDB has no cap on what it decompresses,
    and a file's gzip trailer (ISIZE) is the sender's claim, not a bound."""
    total, ln, current = 0, 1, 0  # current: bytes of line ln read so far
    long_lines: dict[int, int] = {}
    try:
        with _open(path, gzipped) as fh:
            while chunk := fh.read(STREAM_CHUNK_BYTES):
                total += len(chunk)
                if total > limits.max_bytes:
                    return limits.size_reason(total)
                first = chunk.find(b"\n")
                if first < 0:
                    current += len(chunk)
                    continue
                if current + first > limits.max_line:
                    long_lines[ln] = current + first
                last = chunk.rfind(b"\n")
                if last - first - 1 > limits.max_line:
                    # Only then can a line inside the chunk be too long (never with the
                    # default caps, a chunk being no longer than a line may be).
                    for i, part in enumerate(chunk[first + 1:last].split(b"\n"), start=1):
                        if len(part) > limits.max_line:
                            long_lines[ln + i] = len(part)
                ln += chunk.count(b"\n")
                current = len(chunk) - last - 1
    except (EOFError, OSError, zlib.error) as exc:
        return _gzip_reason(exc) if gzipped else f"cannot read the file: {exc}"
    if current > limits.max_line:
        long_lines[ln] = current
    return FileMeasure(total, long_lines)


def _read_csv_sql(paths: Sequence[Path], encoding: str, gzipped: bool,
                  max_line: int = _DUCKDB_MAX_LINE_SIZE) -> str:
    files = "[" + ", ".join(sql_str(str(p)) for p in paths) + "]"
    return (f"read_csv({files}, columns = {{'line': 'VARCHAR'}}, delim = '{_NO_DELIMITER}', "
            f"quote = '', escape = '', header = false, auto_detect = false, "
            f"compression = '{'gzip' if gzipped else 'none'}', "
            f"max_line_size = {max(max_line + 2, _DUCKDB_MAX_LINE_SIZE)}, "
            f"encoding = {sql_str(duckdb_encoding(encoding))})")


def gzip_isize(path: Path) -> int | None:
    """The uncompressed length (mod 2**32) a gzip file's trailer claims."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        if fh.tell() < 18:  # smaller than an empty gzip member: not a whole gzip file
            return None
        fh.seek(-4, 2)
        return int.from_bytes(fh.read(4), "little")


def _isize_candidates(n_lines: int, text_bytes: int) -> set[int]:
    # DuckDB drops the line breaks (LF or CRLF), the last line may lack one, and a UTF-8 BOM
    # is skipped: every way the lines can add up to the file's uncompressed length.
    return {(text_bytes + width * n_lines - width * unterminated + bom) % 2**32
            for width in (1, 2) for unterminated in (0, 1) for bom in (0, 3)}


ParseSql = Callable[[str], str]
_EMPTY_SOURCE = ("SELECT NULL::INTEGER AS file_id, NULL::VARCHAR AS line, "
                 "NULL::BOOLEAN AS bad_encoding, NULL::VARCHAR AS line_error LIMIT 0")


def _fast_source(paths: Sequence[Path], file_ids: Sequence[int], encoding: str,
                 gzipped: bool, max_line: int = _DUCKDB_MAX_LINE_SIZE) -> str:
    ids = "[" + ", ".join(str(i) for i in file_ids) + "]"
    return (f"SELECT {ids}[file_index::BIGINT + 1] AS file_id, line, false AS bad_encoding, "
            f"NULL::VARCHAR AS line_error "
            f"FROM {_read_csv_sql(paths, encoding, gzipped, max_line)}")


def _run(con, out_table: str, parse: ParseSql, source: str, create: bool) -> None:
    verb = f"CREATE OR REPLACE TEMP TABLE {out_table} AS" if create else f"INSERT INTO {out_table}"
    con.execute(f"{verb} SELECT * FROM ({parse(source)})")


def _fast_insert(con, out_table: str, parse: ParseSql, paths: Sequence[Path],
                 file_ids: Sequence[int], encoding: str, gzipped: bool, max_line: int) -> None:
    _run(con, out_table, parse, _fast_source(paths, file_ids, encoding, gzipped, max_line),
         create=False)


def _gzip_suspects(con, out_table: str, paths: Sequence[Path],
                   file_ids: Sequence[int]) -> list[int]:
    stats = {fid: (n, b) for fid, n, b in con.execute(
        f"SELECT file_id, count(*), sum(_nbytes) FROM {out_table} "
        f"WHERE list_contains({[int(i) for i in file_ids]}, file_id) GROUP BY file_id").fetchall()}
    return [fid for path, fid in zip(paths, file_ids)
            if gzip_isize(path) not in _isize_candidates(*stats.get(fid, (0, 0)))]


def _delete(con, out_table: str, file_ids: Sequence[int]) -> None:
    if file_ids:
        con.execute(f"DELETE FROM {out_table} WHERE list_contains({[int(i) for i in file_ids]}, "
                    f"file_id)")




def _byte_lines(fh, max_line: int) -> Iterator[tuple[bytes, int | None]]:
    """Each line of ``fh`` without its line feed, as ``(line, None)``; an over-long line as
    ``(its first bytes, its length)``, read past without ever holding more than a chunk."""
    while line := fh.readline(max_line + 2):
        if line.endswith(b"\n"):
            body = line[:-1]
            yield (body, None) if len(body) <= max_line else (body[:SHOWN_PREFIX_BYTES], len(body))
            continue
        if len(line) <= max_line:  # the last line, without a line feed
            yield line, None
            continue
        length = len(line)
        while rest := fh.readline(STREAM_CHUNK_BYTES):
            if rest.endswith(b"\n"):
                length += len(rest) - 1
                break
            length += len(rest)
        yield line[:SHOWN_PREFIX_BYTES], length


def _decoded_lines(path: Path, py_encoding: str, gzipped: bool, limits: ReadLimits,
                   long_lines: dict[int, int]) -> Iterator[tuple[str, bool, str | None]]:
    """(text, bad_encoding, line_error) for each physical line of the file."""
    if "\n".encode(py_encoding) == b"\n":
        # Every encoding a landing file may be in but UTF-16 keeps b"\n" a line feed (no
        # multibyte sequence holds the byte 0x0A), so lines split as bytes, one at a time.
        with _open(path, gzipped) as fh:
            for ln, (raw, length) in enumerate(_byte_lines(fh, limits.max_line), start=1):
                if length is not None:
                    yield (raw.decode(py_encoding, errors="backslashreplace"), False,
                           limits.line_reason(ln, length))
                    continue
                try:
                    yield raw.decode(py_encoding), False, None
                except UnicodeDecodeError:
                    yield raw.decode(py_encoding, errors="backslashreplace"), True, None
        return
    # UTF-16 needs the whole text decoded before it can be split: the size cap bounds it.
    with _open(path, gzipped) as fh:
        raw = fh.read(limits.max_bytes + 1)
    try:
        lines = raw.decode(py_encoding).split("\n")
        bad = [False] * len(lines)
    except UnicodeDecodeError:
        lines = raw.decode(py_encoding, errors="backslashreplace").split("\n")
        bad = [True] * len(lines)  # no line can be trusted once the code units are off
    if lines and lines[-1] == "":
        lines.pop()
    for ln, (text, is_bad) in enumerate(zip(lines, bad), start=1):
        if ln in long_lines:
            yield text[:SHOWN_PREFIX_BYTES], False, limits.line_reason(ln, long_lines[ln])
        else:
            yield text, is_bad, None


def _python_batches(path: Path, py_encoding: str, gzipped: bool, limits: ReadLimits,
                    long_lines: dict[int, int]) -> Iterator[pa.Table]:
    """The file's lines decoded by Python, a bounded number of lines at a time."""
    lines: list[str] = []
    bad: list[bool] = []
    errors: list[str | None] = []
    decoded = _decoded_lines(path, py_encoding, gzipped, limits, long_lines)
    for ln, (text, is_bad, error) in enumerate(decoded, start=1):
        if ln == 1 and text.startswith("\ufeff"):
            text = text[1:]
        lines.append(text)
        bad.append(is_bad)
        errors.append(error)
        if len(lines) >= _PYTHON_BATCH_LINES:
            yield pa.table({"line": lines, "bad_encoding": bad, "line_error": errors},
                           schema=_PYTHON_SCHEMA)
            lines, bad, errors = [], [], []
    if lines:
        yield pa.table({"line": lines, "bad_encoding": bad, "line_error": errors},
                       schema=_PYTHON_SCHEMA)


def _python_read(con, out_table: str, parse: ParseSql, path: Path, fid: int, encoding: str,
                 gzipped: bool, limits: ReadLimits, long_lines: dict[int, int]) -> str | None:
    """Insert the file's lines read by Python; the reason when it cannot be read at all."""
    py_encoding = python_encoding(encoding)
    if py_encoding is None:
        return f"unknown encoding {encoding!r}"
    try:
        for batch in _python_batches(path, py_encoding, gzipped, limits, long_lines):
            con.register("_python_lines", batch)
            try:
                _run(con, out_table, parse,
                     f"SELECT {fid} AS file_id, nullif(rtrim(line, chr(13)), '') AS line, "
                     f"bad_encoding, line_error FROM _python_lines",
                     create=False)
            finally:
                con.unregister("_python_lines")
    except (EOFError, OSError, zlib.error) as exc:
        # Measured whole a moment ago: the file changed while it was read.
        _delete(con, out_table, [fid])
        return _gzip_reason(exc) if gzipped else f"cannot read the file: {exc}"
    return None


def _duckdb_can_decode(con, encoding: str, paths: Sequence[Path]) -> bool:
    if duckdb_reads_natively(encoding):
        return True
    # Loading the encodings extension costs seconds: only worth it for a lot of text.
    return sum(p.stat().st_size for p in paths) >= EXTENSION_WORTH_BYTES and load_encodings(con)


def _fast_read(con, out_table: str, parse: ParseSql, safe_parse: ParseSql,
               paths: Sequence[Path], ids: list[int], encoding: str, gzipped: bool,
               max_line: int) -> list[int]:
    """DuckDB reads what it can; returns the file ids to read again with Python."""
    try:
        _fast_insert(con, out_table, parse, paths, ids, encoding, gzipped, max_line)
        return _gzip_suspects(con, out_table, paths, ids) if gzipped else []
    except duckdb.Error:
        pass
    # One bad file (or line) fails a multi-file read and inserts nothing: go file by file.
    retry = []
    for fid, path in zip(ids, paths):
        try:
            _fast_insert(con, out_table, safe_parse, [path], [fid], encoding, gzipped, max_line)
            if gzipped:
                retry += _gzip_suspects(con, out_table, [path], [fid])
        except duckdb.Error as exc:
            log.debug("DuckDB cannot read %s (%s); trying Python", path, exc)
            retry.append(fid)
    return retry


def read_parsed(con: duckdb.DuckDBPyConnection, out_table: str, paths: Sequence[Path],
                parse: ParseSql, *, limits: ReadLimits, encoding: str = "utf-8",
                gzipped: bool = False, file_ids: Sequence[int] | None = None,
                append: bool = False, safe_parse: ParseSql | None = None) -> dict[int, str]:
    """Read ``paths`` line by line into ``out_table`` = ``parse(source)``; return the files
    that cannot be read at all as {file_id: reason}.

    ``source`` is a SQL query with one row a physical line, in file order: ``file_id`` (from
    ``file_ids``, default 0..n-1), ``line`` (NULL when blank), ``bad_encoding`` and
    ``line_error`` (the reason a line over ``limits.max_line`` was not kept; its ``line`` is
    then a short prefix). ``parse(source)`` must keep that order and return ``file_id`` and
    ``_nbytes`` (``strlen`` of the line, 0 when NULL) first, then what it extracts, one row for
    every line (blank ones included) so that :func:`numbered_view` can number them. ``append``
    adds to an existing ``out_table`` instead of replacing it. ``safe_parse``, when given, is
    used instead of ``parse`` once a multi-file read has failed (a parse that cannot fail on
    any line).
    """
    safe_parse = safe_parse or parse
    if not append:
        _run(con, out_table, parse, _EMPTY_SOURCE, create=True)
    ids = list(range(len(paths))) if file_ids is None else [int(i) for i in file_ids]
    if not paths:
        return {}
    by_id = dict(zip(ids, paths))
    failures: dict[int, str] = {}
    long_lines: dict[int, dict[int, int]] = {}
    for fid in ids:
        measured = measure_file(by_id[fid], gzipped, limits)
        if isinstance(measured, str):
            failures[fid] = measured
            log.debug("%s not read: %s", by_id[fid], measured)  # the caller reports it
        elif measured.long_lines:
            long_lines[fid] = measured.long_lines
    # A file with an over-long line goes to Python, which reads past that line as a stream.
    fast = [fid for fid in ids if fid not in failures and fid not in long_lines]
    fast_paths = [by_id[fid] for fid in fast]
    if fast and _duckdb_can_decode(con, encoding, fast_paths):
        retry = _fast_read(con, out_table, parse, safe_parse, fast_paths, fast, encoding, gzipped,
                           limits.max_line)
        _delete(con, out_table, retry)
    else:
        retry = fast
    for fid in [i for i in ids if i in set(retry) or i in long_lines]:
        reason = _python_read(con, out_table, safe_parse, by_id[fid], fid, encoding, gzipped,
                              limits, long_lines.get(fid, {}))
        if reason is not None:
            failures[fid] = reason
    return failures


def keep_lines(source: str) -> str:
    """The parse step that keeps the lines as they are (parse them later, numbered)."""
    return (f"SELECT file_id, coalesce(strlen(line), 0) AS _nbytes, line, bad_encoding, "
            f"line_error FROM ({source})")


def numbered_view(con: duckdb.DuckDBPyConnection, out_table: str) -> str:
    """A view of ``out_table`` with ``ln``, the 1-based physical line number in its file."""
    view = f"{out_table}_numbered"
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW {view} AS
        SELECT t.*, t.rowid - f.first_rowid + 1 AS ln
        FROM {out_table} t JOIN (SELECT file_id, min(rowid) AS first_rowid FROM {out_table}
                                 GROUP BY file_id) f USING (file_id)
    """)
    return view


# What a file may really be in when it is not in its declared encoding, most telling first:
# text that is valid UTF-8 is almost never meant as anything else; cp1252 decodes nearly any
# bytes, so it only counts when nothing else does.
LIKELY_ENCODINGS = ("utf-8", "gb18030", "big5", "shift_jis", "euc-kr", "cp1252")
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))
_DISPLAY = {"utf-8": "UTF-8", "gb18030": "GB18030", "big5": "Big5", "shift_jis": "Shift_JIS",
            "euc_kr": "EUC-KR", "cp1252": "cp1252", "utf-16": "UTF-16"}


def encoding_name(encoding: str) -> str:
    """The usual spelling of an encoding, for reasons and notes ("GB18030", not "gb18030")."""
    canonical = python_encoding(encoding) or encoding
    return _DISPLAY.get(canonical, encoding)


@dataclass(frozen=True)
class EncodingSniff:
    """How to decode one file: ``read_as``; ``note`` when that differs from the declaration but
    the file says so itself (a byte-order mark); ``mismatch`` when the bytes only fit another
    encoding than the declared one (the file is not to be trusted: quarantine it whole)."""

    read_as: str
    note: str | None = None
    mismatch: str | None = None


def _decodes(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(encoding)
        return True
    except (UnicodeDecodeError, LookupError):
        return False


def detect_encoding(raw: bytes, exclude: str | None = None) -> str | None:
    """The first of :data:`LIKELY_ENCODINGS` (other than ``exclude``) the whole of ``raw``
    decodes in, or None.

    The order is the answer to ambiguity: any EUC-KR or Big5 pair is also a valid GB18030
    pair, so those files are named GB18030. A statistical detector (charset-normalizer) was
    tried and named a few Chinese words in GB18030 "EUC-KR"; on till files, which hold only a
    few words of text, a fixed order is the more honest hint. The name only goes into a
    quarantine reason: nothing is ever loaded in a guessed encoding."""
    skip = python_encoding(exclude) if exclude else None
    return next((e for e in LIKELY_ENCODINGS if python_encoding(e) != skip and _decodes(raw, e)),
                None)


def sniff_encoding(raw: bytes, declared: str | None) -> EncodingSniff:
    """Decide how to decode a file whose owner declared ``declared`` (None: nobody did).

    A byte-order mark wins: the file names its own encoding, so it is read that way (with a
    note when the declaration says otherwise). Without one, the declared encoding is tried
    first; bytes that do not decode in it, or that are valid UTF-8 text declared as something
    else (which would decode as mojibake without any error), are a mismatch that names the
    encoding the bytes do decode in. Undeclared files take the first likely encoding that fits.
    """
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            if declared is not None and python_encoding(declared) != python_encoding(encoding):
                return EncodingSniff(encoding, note=(
                    f"declared {encoding_name(declared)} but the file starts with a "
                    f"{encoding_name(encoding)} byte-order mark: read as {encoding_name(encoding)}"))
            return EncodingSniff(declared or encoding)
    if declared is None:
        return EncodingSniff(detect_encoding(raw) or "utf-8")
    if python_encoding(declared) is None:
        return EncodingSniff(declared)  # the caller reports the unknown encoding
    if _decodes(raw, declared):
        if python_encoding(declared) != "utf-8" and not raw.isascii() and _decodes(raw, "utf-8"):
            return EncodingSniff("utf-8", mismatch=(
                f"declared {encoding_name(declared)} but the bytes decode as UTF-8"))
        return EncodingSniff(declared)
    found = detect_encoding(raw, exclude=declared)
    if found is None:
        return EncodingSniff(declared)  # damaged lines: each is reported on its own
    return EncodingSniff(found, mismatch=(
        f"declared {encoding_name(declared)} but the bytes decode as {encoding_name(found)}"))


T = TypeVar("T")


def byte_batches(items: Sequence[T], size_of: Callable[[T], int], limit: int) -> Iterator[list[T]]:
    """Consecutive groups of ``items`` of at most ``limit`` bytes (at least one item each)."""
    group: list[T] = []
    total = 0
    for item in items:
        size = size_of(item)
        if group and total + size > limit:
            yield group
            group, total = [], 0
        group.append(item)
        total += size
    if group:
        yield group


def uncompressed_size(path: Path) -> int:
    """About how many bytes a landing file holds once decompressed (for batching)."""
    size = path.stat().st_size
    if path.name.endswith(".gz"):
        # The gzip trailer says; a damaged file's trailer is garbage, hence the bound.
        return max(size, min(gzip_isize(path) or 0, 100 * size))
    return size
