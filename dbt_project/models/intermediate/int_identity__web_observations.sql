-- The identity evidence in web events, kept incrementally (it is the bulk of the evidence and
-- comes from the largest table): logins (a device and the contact id logged in on it, first
-- seen at the pair's earliest event) and identify calls (traits email/phone with the contact
-- id, or with the device when logged out). Each run reads only events staged since the last
-- one; a login pair seen before keeps its earliest sighting. int_identity__observations adds
-- the CRM and POS evidence. A full refresh gives the same table (tests/test_dbt_incremental.py).
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key=['record_type', 'record_id', 'identity_key'],
        on_schema_change='fail'
    )
}}

with new_events as (

    select message_id, anonymous_id, user_id, event_at, trait_email, trait_phone, _loaded_at
    from {{ ref('stg_web__events') }}
    {% if is_incremental() %}
    where _loaded_at > (select coalesce(max(_loaded_at), timestamptz '1970-01-01 00:00:00+00') from {{ this }})
    {% endif %}

),

logins as (

    select
        anonymous_id || '|' || user_id as record_id,
        anonymous_id,
        user_id,
        min(event_at) as observed_at,
        max(_loaded_at) as _loaded_at
    from new_events
    where user_id is not null and anonymous_id is not null
    group by anonymous_id, user_id

),

{% if is_incremental() %}
earlier_logins as (

    select record_id, min(observed_at) as observed_at
    from {{ this }}
    where record_type = 'web_login'
      and record_id in (select record_id from logins)
    group by record_id

),
{% endif %}

login_sightings as (

    select
        logins.record_id,
        logins.anonymous_id,
        logins.user_id,
        {% if is_incremental() -%}
        least(logins.observed_at, earlier_logins.observed_at)
        {%- else -%}
        logins.observed_at
        {%- endif %} as observed_at,
        logins._loaded_at
    from logins
    {% if is_incremental() %}
    left join earlier_logins on earlier_logins.record_id = logins.record_id
    {% endif %}

),

observations as (

    select 'web_login' as record_type, record_id, observed_at,
           {{ identity_key('contact', 'user_id') }} as identity_key, _loaded_at
    from login_sightings
    union all
    select 'web_login', record_id, observed_at, {{ identity_key('anon', 'anonymous_id') }}, _loaded_at
    from login_sightings

    union all
    select 'web_identify', message_id, event_at,
           coalesce({{ identity_key('contact', 'user_id') }}, {{ identity_key('anon', 'anonymous_id') }}),
           _loaded_at
    from new_events where trait_email is not null or trait_phone is not null
    union all
    select 'web_identify', message_id, event_at, {{ identity_key('email', 'trait_email') }}, _loaded_at
    from new_events where trait_email is not null
    union all
    select 'web_identify', message_id, event_at, {{ identity_key('phone', 'trait_phone') }}, _loaded_at
    from new_events where trait_phone is not null

)

select record_type, record_id, identity_key, observed_at, _loaded_at
from observations
where identity_key is not null
