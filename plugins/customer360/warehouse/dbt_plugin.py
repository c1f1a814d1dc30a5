"""The dbt-duckdb plugin of the warehouse: installs :mod:`customer360.warehouse.sql_functions` on every
connection dbt opens (``plugins: [{module: customer360.warehouse.dbt_plugin}]`` in profiles.yml)."""

from __future__ import annotations

from dbt.adapters.duckdb.plugins import BasePlugin

from customer360.ingest.landing.pos_amounts import install_amount_macros
from customer360.warehouse.sql_functions import register_functions


class Plugin(BasePlugin):
    def configure_connection(self, conn) -> None:
        register_functions(conn)

    def configure_cursor(self, cursor) -> None:
        # Temporary macros belong to one DuckDB connection, and each dbt cursor is its own:
        # the POS amount macros (unlike the Python functions) must be created on each.
        install_amount_macros(cursor)
