{#- Reading the raw zone. This file and the sources' `external_location` are the only places
    that know the raw zone is Parquet; on DuckDB the sources read it (external_location), on
    Spark raw_relation reads the same files (macros/engine.sql read_parquet_glob).

    raw_source(source_name, table_name) is what staging models select from instead of
    source(). It returns
    - the source itself when its batches have every column the source yml declares;
    - the declared columns, typed nulls for those the batches lack (logged), when some are
      missing (batches written before a column existed);
    - an empty relation with the declared columns and types when no batch exists yet (a
      first run before any ticket was filed), instead of failing on "No files found".
    Unit tests get the plain source() so their fixtures replace it. -#}

{% macro raw_source(source_name, table_name) -%}
    {%- set declared = source(source_name, table_name) -%}
    {%- if not execute or model.resource_type == 'unit_test' -%}
        {{- return(declared) -}}
    {%- endif -%}
    {%- if not raw_batches_exist(source_name, table_name) -%}
        {{- return(typed_source_relation(source_name, table_name, none)) -}}
    {%- endif -%}
    {%- set relation = raw_relation(source_name, table_name, declared) -%}
    {%- set present = column_names_of(relation) -%}
    {%- set missing = [] -%}
    {%- for col in source_columns(source_name, table_name) if col.name | lower not in present -%}
        {%- do missing.append(col.name) -%}
    {%- endfor -%}
    {%- if missing -%}
        {%- do log("raw " ~ source_name ~ "." ~ table_name ~ " batches lack declared column(s) "
                   ~ missing | join(', ') ~ ": read as null", info=true) -%}
        {{- return(without_gate_rejects(typed_source_relation(source_name, table_name, relation, present))) -}}
    {%- endif -%}
    {{- return(without_gate_rejects(relation)) -}}
{%- endmacro %}


{#- Rows the raw quality gate rejected stay in their immutable batch but never reach the
    warehouse: the gate lists them under lake/quarantine/_gate_rejects/ (one file a batch). -#}
{% macro gate_rejects_glob() -%}
    {{- env_var('C360_HOME') ~ '/lake/quarantine/_gate_rejects/*.parquet' -}}
{%- endmacro %}


{#- The raw batches of a source as a relation: the source itself where the adapter reads its
    external_location (DuckDB), else the same Parquet files read directly. -#}
{% macro raw_relation(source_name, table_name, declared) -%}
    {{- return(adapter.dispatch('raw_relation')(source_name, table_name, declared)) -}}
{%- endmacro %}
{% macro default__raw_relation(source_name, table_name, declared) -%}
    {{- return(declared) -}}
{%- endmacro %}
{% macro spark__raw_relation(source_name, table_name, declared) -%}
    {{- return(read_parquet_glob(raw_batch_glob(source_name, table_name))) -}}
{%- endmacro %}


{% macro without_gate_rejects(relation) -%}
    {%- if count_files(gate_rejects_glob()) == 0 -%}
        {{- return(relation) -}}
    {%- endif -%}
    {%- set sql -%}
    (select kept.* from {{ relation }} as kept
     where not exists (
         select 1 from {{ read_parquet_glob(gate_rejects_glob()) }} as rejected
         where rejected._batch_id = kept._batch_id
           and rejected._source_file is not distinct from kept._source_file
           and rejected._source_line is not distinct from kept._source_line))
    {%- endset -%}
    {{- return(sql) -}}
{%- endmacro %}


{#- The raw zone layout (CONTRACTS.md), also spelled in each source's external_location. -#}
{% macro raw_batch_glob(source_name, table_name) -%}
    {{- env_var('C360_HOME') ~ '/lake/raw/' ~ source_name ~ '/' ~ table_name ~ '/*/*.parquet' -}}
{%- endmacro %}


{% macro raw_batches_exist(source_name, table_name) -%}
    {{- return(count_files(raw_batch_glob(source_name, table_name)) > 0) -}}
{%- endmacro %}


{% macro source_columns(source_name, table_name) -%}
    {%- set node = graph.sources.values() | selectattr('source_name', 'equalto', source_name)
                   | selectattr('name', 'equalto', table_name) | first -%}
    {%- set columns = node.columns.values() | list -%}
    {%- if columns | length == 0 -%}
        {{ exceptions.raise_compiler_error("source " ~ source_name ~ "." ~ table_name
            ~ " declares no columns, so its relation cannot be typed") }}
    {%- endif -%}
    {{- return(columns) -}}
{%- endmacro %}


{#- The declared columns of a source: read from `relation` where its batches have them
    (`present`: lower-cased names), typed nulls otherwise; with no relation, no rows. -#}
{% macro typed_source_relation(source_name, table_name, relation, present=[]) -%}
    (select
    {%- for col in source_columns(source_name, table_name) %}
        {% if relation is not none and col.name | lower in present -%}
        {{ adapter.quote(col.name) }}
        {%- else -%}
        cast(null as {{ engine_type(col.data_type or 'varchar') }}) as {{ adapter.quote(col.name) }}
        {%- endif %}{{ "," if not loop.last }}
    {%- endfor %}
    {% if relation is not none %}from {{ relation }} as batches{% else %}where false{% endif %})
{%- endmacro %}
