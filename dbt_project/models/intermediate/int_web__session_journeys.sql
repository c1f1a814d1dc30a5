-- One row per web session (int_web__sessions) with its journey: the landing event's campaign
-- (UTM parameters, which analytics.js sends only on the landing page's calls) and channel,
-- landing and exit paths, and how far down the shopping funnel it went (Segment's e-commerce
-- events). Events are placed in their session by device and time: the sessions model keeps
-- no event list (it is incremental; joining here keeps its schema as it is).
with sessions as (

    select session_id, anonymous_id, user_id, started_at, ended_at, page_views, events, landing_path
    from {{ ref('int_web__sessions') }}

),

events as (

    select
        sessions.session_id,
        events.message_id,
        events.event_at,
        events.event_type,
        events.event_name,
        events.campaign_source,
        events.campaign_medium,
        events.campaign_name,
        events.page_referrer,
        events.event_type in ('page', 'screen') as is_view,
        case when events.event_type = 'screen' then coalesce(events.page_path, events.page_name)
             else events.page_path end as page_path
    from {{ ref('stg_web__events') }} as events
    inner join sessions
        on sessions.anonymous_id = events.anonymous_id
       and events.event_at between sessions.started_at and sessions.ended_at
    where events.anonymous_id is not null and events.event_at is not null

),

per_session as (

    select
        session_id,
        -- the landing event: the session's first (ties broken as the sessions model does)
        {{ arg_min_by('campaign_source', row_tuple(['event_at', 'message_id'])) }} as campaign_source,
        {{ arg_min_by('campaign_medium', row_tuple(['event_at', 'message_id'])) }} as campaign_medium,
        {{ arg_min_by('campaign_name', row_tuple(['event_at', 'message_id'])) }} as campaign_name,
        {{ arg_min_by('page_referrer', row_tuple(['event_at', 'message_id'])) }} filter (where is_view) as landing_referrer,
        {{ arg_max_by('page_path', row_tuple(['event_at', 'message_id'])) }} filter (where is_view) as exit_path,
        count(*) filter (where event_name = 'Product Viewed') as product_viewed_events,
        count(*) filter (where event_name = 'Product Added') as product_added_events,
        count(*) filter (where event_name = 'Checkout Started') as checkout_started_events,
        count(*) filter (where event_name = 'Order Completed') as order_completed_events
    from events
    group by session_id

)

select
    sessions.session_id,
    sessions.anonymous_id,
    sessions.user_id,
    sessions.started_at,
    sessions.ended_at,
    cast(sessions.started_at as date) as session_date,
    cast({{ dbt.datediff('sessions.started_at', 'sessions.ended_at', 'second') }} as double) / 60.0 as session_minutes,
    sessions.page_views,
    sessions.events,
    -- a bounce: the visitor saw one page (or app screen) and left
    sessions.page_views <= 1 as is_bounce,
    per_session.campaign_source,
    per_session.campaign_medium,
    per_session.campaign_name,
    {{ marketing_channel('per_session.campaign_medium', 'per_session.landing_referrer') }} as channel,
    sessions.landing_path,
    per_session.exit_path,
    coalesce(per_session.product_viewed_events, 0) > 0 as product_viewed,
    coalesce(per_session.product_added_events, 0) > 0 as product_added,
    coalesce(per_session.checkout_started_events, 0) > 0 as checkout_started,
    coalesce(per_session.order_completed_events, 0) > 0 as order_completed
from sessions
left join per_session on per_session.session_id = sessions.session_id
