-- Which identity keys each source record carries: the evidence the identity graph is built
-- from. One row per (record, key). Records are CRM contacts (id, email, phone, loyalty id),
-- POS transactions (the keys typed at the till), web logins (device + contact id) and web
-- identify calls (traits email/phone with the contact id, or with the device when logged out)
-- and Segment alias calls (previousId -> userId; all from int_identity__web_observations).
-- An alias's previousId is a contact key when it is a known contact id (an old userId), else
-- a device key. Guards: a contact id aliased to two or more userIds is no one person's old id
-- (a placeholder), so those alias records are left out; a device aliased to several contacts
-- is a shared device (int_identity__ambiguous_keys).
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

    -- logins, aliases and identify calls (int_identity__web_observations keeps them incrementally)
    union all
    select record_type, record_id, observed_at, identity_key
    from {{ ref('int_identity__web_observations') }}
),

contact_keys as (

    select distinct identity_key
    from observations
    where identity_key like 'contact:%'

),

resolved as (

    select
        observations.record_type,
        observations.record_id,
        case when observations.record_type = 'web_alias' and known.identity_key is not null
             then known.identity_key else observations.identity_key end as identity_key,
        observations.observed_at
    from observations
    -- one equality on a CASE (null for every other row): DuckDB plans the conjunction of a
    -- filter and a computed key as a nested-loop join, which never finished at 100k people
    left join contact_keys as known
        on known.identity_key = case
            when observations.record_type = 'web_alias' and observations.identity_key like 'anon:%'
            then 'contact:' || substr(observations.identity_key, 6) end

),

-- alias records whose previousId is a contact id aliased to more than one userId (a
-- device aliased to several is left to the shared_device rule of int_identity__ambiguous_keys)
fanned_out_aliases as (

    select record_id
    from (
        select record_id, count(*) over (partition by identity_key) as targets
        from resolved
        where record_type = 'web_alias'
          and identity_key = 'contact:' || split_part(record_id, '|', 1)
    ) as counted
    where targets > 1

)

select distinct
    record_type,
    record_id,
    identity_key,
    split_part(identity_key, ':', 1) as key_type,
    observed_at
from resolved
where identity_key is not null
  and not (record_type = 'web_alias'
           and record_id in (select record_id from fanned_out_aliases))
