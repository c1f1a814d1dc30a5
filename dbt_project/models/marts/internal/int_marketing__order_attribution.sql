-- Orders credited to campaigns, one row per order, attribution model and credited campaign.
-- A touch is a web session of the customer that landed with UTM parameters; an order (web,
-- or a store purchase linked to the customer through identity resolution) is attributed when
-- the customer had a touch in the var('attribution_window_days') days up to the order.
-- first_touch credits the earliest touch of that window, last_touch the latest, linear each
-- touch equally (credit 1/n). Each model's credits of an order add up to 1, so its attributed
-- revenue is the net revenue of the attributed orders (tested in tests/).
{{ config(schema='intermediate') }}

with touches as (

    select
        sessions.customer_id,
        journeys.session_id,
        journeys.started_at,
        journeys.campaign_source,
        journeys.campaign_medium,
        journeys.campaign_name
    from {{ ref('int_web__session_journeys') }} as journeys
    inner join {{ ref('fct_web_sessions') }} as sessions on sessions.session_id = journeys.session_id
    where journeys.campaign_source is not null and sessions.customer_id is not null

),

purchases as (

    select
        order_id, customer_id, channel, ordered_at, net_amount,
        row_number() over (partition by customer_id order by ordered_at, order_id) = 1 as is_first_purchase
    from {{ ref('fct_orders') }}
    where order_kind = 'purchase' and customer_id is not null

),

order_touches as (

    select
        purchases.*,
        touches.session_id,
        touches.campaign_source,
        touches.campaign_medium,
        touches.campaign_name,
        row_number() over (partition by purchases.order_id order by touches.started_at, touches.session_id) as touch_from_first,
        row_number() over (partition by purchases.order_id order by touches.started_at desc, touches.session_id desc) as touch_from_last,
        count(*) over (partition by purchases.order_id) as touches_in_window
    from purchases
    inner join touches
        on touches.customer_id = purchases.customer_id
       and touches.started_at <= purchases.ordered_at
       and touches.started_at > purchases.ordered_at - {{ days_interval(var('attribution_window_days')) }}

),

credited as (

    -- Credits are exact decimals: summed in any order (DuckDB aggregates in parallel) they
    -- give the same total, so a rerun publishes the same bytes; a double's sum would not.
    select *, 'first_touch' as attribution_model, cast(1 as decimal(38, 20)) as credit
    from order_touches where touch_from_first = 1
    union all
    select *, 'last_touch', cast(1 as decimal(38, 20)) from order_touches where touch_from_last = 1
    union all
    select *, 'linear', cast(1.0 / touches_in_window as decimal(38, 20)) from order_touches

)

select
    order_id,
    attribution_model,
    campaign_source,
    campaign_medium,
    campaign_name,
    min(customer_id) as customer_id,
    min(channel) as channel,
    min(ordered_at) as ordered_at,
    bool_or(is_first_purchase) as is_first_purchase,
    min(net_amount) as order_net_amount,
    -- linear: touches of one campaign in the window add up
    sum(credit) as credit,
    sum(credit * net_amount) as attributed_revenue
from credited
group by order_id, attribution_model, campaign_source, campaign_medium, campaign_name
