"""Rows the raw gate rejects stay in their immutable batch but never reach staging."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from customer360.warehouse.dbt_runner import run_layer
from tests import warehouse_fixtures as wf


def test_gate_rejected_rows_are_left_out_of_staging(tmp_path, monkeypatch):
    settings = wf.use_home(monkeypatch, tmp_path)
    wf.land_first_load(settings)
    con = duckdb.connect()
    victim = con.execute(
        f"SELECT messageId, _batch_id, _source_file, _source_line FROM read_parquet("
        f"'{settings.lake_raw}/web/events/*/*.parquet') ORDER BY messageId LIMIT 1").fetchone()
    con.close()
    run_layer(settings, "staging", logical_date=wf.LOAD_1)
    before = wf.scalar(settings.warehouse_path,
                       "SELECT count(*) FROM staging.stg_web__events WHERE message_id = ?", [victim[0]])
    assert before == 1
    rejects = settings.quarantine / "_gate_rejects"
    rejects.mkdir(parents=True)
    pq.write_table(pa.table({"_batch_id": [victim[1]], "_source_file": [victim[2]],
                             "_source_line": pa.array([victim[3]], pa.int64()),
                             "reason": ["raw.web_events: type not in (page, track, identify)"]}),
                   rejects / f"{victim[1]}.parquet")
    run_layer(settings, "staging", logical_date=wf.LOAD_1, full_refresh=True)
    assert wf.scalar(settings.warehouse_path,
                     "SELECT count(*) FROM staging.stg_web__events WHERE message_id = ?", [victim[0]]) == 0
    # Everything else is still there.
    assert wf.scalar(settings.warehouse_path, "SELECT count(*) FROM staging.stg_web__events") > 0
