"""Web loader: Segment-style NDJSON part files into the raw zone (web/events, web/files).

For logical date D it reads every ``web/events/date=<= D`` folder and lands the part files
that are new or changed since the state store saw them, so a file added to a day's folder after
a first run is picked up by the next run, and a rerun of D lands nothing. Events keep their
true ``timestamp`` whatever folder they arrived in. Lines the contract calls malformed
(:mod:`customer360.ingest.landing.web_events`) go to quarantine with file, line, reason and text; a
file that cannot be read at all (corrupt or truncated gzip) is quarantined whole and the run
goes on. Duplicate messageIds are landed (the warehouse deduplicates) and counted: within
the batch and against earlier batches of nearby folder dates.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from typing import Sequence

import duckdb

from customer360.core.duck import connect, sql_str
from customer360.ingest.raw_zone import Reconciliation
from customer360.ingest.landing.batches import ARROW_BATCH_ROWS, Batch, BatchContent, land, landing_run
from customer360.ingest.landing.layout import WEB_EVENTS_DIR
from customer360.ingest.landing.lines import ReadLimits, byte_batches, uncompressed_size
from customer360.ingest.state import FileOutcome, FileVersion, StateStore
from customer360.ingest.landing.web_events import (DERIVED_COLUMNS, LATE_DAYS, RAW_COLUMNS,
                                                   folder_date_window, parse_web_files)
from customer360.core.settings import Settings

log = logging.getLogger(__name__)

SOURCE, ENTITY = "web", "events"
# Uncompressed bytes read in one batch: bounds memory (lines + parsed rows + Arrow copy).
BATCH_BYTES = 256 * 2**20


class SeenMessageIds:
    """messageIds already landed, from folder dates near the ones being loaded, to count
    redeliveries. Redeliveries and late events stay within a few days of each other, so
    only batches within that window are read, and older ids are dropped as the run moves on."""

    def __init__(self, con: duckdb.DuckDBPyConnection, manifest: StateStore,
                 versions: Sequence[FileVersion]):
        self.con = con
        days = [v.file.folder_date for v in versions]
        lo, hi = folder_date_window(min(days))[0], folder_date_window(max(days))[1]
        paths = [p for p in manifest.batch_outputs(ENTITY, "raw", lo, hi) if p.exists()]
        con.execute("CREATE OR REPLACE TEMP TABLE seen_ids (message_id VARCHAR, folder_date DATE)")
        if paths:
            files = "[" + ", ".join(sql_str(str(p)) for p in paths) + "]"
            # The folder date comes from the file's path (web/events/date=.../part-...).
            con.execute(f"""
                INSERT INTO seen_ids
                SELECT DISTINCT "messageId",
                       CAST(regexp_extract(_source_file, 'date=(\\d{{4}}-\\d{{2}}-\\d{{2}})', 1)
                            AS DATE)
                FROM read_parquet({files})
            """)

    def count_and_add(self, view: str) -> dict[int, int]:
        """Per file_id of ``view``: landed lines whose messageId was seen before (in an
        earlier batch or earlier in this one). Then remember this batch's ids."""
        window_start = self.con.execute(
            f"SELECT min(_folder_date) - INTERVAL {LATE_DAYS} DAY FROM {view}").fetchone()[0]
        if window_start is not None:
            self.con.execute("DELETE FROM seen_ids WHERE folder_date < ?", [window_start])
        counts = dict(self.con.execute(f"""
            WITH good AS (
                SELECT file_id, file_id::BIGINT * 4294967296 + ln AS pos, "messageId" AS m
                FROM {view} WHERE reason IS NULL AND NOT blank),
            firsts AS (SELECT m, min(pos) AS first_pos FROM good GROUP BY m)
            SELECT file_id, count(*)
            FROM good JOIN firsts USING (m)
            WHERE pos > first_pos OR m IN (SELECT message_id FROM seen_ids)
            GROUP BY file_id
        """).fetchall())
        self.con.execute(f"""
            INSERT INTO seen_ids SELECT DISTINCT "messageId", _folder_date
            FROM {view} WHERE reason IS NULL AND NOT blank
        """)
        return counts


def _land_group(settings: Settings, con: duckdb.DuckDBPyConnection, manifest: StateStore,
                group: list[FileVersion], logical_date: dt.date,
                seen: SeenMessageIds) -> Reconciliation:
    batch = Batch.start(settings, manifest, SOURCE, ENTITY, logical_date)
    parsed = parse_web_files(con, [v.file for v in group], ReadLimits.of(settings))
    view = parsed.view
    stats = {fid: (read, bad, late) for fid, read, bad, late in con.execute(f"""
        SELECT file_id, count(*) FILTER (WHERE NOT blank), count(reason), count(warning)
        FROM {view} GROUP BY file_id""").fetchall()}
    duplicates = seen.count_and_add(view)
    columns = ", ".join(f'"{c}"' for c in RAW_COLUMNS + DERIVED_COLUMNS)
    rows = con.execute(f"""
        SELECT {columns}, _extra, _folder_date, _source_file, ln AS _source_line
        FROM {view} WHERE reason IS NULL AND NOT blank
    """).to_arrow_table(batch_size=ARROW_BATCH_ROWS)
    cur = con.execute(f"""
        SELECT _source_file AS source_file, ln AS source_line, record_key, reason, raw_text
        FROM {view} WHERE reason IS NOT NULL ORDER BY file_id, ln""")
    names = [d[0] for d in cur.description]
    quarantine = [dict(zip(names, r)) for r in cur.fetchall()]

    outcomes, late_total, whole = [], 0, Counter()
    for fid, v in enumerate(group):
        if fid in parsed.unreadable:
            reason = parsed.unreadable[fid]
            quarantine.append({"source_file": v.file.rel, "source_line": None,
                               "record_key": None, "reason": reason, "raw_text": None})
            # The file counts as one record read and quarantined, so it is never lost silently.
            outcomes.append(FileOutcome(v, "quarantined", 1, 0, 1, reason=reason))
            whole[reason.split(":")[0]] += 1
            log.warning("web file %s quarantined: %s", v.file.rel, reason)
            continue
        read, bad, late = stats.get(fid, (0, 0, 0))
        late_total += late
        outcomes.append(FileOutcome(v, "loaded", read, read - bad, bad, duplicates.get(fid, 0)))
    notes = [f"{len(group)} files"]
    notes += [f"{n} file(s) quarantined whole: {r}" for r, n in whole.items()]
    if late_total:
        notes.append(f"{late_total} events more than {LATE_DAYS} days older than their folder")
    superseding = sum(1 for v in group if v.previous_batch_id)
    if superseding:
        notes.append(f"{superseding} changed file(s) loaded again as a new version")
    content = BatchContent(
        rows=rows, quarantine=quarantine, outcomes=outcomes,
        file_extra={"duplicate_message_ids": [o.duplicates for o in outcomes]},
        duplicates=sum(o.duplicates for o in outcomes), note="; ".join(notes))
    return land(settings, manifest, batch, content)


def load_web(settings: Settings, logical_date: dt.date) -> list[Reconciliation]:
    """Land every web part file up to ``logical_date`` not landed yet; one reconciliation a
    batch (an empty list when there is nothing new)."""
    with landing_run(settings, SOURCE, WEB_EVENTS_DIR, logical_date) as (manifest, scan):
        versions = manifest.changed(scan.web, ENTITY)
        if not versions:
            log.info("web: nothing new up to %s", logical_date)
            return []
        con = connect(settings)
        try:
            seen = SeenMessageIds(con, manifest, versions)
            return [_land_group(settings, con, manifest, group, logical_date, seen)
                    for group in byte_batches(versions, lambda v: uncompressed_size(v.file.path),
                                              BATCH_BYTES)]
        finally:
            con.close()
