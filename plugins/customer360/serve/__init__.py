"""What readers get: the atomic publication (DuckDB, Parquet, PostgreSQL) and the run report."""
