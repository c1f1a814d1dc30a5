{#- Every landed version of a CRM object's records, ranked newest first per id
    (version_rank = 1 is the latest): by updatedAt, then the later load, batch and line. -#}
{% macro crm_versions(object_name) -%}
    select
        raw.*,
        row_number() over (
            partition by raw.id
            order by {{ iso_to_utc('raw.' ~ adapter.quote('updatedAt')) }} desc nulls last,
                     raw._loaded_at desc, raw._batch_id desc, raw._source_line desc
        ) as version_rank
    from {{ raw_source('crm', object_name) }} as raw
    where raw.id is not null
{%- endmacro %}
