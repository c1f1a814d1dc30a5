{#- Every row of the ML stage's output `source('ml', table_name)`, or no rows of the given
    columns (name: type) when the stage has not written it yet (a dbt-only rebuild, a first
    test build), as latest_ml_score does for scores. -#}
{% macro ml_output(table_name, columns) -%}
    {%- set declared = source('ml', table_name) -%}
    {%- set relation = adapter.get_relation(database=declared.database, schema=declared.schema,
                                            identifier=declared.identifier) if execute else none -%}
    {%- if relation is not none -%}
        select {% for name, type in columns.items() %}cast({{ name }} as {{ engine_type(type) }}) as {{ name }}{{ ", " if not loop.last }}{% endfor %}
        from {{ relation }}
    {%- else -%}
        select {% for name, type in columns.items() %}cast(null as {{ engine_type(type) }}) as {{ name }}{{ ", " if not loop.last }}{% endfor %}
        where false
    {%- endif -%}
{%- endmacro %}
