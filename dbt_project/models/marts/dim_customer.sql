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
    -- A coarse age band, never the date or year of birth (PII minimisation), as of the run.
    case
        when birth_year is null then null
        when year(run.as_of_date) - birth_year < 25 then 'under 25'
        when year(run.as_of_date) - birth_year < 35 then '25-34'
        when year(run.as_of_date) - birth_year < 45 then '35-44'
        when year(run.as_of_date) - birth_year < 55 then '45-54'
        when year(run.as_of_date) - birth_year < 65 then '55-64'
        else '65 and over'
    end as age_band,
    city,
    country,
    signup_channel,
    marketing_consent,
    crm_lifecycle_stage,
    has_crm_contact,
    first_seen_at
from {{ ref('snap_customer_profile') }}
cross join {{ ref('int_run__as_of') }} as run
