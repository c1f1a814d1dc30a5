-- Which identity keys each source record carries: the evidence the identity graph is built
-- from. One row per (record, key). Records are CRM contacts (id, email, phone, loyalty id),
-- POS transactions (the keys typed at the till), web logins (device + contact id) and web
-- identify calls (traits email/phone with the contact id, or with the device when logged out).
with contacts as (

    select * from {{ ref('stg_crm__contacts') }} where not is_archived

),

pos_keys as (

    select
        transaction_id,
        min(txn_at) as observed_at,
        max(loyalty_id) as loyalty_id,
        max(customer_phone) as customer_phone,
        max(customer_email) as customer_email
    from {{ ref('stg_pos__transactions') }}
    group by transaction_id

),

web as (

    select * from {{ ref('stg_web__events') }}

),

observations as (

    select 'crm_contact' as record_type, contact_id as record_id, created_at as observed_at,
           {{ identity_key('contact', 'contact_id') }} as identity_key
    from contacts
    union all
    select 'crm_contact', contact_id, created_at, {{ identity_key('email', 'email') }} from contacts
    union all
    select 'crm_contact', contact_id, created_at, {{ identity_key('phone', 'phone') }} from contacts
    union all
    select 'crm_contact', contact_id, created_at, {{ identity_key('loyalty', 'loyalty_id') }} from contacts

    union all
    select 'pos_transaction', transaction_id, observed_at, {{ identity_key('loyalty', 'loyalty_id') }} from pos_keys
    union all
    select 'pos_transaction', transaction_id, observed_at, {{ identity_key('phone', 'customer_phone') }} from pos_keys
    union all
    select 'pos_transaction', transaction_id, observed_at, {{ identity_key('email', 'customer_email') }} from pos_keys

    -- a login ties the device to the contact id (web userId = CRM contact id)
    union all
    select 'web_login', anonymous_id || '|' || user_id, min(event_at), {{ identity_key('contact', 'user_id') }}
    from web where user_id is not null and anonymous_id is not null
    group by anonymous_id, user_id
    union all
    select 'web_login', anonymous_id || '|' || user_id, min(event_at), {{ identity_key('anon', 'anonymous_id') }}
    from web where user_id is not null and anonymous_id is not null
    group by anonymous_id, user_id

    -- identify traits belong to the logged-in contact, else to the device
    union all
    select 'web_identify', message_id, event_at,
           coalesce({{ identity_key('contact', 'user_id') }}, {{ identity_key('anon', 'anonymous_id') }})
    from web where trait_email is not null or trait_phone is not null
    union all
    select 'web_identify', message_id, event_at, {{ identity_key('email', 'trait_email') }}
    from web where trait_email is not null
    union all
    select 'web_identify', message_id, event_at, {{ identity_key('phone', 'trait_phone') }}
    from web where trait_phone is not null

)

select distinct
    record_type,
    record_id,
    identity_key,
    split_part(identity_key, ':', 1) as key_type,
    observed_at
from observations
where identity_key is not null
