{#- The latest ML score per customer, when the ML stage has written its table (it runs after
    the marts, so on a first build there is none yet and the columns are null). -#}
{% macro latest_ml_score(table_name, column_name, column_type) -%}
    {%- set relation = adapter.get_relation(database=target.database, schema='ml',
                                            identifier=table_name) if execute else none -%}
    {%- if relation is not none -%}
        select customer_id, cast(max_by({{ column_name }}, scored_at) as {{ column_type }}) as {{ column_name }}
        from {{ relation }}
        group by customer_id
    {%- else -%}
        select cast(null as varchar) as customer_id, cast(null as {{ column_type }}) as {{ column_name }}
        where false
    {%- endif -%}
{%- endmacro %}
