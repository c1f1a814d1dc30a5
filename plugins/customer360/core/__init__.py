"""What every stage stands on: settings and paths, DuckDB connections, atomic files, masking,
the audit store and alerts. Nothing here imports another stage."""
