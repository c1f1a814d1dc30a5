-- Web events, one row per messageId (the first copy landed wins), typed, UTC.
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
        'page_url': '$.page.url', 'page_path': '$.page.path', 'page_referrer': '$.page.referrer',
        'page_title': '$.page.title', 'campaign_source': '$.campaign.source',
        'campaign_medium': '$.campaign.medium', 'campaign_name': '$.campaign.name',
        'user_agent': '$.userAgent', 'ip': '$.ip', 'locale': '$.locale'},
    'properties': {
        'order_id_raw': '$.order_id', 'revenue_raw': '$.revenue', 'currency_raw': '$.currency',
        'order_products': '$.products', 'sku_raw': '$.sku'},
    'traits': {'trait_email_raw': '$.email', 'trait_phone_raw': '$.phone'},
} -%}

with landed as (

    select *
    from {{ raw_source('web', 'events') }} as raw
    where raw."messageId" is not null
    {% if is_incremental() %}
      -- ">=" re-reads the newest batch already seen; the anti-join below drops its rows.
      and raw._loaded_at >= (select coalesce(max(_loaded_at), timestamptz '1970-01-01 00:00:00+00') from {{ this }})
    {% endif %}

),

-- messageIds landed more than once, with the position of the first copy. Found on the key
-- columns alone (a window over whole rows sorted every event, spilling at a year of data);
-- nearly every id is unique, so this set is small.
repeated as (

    select
        "messageId" as message_id,
        min((_loaded_at, _batch_id, _source_file, _source_line)) as first_copy
    from landed
    group by "messageId"
    having count(*) > 1

),

first_copies as (

    select landed.*
    from landed
    left join repeated on repeated.message_id = landed."messageId"
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
        _{{ column }}_texts[{{ loop.index }}] as {{ name }}{{ "," if not (outer.last and loop.last) }}
        {%- endfor %}
        {%- endfor %}
    from parsed

),

typed as (

    select
        {{ clean_text('"messageId"') }} as message_id,
        lower({{ clean_text('"type"') }}) as event_type,
        {{ clean_text('"event"') }} as event_name,
        {{ clean_text('"anonymousId"') }} as anonymous_id,
        {{ clean_text('"userId"') }} as user_id,
        {{ iso_to_utc('"timestamp"') }} as event_at,
        {{ iso_to_utc('"receivedAt"') }} as received_at,
        page_url,
        page_path,
        page_referrer,
        page_title,
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
