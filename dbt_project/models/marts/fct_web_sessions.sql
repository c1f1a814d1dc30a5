-- Web sessions: a device's events split wherever {{ var('session_timeout_minutes') }}+ minutes
-- pass without an event (a gap of exactly the timeout stays in the session). The customer is
-- the logged-in contact's (the contact with most events in the session), else the device's
-- when the device is linked to one person; logged-out sessions on a shared device have none.
with events as (

    select message_id, anonymous_id, user_id, event_at, event_type, event_name,
           page_path, campaign_source
    from {{ ref('stg_web__events') }}
    where anonymous_id is not null and event_at is not null

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
        count(case when event_type = 'page' then 1 end) as page_views,
        max(case when event_name = 'Order Completed' then 1 else 0 end) = 1 as converted,
        min_by(page_path, event_at) filter (where event_type = 'page') as landing_path,
        min_by(campaign_source, event_at) filter (where campaign_source is not null) as campaign_source
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
    {{ dbt.hash("sessions.anonymous_id || '|' || cast(sessions.started_at as varchar)") }} as session_id,
    coalesce(by_user.customer_id, by_device.customer_id) as customer_id,
    sessions.anonymous_id,
    session_users.user_id,
    session_users.user_id is not null as is_logged_in,
    sessions.started_at,
    sessions.ended_at,
    cast(sessions.started_at as date) as session_date,
    cast({{ dbt.datediff('sessions.started_at', 'sessions.ended_at', 'second') }} as integer) as duration_seconds,
    cast(sessions.page_views as integer) as page_views,
    cast(sessions.events as integer) as events,
    sessions.converted,
    sessions.landing_path,
    sessions.campaign_source
from sessions
left join session_users
    on session_users.anonymous_id = sessions.anonymous_id
   and session_users.session_no = sessions.session_no
left join {{ ref('int_identity__clusters') }} as by_user
    on by_user.identity_key = {{ identity_key('contact', 'session_users.user_id') }}
left join {{ ref('int_identity__clusters') }} as by_device
    on by_device.identity_key = {{ identity_key('anon', 'sessions.anonymous_id') }}
