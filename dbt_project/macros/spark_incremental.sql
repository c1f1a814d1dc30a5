{#- Incremental models on Spark without a table format that can delete rows (Delta, Iceberg,
    Hudi): plain Parquet tables can only be appended to or overwritten. delete+insert is done
    as "keep + insert": the rows the run does not replace are copied out to a side table,
    then the target is overwritten with them and the run's rows. This rewrites the whole
    table each run (the honest cost of replacing rows in Parquet); a Delta or Iceberg table
    would merge instead (docs/engines.md). Spark refuses to overwrite a table while reading
    it, hence the side table. -#}

{#- dbt-spark's own check, which knows no delete+insert, with that one added for Parquet. -#}
{% macro dbt_spark_validate_get_incremental_strategy(raw_strategy, file_format) %}
    {%- if raw_strategy == 'delete+insert' -%}
        {% do return(raw_strategy) %}
    {%- endif -%}
    {% do return(dbt.dbt_spark_validate_get_incremental_strategy(raw_strategy, file_format)) %}
{% endmacro %}


{% macro dbt_spark_get_incremental_sql(strategy, source, target, existing, unique_key, incremental_predicates) %}
    {%- if strategy == 'delete+insert' -%}
        {{ spark_keep_and_insert_sql(source, target, unique_key) }}
    {%- else -%}
        {{ dbt.dbt_spark_get_incremental_sql(strategy, source, target, existing, unique_key, incremental_predicates) }}
    {%- endif -%}
{% endmacro %}


{% macro spark_side_table(target, suffix) -%}
    {{- return(target.incorporate(path={"identifier": target.identifier ~ '__c360_' ~ suffix})) -}}
{%- endmacro %}


{#- Runs now (while dbt renders the main statement): copies the kept rows and the new ones to
    a side table; returns the statement that overwrites the target with it. -#}
{% macro spark_keep_and_insert_sql(source, target, unique_key) -%}
    {%- set keys = [unique_key] if unique_key is string else unique_key -%}
    {%- if not keys -%}
        {{ exceptions.raise_compiler_error("delete+insert on Spark needs a unique_key") }}
    {%- endif -%}
    {%- set columns = adapter.get_columns_in_relation(target) | map(attribute='quoted') | join(', ') -%}
    {%- set side = spark_side_table(target, 'rebuild') -%}
    {%- do run_query("drop table if exists " ~ side) -%}
    {%- set build -%}
        create table {{ side }} using parquet as
        select {{ columns }} from {{ target }} as kept
        where not exists (
            select 1 from {{ source }} as fresh
            where {% for key in keys %}fresh.{{ key }} = kept.{{ key }}{{ " and " if not loop.last }}{% endfor %})
        union all
        select {{ columns }} from {{ source }}
    {%- endset -%}
    {%- do run_query(build) -%}
    insert overwrite table {{ target }} select {{ columns }} from {{ side }}
{%- endmacro %}


{#- A hook that deletes the rows of `relation` (alias old) for which a row of the subquery
    `fresh_sql` (alias fresh) meets `condition`: DuckDB deletes them; Spark keeps the others
    in a side table and overwrites the relation with it. -#}
{% macro delete_matching_rows(relation, fresh_sql, condition) -%}
    {{- return(adapter.dispatch('delete_matching_rows')(relation, fresh_sql, condition)) -}}
{%- endmacro %}

{% macro default__delete_matching_rows(relation, fresh_sql, condition) -%}
    delete from {{ relation }} as old
    using ({{ fresh_sql }}) as fresh
    where {{ condition }}
{%- endmacro %}

{% macro spark__delete_matching_rows(relation, fresh_sql, condition) -%}
    {%- if not execute -%}{{ return('') }}{%- endif -%}
    {%- set side = spark_side_table(relation, 'keep') -%}
    {%- do run_query("drop table if exists " ~ side) -%}
    {%- do run_query("create table " ~ side ~ " using parquet as select * from " ~ relation
                     ~ " as old where not exists (select 1 from (" ~ fresh_sql ~ ") as fresh where "
                     ~ condition ~ ")") -%}
    insert overwrite table {{ relation }} select * from {{ side }}
{%- endmacro %}
