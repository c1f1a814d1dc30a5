-- One row per support ticket (its latest version; deleted tickets left out).
-- resolution_hours = closed_at - created_at in hours, for tickets that have closed.
select
    tickets.ticket_id,
    customers.customer_id,
    tickets.contact_id,
    tickets.category,
    tickets.priority,
    tickets.status,
    tickets.created_at,
    tickets.closed_at,
    case when tickets.closed_at is not null
         then round(cast({{ dbt.datediff('tickets.created_at', 'tickets.closed_at', 'second') }} as double) / 3600.0, 2)
    end as resolution_hours
from {{ ref('stg_crm__tickets') }} as tickets
left join {{ ref('int_identity__record_customers') }} as customers
    on customers.record_type = 'crm_contact'
   and customers.record_id = tickets.contact_id
where not tickets.is_archived
