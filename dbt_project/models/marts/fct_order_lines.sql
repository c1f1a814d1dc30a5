-- Order lines of both channels, money in the reporting currency. One row per order line.
-- Incremental by "partition": all lines of one POS file (store-day) or of one web order are
-- replaced together (delete+insert on _source_partition), so a corrected POS file replaces
-- the lines of the file it supersedes - including transactions it no longer contains - and
-- a late or duplicate web event recomputes its order exactly as a full refresh would.
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='_source_partition',
        on_schema_change='fail'
    )
}}

with pos_lines as (

    select *
    from {{ ref('stg_pos__transactions') }}
    {% if is_incremental() %}
    where _source_file in (
        select _source_file from {{ ref('stg_pos__transactions') }}
        where _loaded_at >= (select coalesce(max(_loaded_at), cast('1970-01-01 00:00:00+00' as {{ engine_type('timestamptz') }}))
                             from {{ this }} where channel = 'store')
    )
    {% endif %}

),

web_order_events as (

    -- the first Order Completed event of each order id wins
    select *
    from (
        select
            events.*,
            row_number() over (partition by events.order_id
                               order by events.event_at, events.message_id) as event_rank
        from {{ ref('stg_web__events') }} as events
        where events.event_name = 'Order Completed' and events.order_id is not null
        {% if is_incremental() %}
          and events.order_id in (
              select order_id from {{ ref('stg_web__events') }}
              where event_name = 'Order Completed'
                and _loaded_at >= (select coalesce(max(_loaded_at), cast('1970-01-01 00:00:00+00' as {{ engine_type('timestamptz') }}))
                                   from {{ this }} where channel = 'web'))
        {% endif %}
    ) as ranked
    where event_rank = 1

),

web_items as (

    {{ web_order_items('web_order_events') }}

),

web_lines as (

    select
        web_items.*,
        {{ web_product_sku('web_items.item.sku', 'web_items.item.product_id', 'catalogue') }} as line_sku,
        nullif(trim(web_items.item.product_id), '') as line_product_id
    from web_items
    left join {{ ref('stg_pos__products') }} as catalogue
        on catalogue.sku = nullif(trim(web_items.item.product_id), '')

),

unified as (

    select
        transaction_id as order_id,
        line_no,
        'store' as channel,
        store_id,
        txn_at as ordered_at,
        business_date,
        sku,
        cast(null as string) as product_id,
        quantity,
        unit_price,
        discount_amount,
        line_amount,
        txn_type,
        currency,
        'pos:' || _source_file as _source_partition,
        _loaded_at
    from pos_lines

    union all

    select
        order_id,
        cast(item_no as integer) as line_no,
        'web' as channel,
        cast(null as string) as store_id,
        event_at as ordered_at,
        cast(event_at as date) as business_date,
        line_sku as sku,
        line_product_id as product_id,
        item.quantity,
        item.price as unit_price,
        cast(0 as decimal(18, 2)) as discount_amount,
        cast(item.quantity * item.price as decimal(18, 2)) as line_amount,
        'SALE' as txn_type,
        order_currency as currency,
        'web:' || order_id as _source_partition,
        _loaded_at
    from web_lines

)

select
    unified.order_id || '-' || cast(unified.line_no as string) as order_line_id,
    unified.order_id,
    unified.line_no,
    unified.channel,
    unified.store_id,
    unified.ordered_at,
    cast(unified.ordered_at as date) as order_date,
    unified.business_date,
    unified.sku,
    unified.product_id,
    unified.quantity,
    cast(unified.unit_price * fx.rate_to_reporting as decimal(18, 2)) as unit_price,
    cast(unified.discount_amount * fx.rate_to_reporting as decimal(18, 2)) as discount_amount,
    cast(unified.line_amount * fx.rate_to_reporting as decimal(18, 2)) as line_amount,
    unified.txn_type,
    unified.currency as source_currency,
    unified.line_amount as source_line_amount,
    fx.rate_to_reporting as fx_rate,
    unified._source_partition,
    unified._loaded_at
from unified
left join {{ ref('int_fx__rates') }} as fx
    on fx.currency = unified.currency
   and cast(unified.ordered_at as date) >= fx.valid_from
   and (cast(unified.ordered_at as date) < fx.valid_to or fx.valid_to is null)
