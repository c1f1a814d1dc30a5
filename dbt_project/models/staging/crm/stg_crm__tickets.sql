-- The latest version of each support ticket, typed. Free text stays here (restricted
-- layer): it can contain the customer's email or phone.
with versions as (

    {{ crm_versions('tickets') }}

)

select
    {{ clean_text('id') }} as ticket_id,
    {{ clean_text(json_text('properties', '$.contact_id')) }} as contact_id,
    coalesce(archived, false) as is_archived,
    {{ iso_to_utc('"createdAt"') }} as created_at,
    {{ iso_to_utc('"updatedAt"') }} as updated_at,
    {{ iso_to_utc(clean_text(json_text('properties', '$.closed_at'))) }} as closed_at,
    lower({{ clean_text(json_text('properties', '$.category')) }}) as category,
    lower({{ clean_text(json_text('properties', '$.priority')) }}) as priority,
    lower({{ clean_text(json_text('properties', '$.status')) }}) as status,
    {{ json_text('properties', '$.subject') }} as subject,
    {{ json_text('properties', '$.content') }} as content,
    _batch_id,
    _loaded_at
from versions
where version_rank = 1
