-- Keys that would merge different people, so the graph leaves them out:
--   shared_device: a web device (anonymousId) on which two or more contact ids logged in or
--                  which Segment aliased to them (a household computer); its logged-out
--                  activity belongs to nobody.
--   shared_key:    an email, phone or loyalty id on more CRM contacts than
--                  var('identity_max_contacts_per_key') (a shop's own number typed for
--                  customers, a placeholder address). Two contacts sharing a key are kept:
--                  that is how a person's duplicate contact is found.
with logins as (

    select
        identity_key,
        count(distinct record_id) as contact_count
    from (
        select
            anon.identity_key,
            contact_key.identity_key as record_id
        from {{ ref('int_identity__observations') }} as anon
        inner join {{ ref('int_identity__observations') }} as contact_key
            on contact_key.record_type = anon.record_type
           and contact_key.record_id = anon.record_id
           and contact_key.key_type = 'contact'
        where anon.record_type in ('web_login', 'web_alias') and anon.key_type = 'anon'
    ) as device_logins
    group by identity_key

),

crm_keys as (

    select
        identity_key,
        count(distinct record_id) as contact_count
    from {{ ref('int_identity__observations') }}
    where record_type = 'crm_contact' and key_type in ('email', 'phone', 'loyalty')
    group by identity_key

)

select
    identity_key,
    split_part(identity_key, ':', 1) as key_type,
    'shared_device' as reason,
    contact_count
from logins
where contact_count >= 2

union all

select
    identity_key,
    split_part(identity_key, ':', 1) as key_type,
    'shared_key' as reason,
    contact_count
from crm_keys
where contact_count > {{ var('identity_max_contacts_per_key') }}
