"""Land one batch of landing files: raw rows, quarantined rows, one row a file, the files'
record in the state store and the reconciliation count, in the order that keeps a crash from
counting anything twice (see :mod:`customer360.ingest.state`)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa

from customer360.ingest.raw_zone import (Reconciliation, batch_path, new_batch_id, record_reconciliation,
                              utcnow, write_quarantine, write_raw_batch)
from customer360.ingest.landing.layout import LandingScan, scan_landing
from customer360.ingest.state import FileOutcome, StateStore, source_lock
from customer360.core.settings import Settings

log = logging.getLogger(__name__)

FILES_ENTITY = "files"
# Rows handed to the raw zone come in Arrow batches of this size, so that DuckDB scans them
# on all its threads when it writes the Parquet file (one big batch is read by one thread).
ARROW_BATCH_ROWS = 122_880


@dataclass
class Batch:
    """One batch of one entity; ``outputs`` are the paths it may write, by role; ``started``
    is when it began (perf_counter), so :func:`land` can log how long reading took."""

    source: str
    entity: str
    load_date: dt.date
    batch_id: str
    outputs: dict[str, Path]
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def start(cls, settings: Settings, state: StateStore, source: str, entity: str,
              load_date: dt.date, with_files_entity: bool = True) -> "Batch":
        batch_id = new_batch_id(source, entity)
        outputs = {
            "raw": batch_path(settings.lake_raw, source, entity, load_date, batch_id),
            "quarantine": batch_path(settings.quarantine, source, entity, load_date, batch_id),
        }
        if with_files_entity:
            outputs[FILES_ENTITY] = batch_path(settings.lake_raw, source, FILES_ENTITY,
                                               load_date, batch_id)
        state.begin(batch_id, entity, outputs)
        return cls(source, entity, load_date, batch_id, outputs)


@dataclass
class BatchContent:
    rows: pa.Table                     # source columns + _source_file, _source_line, ...
    quarantine: list[dict]             # source_file, source_line, record_key, reason, raw_text
    outcomes: Sequence[FileOutcome]
    file_extra: dict[str, list] = field(default_factory=dict)  # extra columns of the files rows
    duplicates: int = 0
    note: str = ""


def _files_table(batch: Batch, content: BatchContent) -> pa.Table:
    outs = content.outcomes
    columns = {
        "source_file": pa.array([o.version.file.rel for o in outs], pa.string()),
        "size": pa.array([o.version.size for o in outs], pa.int64()),
        "sha256": pa.array([o.version.sha256 for o in outs], pa.string()),
        "folder_date": pa.array([o.version.file.folder_date for o in outs], pa.date32()),
        "status": pa.array([o.status for o in outs], pa.string()),
        "reason": pa.array([o.reason for o in outs], pa.string()),
        "rows_read": pa.array([o.rows_read for o in outs], pa.int64()),
        "rows_landed": pa.array([o.rows_landed for o in outs], pa.int64()),
        "rows_quarantined": pa.array([o.rows_quarantined for o in outs], pa.int64()),
        "supersedes_batch_id": pa.array([o.version.previous_batch_id for o in outs], pa.string()),
    }
    for name, values in content.file_extra.items():
        columns[name] = pa.array(values)
    return pa.table(columns)


def land(settings: Settings, state: StateStore, batch: Batch,
         content: BatchContent) -> Reconciliation:
    """Write the batch, commit it in the state store, then append its reconciliation row."""
    outs = content.outcomes
    first = outs[0].version.file.rel if outs else None
    rec = Reconciliation(
        source=batch.source, entity=batch.entity, batch_id=batch.batch_id,
        load_date=batch.load_date.isoformat(),
        source_file=first if len(outs) <= 1 else f"{first} (+{len(outs) - 1} more files)",
        read=sum(o.rows_read for o in outs), landed=sum(o.rows_landed for o in outs),
        quarantined=sum(o.rows_quarantined for o in outs),
        duplicates_in_raw=content.duplicates, note=content.note)
    # The rows written must be the rows counted: a mismatch is a loader bug, not bad data.
    if (not rec.balanced or rec.landed != content.rows.num_rows
            or rec.quarantined != len(content.quarantine)):
        raise AssertionError(
            f"{batch.source}/{batch.entity} batch {batch.batch_id}: read {rec.read}, counted "
            f"{rec.landed} landed and {rec.quarantined} quarantined, but has "
            f"{content.rows.num_rows} rows and {len(content.quarantine)} quarantined rows")
    checked_at = time.perf_counter()
    loaded_at = utcnow()
    write_raw_batch(settings, content.rows, source=batch.source, entity=batch.entity,
                    load_date=batch.load_date, batch_id=batch.batch_id, loaded_at=loaded_at)
    write_quarantine(settings, content.quarantine, source=batch.source, entity=batch.entity,
                     load_date=batch.load_date, batch_id=batch.batch_id)
    if FILES_ENTITY in batch.outputs:
        write_raw_batch(settings, _files_table(batch, content), source=batch.source,
                        entity=FILES_ENTITY, load_date=batch.load_date, batch_id=batch.batch_id,
                        loaded_at=loaded_at)
    state.commit_files(batch.batch_id, batch.entity, batch.load_date, batch.outputs, outs)
    record_reconciliation(settings, rec)
    log.info("%s/%s batch %s: %d files, %d records read and checked in %.1f s, written in %.1f s",
             batch.source, batch.entity, batch.batch_id, len(outs), rec.read,
             checked_at - batch.started, time.perf_counter() - checked_at)
    return rec


@contextmanager
def landing_run(settings: Settings, source: str, folder: Path,
                through: dt.date) -> Iterator[tuple[StateStore, LandingScan]]:
    """One loader's run over the landing folder: the source's lock and state store held
    throughout, a batch an earlier run left half-done recovered first, the landing scanned up
    to ``through`` and the scan's problems under ``folder`` logged."""
    with source_lock(settings.state_dir, source), StateStore(settings, source) as store:
        store.recover()
        scan = scan_landing(settings.landing, through=through)
        for p in scan.problems:
            if p.file.startswith(folder.as_posix()):
                log.warning("landing: %s: %s", p.file, p.reason)
        yield store, scan
