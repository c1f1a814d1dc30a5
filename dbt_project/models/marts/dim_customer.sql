-- The customer dimension with history (SCD2): one row per version of a customer's golden
-- record, from the snapshot snap_customer_profile. A version is valid from valid_from
-- (inclusive) to valid_to (exclusive; null for the current one). A customer that disappears
-- (merged into another, or erased) has its last version closed and no current row.
select
    dbt_scd_id as customer_version_id,
    customer_id,
    dbt_valid_from as valid_from,
    dbt_valid_to as valid_to,
    dbt_valid_to is null as is_current,
    crm_contact_ids,
    primary_contact_id,
    email_hash,
    phone_hash,
    loyalty_id_hash,
    gender,
    birth_year,
    city,
    country,
    signup_channel,
    marketing_consent,
    crm_lifecycle_stage,
    has_crm_contact,
    first_seen_at
from {{ ref('snap_customer_profile') }}
