"""Data-quality gates between the pipeline's stages (issue 6).

Read top-down:

- ``gates``: ``run_gate(settings, stage, logical_date, run_id=...)``, the entry point;
- ``suites``: the YAML suites under ``expectations/<stage>/``;
- ``raw_gate`` / ``warehouse_gate``: what each gate validates and how it reads it;
- ``suite_runner``: one suite against one target (column contract, then data);
- ``gx_validation``: Great Expectations 1.x on DataFrames, chunked, imported lazily;
- ``targets``: DuckDB queries and Parquet batches as chunked DataFrames;
- ``metrics``: checks GX has no expectation for, computed as small frames;
- ``masking``: PII masking of every sample and observed value;
- ``results``, ``data_docs``: the gate's result, its failure message and its HTML page.

Nothing here imports Great Expectations at import time (it costs seconds); the audit store
the results go to is ``customer360.core.audit``.
"""
