-- Which identity keys each source record carries: the evidence the identity graph is built
-- from. One row per (record, key). Records are CRM contacts (id, email, phone, loyalty id),
-- POS transactions (the keys typed at the till), web logins (device + contact id) and web
-- identify calls (traits email/phone with the contact id, or with the device when logged out;
-- both from int_identity__web_observations).
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

observations as (

    select 'crm_contact' as record_type, contact_id as record_id, created_at as observed_at,
           {{ identity_key('contact', 'contact_id') }} as identity_key
    from contacts
    union all
    select 'crm_contact', contact_id, created_at, {{ identity_key('email', 'email') }} from contacts
    union all
    select 'crm_contact', contact_id, created_at, {{ identity_key('phone', 'phone') }} from contacts
    union all
    select 'crm_contact', contact_id, created_at, {{ identity_key('phone', 'mobile_phone') }} from contacts
    union all
    select 'crm_contact', contact_id, created_at, {{ identity_key('loyalty', 'loyalty_id') }} from contacts

    union all
    select 'pos_transaction', transaction_id, observed_at, {{ identity_key('loyalty', 'loyalty_id') }} from pos_keys
    union all
    select 'pos_transaction', transaction_id, observed_at, {{ identity_key('phone', 'customer_phone') }} from pos_keys
    union all
    select 'pos_transaction', transaction_id, observed_at, {{ identity_key('email', 'customer_email') }} from pos_keys

    -- logins and identify calls (int_identity__web_observations keeps them incrementally)
    union all
    select record_type, record_id, observed_at, identity_key
    from {{ ref('int_identity__web_observations') }}
)

select distinct
    record_type,
    record_id,
    identity_key,
    split_part(identity_key, ':', 1) as key_type,
    observed_at
from observations
where identity_key is not null
