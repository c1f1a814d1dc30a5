-- One row per web session (int_web__sessions) with its journey: the landing event's campaign
-- (UTM parameters, which analytics.js sends only on the landing page's calls) and channel,
-- landing and exit paths, and how far down the shopping funnel it went (Segment's e-commerce
-- events). The sessions model gathers these from the events as it sessionizes them, so they are
-- incremental with it: joining every event to its session here again cost a full pass over the
-- events every day (13.5 s of a 100k x 365 day with nothing new; BENCHMARKS.md).
select
    session_id,
    anonymous_id,
    user_id,
    started_at,
    ended_at,
    cast(started_at as date) as session_date,
    cast({{ dbt.datediff('started_at', 'ended_at', 'second') }} as double) / 60.0 as session_minutes,
    page_views,
    events,
    -- a bounce: the visitor saw one page (or app screen) and left
    page_views <= 1 as is_bounce,
    landing_campaign_source as campaign_source,
    landing_campaign_medium as campaign_medium,
    landing_campaign_name as campaign_name,
    {{ marketing_channel('landing_campaign_medium', 'landing_referrer') }} as channel,
    landing_path,
    exit_path,
    product_viewed,
    product_added,
    checkout_started,
    order_completed
from {{ ref('int_web__sessions') }}
