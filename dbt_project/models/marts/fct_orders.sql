-- One row per order: a web order id or a POS transaction. Amounts in the reporting currency:
--   gross_amount    = sum of SALE line amounts (after line discounts)
--   returned_amount = sum of RETURN line amounts, as a positive number
--   net_amount      = gross_amount - returned_amount
-- VOID lines count nowhere. A return-only transaction is an order with order_kind "return"
-- and a negative net_amount; customer measures count purchases only as orders.
with lines as (

    select * from {{ ref('fct_order_lines') }}

),

orders as (

    select
        order_id,
        min(channel) as channel,
        min(store_id) as store_id,
        min(ordered_at) as ordered_at,
        min(business_date) as business_date,
        min(source_currency) as source_currency,
        count(*) as line_count,
        coalesce(sum(case when txn_type = 'SALE' then quantity end), 0) as item_count,
        coalesce(sum(case when txn_type = 'SALE' then line_amount end), 0) as gross_amount,
        coalesce(sum(case when txn_type = 'SALE' then discount_amount end), 0) as discount_amount,
        coalesce(sum(case when txn_type = 'RETURN' then abs(line_amount) end), 0) as returned_amount,
        count(case when txn_type = 'SALE' then 1 end) as sale_lines,
        count(case when txn_type = 'RETURN' then 1 end) as return_lines
    from lines
    group by order_id

)

select
    orders.order_id,
    customers.customer_id,
    orders.channel,
    orders.store_id,
    orders.ordered_at,
    cast(orders.ordered_at as date) as order_date,
    orders.business_date,
    cast(orders.item_count as integer) as item_count,
    cast(orders.gross_amount as decimal(18, 2)) as gross_amount,
    cast(orders.discount_amount as decimal(18, 2)) as discount_amount,
    cast(orders.returned_amount as decimal(18, 2)) as returned_amount,
    cast(orders.gross_amount - orders.returned_amount as decimal(18, 2)) as net_amount,
    case
        when orders.sale_lines > 0 then 'purchase'
        when orders.return_lines > 0 then 'return'
        else 'void'
    end as order_kind,
    orders.source_currency,
    cast(orders.line_count as integer) as line_count
from orders
left join {{ ref('int_identity__record_customers') }} as customers
    on customers.record_id = orders.order_id
   and customers.record_type = case orders.channel when 'web' then 'web_order'
                                                   else 'pos_transaction' end
