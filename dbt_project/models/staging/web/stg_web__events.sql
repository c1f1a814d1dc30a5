-- Web events of all six Segment call types, one row per messageId (the first copy landed
-- wins), typed, UTC. Page fields come from context.page, else from properties (where Segment's
-- server-side libraries and page/screen calls put them).
-- Incremental: each run reads only batches landed since the last one and skips messageIds
-- already kept, so a rerun, a late event or a duplicate delivery gives the same table as a
-- full refresh (earlier batches always hold the first copy).
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='append_new_columns'
    )
}}

{#- The JSON fields kept, by column: each JSON text is parsed once for all its paths
    (json_text_list), not once a field - most of this model's cost at a year of events. -#}
{%- set json_fields = {
    'context': {
        'ctx_page_url': '$.page.url', 'ctx_page_path': '$.page.path',
        'ctx_page_referrer': '$.page.referrer', 'ctx_page_title': '$.page.title',
        'ctx_page_search': '$.page.search', 'campaign_source': '$.campaign.source',
        'campaign_medium': '$.campaign.medium', 'campaign_name': '$.campaign.name',
        'user_agent': '$.userAgent', 'ip': '$.ip', 'locale': '$.locale',
        'consent_preferences_raw': '$.consent.categoryPreferences'},
    'properties': {
        'prop_url': '$.url', 'prop_path': '$.path', 'prop_referrer': '$.referrer',
        'prop_title': '$.title', 'prop_search': '$.search',
        'order_id_raw': '$.order_id', 'revenue_raw': '$.revenue', 'currency_raw': '$.currency',
        'order_products': '$.products', 'sku_raw': '$.sku', 'product_id_raw': '$.product_id',
        'experiment_id_raw': '$.experiment_id', 'variation_id_raw': '$.variation_id'},
    'traits': {'trait_email_raw': '$.email', 'trait_phone_raw': '$.phone',
               'trait_name_raw': '$.name'},
} -%}

with landed as (

    select *
    from (
        -- batches landed before these Segment fields became columns have none of them:
        -- they read as nulls instead of failing on a missing column
        {{ with_text_columns(raw_source('web', 'events'),
                             ['originalTimestamp', 'sentAt', 'previousId', 'groupId', 'name',
                              'category', '_timestamp_from']) }}
    ) as raw
    where raw.{{ adapter.quote('messageId') }} is not null
    {% if is_incremental() %}
      -- ">=" re-reads the newest batch already seen; the anti-join below drops its rows.
      and raw._loaded_at >= (select coalesce(max(_loaded_at), cast('1970-01-01 00:00:00+00' as {{ engine_type('timestamptz') }})) from {{ this }})
    {% endif %}

),

-- messageIds landed more than once, with the position of the first copy. Found on the key
-- columns alone (a window over whole rows sorted every event, spilling at a year of data);
-- nearly every id is unique, so this set is small.
repeated as (

    select
        {{ adapter.quote('messageId') }} as message_id,
        min((_loaded_at, _batch_id, _source_file, _source_line)) as first_copy
    from landed
    group by {{ adapter.quote('messageId') }}
    having count(*) > 1

),

first_copies as (

    select landed.*
    from landed
    left join repeated on repeated.message_id = landed.{{ adapter.quote('messageId') }}
    where repeated.message_id is null
       or repeated.first_copy is not distinct from (landed._loaded_at, landed._batch_id, landed._source_file, landed._source_line)

),

parsed as (

    select
        first_copies.*,
        {%- for column, fields in json_fields.items() %}
        {{ json_text_list(column, fields.values() | list) }} as _{{ column }}_texts{{ "," if not loop.last }}
        {%- endfor %}
    from first_copies

),

unpacked as (

    select
        parsed.*,
        {%- for column, fields in json_fields.items() %}
        {%- set outer = loop %}
        {%- for name in fields %}
        {{ json_text_list_item('_' ~ column ~ '_texts', loop.index) }} as {{ name }}{{ "," if not (outer.last and loop.last) }}
        {%- endfor %}
        {%- endfor %}
    from parsed

),

typed as (

    select
        {{ clean_text(adapter.quote('messageId')) }} as message_id,
        lower({{ clean_text(adapter.quote('type')) }}) as event_type,
        {{ clean_text(adapter.quote('event')) }} as event_name,
        {{ clean_text(adapter.quote('anonymousId')) }} as anonymous_id,
        {{ clean_text(adapter.quote('userId')) }} as user_id,
        {{ iso_to_utc(adapter.quote('timestamp')) }} as event_at,
        {{ iso_to_utc(adapter.quote('receivedAt')) }} as received_at,
        {{ adapter.quote('_timestamp_from') }} as timestamp_from,
        {{ clean_text(adapter.quote('previousId')) }} as previous_id,
        {{ clean_text(adapter.quote('groupId')) }} as group_id,
        {{ clean_text(adapter.quote('name')) }} as page_name,
        {{ clean_text(adapter.quote('category')) }} as page_category,
        {{ iso_to_utc(adapter.quote('originalTimestamp')) }} as original_at,
        {{ iso_to_utc(adapter.quote('sentAt')) }} as sent_at,
        {%- for field in ['url', 'path', 'referrer', 'title', 'search'] %}
        coalesce({{ clean_text('ctx_page_' ~ field) }}, {{ clean_text('prop_' ~ field) }}) as page_{{ field }},
        {%- endfor %}
        campaign_source,
        campaign_medium,
        campaign_name,
        user_agent,
        ip,
        locale,
        {{ clean_text('order_id_raw') }} as order_id,
        {{ to_money('revenue_raw') }} as order_revenue,
        upper({{ clean_text('currency_raw') }}) as order_currency,
        order_products,
        {{ clean_text('sku_raw') }} as sku,
        {{ clean_text('product_id_raw') }} as product_id,
        {{ clean_text('experiment_id_raw') }} as experiment_id,
        {{ clean_text('variation_id_raw') }} as variation_id,
        -- JSON text of {category: true/false}, as the consent manager sent it
        case when {{ json_is_object('consent_preferences_raw') }} then consent_preferences_raw end
            as consent_preferences,
        -- a group call's account name; the traits of identify are people's, of group accounts'
        case when lower({{ clean_text(adapter.quote('type')) }}) = 'group' then {{ clean_text('trait_name_raw') }} end
            as group_name,
        case when lower({{ clean_text(adapter.quote('type')) }}) = 'group' then traits end as group_traits,
        {{ normalize_email('trait_email_raw') }} as trait_email,
        -- A phone typed without its country code is read in the browser locale's country (zh-CN).
        {{ normalize_phone('trait_phone_raw', "regexp_extract(locale, '[-_]([A-Za-z]{2})$', 1)") }} as trait_phone,
        _folder_date as folder_date,
        _batch_id,
        _source_file,
        _source_line,
        _loaded_at
    from unpacked

)

select *
from typed
{% if is_incremental() %}
where not exists (select 1 from {{ this }} as kept where kept.message_id = typed.message_id)
{% endif %}
