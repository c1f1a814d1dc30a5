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

with landed as (

    select *
    from {{ raw_source('web', 'events') }} as raw
    where raw."messageId" is not null
    {% if is_incremental() %}
      -- ">=" re-reads the newest batch already seen; the anti-join below drops its rows.
      and raw._loaded_at >= (select coalesce(max(_loaded_at), timestamptz '1970-01-01 00:00:00+00') from {{ this }})
    {% endif %}

),

first_copies as (

    select
        landed.*,
        row_number() over (
            partition by landed."messageId"
            order by landed._loaded_at, landed._batch_id, landed._source_file, landed._source_line
        ) as copy_rank
    from landed

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
        {{ json_text('context', '$.page.url') }} as page_url,
        {{ json_text('context', '$.page.path') }} as page_path,
        {{ json_text('context', '$.page.referrer') }} as page_referrer,
        {{ json_text('context', '$.page.title') }} as page_title,
        {{ json_text('context', '$.campaign.source') }} as campaign_source,
        {{ json_text('context', '$.campaign.medium') }} as campaign_medium,
        {{ json_text('context', '$.campaign.name') }} as campaign_name,
        {{ json_text('context', '$.userAgent') }} as user_agent,
        {{ json_text('context', '$.ip') }} as ip,
        {{ json_text('context', '$.locale') }} as locale,
        {{ clean_text(json_text('properties', '$.order_id')) }} as order_id,
        {{ to_money(json_text('properties', '$.revenue')) }} as order_revenue,
        upper({{ clean_text(json_text('properties', '$.currency')) }}) as order_currency,
        {{ json_text('properties', '$.products') }} as order_products,
        {{ clean_text(json_text('properties', '$.sku')) }} as sku,
        {{ json_text('traits', '$.email') }} as trait_email_raw,
        {{ json_text('traits', '$.phone') }} as trait_phone_raw,
        _folder_date as folder_date,
        _batch_id,
        _source_file,
        _source_line,
        _loaded_at
    from first_copies
    where copy_rank = 1

)

select
    message_id,
    event_type,
    event_name,
    anonymous_id,
    user_id,
    event_at,
    received_at,
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
    order_id,
    order_revenue,
    order_currency,
    order_products,
    sku,
    {{ normalize_email('trait_email_raw') }} as trait_email,
    -- A phone typed without its country code is read in the browser locale's country (zh-CN).
    {{ normalize_phone('trait_phone_raw', "regexp_extract(locale, '[-_]([A-Za-z]{2})$', 1)") }} as trait_phone,
    folder_date,
    _batch_id,
    _source_file,
    _source_line,
    _loaded_at
from typed
{% if is_incremental() %}
where not exists (select 1 from {{ this }} as kept where kept.message_id = typed.message_id)
{% endif %}
