"""The rules of a web event line (docs/sources.md section 2), as one vectorized DuckDB query.

The validator reports what these rules call an error, and the web loader quarantines exactly
those lines; warnings (events later than the contract allows) are reported and still loaded.
A line becomes one raw row with the Segment fields as sent: scalars as text, ``context``,
``properties`` and ``traits`` as JSON text, unknown top-level keys kept in ``_extra``.

All six Segment call types land; a call needs an anonymousId or a userId (server-side calls
carry only userId), an alias a previousId and a userId, a group a groupId. ``timestamp`` is
Segment's: when a line lacks it, it is derived the way Segment's collector derives it
(receivedAt - (sentAt - originalTimestamp), which corrects the device's clock skew; else
originalTimestamp; else receivedAt), and ``_timestamp_from`` names the fields it came from
(null when the line had its own).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import duckdb

from customer360.ingest.landing.duck import insert_rows
from customer360.ingest.landing.layout import LandingFile
from customer360.ingest.landing.lines import ReadLimits, numbered_view, read_parsed

LATE_DAYS = 3  # docs/sources.md: timestamp can be up to 3 days older than its file's date
EVENT_TYPES = ("identify", "track", "page", "screen", "group", "alias")
SCALAR_FIELDS = ("messageId", "type", "event", "anonymousId", "userId", "timestamp", "receivedAt",
                 "originalTimestamp", "sentAt", "previousId", "groupId", "name", "category")
JSON_FIELDS = ("context", "properties", "traits")
RAW_COLUMNS = SCALAR_FIELDS + JSON_FIELDS
# Written by the loader, not sent by Segment: which fields a missing timestamp came from.
DERIVED_COLUMNS = ("_timestamp_from",)
_TYPES_SHOWN = ", ".join(EVENT_TYPES[:-1]) + " or " + EVENT_TYPES[-1]

_SCHEMA = "{" + ", ".join([f'"{f}": "VARCHAR"' for f in SCALAR_FIELDS]
                          + [f'"{f}": "JSON"' for f in JSON_FIELDS]) + "}"
# json_merge_patch with nulls deletes the known keys, leaving the unknown ones for _extra.
_KNOWN = "[" + ", ".join(f"'{f}'" for f in RAW_COLUMNS) + "]"
_KNOWN_KEYS_NULL = "{" + ", ".join(f'"{f}": null' for f in RAW_COLUMNS) + "}"
# ISO-8601 with seconds and an explicit offset: without one the instant is ambiguous.
_ISO_UTC = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})"


def _ts(field: str) -> str:
    return (f"CASE WHEN regexp_full_match(e.{field}, '{_ISO_UTC}') "
            f"THEN try_cast(e.{field} AS TIMESTAMPTZ) END")


def _iso_ms(expr: str) -> str:
    return f"strftime({expr} AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%gZ')"


def _shown(expr: str) -> str:
    return f"coalesce('''' || left({expr}, 40) || '''', 'null')"


def parse_sql(files_table: str, safe: bool = True) -> Callable[[str], str]:
    """The parse step for :func:`read_parsed`; ``files_table`` has file_id, folder_date, rel.

    ``safe=False`` guards the JSON parse with json_valid only, which is much cheaper than
    DuckDB's ``try()`` but lets a line that json_valid accepts and from_json rejects fail the
    whole query; :func:`read_parsed` then reads file by file with the safe parse.
    """
    to_struct = (f"try(from_json(line, '{_SCHEMA}'))" if safe
                 else f"CASE WHEN json_valid(line) THEN from_json(line, '{_SCHEMA}') END")

    def parse(source: str) -> str:
        return f"""
        WITH obj AS (
            SELECT file_id, coalesce(strlen(line), 0) AS _nbytes, line, bad_encoding, line_error,
                   line_error IS NULL AND (line IS NULL OR NOT regexp_matches(line, '\\S'))
                     AS blank,
                   CASE WHEN NOT bad_encoding AND line_error IS NULL
                             AND starts_with(ltrim(line), '{{')
                        THEN {to_struct} END AS e
            FROM ({source})
        ),
        typed AS (
            SELECT obj.*, f.folder_date, f.rel, {_ts('timestamp')} AS sent_ts,
                   {_ts('receivedAt')} AS received, {_ts('originalTimestamp')} AS original,
                   {_ts('sentAt')} AS sent_at
            FROM obj JOIN {files_table} f USING (file_id)
        ),
        timed AS (
            -- Segment's own fallbacks for a line without timestamp (docs/sources.md section 2)
            SELECT typed.*,
                   CASE WHEN e.timestamp IS NOT NULL THEN sent_ts
                        WHEN original IS NOT NULL AND sent_at IS NOT NULL AND received IS NOT NULL
                          THEN received - (sent_at - original)
                        WHEN original IS NOT NULL THEN original
                        ELSE received END AS ts,
                   CASE WHEN e.timestamp IS NOT NULL THEN NULL
                        WHEN original IS NOT NULL AND sent_at IS NOT NULL AND received IS NOT NULL
                          THEN 'receivedAt - (sentAt - originalTimestamp)'
                        WHEN original IS NOT NULL THEN 'originalTimestamp'
                        WHEN received IS NOT NULL THEN 'receivedAt' END AS ts_from
            FROM typed
        ),
        checked AS (
            SELECT timed.*,
              CASE
                WHEN blank THEN NULL
                WHEN line_error IS NOT NULL THEN line_error
                WHEN bad_encoding THEN 'line is not valid UTF-8'
                WHEN e IS NULL THEN CASE WHEN json_valid(line) THEN 'line is not a JSON object'
                                         ELSE 'line is not valid JSON' END
                WHEN coalesce(e.messageId, '') = '' THEN 'missing messageId'
                WHEN e.type IS NULL OR e.type NOT IN {EVENT_TYPES}
                  THEN 'type must be {_TYPES_SHOWN}, got ' || {_shown('e.type')}
                WHEN coalesce(e.anonymousId, '') = '' AND coalesce(e.userId, '') = ''
                  THEN 'missing both anonymousId and userId'
                WHEN e.timestamp IS NOT NULL AND sent_ts IS NULL
                  THEN 'timestamp is not an ISO-8601 UTC time: ' || {_shown('e.timestamp')}
                WHEN e.originalTimestamp IS NOT NULL AND original IS NULL
                  THEN 'originalTimestamp is not an ISO-8601 UTC time: '
                       || {_shown('e.originalTimestamp')}
                WHEN e.sentAt IS NOT NULL AND sent_at IS NULL
                  THEN 'sentAt is not an ISO-8601 UTC time: ' || {_shown('e.sentAt')}
                WHEN ts IS NULL
                  THEN 'missing timestamp, and no originalTimestamp or receivedAt to take it from'
                WHEN received IS NULL
                  THEN 'receivedAt is not an ISO-8601 UTC time: ' || {_shown('e.receivedAt')}
                WHEN e.type = 'track' AND coalesce(e.event, '') = ''
                  THEN 'track call without event'
                WHEN e.type = 'alias' AND coalesce(e.previousId, '') = ''
                  THEN 'alias call without previousId'
                WHEN e.type = 'alias' AND coalesce(e.userId, '') = ''
                  THEN 'alias call without userId'
                WHEN e.type = 'group' AND coalesce(e.groupId, '') = ''
                  THEN 'group call without groupId'
                WHEN e.event = 'Order Completed'
                     AND coalesce(json_extract_string(e.properties, '$.order_id'), '') = ''
                  THEN 'Order Completed without properties.order_id'
                WHEN e.event = 'Order Completed'
                     AND try_cast(json_extract_string(e.properties, '$.revenue') AS DOUBLE) IS NULL
                  THEN 'Order Completed without a numeric properties.revenue'
                WHEN e.event = 'Order Completed'
                     AND coalesce(json_type(e.properties, '$.products'), '') <> 'ARRAY'
                  THEN 'Order Completed without a properties.products list'
                WHEN ts >= folder_date + INTERVAL 1 DAY
                  THEN 'timestamp ' || coalesce(e.timestamp, {_iso_ms("ts")}) || ' is after its folder''s day '
                       || strftime(folder_date, '%Y-%m-%d')
              END AS reason
            FROM timed
        )
        SELECT file_id, _nbytes, blank,
               {", ".join(f'e.{c} AS "{c}"' if c != "timestamp"
                          else f'CASE WHEN e.timestamp IS NOT NULL THEN e.timestamp '
                               f'ELSE {_iso_ms("ts")} END AS "timestamp"'
                          for c in RAW_COLUMNS)},
               ts_from AS _timestamp_from,
               CASE WHEN reason IS NULL AND len(list_filter(json_keys(line),
                                                          k -> NOT list_contains({_KNOWN}, k))) > 0
                    THEN json_merge_patch(line, '{_KNOWN_KEYS_NULL}')::VARCHAR
               END AS _extra,
               folder_date AS _folder_date,
               rel AS _source_file,
               reason,
               CASE WHEN reason IS NULL AND ts < folder_date - INTERVAL {LATE_DAYS} DAY
                    THEN 'timestamp ' || coalesce(e.timestamp, {_iso_ms("ts")}) || ' is more than {LATE_DAYS} days before '
                         || 'its folder''s date (late beyond the contract); loaded anyway'
               END AS warning,
               CASE WHEN reason IS NOT NULL THEN line END AS raw_text,
               CASE WHEN reason IS NOT NULL THEN try(json_extract_string(line, '$.messageId'))
               END AS record_key
        FROM checked
        """
    return parse


@dataclass
class ParsedWeb:
    """Web files read into DuckDB: ``view`` has one row a line (see :func:`parse_sql`) plus
    ``ln``; ``unreadable`` maps file_id to the reason the whole file could not be read."""

    files: list[LandingFile]
    view: str
    unreadable: dict[int, str]


def parse_web_files(con: duckdb.DuckDBPyConnection, files: Sequence[LandingFile],
                    limits: ReadLimits, name: str = "web_lines") -> ParsedWeb:
    """Read and check web part files; the same code for the validator and the loader."""
    files_table = f"{name}_files"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {files_table} "
                f"(file_id INTEGER, folder_date DATE, rel VARCHAR)")
    insert_rows(con, files_table, [(i, f.folder_date, f.rel) for i, f in enumerate(files)])
    paths: list[Path] = [f.path for f in files]
    unreadable = read_parsed(con, name, paths, parse_sql(files_table, safe=False),
                             safe_parse=parse_sql(files_table), gzipped=True, limits=limits)
    return ParsedWeb(list(files), numbered_view(con, name), unreadable)


def folder_date_window(day: dt.date) -> tuple[dt.date, dt.date]:
    """Folder dates whose files can hold the same events as ``day``'s (late arrivals)."""
    return day - dt.timedelta(days=LATE_DAYS), day + dt.timedelta(days=LATE_DAYS)
