-- The latest version of each CRM contact, typed, with linking keys normalized. Properties are
-- read through the CRM property map (macros/crm_properties.sql): "" is missing, the portal's
-- lifecycle stages are mapped to ours, the free-text country becomes ISO alpha-2 and a national
-- phone is read in it. An archived (erased) contact keeps its id and flags but loses every
-- personal attribute.
-- Incremental, keyed by record: a run re-reads only the records with a new version landed
-- (macros/crm_versions.sql) and replaces them.
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='contact_id',
        on_schema_change='append_new_columns'
    )
}}

with versions as (

    {{ crm_versions('contacts') }}

),

latest as (

    select
        {{ clean_text('id') }} as contact_id,
        coalesce(archived, false) as is_archived,
        {{ iso_to_utc(adapter.quote('createdAt')) }} as created_at,
        {{ iso_to_utc(adapter.quote('updatedAt')) }} as updated_at,
        {{ iso_to_utc(adapter.quote('archivedAt')) }} as archived_at,
        {{ crm_prop('contacts', 'email') }} as email_raw,
        {{ crm_prop('contacts', 'phone') }} as phone_typed,
        {{ crm_prop('contacts', 'mobile_phone') }} as mobile_phone_typed,
        {{ crm_prop('contacts', 'first_name') }} as first_name,
        {{ crm_prop('contacts', 'last_name') }} as last_name,
        {{ crm_prop('contacts', 'gender') }} as gender,
        {{ crm_prop('contacts', 'date_of_birth') }} as date_of_birth,
        {{ crm_prop('contacts', 'city') }} as city,
        {{ crm_prop('contacts', 'country') }} as country_raw,
        {{ crm_prop('contacts', 'loyalty_id') }} as loyalty_id_raw,
        {{ crm_value_map('contacts', 'lifecycle_stage', crm_prop('contacts', 'lifecycle_stage')) }} as lifecycle_stage,
        {{ crm_prop('contacts', 'marketing_consent') }} as marketing_consent,
        {{ crm_prop('contacts', 'signup_channel') }} as signup_channel,
        _batch_id,
        _loaded_at
    from versions
    where version_rank = 1

),

located as (

    select
        *,
        {{ normalize_country('country_raw') }} as country
    from latest

),

normalized as (

    select
        *,
        -- phone and mobilephone are both keys: a landline in phone must not hide the mobile
        -- the same person gives at the till
        case when not is_archived then {{ normalize_phone('phone_typed', 'country') }} end as phone_e164,
        case when not is_archived then {{ normalize_phone('mobile_phone_typed', 'country') }} end as mobile_phone,
        coalesce(phone_typed, mobile_phone_typed) as phone_raw
    from located

)

select
    contact_id,
    is_archived,
    created_at,
    updated_at,
    archived_at,
    case when not is_archived then {{ normalize_email('email_raw') }} end as email,
    coalesce(phone_e164, mobile_phone) as phone,
    mobile_phone,
    case when not is_archived then phone_raw end as phone_raw,
    -- a phone was typed but cannot be read as a full number (counted, never dropped silently)
    coalesce(not is_archived and ((phone_typed is not null and phone_e164 is null)
                                  or (mobile_phone_typed is not null and mobile_phone is null)), false)
        as phone_unparsed,
    case when not is_archived then {{ normalize_loyalty_id('loyalty_id_raw') }} end as loyalty_id,
    case when not is_archived then first_name end as first_name,
    case when not is_archived then last_name end as last_name,
    case when not is_archived then lower(gender) end as gender,
    case when not is_archived then try_cast(date_of_birth as date) end as date_of_birth,
    case when not is_archived then city end as city,
    case when not is_archived then country end as country,
    case when not is_archived then country_raw end as country_raw,
    lifecycle_stage,
    case lower(marketing_consent)
        when 'true' then true
        when 'false' then false
    end as marketing_consent,
    lower(signup_channel) as signup_channel,
    _batch_id,
    _loaded_at
from normalized
