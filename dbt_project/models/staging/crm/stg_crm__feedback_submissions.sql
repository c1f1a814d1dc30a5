-- The latest version of each survey answer, typed.
with versions as (

    {{ crm_versions('feedback_submissions') }}

)

select
    {{ clean_text('id') }} as feedback_id,
    {{ clean_text(json_text('properties', '$.contact_id')) }} as contact_id,
    coalesce(archived, false) as is_archived,
    upper({{ clean_text(json_text('properties', '$.survey_type')) }}) as survey_type,
    try_cast({{ clean_text(json_text('properties', '$.score')) }} as integer) as score,
    {{ json_text('properties', '$.comment') }} as comment,
    coalesce({{ iso_to_utc(clean_text(json_text('properties', '$.submitted_at'))) }},
             {{ iso_to_utc('"createdAt"') }}) as submitted_at,
    {{ iso_to_utc('"createdAt"') }} as created_at,
    {{ iso_to_utc('"updatedAt"') }} as updated_at,
    _batch_id,
    _loaded_at
from versions
where version_rank = 1
