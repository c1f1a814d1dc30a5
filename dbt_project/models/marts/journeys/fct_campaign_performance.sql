-- Campaigns' visits and the orders attributed to them, per attribution model (first_touch,
-- last_touch, linear; int_marketing__order_attribution). orders and new_customers are
-- credits (fractional under linear); attributed_revenue is the credited share of the
-- orders' net revenue. A campaign without attributed orders still has its rows (zeros).
with campaign_sessions as (

    select campaign_source, campaign_medium, coalesce(campaign_name, '(none)') as campaign_name,
           count(*) as sessions
    from {{ ref('int_web__session_journeys') }}
    where campaign_source is not null
    group by all

),

models as (

    select * from (values ('first_touch'), ('last_touch'), ('linear')) as m(attribution_model)

),

credits as (

    select
        campaign_source, campaign_medium, coalesce(campaign_name, '(none)') as campaign_name,
        attribution_model,
        count(distinct customer_id) as customers,
        sum(credit) as orders,
        sum(case when channel = 'store' then credit else 0 end) as store_orders,
        sum(attributed_revenue) as attributed_revenue,
        sum(case when is_first_purchase then credit else 0 end) as new_customers
    from {{ ref('int_marketing__order_attribution') }}
    group by all

)

select
    campaign_sessions.campaign_source,
    coalesce(campaign_sessions.campaign_medium, '(none)') as campaign_medium,
    campaign_sessions.campaign_name,
    models.attribution_model,
    cast(campaign_sessions.sessions as integer) as sessions,
    cast(coalesce(credits.customers, 0) as integer) as customers,
    cast(coalesce(credits.orders, 0) as double) as orders,
    cast(coalesce(credits.store_orders, 0) as double) as store_orders,
    cast(coalesce(credits.attributed_revenue, 0) as double) as attributed_revenue,
    cast(coalesce(credits.new_customers, 0) as double) as new_customers
from campaign_sessions
cross join models
left join credits
    on credits.campaign_source = campaign_sessions.campaign_source
   and credits.campaign_medium is not distinct from campaign_sessions.campaign_medium
   and credits.campaign_name = campaign_sessions.campaign_name
   and credits.attribution_model = models.attribution_model
