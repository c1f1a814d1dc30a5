"""The outbox and its delivery schedule: how simulated files reach the landing folder over time.

The simulator writes every landing file (every version of it) into ``sim_dir/outbox`` and one
line per version into ``sim_dir/deliveries.jsonl``::

    {"path": "pos/date=2026-01-05/store_S003.csv", "outbox": "outbox/pos/date=2026-01-05/store_S003.csv.v1",
     "available_from": "2026-01-05", "version": 1}

:func:`deliver` then materializes the landing folder as it stood at the end of a day, so a
day-by-day replay sees late web part files and corrected POS files arrive after a first read.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from customer360.core.files import atomic_path

SCHEDULE = "deliveries.jsonl"
OUTBOX = "outbox"


@dataclass(frozen=True)
class Delivery:
    path: str              # relative to the landing folder
    outbox: str            # relative to sim_dir
    available_from: dt.date
    version: int


class Outbox:
    """Writes landing files into the outbox as they are produced and keeps their schedule.
    Versions of one path are given together; the newest keeps the plain name."""

    def __init__(self, sim_dir: Path):
        self.sim_dir = Path(sim_dir)
        self.deliveries: list[Delivery] = []

    def put(self, path: str, versions: list[tuple[dt.date, bytes]]) -> None:
        versions = sorted(versions, key=lambda v: v[0])
        for i, (available, data) in enumerate(versions, start=1):
            name = path if i == len(versions) else f"{path}.v{i}"
            target = self.sim_dir / OUTBOX / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            self.deliveries.append(Delivery(path, f"{OUTBOX}/{name}", available, i))

    def close(self) -> list[Delivery]:
        """Write the schedule, ordered by (available_from, path, version); return it."""
        self.deliveries.sort(key=lambda d: (d.available_from, d.path, d.version))
        with open(self.sim_dir / SCHEDULE, "w", encoding="utf-8") as fh:
            for d in self.deliveries:
                fh.write(json.dumps({"path": d.path, "outbox": d.outbox,
                                     "available_from": d.available_from.isoformat(),
                                     "version": d.version}) + "\n")
        return self.deliveries


def read_schedule(sim_dir: Path) -> list[Delivery]:
    schedule = Path(sim_dir) / SCHEDULE
    if not schedule.exists():
        return []
    out = []
    with open(schedule, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                r = json.loads(line)
                out.append(Delivery(r["path"], r["outbox"], dt.date.fromisoformat(r["available_from"]),
                                    int(r["version"])))
    return out


def _arrival_time(day: dt.date) -> float:
    """The mtime a delivered file gets: 06:00 UTC on its availability day. Distinct per version,
    so a cheap (size, mtime) check tells whether the landing copy is the wanted version."""
    return dt.datetime(day.year, day.month, day.day, 6, tzinfo=dt.timezone.utc).timestamp()


def deliver(sim_dir: Path, landing: Path, through: dt.date) -> list[str]:
    """Make ``landing`` hold, for each scheduled path, its newest version available by the end
    of ``through``. Idempotent; replaces older versions in place (atomic rename); never touches
    files it did not schedule. Returns the landing-relative paths it wrote, sorted."""
    sim_dir, landing = Path(sim_dir), Path(landing)
    wanted: dict[str, Delivery] = {}
    for d in read_schedule(sim_dir):
        if d.available_from <= through:
            best = wanted.get(d.path)
            if best is None or d.version > best.version:
                wanted[d.path] = d
    changed = []
    for path in sorted(wanted):
        d = wanted[path]
        source = sim_dir / d.outbox
        target = landing / path
        mtime = _arrival_time(d.available_from)
        try:
            st = target.stat()
            if st.st_size == source.stat().st_size and st.st_mtime == mtime:
                continue
        except FileNotFoundError:
            pass
        # A dot-name no landing reader matches, renamed into place: readers never see half a
        # file (not synced: a simulated delivery lost in a crash is simply delivered again).
        with atomic_path(target, suffix=".delivering", sync=False) as tmp:
            shutil.copyfile(source, tmp)
            os.utime(tmp, (mtime, mtime))
        changed.append(path)
    return changed


def undeliver(sim_dir: Path, landing: Path) -> int:
    """Remove from ``landing`` every file a previous simulation in ``sim_dir`` scheduled (before a
    new simulation replaces it). Returns how many files were removed."""
    removed = 0
    for path in sorted({d.path for d in read_schedule(sim_dir)}):
        target = Path(landing) / path
        if target.exists():
            target.unlink()
            removed += 1
    return removed
