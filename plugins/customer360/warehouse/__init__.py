"""Building the warehouse with dbt: the runner, the dbt-duckdb plugin and its SQL functions,
and the identity clustering the dbt Python model calls."""
