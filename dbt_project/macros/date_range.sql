{#- One row per day from start_expr to end_expr inclusive, column date_day. The bounds may be
    scalar subqueries. -#}
{% macro days_between(start_expr, end_expr) -%}{{ return(adapter.dispatch('days_between')(start_expr, end_expr)) }}{%- endmacro %}

{% macro default__days_between(start_expr, end_expr) -%}
    select cast(day_ts as date) as date_day
    from (
        select unnest(generate_series(cast(bounds.first_day as timestamp),
                                      cast(bounds.last_day as timestamp),
                                      interval 1 day)) as day_ts
        from (select {{ start_expr }} as first_day, {{ end_expr }} as last_day) as bounds
    ) as days
{%- endmacro %}


{% macro spark__days_between(start_expr, end_expr) -%}
    select date_day
    from (
        select explode(sequence(cast(bounds.first_day as date), cast(bounds.last_day as date),
                                interval 1 day)) as date_day
        from (select {{ start_expr }} as first_day, {{ end_expr }} as last_day) as bounds
        where bounds.first_day <= bounds.last_day
    ) as days
{%- endmacro %}
