"""Where files sit in a landing folder (docs/sources.md) and what does not belong there.

    web/events/date=YYYY-MM-DD/part-NNNN.jsonl.gz
    pos/date=YYYY-MM-DD/store_<store_id>.csv
    pos/reference/stores.csv, pos/reference/products.csv

Files that match nothing are reported as warnings and ignored (docs/sources.md: extra files may
appear and must not break a run). Hidden files (``.name``) are skipped silently: writers use
them as temporary names before an atomic rename. Symbolic links and anything that is not a
regular file or folder (a FIFO would block a reader forever, a device or a link can point
anywhere on the machine) are refused as errors, with the reason, and never read.
"""

from __future__ import annotations

import datetime as dt
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from customer360.ingest.landing.report import ERROR, WARN, Problem

DATE_DIR = re.compile(r"date=(\d{4}-\d{2}-\d{2})")
WEB_PART = re.compile(r"part-\d+\.jsonl\.gz")
POS_STORE_FILE = re.compile(r"store_([A-Za-z0-9_-]+)\.csv")
WEB_EVENTS_DIR = Path("web") / "events"
POS_DIR = Path("pos")
REFERENCE_DIR = POS_DIR / "reference"
STORES_FILE = REFERENCE_DIR / "stores.csv"
PRODUCTS_FILE = REFERENCE_DIR / "products.csv"


@dataclass(frozen=True)
class LandingFile:
    path: Path
    rel: str                      # relative to the landing root, POSIX separators
    folder_date: dt.date | None   # None for reference files
    store_id: str | None = None   # POS transaction files only


@dataclass
class LandingScan:
    root: Path
    web: list[LandingFile] = field(default_factory=list)
    pos: list[LandingFile] = field(default_factory=list)
    stores: LandingFile | None = None
    products: LandingFile | None = None
    problems: list[Problem] = field(default_factory=list)


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _refused(root: Path, entry: Path, scan: LandingScan) -> bool:
    """Report and refuse a link or a special file (lstat: the entry itself, not its target)."""
    mode = entry.lstat().st_mode
    if stat.S_ISLNK(mode):
        why = "a symbolic link: refused (landing entries must be the files themselves)"
    elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        why = "not a regular file or folder (a FIFO, socket or device): refused"
    else:
        return False
    scan.problems.append(Problem(_rel(root, entry), None, why, ERROR))
    return True


def _date_folders(root: Path, parent: Path, through: dt.date | None, scan: LandingScan,
                  allowed: set[str]) -> list[tuple[dt.date, Path]]:
    """The ``date=`` folders under ``parent`` up to ``through``, oldest first."""
    out = []
    for entry in sorted(parent.iterdir()):
        if entry.name.startswith(".") or _refused(root, entry, scan) or entry.name in allowed:
            continue
        match = DATE_DIR.fullmatch(entry.name) if entry.is_dir() else None
        if match is None:
            scan.problems.append(Problem(_rel(root, entry), None,
                                         "unexpected entry (expected date=YYYY-MM-DD folders); "
                                         "ignored", WARN))
            continue
        try:
            day = dt.date.fromisoformat(match.group(1))
        except ValueError:
            scan.problems.append(Problem(_rel(root, entry), None,
                                         f"folder name has an invalid date {match.group(1)!r}",
                                         ERROR))
            continue
        if through is None or day <= through:
            out.append((day, entry))
    return out


def _files(root: Path, folder: Path, pattern: re.Pattern, expected: str,
           scan: LandingScan) -> list[tuple[Path, re.Match]]:
    out = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or _refused(root, entry, scan):
            continue
        match = pattern.fullmatch(entry.name) if entry.is_file() else None
        if match is None:
            scan.problems.append(Problem(_rel(root, entry), None,
                                         f"unexpected entry (expected {expected}); ignored", WARN))
            continue
        out.append((entry, match))
    return out


def scan_landing(root: Path, through: dt.date | None = None) -> LandingScan:
    """List the source files of a landing folder (date folders up to ``through``)."""
    root = Path(root)
    scan = LandingScan(root=root)
    if not root.is_dir():
        scan.problems.append(Problem(str(root), None, "landing folder does not exist", ERROR))
        return scan

    web_dir = root / WEB_EVENTS_DIR
    if web_dir.is_dir():
        for day, folder in _date_folders(root, web_dir, through, scan, allowed=set()):
            for path, _ in _files(root, folder, WEB_PART, "part-NNNN.jsonl.gz", scan):
                scan.web.append(LandingFile(path, _rel(root, path), day))
    else:
        scan.problems.append(Problem(WEB_EVENTS_DIR.as_posix(), None,
                                     "no web events folder", WARN))

    pos_dir = root / POS_DIR
    if pos_dir.is_dir():
        for day, folder in _date_folders(root, pos_dir, through, scan, allowed={"reference"}):
            for path, match in _files(root, folder, POS_STORE_FILE, "store_<id>.csv", scan):
                scan.pos.append(LandingFile(path, _rel(root, path), day, store_id=match.group(1)))
        for name, attr in ((STORES_FILE, "stores"), (PRODUCTS_FILE, "products")):
            path = root / name
            if (path.is_symlink() or path.exists()) and _refused(root, path, scan):
                continue
            if path.is_file():
                setattr(scan, attr, LandingFile(path, name.as_posix(), None))
            else:
                scan.problems.append(Problem(name.as_posix(), None,
                                             "reference file is missing", ERROR))
    else:
        scan.problems.append(Problem(POS_DIR.as_posix(), None, "no POS folder", WARN))
    return scan
