{#- Reading the raw zone. This file and the sources' `external_location` are the only places
    that know the raw zone is Parquet read by DuckDB; another engine replaces them.

    raw_source(source_name, table_name) is what staging models select from instead of
    source(): the source itself when at least one batch exists, else an empty relation with
    the source's declared columns and types. A source with no batch yet (a first run before any
    ticket was filed, say) then builds empty models instead of failing on "No files found". -#}

{% macro raw_source(source_name, table_name) -%}
    {%- set relation = source(source_name, table_name) -%}
    {%- if execute and model.resource_type != 'unit_test'
          and not raw_batches_exist(source_name, table_name) -%}
        {{- return(empty_source_relation(source_name, table_name)) -}}
    {%- endif -%}
    {{- return(relation) -}}
{%- endmacro %}


{% macro raw_batch_glob(source_name, table_name) -%}
    {{- var('raw_root') ~ '/' ~ source_name ~ '/' ~ table_name ~ '/*/*.parquet' -}}
{%- endmacro %}


{% macro raw_batches_exist(source_name, table_name) -%}
    {%- set found = run_query("select count(*) from glob('"
        ~ raw_batch_glob(source_name, table_name) ~ "')") -%}
    {{- return(found.columns[0].values()[0] > 0) -}}
{%- endmacro %}


{% macro empty_source_relation(source_name, table_name) -%}
    {%- set node = graph.sources.values() | selectattr('source_name', 'equalto', source_name)
                   | selectattr('name', 'equalto', table_name) | first -%}
    {%- set columns = node.columns.values() | list -%}
    {%- if columns | length == 0 -%}
        {{ exceptions.raise_compiler_error("source " ~ source_name ~ "." ~ table_name
            ~ " declares no columns, so an empty relation cannot be typed") }}
    {%- endif -%}
    (select
    {%- for col in columns %}
        cast(null as {{ col.data_type or 'varchar' }}) as {{ adapter.quote(col.name) }}{{ "," if not loop.last }}
    {%- endfor %}
    where false)
{%- endmacro %}
