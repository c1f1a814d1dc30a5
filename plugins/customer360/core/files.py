"""Writing files so that a reader sees the old version or the new one, never half of one.

Every file the pipeline replaces (raw batches, the publication, state files, Data Docs,
files rewritten by an erasure) is written in full under a temporary name in the destination
folder (hidden: it starts with a dot, so no glob of the folder counts it), flushed to disk,
renamed over the final name with :func:`os.replace` (atomic on one file system; a reader
that has the old file open keeps reading the old inode), and the folder is flushed so that
the rename itself survives a crash. When anything fails before the rename, the temporary
file is removed and the old file is left as it was.

- :func:`atomic_write` yields an open file to write into;
- :func:`atomic_path` yields the temporary *path*, for a tool that writes the file itself
  (``COPY ... TO``, ``pyarrow.parquet.write_table``, a DuckDB database file);
- :func:`staged_files` does the same for several files that must appear together (a
  publication: the database and its Parquet copies), renamed in the order they were staged;
- :func:`swap_into_place` is that last step for a database and its staged copies;
- :func:`staged_folder` writes a whole folder under a hidden name and renames it into place,
  and :func:`swap_symlink` points a symlink at a new target in one rename: together, the way
  a set of files (a publication's version folder) replaces another as a whole.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

log = logging.getLogger(__name__)

# A DuckDB database written under a temporary name may leave its write-ahead log beside it.
DUCKDB_SIDECARS = (".wal",)


def fsync_path(path: str | Path) -> None:
    """Flush a file, or a folder's entries (after a rename into it), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(final: str | Path, *, suffix: str = ".tmp", create: bool = True) -> Path:
    """A new unique hidden name beside ``final`` (``.<name>.<random><suffix>``), made with
    :func:`tempfile.mkstemp`. ``create=False`` removes the empty file again, for a tool that
    will not write over an existing one (DuckDB takes an empty file for a corrupt database)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent)
    os.close(fd)
    if not create:
        os.unlink(name)
    return Path(name)


def _discard(tmp: Path, sidecars: Iterable[str] = ()) -> None:
    tmp.unlink(missing_ok=True)
    for sidecar in sidecars:
        Path(f"{tmp}{sidecar}").unlink(missing_ok=True)


def replace_into_place(pairs: Iterable[tuple[str | Path, str | Path]], *, sync: bool = True) -> None:
    """Sync each fully written ``(tmp, final)`` file, rename them over their final names in
    the given order, then sync the folders that changed. ``sync=False`` skips the syncs (a
    reader still never sees half a file, but a crash may lose the new version)."""
    pairs = [(Path(tmp), Path(final)) for tmp, final in pairs]
    if sync:
        for tmp, _ in pairs:
            fsync_path(tmp)
    for tmp, final in pairs:
        os.replace(tmp, final)
    if sync:
        for folder in dict.fromkeys(final.parent for _, final in pairs):
            fsync_path(folder)


def swap_into_place(tmp_db: Path, db_path: Path, staged: list[tuple[Path, Path]]) -> None:
    """Make a fully written publication visible: sync everything, then rename the database
    over its final name first, then each staged ``(tmp, final)`` copy."""
    replace_into_place([(tmp_db, db_path), *staged])


def swap_symlink(link: str | Path, target: str | Path) -> None:
    """Make ``link`` a symlink to ``target`` (relative targets stay relative) in one rename:
    a reader resolving ``link`` gets the old target or the new one, never no link at all.
    Replaces a regular file at ``link`` too. A real folder there (a layout from before the
    link) cannot be renamed over: it is moved aside first and removed after, so for that one
    swap ``link`` is briefly missing."""
    import shutil

    link = Path(link)
    aside = None
    if link.is_dir() and not link.is_symlink():
        aside = Path(tempfile.mkdtemp(prefix=f".{link.name}.old.", suffix=".tmp", dir=link.parent))
        os.replace(link, aside / link.name)
    tmp = temp_path(link, suffix=".link", create=False)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(link.parent)
    if aside is not None:
        shutil.rmtree(aside)


def move_aside(path: str | Path, *, stamp: str | None = None,
               sidecars: Iterable[str] = (".wal", "-wal", "-shm", "-journal")) -> Path:
    """Rename a broken file (and whichever of its database sidecars exist) to
    ``<name>.broken-<UTC time>`` beside it: a repair keeps what it replaces as evidence, never
    deletes it. Returns the new path."""
    path = Path(path)
    stamp = stamp or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = path.with_name(f"{path.name}.broken-{stamp}")
    os.replace(path, dest)
    for sidecar in sidecars:
        side = Path(f"{path}{sidecar}")
        if side.exists():
            os.replace(side, Path(f"{dest}{sidecar}"))
    fsync_path(path.parent)
    return dest


def move_file(src: str | Path, dest: str | Path) -> Path:
    """Move a whole file to ``dest`` (same file system: one rename), its folder made first."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dest)
    fsync_path(dest.parent)
    return dest


@contextmanager
def staged_folder(final: str | Path) -> Iterator[Path]:
    """Yield an empty hidden staging folder beside ``final`` (which must not exist yet); when
    the block ends without error every file in it is synced and the folder renamed to
    ``final``. On error it is removed and ``final`` never appears. For a set of files that
    must appear together (a publication version), made visible by :func:`swap_symlink`."""
    import shutil

    final = Path(final)
    if final.exists():
        raise FileExistsError(f"{final} exists already")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield staging
        for folder, _, names in os.walk(staging):
            for name in names:
                fsync_path(Path(folder) / name)
            fsync_path(folder)
        os.rename(staging, final)  # never over an existing folder (checked above)
        fsync_path(final.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def remove_temps(folder: str | Path, suffixes: Iterable[str] = (".tmp", ".link")) -> list[Path]:
    """Remove what writers killed mid-way (SIGKILL, a full disk) left in ``folder``: the hidden
    temporary names of :func:`temp_path` (files, their sidecars, staging folders) that end in
    one of ``suffixes``. Only call it while holding the lock its writers take."""
    import shutil

    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if not entry.name.startswith("."):
            continue
        stem = entry.name
        for sidecar in DUCKDB_SIDECARS:
            stem = stem.removesuffix(sidecar)
        if not stem.endswith(tuple(suffixes)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextmanager
def atomic_path(final: str | Path, *, suffix: str = ".tmp", create: bool = True,
                sidecars: Iterable[str] = (), sync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``final`` for a tool to write; when the block ends
    without error, sync it and rename it over ``final``. On error (or when the block left no
    file there) ``final`` is untouched and the temporary file (and ``tmp + sidecar`` for each
    of ``sidecars``) is removed.

    ``create=False`` for a tool that refuses an existing empty file (a DuckDB database);
    ``sync=False`` for a copy that need not survive a crash (see :func:`replace_into_place`)::

        with atomic_path(dest) as tmp:
            con.execute(f"COPY ({sql}) TO '{tmp}' (FORMAT parquet)")
    """
    final = Path(final)
    tmp = temp_path(final, suffix=suffix, create=create)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp} for {final}")
        replace_into_place([(tmp, final)], sync=sync)
    finally:
        _discard(tmp, sidecars)


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", *, encoding: str | None = "utf-8",
                 suffix: str = ".tmp") -> Iterator[IO]:
    """Yield a file open for writing (``mode`` "w" or "wb") under a temporary name beside
    ``path``; on a clean exit it is flushed, synced and renamed over ``path``. If the block
    raises, ``path`` keeps its old content and the temporary file is removed."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes a whole new file: mode 'w' or 'wb', not {mode!r}")
    with atomic_path(path, suffix=suffix) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
            fh.flush()


def write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> None:
    """Replace ``path`` atomically with ``text``."""
    with atomic_write(path, "w", encoding=encoding) as fh:
        fh.write(text)


def write_bytes(path: str | Path, data: bytes, *, suffix: str = ".tmp") -> None:
    """Replace ``path`` atomically with ``data``."""
    with atomic_write(path, "wb", suffix=suffix) as fh:
        fh.write(data)


@contextmanager
def staged_files(*, sidecars: Iterable[str] = ()) -> Iterator[Callable[..., Path]]:
    """Stage several files that must replace their final names together.

    Yields ``stage(final, *, suffix=".tmp", create=True) -> tmp``; write each ``tmp``. When
    the block ends without error every staged file is synced, then renamed over its final name
    in staging order (stage the file readers open first, e.g. the database, first); on error
    every staged temporary file (and its ``sidecars``) is removed and nothing is renamed."""
    staged: list[tuple[Path, Path]] = []
    sidecars = tuple(sidecars)

    def stage(final: str | Path, *, suffix: str = ".tmp", create: bool = True) -> Path:
        tmp = temp_path(final, suffix=suffix, create=create)
        staged.append((tmp, Path(final)))
        return tmp

    try:
        yield stage
        replace_into_place(staged)
    finally:
        for tmp, _ in staged:
            _discard(tmp, sidecars)


# ---------------------------------------------------------------- append-only JSON lines

@contextmanager
def _locked(path: Path, mode: str) -> Iterator[IO]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _torn_tail(fh) -> int | None:
    """Where a torn last line starts (a crash or a full disk mid-append left it without its
    newline), or None when the file ends with a whole line."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    if size == 0:
        return None
    fh.seek(size - 1)
    if fh.read(1) == b"\n":
        return None
    # Back to the previous newline, in blocks: a log line is small, the log can be large.
    pos = size
    while pos > 0:
        step = min(4096, pos)
        fh.seek(pos - step)
        block = fh.read(step)
        cut = block.rfind(b"\n")
        if cut >= 0:
            return pos - step + cut + 1
        pos -= step
    return 0


def append_jsonl(path: str | Path, lines: Iterable[str]) -> None:
    """Append whole lines to an append-only log under an exclusive lock, flushed to disk.

    A torn last line left by an earlier writer is moved to ``<log>.torn`` (kept for a look,
    never parsed) and cut off first, so every line after it is whole again."""
    path = Path(path)
    text = "".join(line.rstrip("\n") + "\n" for line in lines).encode("utf-8")
    with _locked(path, "ab+") as fh:
        start = _torn_tail(fh)
        if start is not None:
            fh.seek(start)
            torn = fh.read()
            with open(f"{path}.torn", "ab") as keep:
                keep.write(torn + b"\n")
            fh.truncate(start)
            log.warning(
                "%s: cut a torn last line of %d bytes (kept in %s.torn)", path, len(torn), path.name)
        fh.seek(0, os.SEEK_END)
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl_lines(path: str | Path) -> list[str]:
    """The whole lines of an append-only log, blank ones dropped. A torn last line (no
    newline: its writer died mid-append) is reported and skipped; the next append repairs it."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    whole, sep, torn = data.rpartition(b"\n")
    if torn:
        log.warning(
            "%s: skipping a torn last line of %d bytes (a write that did not finish)", path,
            len(torn))
    text = (whole + sep).decode("utf-8", errors="replace")
    return [line for line in text.split("\n") if line.strip()]
