-- The golden record: one row per customer, each attribute chosen by the survivorship rules
-- documented in _intermediate__models.yml. Email and phone appear only as keyed hashes, so
-- the SCD2 snapshot built from this model never stores raw contact details.
with clusters as (

    select * from {{ ref('int_identity__clusters') }}

),

contacts as (

    select
        clusters.customer_id,
        contacts.*
    from {{ ref('stg_crm__contacts') }} as contacts
    inner join clusters
        on clusters.identity_key = {{ identity_key('contact', 'contacts.contact_id') }}
    where not contacts.is_archived

),

from_contacts as (

    -- latest non-null value across the customer's contacts wins
    select
        customer_id,
        {{ sorted_list_agg('contact_id') }} as crm_contact_ids,
        max_by(contact_id, updated_at) as primary_contact_id,
        max_by(email, updated_at) filter (where email is not null) as email,
        max_by(phone, updated_at) filter (where phone is not null) as phone,
        max_by(loyalty_id, updated_at) filter (where loyalty_id is not null) as loyalty_id,
        max_by(gender, updated_at) filter (where gender is not null) as gender,
        max_by(date_of_birth, updated_at) filter (where date_of_birth is not null) as date_of_birth,
        max_by(city, updated_at) filter (where city is not null) as city,
        max_by(country, updated_at) filter (where country is not null) as country,
        max_by(marketing_consent, updated_at) filter (where marketing_consent is not null) as marketing_consent,
        max_by(lifecycle_stage, updated_at) filter (where lifecycle_stage is not null) as crm_lifecycle_stage,
        -- how the person first signed up: the earliest contact's channel
        min_by(signup_channel, created_at) filter (where signup_channel is not null) as signup_channel,
        min(created_at) as first_contact_at
    from contacts
    group by customer_id

),

from_keys as (

    -- fallbacks for customers known only by keys seen at the till or on the web:
    -- the most recently seen key of each kind
    select
        clusters.customer_id,
        max_by(substr(nodes.identity_key, 7), nodes.last_seen_at)
            filter (where nodes.key_type = 'email') as email,
        max_by(substr(nodes.identity_key, 7), nodes.last_seen_at)
            filter (where nodes.key_type = 'phone') as phone,
        max_by(substr(nodes.identity_key, 9), nodes.last_seen_at)
            filter (where nodes.key_type = 'loyalty') as loyalty_id,
        min(nodes.first_seen_at) as first_seen_at,
        count(*) as identity_keys
    from clusters
    inner join {{ ref('int_identity__nodes') }} as nodes
        on nodes.identity_key = clusters.identity_key
    group by clusters.customer_id

)

select
    from_keys.customer_id,
    coalesce(from_contacts.crm_contact_ids, {{ empty_string_list() }}) as crm_contact_ids,
    from_contacts.primary_contact_id,
    pii_hash(coalesce(from_contacts.email, from_keys.email)) as email_hash,
    pii_hash(coalesce(from_contacts.phone, from_keys.phone)) as phone_hash,
    pii_hash(coalesce(from_contacts.loyalty_id, from_keys.loyalty_id)) as loyalty_id_hash,
    from_contacts.gender,
    cast(year(from_contacts.date_of_birth) as integer) as birth_year,
    from_contacts.city,
    from_contacts.country,
    from_contacts.signup_channel,
    coalesce(from_contacts.marketing_consent, false) as marketing_consent,
    from_contacts.crm_lifecycle_stage,
    from_contacts.primary_contact_id is not null as has_crm_contact,
    least(from_contacts.first_contact_at, from_keys.first_seen_at) as first_seen_at,
    from_keys.identity_keys
from from_keys
left join from_contacts on from_contacts.customer_id = from_keys.customer_id
