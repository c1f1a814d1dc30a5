-- The customer behind each source record that can have one: CRM contacts, POS transactions
-- and web orders. A record whose keys are all unknown or ambiguous has no row (walk-ins,
-- devices never identified, logged-out activity on a shared device).
with clusters as (

    select identity_key, customer_id from {{ ref('int_identity__clusters') }}

),

keyed_records as (

    select
        obs.record_type,
        obs.record_id,
        min(clusters.customer_id) as customer_id,
        count(distinct clusters.customer_id) as customers
    from {{ ref('int_identity__observations') }} as obs
    inner join clusters on clusters.identity_key = obs.identity_key
    where obs.record_type in ('crm_contact', 'pos_transaction')
    group by obs.record_type, obs.record_id

),

web_orders as (

    -- the first Order Completed event of each order id
    select order_id, user_id, anonymous_id
    from (
        select
            order_id, user_id, anonymous_id,
            row_number() over (partition by order_id order by event_at, message_id) as event_rank
        from {{ ref('stg_web__events') }}
        where event_name = 'Order Completed' and order_id is not null
    ) as ranked
    where event_rank = 1

),

web_order_customers as (

    -- the logged-in contact decides; a logged-out order falls back to the device
    select
        'web_order' as record_type,
        web_orders.order_id as record_id,
        coalesce(by_user.customer_id, by_device.customer_id) as customer_id,
        1 as customers
    from web_orders
    left join clusters as by_user
        on by_user.identity_key = {{ identity_key('contact', 'web_orders.user_id') }}
    left join clusters as by_device
        on by_device.identity_key = {{ identity_key('anon', 'web_orders.anonymous_id') }}

)

select record_type, record_id, customer_id, customers
from keyed_records

union all

select record_type, record_id, customer_id, customers
from web_order_customers
where customer_id is not null
