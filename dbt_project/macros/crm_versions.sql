{#- Every landed version of a CRM object's records, ranked newest first per id
    (version_rank = 1 is the latest): by updatedAt, then the later load, batch and line.
    A version dated past the extractor's clock (_modified_in_future: a CRM clock or import
    bug, "2099-12-31") is ranked at the time it was landed instead: it was the record's state
    then, and a real change made after it must win, not stay shadowed until 2099.
    In an incremental run of an incremental model (stg_crm__contacts) only the records with a
    version landed since the last run (every version of them, so the ranking is the full
    refresh's); the model replaces those records (delete+insert on its id) and leaves the others
    as they are. -#}
{% macro crm_versions(object_name) -%}
    select
        raw.*,
        row_number() over (
            partition by raw.id
            order by case when raw._modified_in_future
                          then {{ iso_to_utc('cast(raw._loaded_at as string)') }}
                          else {{ iso_to_utc('raw.' ~ adapter.quote('updatedAt')) }} end desc nulls last,
                     raw._loaded_at desc, raw._batch_id desc, raw._source_line desc
        ) as version_rank
    from {{ raw_source('crm', object_name) }} as raw
    where raw.id is not null
    {#- is_incremental() only in an incremental model: in a table model's unit test it has no
        relation to look up and fails -#}
    {%- if config.get('materialized') == 'incremental' and is_incremental() %}
      -- ">=": the newest batch already seen is read again; its records come out the same
      and raw.id in (
          select changed.id
          from {{ raw_source('crm', object_name) }} as changed
          where changed._loaded_at >= (
              select coalesce(max(_loaded_at), {{ epoch_timestamp() }}) from {{ this }})
      )
    {%- endif %}
{%- endmacro %}
