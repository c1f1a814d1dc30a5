-- The latest version of each support ticket, typed. Properties are read through the CRM
-- property map (macros/crm_properties.sql): "" is missing; the pipeline stage id, priority and
-- category are mapped to our status, priority and category. The contact is the ticket's first
-- associated contact (an association, not a property). Free text stays here (restricted
-- layer): it can contain the customer's email or phone.
-- A table rebuilt every run, not incremental like stg_crm__contacts: its free text can quote a
-- person, and only a rebuild from the purged raw zone removes such a quote after an erasure
-- (the warehouse purge matches key columns, not text).
with versions as (

    {{ crm_versions('tickets') }}

)

select
    {{ clean_text('id') }} as ticket_id,
    {{ crm_first_association('contacts') }} as contact_id,
    coalesce(archived, false) as is_archived,
    {{ iso_to_utc(adapter.quote('createdAt')) }} as created_at,
    {{ iso_to_utc(adapter.quote('updatedAt')) }} as updated_at,
    {{ iso_to_utc(crm_prop('tickets', 'closed_at')) }} as closed_at,
    {{ crm_value_map('tickets', 'category', crm_prop('tickets', 'category')) }} as category,
    {{ crm_value_map('tickets', 'priority', crm_prop('tickets', 'priority')) }} as priority,
    {{ crm_value_map('tickets', 'status', crm_prop('tickets', 'status')) }} as status,
    {{ crm_prop('tickets', 'subject') }} as subject,
    {{ crm_prop('tickets', 'content') }} as content,
    _batch_id,
    _loaded_at
from versions
where version_rank = 1
