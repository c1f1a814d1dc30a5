-- The latest version of each survey answer, typed. Properties are read through the CRM
-- property map (macros/crm_properties.sql): "" is missing, the survey type is mapped to ours.
-- The contact is the answer's first associated contact (an association, not a property).
-- A table rebuilt every run, not incremental like stg_crm__contacts: its free text can quote a
-- person, and only a rebuild from the purged raw zone removes such a quote after an erasure
-- (the warehouse purge matches key columns, not text).
with versions as (

    {{ crm_versions('feedback_submissions') }}

)

select
    {{ clean_text('id') }} as feedback_id,
    {{ crm_first_association('contacts') }} as contact_id,
    coalesce(archived, false) as is_archived,
    {{ crm_value_map('feedback_submissions', 'survey_type', crm_prop('feedback_submissions', 'survey_type')) }} as survey_type,
    try_cast({{ crm_prop('feedback_submissions', 'score') }} as integer) as score,
    {{ crm_prop('feedback_submissions', 'comment') }} as comment,
    coalesce({{ iso_to_utc(crm_prop('feedback_submissions', 'submitted_at')) }},
             {{ iso_to_utc(adapter.quote('createdAt')) }}) as submitted_at,
    {{ iso_to_utc(adapter.quote('createdAt')) }} as created_at,
    {{ iso_to_utc(adapter.quote('updatedAt')) }} as updated_at,
    _batch_id,
    _loaded_at
from versions
where version_rank = 1
