-- The identity evidence in web events, kept incrementally (it is the bulk of the evidence and
-- comes from the largest table): logins (a device and the contact id logged in on it, first
-- seen at the pair's earliest event), Segment alias calls (previousId -> userId, likewise)
-- and identify calls (traits email/phone with the contact
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

    select message_id, event_type, anonymous_id, user_id, previous_id, event_at, trait_email,
           trait_phone, _loaded_at
    from {{ ref('stg_web__events') }}
    {% if is_incremental() %}
    where _loaded_at > (select coalesce(max(_loaded_at), cast('1970-01-01 00:00:00+00' as {{ engine_type('timestamptz') }})) from {{ this }})
    {% endif %}

),

-- Pairs of ids one person used, each first seen at its earliest event: logins (a device and
-- the contact id logged in on it) and Segment alias calls (previousId -> userId).
pairs as (

    select
        'web_login' as record_type,
        anonymous_id || '|' || user_id as record_id,
        anonymous_id as earlier_id,
        user_id,
        min(event_at) as observed_at,
        max(_loaded_at) as _loaded_at
    from new_events
    where user_id is not null and anonymous_id is not null
    group by anonymous_id, user_id

    union all

    select
        'web_alias',
        previous_id || '|' || user_id,
        previous_id,
        user_id,
        min(event_at),
        max(_loaded_at)
    from new_events
    where event_type = 'alias' and previous_id is not null and user_id is not null
      and previous_id <> user_id
    group by previous_id, user_id

),

{% if is_incremental() %}
earlier_pairs as (

    select kept.record_type, kept.record_id, min(kept.observed_at) as observed_at
    from {{ this }} as kept
    where kept.record_type in ('web_login', 'web_alias')
      and exists (select 1 from pairs
                  where pairs.record_type = kept.record_type and pairs.record_id = kept.record_id)
    group by kept.record_type, kept.record_id

),
{% endif %}

pair_sightings as (

    select
        pairs.record_type,
        pairs.record_id,
        pairs.earlier_id,
        pairs.user_id,
        {% if is_incremental() -%}
        least(pairs.observed_at, earlier_pairs.observed_at)
        {%- else -%}
        pairs.observed_at
        {%- endif %} as observed_at,
        pairs._loaded_at
    from pairs
    {% if is_incremental() %}
    left join earlier_pairs
        on earlier_pairs.record_type = pairs.record_type
       and earlier_pairs.record_id = pairs.record_id
    {% endif %}

),

observations as (

    select record_type, record_id, observed_at,
           {{ identity_key('contact', 'user_id') }} as identity_key, _loaded_at
    from pair_sightings
    union all
    -- an alias's previousId is written as a device key here; int_identity__observations
    -- makes it a contact key when it is a known contact id (an old userId)
    select record_type, record_id, observed_at, {{ identity_key('anon', 'earlier_id') }}, _loaded_at
    from pair_sightings

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
