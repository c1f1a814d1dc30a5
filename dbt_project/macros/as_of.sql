{#- The logical date of the run. The DAG and CLI set $C360_AS_OF_DATE (YYYY-MM-DD); without
    it the models use the last day that has data (int_run__as_of), so building twice on the
    same data gives the same warehouse. var('as_of_date') still wins when given (unit tests,
    a hand-run `dbt build --vars`).

    Why an environment variable read only when `execute` is true: dbt hashes --vars into its
    partial-parsing state, so a new date every day threw the saved manifest away and re-parsed
    the whole project in each of the run's dbt commands. An env_var() read at parse time would
    re-parse the files using it; read at execution time it is not part of the parse at all. -#}
{% macro as_of_date_value() -%}
    {%- set value = var('as_of_date', none) -%}
    {%- if not value and execute -%}
        {%- set value = env_var('C360_AS_OF_DATE', '') -%}
    {%- endif -%}
    {%- if value -%}
        {%- do modules.datetime.date.fromisoformat(value | string) -%}
    {%- endif -%}
    {{- return((value | string) if value else none) -}}
{%- endmacro %}

{% macro as_of_date_literal() -%}
    {%- set value = as_of_date_value() -%}
    {%- if value -%}
        date '{{ value }}'
    {%- else -%}
        null
    {%- endif -%}
{%- endmacro %}

{#- Snapshots stamp a new version with the end of the logical date (its data is complete then)
    instead of the wall clock, so backfills and reruns write the same history. -#}
{% macro duckdb__snapshot_get_time() -%}
    {%- set value = as_of_date_value() -%}
    {%- if value -%}
        (timestamp '{{ value }}' + interval 1 day)
    {%- else -%}
        {{ current_timestamp() }}::timestamp
    {%- endif -%}
{%- endmacro %}

{#- The reporting currency: var('reporting_currency') or $C360_REPORTING_CURRENCY, default CNY. -#}
{% macro reporting_currency() -%}
    {{- (var('reporting_currency', none) or env_var('C360_REPORTING_CURRENCY', 'CNY')) | upper | trim -}}
{%- endmacro %}
