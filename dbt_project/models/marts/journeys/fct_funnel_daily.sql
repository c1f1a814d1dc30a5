-- The shopping funnel per day (of the session's start, UTC), marketing channel and campaign:
-- sessions, and how many of them reached each step. A visit without UTM parameters has
-- campaign fields '(none)' (so the grain's key has no nulls).
select
    session_date as date,
    channel,
    coalesce(campaign_source, '(none)') as campaign_source,
    coalesce(campaign_medium, '(none)') as campaign_medium,
    coalesce(campaign_name, '(none)') as campaign_name,
    cast(count(*) as integer) as sessions,
    cast(count(*) filter (where product_viewed) as integer) as product_viewed,
    cast(count(*) filter (where product_added) as integer) as product_added,
    cast(count(*) filter (where checkout_started) as integer) as checkout_started,
    cast(count(*) filter (where order_completed) as integer) as order_completed,
    count(*) filter (where order_completed) / count(*) as conversion_rate,
    count(*) filter (where is_bounce) / count(*) as bounce_rate,
    -- whole seconds summed as integers: the same total in any order (an avg of doubles, in
    -- DuckDB's parallel aggregation, differs in its last bits from run to run)
    cast(sum(cast(round(session_minutes * 60) as bigint)) as double) / count(*) / 60
        as avg_session_minutes
from {{ ref('int_web__session_journeys') }}
group by all
