{#- The latest ML score per customer from the ML stage's output `source('ml', table_name)`.
    The source() call puts the dependency in dbt's lineage. The stage runs before customer_360
    in the daily run; a build without it (a dbt-only rebuild, a first test build) finds no
    table and gets null scores. -#}
{% macro latest_ml_score(table_name, column_name, column_type) -%}
    {%- set declared = source('ml', table_name) -%}
    {%- set relation = adapter.get_relation(database=declared.database, schema=declared.schema,
                                            identifier=declared.identifier) if execute else none -%}
    {%- if relation is not none -%}
        select customer_id, cast(max_by({{ column_name }}, scored_at) as {{ engine_type(column_type) }}) as {{ column_name }}
        from {{ relation }}
        group by customer_id
    {%- else -%}
        select cast(null as string) as customer_id, cast(null as {{ engine_type(column_type) }}) as {{ column_name }}
        where false
    {%- endif -%}
{%- endmacro %}
