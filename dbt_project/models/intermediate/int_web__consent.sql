-- Each customer's latest Segment consent: the categoryPreferences of the newest event that
-- carried a consent object (Segment: events without one leave the preferences as they were).
-- The event's customer is its logged-in contact's, else its device's when the device is
-- linked to one person (a shared device's logged-out consent belongs to nobody).
with consented as (

    select message_id, user_id, anonymous_id, event_at, consent_preferences
    from {{ ref('stg_web__events') }}
    where consent_preferences is not null

),

owned as (

    select
        coalesce(by_user.customer_id, by_device.customer_id) as customer_id,
        consented.message_id,
        consented.event_at,
        consented.consent_preferences
    from consented
    left join {{ ref('int_identity__clusters') }} as by_user
        on by_user.identity_key = {{ identity_key('contact', 'consented.user_id') }}
    left join {{ ref('int_identity__clusters') }} as by_device
        on by_device.identity_key = {{ identity_key('anon', 'consented.anonymous_id') }}

),

latest as (

    select
        customer_id,
        max_by(consent_preferences, (event_at, message_id)) as consent_preferences,
        max(event_at) as consent_at
    from owned
    where customer_id is not null
    group by customer_id

)

select
    customer_id,
    consent_preferences,
    consent_at,
    -- the categories answered false, lower-cased (category ids are the consent manager's)
    coalesce({{ denied_consent_categories('consent_preferences') }}, {{ empty_string_list() }})
        as denied_categories
from latest
