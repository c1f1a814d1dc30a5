-- One row per survey answer. NPS answers (0-10) are promoters (9-10), passives (7-8) or
-- detractors (0-6); CSAT answers (1-5) have no NPS category.
select
    feedback.feedback_id,
    customers.customer_id,
    feedback.contact_id,
    feedback.survey_type,
    feedback.score,
    case
        when feedback.survey_type <> 'NPS' or feedback.score is null then null
        when feedback.score >= 9 then 'promoter'
        when feedback.score >= 7 then 'passive'
        else 'detractor'
    end as nps_category,
    feedback.submitted_at,
    cast(feedback.submitted_at as date) as submitted_date
from {{ ref('stg_crm__feedback_submissions') }} as feedback
left join {{ ref('int_identity__record_customers') }} as customers
    on customers.record_type = 'crm_contact'
   and customers.record_id = feedback.contact_id
where not feedback.is_archived
