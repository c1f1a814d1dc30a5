{#- Snapshots (SCD2) on Spark in plain Parquet. dbt-spark's snapshot refuses any format but
    Delta, Iceberg or Hudi because it MERGEs the new versions in; this is its materialization
    with the merge replaced by the same keep-and-overwrite as delete+insert
    (macros/spark_incremental.sql): the closed versions and the new ones are written to a side
    table, then the snapshot is overwritten with it. With Delta or Iceberg set file_format and
    dbt-spark's own materialization is the better one (docs/engines.md). -#}

{% macro spark__snapshot_get_time() -%}
    {%- set value = as_of_date_value() -%}
    {%- if value -%}
        (timestamp '{{ value }}' + interval 1 day)
    {%- else -%}
        current_timestamp()
    {%- endif -%}
{%- endmacro %}


{% macro spark_snapshot_keep_and_insert_sql(target, source) -%}
    {%- set columns = config.get("snapshot_table_column_names") or get_snapshot_table_column_names() -%}
    {%- set dest = adapter.get_columns_in_relation(target) | map(attribute='name') | list -%}
    {%- set side = spark_side_table(target, 'rebuild') -%}
    {%- do run_query("drop table if exists " ~ side) -%}
    {%- set build -%}
        create table {{ side }} using parquet as
        select
            {%- for name in dest %}
            {% if name | lower == columns.dbt_valid_to | lower -%}
            case when closing.{{ columns.dbt_scd_id }} is not null then closing.{{ columns.dbt_valid_to }}
                 else kept.{{ adapter.quote(name) }} end as {{ adapter.quote(name) }}
            {%- else -%}
            kept.{{ adapter.quote(name) }}
            {%- endif %}{{ "," if not loop.last }}
            {%- endfor %}
        from {{ target }} as kept
        left join (
            select {{ columns.dbt_scd_id }}, {{ columns.dbt_valid_to }}
            from {{ source }}
            where dbt_change_type in ('update', 'delete')
        ) as closing
            on closing.{{ columns.dbt_scd_id }} = kept.{{ columns.dbt_scd_id }}
           and kept.{{ columns.dbt_valid_to }} is null
        union all
        select {% for name in dest %}{{ adapter.quote(name) }}{{ ", " if not loop.last }}{% endfor %}
        from {{ source }}
        where dbt_change_type = 'insert'
    {%- endset -%}
    {%- do run_query(build) -%}
    insert overwrite table {{ target }} select * from {{ side }}
{%- endmacro %}


{% materialization snapshot, adapter='spark' %}

  {%- set target_table = model.get('alias', model.get('name')) -%}
  {%- set strategy_name = config.get('strategy') -%}
  {%- set file_format = config.get('file_format') or 'parquet' -%}
  {%- set grant_config = config.get('grants') -%}

  {% set target_relation_exists, target_relation = get_or_create_relation(
          database=none,
          schema=model.schema,
          identifier=target_table,
          type='table') -%}

  {%- if file_format != 'parquet' -%}
    {% do exceptions.raise_compiler_error("this project's Spark snapshot writes Parquet; for "
        ~ file_format ~ " remove macros/spark_snapshot.sql and use dbt-spark's") %}
  {%- endif -%}

  {% if not adapter.check_schema_exists(model.database, model.schema) %}
    {% do create_schema(model.schema) %}
  {% endif %}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {% set strategy_macro = strategy_dispatch(strategy_name) %}
  {% set strategy = strategy_macro(model, "snapshotted_data", "source_data", model['config'], target_relation_exists) %}

  {% if not target_relation_exists %}
      {% set build_sql = build_snapshot_table(strategy, model['compiled_code']) %}
      {% set final_sql = create_table_as(False, target_relation, build_sql) %}
  {% else %}
      {% set columns = config.get("snapshot_table_column_names") or get_snapshot_table_column_names() %}
      {{ adapter.valid_snapshot_target(target_relation, columns) }}
      {% set staging_table = spark_build_snapshot_staging_table(strategy, sql, target_relation) %}
      {% set missing_columns = adapter.get_missing_columns(staging_table, target_relation)
                                   | rejectattr('name', 'equalto', 'dbt_change_type')
                                   | rejectattr('name', 'equalto', 'DBT_CHANGE_TYPE')
                                   | rejectattr('name', 'equalto', 'dbt_unique_key')
                                   | rejectattr('name', 'equalto', 'DBT_UNIQUE_KEY')
                                   | list %}
      {% do create_columns(target_relation, missing_columns) %}
      {% set final_sql = spark_snapshot_keep_and_insert_sql(target_relation, staging_table) %}
  {% endif %}

  {% call statement('main') %}
      {{ final_sql }}
  {% endcall %}

  {% set should_revoke = should_revoke(target_relation_exists, full_refresh_mode) %}
  {% do apply_grants(target_relation, grant_config, should_revoke) %}
  {% do persist_docs(target_relation, model) %}
  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {{ adapter.commit() }}
  {% if staging_table is defined %}
      {% do post_snapshot(staging_table) %}
  {% endif %}
  {{ run_hooks(post_hooks, inside_transaction=False) }}
  {{ return({'relations': [target_relation]}) }}

{% endmaterialization %}
