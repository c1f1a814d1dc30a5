"""The one way the package opens DuckDB (dbt-duckdb opens its own, from profiles.yml).

:func:`connect` opens a file or an in-memory database with the settings every connection
here wants:

- the memory limit and thread count of :class:`~customer360.core.settings.Settings`, and
  its temporary directory for spills, all given as ``config`` when the database opens.
  The temporary directory in particular must be given then: DuckDB refuses to switch it once
  a query has spilled to it ("Cannot switch temporary directory after the current one has
  been used"), so it is never ``SET`` later;
- ``TimeZone = 'UTC'``, so that TIMESTAMPTZ values fetched or compared against dates mean
  UTC days whatever the machine's zone (the dbt profile sets the same);
- no progress bar (DuckDB draws one on long queries otherwise);
- any extensions asked for, loaded.

Without settings (a helper that has none, the demo) DuckDB's own limits apply; ``config``
adds or overrides options either way (``config={"threads": 2}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import duckdb

if TYPE_CHECKING:
    from customer360.core.settings import Settings

MEMORY = ":memory:"


def settings_config(settings: Settings) -> dict[str, Any]:
    """The open-time options that come from the settings (the temp folder is created)."""
    settings.duckdb_temp_dir.mkdir(parents=True, exist_ok=True)
    return {"memory_limit": settings.duckdb_memory_limit,
            "threads": int(settings.duckdb_threads),
            "temp_directory": str(settings.duckdb_temp_dir)}


def connect(settings: Settings | None = None, path: str | Path | None = None, *,
            read_only: bool = False, extensions: Iterable[str | Path] = (),
            preserve_insertion_order: bool | None = None,
            config: dict[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection to ``path`` (a database file; in memory when None).

    ``read_only`` opens the file for reading only (several processes may then hold it).
    ``extensions`` are names of extensions DuckDB has (``"json"``) or paths of extension
    files, loaded after the open; a failure to load one raises. ``preserve_insertion_order``
    False lets DuckDB reorder rows of queries without ORDER BY (less memory on big copies, as
    in the dbt profile); None keeps DuckDB's default (order preserved).
    """
    options: dict[str, Any] = settings_config(settings) if settings is not None else {}
    if preserve_insertion_order is not None:
        options["preserve_insertion_order"] = bool(preserve_insertion_order)
    options.update(config or {})
    target = MEMORY if path is None else str(path)
    con = duckdb.connect(target, read_only=read_only, config=options)
    try:
        # Session options (TimeZone needs the ICU extension, loaded only once a database is
        # open, so it cannot go in config).
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")
        for ext in extensions:
            load_extension(con, ext)
    except BaseException:
        con.close()
        raise
    return con


def load_extension(con: duckdb.DuckDBPyConnection, extension: str | Path) -> None:
    """LOAD an extension by name or from a file (``*.duckdb_extension``)."""
    name = str(extension)
    if isinstance(extension, Path) or "/" in name or name.endswith(".duckdb_extension"):
        con.execute("LOAD " + sql_str(name))
    else:
        if not name.replace("_", "").isalnum():
            raise ValueError(f"not a DuckDB extension name: {name!r}")
        con.execute(f"LOAD {name}")


def sql_str(value: str) -> str:
    """A SQL string literal (for paths and names that DuckDB statements need inline)."""
    return "'" + value.replace("'", "''") + "'"
