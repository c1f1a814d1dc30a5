-- The latest version of each CRM contact, typed, with linking keys normalized.
-- An archived (erased) contact keeps its id and flags but loses every personal attribute.
with versions as (

    {{ crm_versions('contacts') }}

),

latest as (

    select
        {{ clean_text('id') }} as contact_id,
        coalesce(archived, false) as is_archived,
        {{ iso_to_utc('"createdAt"') }} as created_at,
        {{ iso_to_utc('"updatedAt"') }} as updated_at,
        {{ json_text('properties', '$.email') }} as email_raw,
        {{ json_text('properties', '$.phone') }} as phone_raw,
        {{ json_text('properties', '$.firstname') }} as first_name,
        {{ json_text('properties', '$.lastname') }} as last_name,
        {{ json_text('properties', '$.gender') }} as gender,
        {{ json_text('properties', '$.date_of_birth') }} as date_of_birth,
        {{ json_text('properties', '$.city') }} as city,
        upper({{ clean_text(json_text('properties', '$.country')) }}) as country,
        {{ json_text('properties', '$.loyalty_id') }} as loyalty_id_raw,
        {{ json_text('properties', '$.lifecyclestage') }} as lifecycle_stage,
        {{ json_text('properties', '$.marketing_consent') }} as marketing_consent,
        {{ json_text('properties', '$.signup_channel') }} as signup_channel,
        _batch_id,
        _loaded_at
    from versions
    where version_rank = 1

)

select
    contact_id,
    is_archived,
    created_at,
    updated_at,
    case when not is_archived then {{ normalize_email('email_raw') }} end as email,
    case when not is_archived then {{ normalize_phone('phone_raw', 'country') }} end as phone,
    case when not is_archived then {{ clean_text('phone_raw') }} end as phone_raw,
    case when not is_archived then {{ normalize_loyalty_id('loyalty_id_raw') }} end as loyalty_id,
    case when not is_archived then {{ clean_text('first_name') }} end as first_name,
    case when not is_archived then {{ clean_text('last_name') }} end as last_name,
    case when not is_archived then lower({{ clean_text('gender') }}) end as gender,
    case when not is_archived then try_cast({{ clean_text('date_of_birth') }} as date) end as date_of_birth,
    case when not is_archived then {{ clean_text('city') }} end as city,
    case when not is_archived then country end as country,
    lower({{ clean_text('lifecycle_stage') }}) as lifecycle_stage,
    case lower({{ clean_text('marketing_consent') }})
        when 'true' then true
        when 'false' then false
    end as marketing_consent,
    lower({{ clean_text('signup_channel') }}) as signup_channel,
    _batch_id,
    _loaded_at
from latest
