-- Web sessions without their customer (page views and app screen views alike; server-side
-- calls, which carry no anonymousId, belong to no session): a device's events split wherever more than
-- {{ var('session_timeout_minutes') }} minutes pass without an event. fct_web_sessions adds
-- the customer (identity can change any day, so the customer is joined there, never stored here).
--
-- Incremental, because sessionizing is a window over every event of every device: each run
-- re-sessionizes only the devices with events staged since the last run, and for each such
-- device only from the last existing session that started at or before its earliest new event
-- (a late event can join, extend or bridge sessions from there on, never earlier ones). The
-- post-hook then deletes that device's older rows from that point on: what this run inserted
-- replaces them. A full refresh gives the same table (tests/test_incremental.py).
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        post_hook="{{ delete_matching_rows(this,
            'select anonymous_id, min(started_at) as recomputed_from from ' ~ this
            ~ ' where _invocation_id = \\'' ~ invocation_id ~ '\\' group by anonymous_id',
            'old.anonymous_id = fresh.anonymous_id and old.started_at >= fresh.recomputed_from'
            ~ ' and old._invocation_id <> \\'' ~ invocation_id ~ '\\'') }}"
    )
}}

with

{% if is_incremental() %}
new_events as (

    select anonymous_id, min(event_at) as first_new_at
    from {{ ref('stg_web__events') }}
    where anonymous_id is not null and event_at is not null
      and _loaded_at > (select coalesce(max(_loaded_at), cast('1970-01-01 00:00:00+00' as {{ engine_type('timestamptz') }})) from {{ this }})
    group by anonymous_id

),

recompute as (

    -- from the start of the last session that started at or before the first new event
    select
        new_events.anonymous_id,
        coalesce(max(kept.started_at), new_events.first_new_at) as recompute_from
    from new_events
    left join {{ this }} as kept
        on kept.anonymous_id = new_events.anonymous_id
       and kept.started_at <= new_events.first_new_at
    group by new_events.anonymous_id, new_events.first_new_at

),
{% endif %}

events as (

    select
        events.message_id, events.anonymous_id, events.user_id, events.event_at, events.event_type,
        events.event_name, events.campaign_source, events.campaign_medium, events.campaign_name,
        events.page_referrer, events._loaded_at,
        -- an app's screen view counts as a page view; its name stands for the path
        events.event_type in ('page', 'screen') as is_view,
        case when events.event_type = 'screen' then coalesce(events.page_path, events.page_name)
             else events.page_path end as page_path
    from {{ ref('stg_web__events') }} as events
    {% if is_incremental() %}
    inner join recompute
        on recompute.anonymous_id = events.anonymous_id
       and events.event_at >= recompute.recompute_from
    {% endif %}
    where events.anonymous_id is not null and events.event_at is not null

),

gaps as (

    select
        events.*,
        case
            when lag(event_at) over device_order is null then 1
            when {{ dbt.datediff('lag(event_at) over device_order', 'event_at', 'second') }}
                 > {{ var('session_timeout_minutes') }} * 60 then 1
            else 0
        end as starts_session
    from events
    window device_order as (partition by anonymous_id order by event_at, message_id)

),

numbered as (

    select
        gaps.*,
        sum(starts_session) over (partition by anonymous_id order by event_at, message_id
                                  rows between unbounded preceding and current row) as session_no
    from gaps

),

sessions as (

    select
        anonymous_id,
        session_no,
        min(event_at) as started_at,
        max(event_at) as ended_at,
        count(*) as events,
        count(case when is_view then 1 end) as page_views,
        max(case when event_name = 'Order Completed' then 1 else 0 end) = 1 as converted,
        min_by(page_path, event_at) filter (where is_view) as landing_path,
        min_by(campaign_source, event_at) filter (where campaign_source is not null) as campaign_source,
        -- the journey (int_web__session_journeys): the landing event's campaign (ties broken by
        -- message id), the first view's referrer, the last view's path, the funnel steps
        {{ arg_min_by('campaign_source', row_tuple(['event_at', 'message_id'])) }} as landing_campaign_source,
        {{ arg_min_by('campaign_medium', row_tuple(['event_at', 'message_id'])) }} as landing_campaign_medium,
        {{ arg_min_by('campaign_name', row_tuple(['event_at', 'message_id'])) }} as landing_campaign_name,
        {{ arg_min_by('page_referrer', row_tuple(['event_at', 'message_id'])) }} filter (where is_view) as landing_referrer,
        {{ arg_max_by('page_path', row_tuple(['event_at', 'message_id'])) }} filter (where is_view) as exit_path,
        count(case when event_name = 'Product Viewed' then 1 end) > 0 as product_viewed,
        count(case when event_name = 'Product Added' then 1 end) > 0 as product_added,
        count(case when event_name = 'Checkout Started' then 1 end) > 0 as checkout_started,
        count(case when event_name = 'Order Completed' then 1 end) > 0 as order_completed,
        max(_loaded_at) as _loaded_at
    from numbered
    group by anonymous_id, session_no

),

session_users as (

    select anonymous_id, session_no, user_id
    from (
        select
            anonymous_id, session_no, user_id,
            row_number() over (partition by anonymous_id, session_no
                               order by count(*) desc, user_id) as user_rank
        from numbered
        where user_id is not null
        group by anonymous_id, session_no, user_id
    ) as ranked
    where user_rank = 1

)

select
    {{ dbt.hash("sessions.anonymous_id || '|' || cast(sessions.started_at as string)") }} as session_id,
    sessions.anonymous_id,
    session_users.user_id,
    sessions.started_at,
    sessions.ended_at,
    cast(sessions.page_views as integer) as page_views,
    cast(sessions.events as integer) as events,
    sessions.converted,
    sessions.landing_path,
    sessions.campaign_source,
    sessions.landing_campaign_source,
    sessions.landing_campaign_medium,
    sessions.landing_campaign_name,
    sessions.landing_referrer,
    sessions.exit_path,
    sessions.product_viewed,
    sessions.product_added,
    sessions.checkout_started,
    sessions.order_completed,
    sessions._loaded_at,
    '{{ invocation_id }}' as _invocation_id
from sessions
left join session_users
    on session_users.anonymous_id = sessions.anonymous_id
   and session_users.session_no = sessions.session_no
