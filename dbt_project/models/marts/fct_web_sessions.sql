-- Web sessions (sessionized incrementally in int_web__sessions) with today's customer. The
-- customer is the logged-in contact's (the contact with most events in the session), else the
-- device's when the device is linked to one person; logged-out sessions on a shared device
-- have none. Rebuilt every run: a merge in identity resolution moves old sessions too.
select
    sessions.session_id,
    coalesce(by_user.customer_id, by_device.customer_id) as customer_id,
    sessions.anonymous_id,
    sessions.user_id,
    sessions.user_id is not null as is_logged_in,
    sessions.started_at,
    sessions.ended_at,
    cast(sessions.started_at as date) as session_date,
    cast({{ dbt.datediff('sessions.started_at', 'sessions.ended_at', 'second') }} as integer) as duration_seconds,
    sessions.page_views,
    sessions.events,
    sessions.converted,
    sessions.landing_path,
    sessions.campaign_source
from {{ ref('int_web__sessions') }} as sessions
left join {{ ref('int_identity__clusters') }} as by_user
    on by_user.identity_key = {{ identity_key('contact', 'sessions.user_id') }}
left join {{ ref('int_identity__clusters') }} as by_device
    on by_device.identity_key = {{ identity_key('anon', 'sessions.anonymous_id') }}
