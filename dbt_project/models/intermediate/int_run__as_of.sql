-- The date the marts are "as of": var('as_of_date') when the DAG or CLI passes the logical
-- date, else the last day any source has data for (so rebuilding the same data gives the
-- same marts). One row.
with last_days as (

    select max(cast(txn_at as date)) as last_day from {{ ref('stg_pos__transactions') }}
    union all
    select max(cast(event_at as date)) from {{ ref('stg_web__events') }}
    union all
    select max(cast(updated_at as date)) from {{ ref('stg_crm__contacts') }}
    union all
    select max(cast(updated_at as date)) from {{ ref('stg_crm__tickets') }}
    union all
    select max(cast(submitted_at as date)) from {{ ref('stg_crm__feedback_submissions') }}

)

select
    cast(coalesce({{ as_of_date_literal() }}, max(last_day)) as date) as as_of_date,
    {{ as_of_date_literal() }} is not null as is_logical_date
from last_days
