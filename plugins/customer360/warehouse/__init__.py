"""Building the warehouse with dbt: the runner, the dbt-duckdb plugin and its SQL functions,
and the pandas reference of the identity clustering the SQL model must match."""
