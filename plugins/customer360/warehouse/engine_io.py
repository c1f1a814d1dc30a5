"""Reading a warehouse table and writing a table back, on the engine of the settings
(``C360_ENGINE``; docs/engines.md). The one owner of how Python code outside dbt moves tables
in and out of the Spark warehouse.

The ML stage and the publisher are DuckDB SQL. On Spark they get a DuckDB of their own in which
the Spark tables they read appear under the same ``schema.table`` names
(:func:`spark_mirror`), and their outputs go back as Parquet tables
(:func:`write_spark_table`). The DuckDB engine needs none of this: its callers open the
warehouse file as before.

Reading: ``DataFrame.toArrow()``. Spark ships the rows to the driver as Arrow record batches
(``spark.sql.execution.arrow.maxRecordsPerBatch`` rows each, no row-by-row Python objects);
the driver then holds that one table whole, and DuckDB scans the Arrow table in place (a view,
no copy). pyspark 4.3 has no public iterator of Arrow batches (``toLocalIterator`` yields Row
objects, tens of times slower), so a table larger than the driver's memory is not for this
path: run that stage on the cluster instead.

Writing: a table is written in full under ``<name>__c360_new`` and then swapped in (drop the
old, rename the new; a metastore rename of the table's folder). Not atomic: between the drop
and the rename the table is missing, and several tables are swapped one after another, so a
reader may see some new and some old. What is guaranteed: a crash never loses the previous
version and a new version is never seen half-written. :func:`finish_swaps` completes a swap a
crash interrupted (the new table is whole once the drop has happened) or drops a new table
whose write never finished.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import duckdb
import pyarrow as pa

log = logging.getLogger(__name__)

# The mark of the Spark warehouse's side tables (the rebuild and keep tables of
# macros/spark_incremental.sql, the staged writes here): work tables, never published.
SIDE_TABLE_MARKER = "__c360_"
_NEW = SIDE_TABLE_MARKER + "new"
# Spark has fewer types than DuckDB (no JSON, no TIMESTAMPTZ beside TIMESTAMP): a table written
# from DuckDB keeps its DuckDB column types in this table property, and the mirror casts back.
TYPES_PROPERTY = "c360.duckdb_types"


def _naive_utc(table: pa.Table) -> pa.Table:
    """Spark's TIMESTAMP comes out of toArrow() as timestamp[us, tz=UTC]; the DuckDB warehouse
    keeps the same instants as naive UTC TIMESTAMP (the project's convention, macros/normalize.sql).
    Dropping the zone makes the mirrored columns the types the DuckDB SQL was written for."""
    fields = []
    for f in table.schema:
        if pa.types.is_timestamp(f.type) and f.type.tz is not None:
            f = f.with_type(pa.timestamp(f.type.unit))
        fields.append(f)
    schema = pa.schema(fields)
    return table if schema.equals(table.schema) else table.cast(schema)


def spark_tables(spark, schema: str) -> list[str]:
    """The tables of ``schema`` in the metastore (no views, no temporary views), by name;
    empty when the schema does not exist."""
    if not spark.catalog.databaseExists(schema):
        return []
    return sorted(t.name for t in spark.catalog.listTables(schema)
                  if not t.isTemporary and (t.tableType or "").upper() != "VIEW")


def read_spark_table(spark, qualified: str) -> pa.Table:
    """A Spark table as Arrow (timestamps as naive UTC, as in the DuckDB warehouse)."""
    return _naive_utc(spark.table(qualified).toArrow())


def finish_swaps(spark, schema: str) -> list[str]:
    """Complete what an interrupted :func:`write_spark_table` left in ``schema``: a
    ``<name>__c360_new`` without its ``<name>`` was written whole (the old table is dropped
    only after the write), so it is renamed in; one beside its ``<name>`` is an unfinished
    write, dropped. Returns what it did, for the log."""
    names = set(spark_tables(spark, schema))  # empty when the schema does not exist
    done = []
    for staged in sorted(n for n in names if n.endswith(_NEW)):
        target = staged[: -len(_NEW)]
        if target in names:
            spark.sql(f"drop table if exists {schema}.{staged}")
            done.append(f"dropped the unfinished {schema}.{staged}")
        else:
            spark.sql(f"alter table {schema}.{staged} rename to {schema}.{target}")
            done.append(f"renamed {schema}.{staged} to {schema}.{target}")
    for line in done:
        log.warning("spark warehouse: %s (an earlier write was interrupted)", line)
    return done


def write_spark_table(spark, schema: str, name: str, table: pa.Table,
                      duckdb_types: dict[str, str] | None = None) -> int:
    """Replace the Parquet table ``schema.name`` with ``table``: written whole as
    ``<name>__c360_new``, then swapped in (see the module's note on what is atomic).
    ``duckdb_types`` (column -> DuckDB type) are kept with the table for :func:`spark_mirror`.
    Returns the rows written."""
    spark.sql(f"create database if not exists {schema}")
    staged = f"{schema}.{name}{_NEW}"
    spark.sql(f"drop table if exists {staged}")
    if not table.num_columns:
        raise ValueError(f"{schema}.{name}: a table without columns cannot be written to Spark")
    spark.createDataFrame(table).write.format("parquet").mode("overwrite").saveAsTable(staged)
    if duckdb_types:
        text = json.dumps(duckdb_types, sort_keys=True).replace("'", "")  # type names have none
        spark.sql(f"alter table {staged} set tblproperties ('{TYPES_PROPERTY}' = '{text}')")
    spark.sql(f"drop table if exists {schema}.{name}")
    spark.sql(f"alter table {staged} rename to {schema}.{name}")
    return table.num_rows


def declared_types(spark, qualified: str) -> dict[str, str]:
    """The DuckDB types :func:`write_spark_table` kept with a table (none for dbt's tables)."""
    props = {r[0]: r[1] for r in spark.sql(f"show tblproperties {qualified}").collect()}
    return json.loads(props[TYPES_PROPERTY]) if TYPES_PROPERTY in props else {}


def spark_mirror(spark, con: duckdb.DuckDBPyConnection, tables: Iterable[tuple[str, str]],
                 copies: Iterable[tuple[str, str]] = (),
                 types: Mapping[tuple[str, str], Mapping[str, str]] | None = None) -> list[str]:
    """Make the Spark tables ``tables`` (schema, name) readable in the DuckDB ``con`` under the
    same names, as views over their Arrow copies; ``copies`` become real DuckDB tables instead
    (tables the caller changes in place, e.g. appends to a registry). A table Spark does not
    have is left out, as a missing table is in the DuckDB warehouse. Columns get the types of
    ``types`` ({(schema, name): {column: DuckDB type}}: dbt's contracts, a DDL), else those
    kept with the table, where Arrow's mapping gives another. Returns the ``schema.name``
    mirrored."""
    wanted = [(s, n, False) for s, n in tables] + [(s, n, True) for s, n in copies]
    existing: dict[str, set[str]] = {}
    mirrored = []
    for schema, name, copy in wanted:
        if schema not in existing:
            finish_swaps(spark, schema)
            existing[schema] = set(spark_tables(spark, schema))
        if name not in existing[schema]:
            continue
        qualified = f"{schema}.{name}"
        arrow = read_spark_table(spark, qualified)
        declared = {**declared_types(spark, qualified), **(types or {}).get((schema, name), {})}
        con.execute(f'create schema if not exists "{schema}"')
        handle = f"_spark__{schema}__{name}"
        con.register(handle, arrow)
        # the types DuckDB reads the Arrow table as, known before anything is written, so a
        # copy is materialized once, already cast
        current = {c: t for c, t, *_ in con.execute(f'describe select * from "{handle}"').fetchall()}
        casts = _casts(con, current, declared)
        select = ", ".join(f'cast("{c}" as {casts[c]}) as "{c}"' if c in casts else f'"{c}"'
                           for c in arrow.column_names)
        kind = "table" if copy else "view"
        con.execute(f'create or replace {kind} "{schema}"."{name}" as select {select} from "{handle}"')
        if copy:
            con.unregister(handle)
        mirrored.append(qualified)
    return mirrored


def _casts(con: duckdb.DuckDBPyConnection, current: Mapping[str, str],
           declared: Mapping[str, str]) -> dict[str, str]:
    """The columns whose type as read (``current``) is not the declared one (type names
    compared as DuckDB spells them: 'timestamptz' and 'TIMESTAMP WITH TIME ZONE' are one type)."""
    out = {}
    for column, wanted in declared.items():
        if column in current:
            spelled = con.execute(f"select typeof(cast(null as {wanted}))").fetchone()[0]
            if spelled != current[column]:
                out[column] = wanted
    return out


def duckdb_table_arrow(con: duckdb.DuckDBPyConnection, schema: str,
                       name: str) -> tuple[pa.Table, dict[str, str]]:
    """A DuckDB table as Arrow for Spark, with its DuckDB column types (for
    :func:`write_spark_table`): JSON columns as text, Spark having no JSON type."""
    cols = con.execute("select column_name, data_type from information_schema.columns "
                       "where table_schema = ? and table_name = ? order by ordinal_position",
                       [schema, name]).fetchall()
    select = ", ".join(f'cast("{c}" as varchar) as "{c}"' if t.upper() == "JSON" else f'"{c}"'
                       for c, t in cols)
    return con.execute(f'select {select} from "{schema}"."{name}"').to_arrow_table(), dict(cols)


@contextmanager
def spark_duckdb_copy(settings, tables: Iterable[tuple[str, str]],
                      types: Mapping[tuple[str, str], Mapping[str, str]] | None = None,
                      name: str = "spark_copy") -> Iterator[Path]:
    """A DuckDB file under ``$C360_HOME/tmp`` holding the Spark tables ``tables`` (as
    :func:`spark_mirror` copies them), for code that reads a DuckDB warehouse file (the
    publisher, the kept tables' export); removed when the block ends."""
    from customer360.core import duck
    from customer360.warehouse.spark_session import spark_session

    spark = spark_session(settings)
    path = settings.home / "tmp" / f"{name}.duckdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    leftovers = [path, path.with_name(path.name + ".wal")]
    for p in leftovers:
        p.unlink(missing_ok=True)
    try:
        con = duck.connect(settings, path)
        try:
            spark_mirror(spark, con, (), copies=list(tables), types=types)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        yield path
    finally:
        for p in leftovers:
            p.unlink(missing_ok=True)
