{#- The logical date of the run. The DAG and CLI pass --vars '{as_of_date: YYYY-MM-DD}';
    without it the models use the last day that has data (int_run__as_of), so building twice
    on the same data gives the same warehouse. -#}
{% macro as_of_date_literal() -%}
    {%- set value = var('as_of_date', none) -%}
    {%- if value -%}
        {%- do modules.datetime.date.fromisoformat(value | string) -%}
        date '{{ value }}'
    {%- else -%}
        null
    {%- endif -%}
{%- endmacro %}

{#- Snapshots stamp a new version with the end of the logical date (its data is complete then)
    instead of the wall clock, so backfills and reruns write the same history. -#}
{% macro duckdb__snapshot_get_time() -%}
    {%- set value = var('as_of_date', none) -%}
    {%- if value -%}
        {%- do modules.datetime.date.fromisoformat(value | string) -%}
        (timestamp '{{ value }}' + interval 1 day)
    {%- else -%}
        {{ current_timestamp() }}::timestamp
    {%- endif -%}
{%- endmacro %}

{#- The reporting currency: var('reporting_currency') or $C360_REPORTING_CURRENCY, default CNY. -#}
{% macro reporting_currency() -%}
    {{- (var('reporting_currency', none) or env_var('C360_REPORTING_CURRENCY', 'CNY')) | upper | trim -}}
{%- endmacro %}
