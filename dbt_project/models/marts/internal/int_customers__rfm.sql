-- Per-customer order measures with RFM scores and the revenue-Pareto value tier, as of
-- int_run__as_of. Internal to the marts layer (schema intermediate, not published);
-- customer_360 publishes the columns. The scoring rules are in _marts__internal.yml.
{{ config(schema='intermediate') }}

with as_of as (

    select as_of_date from {{ ref('int_run__as_of') }}

),

orders as (

    select orders.*
    from {{ ref('fct_orders') }} as orders
    cross join as_of
    where orders.customer_id is not null
      and orders.order_date <= as_of.as_of_date

),

per_customer as (

    select
        customer_id,
        count(case when order_kind = 'purchase' then 1 end) as orders_count,
        count(case when order_kind = 'purchase' and channel = 'web' then 1 end) as web_orders_count,
        count(case when order_kind = 'purchase' and channel = 'store' then 1 end) as store_orders_count,
        min(case when order_kind = 'purchase' then ordered_at end) as first_order_at,
        max(case when order_kind = 'purchase' then ordered_at end) as last_order_at,
        sum(gross_amount) as gross_revenue,
        sum(returned_amount) as returned_amount,
        sum(net_amount) as net_revenue
    from orders
    group by customer_id

),

buyers as (

    select
        per_customer.*,
        {{ dbt.datediff('cast(per_customer.last_order_at as date)', 'as_of.as_of_date', 'day') }} as recency_days
    from per_customer
    cross join as_of
    where per_customer.orders_count > 0

),

scored as (

    -- quintile scores 1-5: 1 + floor(5 x the share of buyers strictly behind), so tied
    -- customers share the lower score and the best reach 5
    select
        customer_id,
        cast(least(5, 1 + floor(5 * percent_rank() over (order by recency_days desc))) as integer) as rfm_r,
        cast(least(5, 1 + floor(5 * percent_rank() over (order by orders_count))) as integer) as rfm_f,
        cast(least(5, 1 + floor(5 * percent_rank() over (order by net_revenue))) as integer) as rfm_m
    from buyers

),

pareto as (

    -- customers ranked by net revenue; "high" ones together make the first 80% of revenue
    select
        customer_id,
        coalesce(sum(net_revenue) over (order by net_revenue desc, customer_id
                                        rows between unbounded preceding and 1 preceding), 0)
            / sum(net_revenue) over () as revenue_share_before
    from per_customer
    where net_revenue > 0

)

select
    per_customer.customer_id,
    cast(per_customer.orders_count as integer) as orders_count,
    cast(per_customer.web_orders_count as integer) as web_orders_count,
    cast(per_customer.store_orders_count as integer) as store_orders_count,
    per_customer.first_order_at,
    per_customer.last_order_at,
    cast(per_customer.gross_revenue as decimal(18, 2)) as gross_revenue,
    cast(per_customer.returned_amount as decimal(18, 2)) as returned_amount,
    cast(per_customer.net_revenue as decimal(18, 2)) as net_revenue,
    cast(buyers.recency_days as integer) as recency_days,
    scored.rfm_r,
    scored.rfm_f,
    scored.rfm_m,
    case
        when scored.customer_id is null then 'no purchases'
        when scored.rfm_r = 5 and scored.rfm_f >= 4 then 'champions'
        when scored.rfm_r >= 3 and scored.rfm_f >= 4 then 'loyal customers'
        when scored.rfm_r >= 4 and scored.rfm_f >= 2 then 'potential loyalists'
        when scored.rfm_r = 5 and scored.rfm_f = 1 then 'new customers'
        when scored.rfm_r = 4 and scored.rfm_f = 1 then 'promising'
        when scored.rfm_r = 3 and scored.rfm_f = 3 then 'need attention'
        when scored.rfm_r = 3 and scored.rfm_f <= 2 then 'about to sleep'
        when scored.rfm_r <= 2 and scored.rfm_f = 5 then 'cannot lose them'
        when scored.rfm_r <= 2 and scored.rfm_f >= 3 then 'at risk'
        else 'hibernating'
    end as rfm_segment,
    case
        when pareto.customer_id is null then 'none'
        when pareto.revenue_share_before < 0.80 then 'high'
        when pareto.revenue_share_before < 0.95 then 'medium'
        else 'low'
    end as value_tier
from per_customer
left join buyers on buyers.customer_id = per_customer.customer_id
left join scored on scored.customer_id = per_customer.customer_id
left join pareto on pareto.customer_id = per_customer.customer_id
