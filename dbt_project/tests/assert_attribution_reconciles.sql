-- Per attribution model, the revenue credited to campaigns equals the net revenue of the
-- orders it attributed (each order's credits add up to 1), and no order is credited twice
-- over; rows returned are the models that do not reconcile.
with orders as (

    select attribution_model, order_id, sum(credit) as credit, min(order_net_amount) as net_amount
    from {{ ref('int_marketing__order_attribution') }}
    group by all

),

per_model as (

    select attribution_model,
           sum(net_amount) as order_revenue,
           max(abs(credit - 1)) as worst_credit_gap
    from orders
    group by all

),

published as (

    select attribution_model, sum(attributed_revenue) as attributed_revenue
    from {{ ref('fct_campaign_performance') }}
    group by all

)

select per_model.attribution_model, per_model.order_revenue, published.attributed_revenue,
       per_model.worst_credit_gap
from per_model
full outer join published using (attribution_model)
where abs(coalesce(cast(per_model.order_revenue as double), 0) - coalesce(published.attributed_revenue, 0)) > 0.01
   or per_model.worst_credit_gap > 1e-9
