-- One row per customer: profile (hashed contact details), orders and revenue, RFM, value tier,
-- lifecycle stage, web engagement, service and satisfaction, as of int_run__as_of.
-- Definitions of every column are in _marts__models.yml.
with as_of as (

    select as_of_date from {{ ref('int_run__as_of') }}

),

sessions as (

    select
        sessions.customer_id,
        count(case when sessions.session_date > as_of.as_of_date - 30 then 1 end) as web_sessions_30d,
        max(sessions.ended_at) as last_session_at,
        max(case when sessions.is_logged_in then sessions.session_date end) as last_logged_in_date
    from {{ ref('fct_web_sessions') }} as sessions
    cross join as_of
    where sessions.customer_id is not null
      and sessions.session_date <= as_of.as_of_date
    group by sessions.customer_id

),

tickets as (

    select
        tickets.customer_id,
        count(*) as tickets_count,
        count(case when tickets.status <> 'closed' then 1 end) as open_tickets_count,
        avg(tickets.resolution_hours) as avg_resolution_hours,
        max(tickets.created_at) as last_ticket_at
    from {{ ref('fct_tickets') }} as tickets
    cross join as_of
    where tickets.customer_id is not null
      and cast(tickets.created_at as date) <= as_of.as_of_date
    group by tickets.customer_id

),

feedback as (

    select
        feedback.customer_id,
        {{ arg_max_by('feedback.score', 'feedback.submitted_at') }} filter (where feedback.survey_type = 'NPS') as nps_latest,
        avg(feedback.score) filter (where feedback.survey_type = 'CSAT') as csat_avg,
        max(feedback.submitted_at) as last_feedback_at
    from {{ ref('fct_feedback') }} as feedback
    cross join as_of
    where feedback.customer_id is not null
      and feedback.submitted_date <= as_of.as_of_date
    group by feedback.customer_id

),

-- the accounts (Segment groupIds) any of the customer's keys joined
accounts as (

    select clusters.customer_id, {{ sorted_list_agg('memberships.group_id', distinct=true) }} as account_ids
    from {{ ref('int_web__group_memberships') }} as memberships
    inner join {{ ref('int_identity__clusters') }} as clusters
        on clusters.identity_key = memberships.identity_key
    group by clusters.customer_id

),

segments as ({{ latest_ml_score('ml_customer_segments', 'segment_name', 'varchar') }}),

churn as ({{ latest_ml_score('ml_churn_scores', 'churn_probability', 'double') }}),

alive as ({{ latest_ml_score('ml_customer_value', 'p_alive', 'double') }}),

lifetime_value as ({{ latest_ml_score('ml_customer_value', 'clv_365d', 'double') }}),

-- the sentiment of the customer's latest ticket or comment, and the topic of most of their
-- negative ones (the latest such topic on a tie)
voice as (

    select
        texts.customer_id,
        {{ arg_max_by('texts.sentiment_label', row_tuple(['texts.created_at', 'texts.source_id'])) }} as last_sentiment_label
    from {{ ref('fct_feedback_text') }} as texts
    cross join as_of
    where texts.customer_id is not null and texts.created_date <= as_of.as_of_date
    group by texts.customer_id

),

complaint_topics as (

    select texts.customer_id, texts.topic, count(*) as complaints, max(texts.created_at) as last_at
    from {{ ref('fct_feedback_text') }} as texts
    cross join as_of
    where texts.customer_id is not null and texts.created_date <= as_of.as_of_date
      and texts.sentiment_label = 'negative' and texts.topic <> 'unassigned'
    group by texts.customer_id, texts.topic

),

top_complaint as (

    select customer_id, {{ arg_max_by('topic', row_tuple(['complaints', 'last_at', 'topic'])) }} as top_complaint_topic
    from complaint_topics
    group by customer_id

),

joined as (

    select
        golden.*,
        rfm.orders_count,
        rfm.web_orders_count,
        rfm.store_orders_count,
        rfm.first_order_at,
        rfm.last_order_at,
        rfm.gross_revenue,
        rfm.returned_amount,
        rfm.net_revenue,
        rfm.recency_days,
        rfm.rfm_r,
        rfm.rfm_f,
        rfm.rfm_m,
        rfm.rfm_segment,
        rfm.value_tier,
        sessions.web_sessions_30d,
        sessions.last_session_at,
        sessions.last_logged_in_date,
        tickets.tickets_count,
        tickets.open_tickets_count,
        tickets.avg_resolution_hours,
        tickets.last_ticket_at,
        feedback.nps_latest,
        feedback.csat_avg,
        feedback.last_feedback_at,
        segments.segment_name,
        churn.churn_probability,
        accounts.account_ids,
        consent.denied_categories as web_consent_denied,
        consent.consent_at as web_consent_at,
        alive.p_alive,
        lifetime_value.clv_365d,
        voice.last_sentiment_label,
        top_complaint.top_complaint_topic,
        as_of.as_of_date,
        -- activity = a purchase or a logged-in web session (docs/marts.md "active")
        greatest(cast(rfm.last_order_at as date), sessions.last_logged_in_date) as last_active_date,
        least(cast(rfm.first_order_at as date), cast(golden.first_seen_at as date)) as first_seen_date
    from {{ ref('int_customers__golden') }} as golden
    cross join as_of
    left join {{ ref('int_customers__rfm') }} as rfm on rfm.customer_id = golden.customer_id
    left join sessions on sessions.customer_id = golden.customer_id
    left join tickets on tickets.customer_id = golden.customer_id
    left join feedback on feedback.customer_id = golden.customer_id
    left join segments on segments.customer_id = golden.customer_id
    left join churn on churn.customer_id = golden.customer_id
    left join accounts on accounts.customer_id = golden.customer_id
    left join {{ ref('int_web__consent') }} as consent on consent.customer_id = golden.customer_id
    left join alive on alive.customer_id = golden.customer_id
    left join lifetime_value on lifetime_value.customer_id = golden.customer_id
    left join voice on voice.customer_id = golden.customer_id
    left join top_complaint on top_complaint.customer_id = golden.customer_id

)

select
    customer_id,
    crm_contact_ids,
    email_hash,
    phone_hash,
    city,
    country,
    signup_channel,
    marketing_consent,
    first_order_at,
    last_order_at,
    coalesce(orders_count, 0) as orders_count,
    coalesce(web_orders_count, 0) as web_orders_count,
    coalesce(store_orders_count, 0) as store_orders_count,
    coalesce(gross_revenue, 0) as gross_revenue,
    coalesce(returned_amount, 0) as returned_amount,
    coalesce(net_revenue, 0) as net_revenue,
    cast(case when orders_count > 0 then net_revenue / orders_count end as decimal(18, 2)) as avg_order_value,
    recency_days,
    rfm_r,
    rfm_f,
    rfm_m,
    coalesce(rfm_segment, 'no purchases') as rfm_segment,
    coalesce(value_tier, 'none') as value_tier,
    case
        when first_seen_date > as_of_date - 30 then 'new'
        when coalesce(last_active_date, first_seen_date) > as_of_date - 30 then 'active'
        when coalesce(last_active_date, first_seen_date) > as_of_date - 60 then 'at risk'
        when coalesce(last_active_date, first_seen_date) > as_of_date - 90 then 'lapsed'
        else 'churned'
    end as lifecycle_stage,
    cast(coalesce(web_sessions_30d, 0) as integer) as web_sessions_30d,
    greatest(last_order_at, last_session_at, last_ticket_at, last_feedback_at) as last_seen_at,
    cast(coalesce(tickets_count, 0) as integer) as tickets_count,
    cast(coalesce(open_tickets_count, 0) as integer) as open_tickets_count,
    cast(avg_resolution_hours as double) as avg_resolution_hours,
    nps_latest,
    cast(csat_avg as double) as csat_avg,
    segment_name,
    churn_probability,
    p_alive,
    clv_365d,
    last_sentiment_label,
    top_complaint_topic,
    as_of_date,
    first_seen_at,
    has_crm_contact,
    coalesce(account_ids, {{ empty_string_list() }}) as account_ids,
    coalesce(web_consent_denied, {{ empty_string_list() }}) as web_consent_denied,
    web_consent_at
from joined
