{{ config(materialized='table', schema='ml') }}
{#-
    Point-in-time customer features: one row a (customer, snapshot_date).

    A snapshot at date S sees only what happened before S + 1 day 00:00 UTC (its cutoff):
    every fact is filtered on its own event time (ordered_at, started_at, event_at, created_at,
    closed_at, submitted_at, valid_from/valid_to), never on a "current" column such as a
    ticket's status. So a training row does not move when later data changes
    (tests/test_ml_features.py proves it).

    Snapshots (the spine): the scoring date (var as_of_date, else the last day with data) plus
    labelled snapshots S = as_of - horizon - step*k, whose churn label (an order in the
    `horizon` days after S) is fully observed. Snapshots that would have less than
    ml_min_history_days of data behind them are dropped, so a short history yields only the
    scoring snapshot and the ML stage falls back to its heuristic instead of failing.

    The label columns (label_known, churn_label, repurchase_30d_label) are the only ones that
    look past the cutoff. repurchase_30d_label (an order in the `repurchase_horizon` days after
    S) is the second target of the churn stage (ml_churn_scores.repurchase_30d_probability).

    Upstream columns relied on (docs/marts.md):
      fct_orders: customer_id, channel ('web'/'store'), ordered_at, gross_amount,
        returned_amount, net_amount, item_count, order_kind (optional: 'purchase' counts as an
        order; without the column gross_amount > 0 does). A return is dated by its own row's
        ordered_at (a return at the till is its own transaction).
      fct_web_sessions: customer_id, started_at, page_views, converted.
      ml_product_views (this folder): customer_id, event_date, event_name.
      fct_tickets: customer_id, priority, created_at, closed_at.
      fct_feedback: customer_id, survey_type ('NPS'/'CSAT'), score, submitted_at.
      dim_customer: customer_id, valid_from, valid_to, marketing_consent (optional).
-#}

{%- set horizon = var('ml_churn_horizon_days', 90) | int -%}
{%- set step = var('ml_snapshot_step_days', 7) | int -%}
{%- set repurchase_horizon = var('ml_repurchase_horizon_days', 30) | int -%}
{#- C360_ML_SCORING_ONLY=1 (set by the ML task on a day no model is due for training) builds the
    scoring snapshot alone: scoring needs nothing else, and the labelled snapshots multiply the
    work by their number. An env var rather than a --vars entry because changing --vars makes
    dbt re-parse the whole project; an env var re-parses this file only. -#}
{%- set scoring_only = env_var('C360_ML_SCORING_ONLY', '0') == '1' -%}
{%- set labelled_snapshots = 0 if scoring_only else var('ml_labelled_snapshots', 20) | int -%}
{%- set min_history = var('ml_min_history_days', 28) | int -%}
{%- set as_of = var('as_of_date', none) -%}

{%- set dim_columns = [] -%}
{%- set order_columns = [] -%}
{%- if execute -%}
    {%- set dim_columns = adapter.get_columns_in_relation(ref('dim_customer'))
                          | map(attribute='name') | map('lower') | list -%}
    {%- set order_columns = adapter.get_columns_in_relation(ref('fct_orders'))
                            | map(attribute='name') | map('lower') | list -%}
{%- endif -%}

with orders as (

    select
        cast(customer_id as string) as customer_id,
        cast(ordered_at as timestamp) as ordered_at,
        channel,
        coalesce(gross_amount, 0) as gross_amount,
        coalesce(returned_amount, 0) as returned_amount,
        coalesce(net_amount, 0) as net_amount,
        coalesce(item_count, 0) as item_count,
        -- a purchase has a sale line (order_kind); return-only and void transactions are not orders
        {% if 'order_kind' in order_columns -%}
        coalesce(order_kind = 'purchase', false)
        {%- else -%}
        coalesce(gross_amount > 0, false)
        {%- endif %} as is_purchase
    from {{ ref('fct_orders') }}
    where customer_id is not null and ordered_at is not null

),

sessions as (

    select
        cast(customer_id as string) as customer_id,
        cast(started_at as timestamp) as started_at,
        coalesce(page_views, 0) as page_views,
        coalesce(cast(converted as integer), 0) as converted
    from {{ ref('fct_web_sessions') }}
    where customer_id is not null and started_at is not null

),

tickets as (

    select
        cast(customer_id as string) as customer_id,
        cast(created_at as timestamp) as created_at,
        cast(closed_at as timestamp) as closed_at,
        lower(priority) as priority
    from {{ ref('fct_tickets') }}
    where customer_id is not null and created_at is not null

),

feedback as (

    select
        cast(customer_id as string) as customer_id,
        upper(survey_type) as survey_type,
        cast(score as double) as score,
        cast(submitted_at as timestamp) as submitted_at
    from {{ ref('fct_feedback') }}
    where customer_id is not null and submitted_at is not null and score is not null

),

customer_versions as (

    select
        cast(customer_id as string) as customer_id,
        {% if 'first_seen_at' in dim_columns -%}
        -- The snapshot dates a customer's first version by the pipeline run that first saw
        -- them; the person existed since first_seen_at, so the first version starts there.
        case
            when row_number() over (partition by customer_id order by valid_from) = 1
                then least(cast(valid_from as timestamp), coalesce(cast(first_seen_at as timestamp), cast(valid_from as timestamp)))
            else cast(valid_from as timestamp)
        end
        {%- else -%}
        cast(valid_from as timestamp)
        {%- endif %} as valid_from,
        cast(valid_to as timestamp) as valid_to,
        {% if 'marketing_consent' in dim_columns -%}
        case
            when lower(cast(marketing_consent as string)) in ('true', '1', 'yes') then 1
            when lower(cast(marketing_consent as string)) in ('false', '0', 'no') then 0
        end
        {%- else -%}
        cast(null as integer)
        {%- endif %} as marketing_consent
    from {{ ref('dim_customer') }}
    where customer_id is not null and valid_from is not null

),

-- One row a customer and UTC day: what happened that day. Snapshots cut at day boundaries,
-- so summing whole days before the cutoff is exact and far cheaper than joining raw events.
activity_days as (

    select
        customer_id,
        day,
        sum(orders) as orders,
        sum(store_orders) as store_orders,
        sum(gross) as gross,
        sum(returned) as returned,
        sum(net) as net,
        sum(sessions) as sessions,
        sum(page_views) as page_views,
        sum(converted_sessions) as converted_sessions,
        sum(product_views) as product_views,
        sum(product_adds) as product_adds
    from (
        select
            customer_id,
            cast(ordered_at as date) as day,
            count(*) filter (where is_purchase) as orders,
            count(*) filter (where is_purchase and channel = 'store') as store_orders,
            sum(gross_amount) as gross,
            sum(returned_amount) as returned,
            sum(net_amount) as net,
            0 as sessions, 0 as page_views, 0 as converted_sessions,
            0 as product_views, 0 as product_adds
        from orders
        group by 1, 2

        union all

        select
            customer_id,
            cast(started_at as date),
            0, 0, 0, 0, 0,
            count(*),
            sum(page_views),
            sum(converted),
            0, 0
        from sessions
        group by 1, 2

        union all

        select
            cast(customer_id as string),
            event_date,
            0, 0, 0, 0, 0, 0, 0, 0,
            count(*) filter (where event_name = 'Product Viewed'),
            count(*) filter (where event_name = 'Product Added')
        from {{ ref('ml_product_views') }}
        where customer_id is not null
        group by 1, 2
    ) as per_source
    group by 1, 2

),

bounds as (

    select
        {% if as_of -%}
        date '{{ as_of }}'
        {%- else -%}
        max(day)
        {%- endif %} as as_of_date,
        min(day) as data_start
    from activity_days

),

spine as (

    select as_of_date as snapshot_date, true as is_scoring_snapshot
    from bounds

    union all

    select cast(as_of_date - offset_days as date), false
    from bounds
    cross join (
        select cast({{ horizon }} + {{ step }} * k as integer) as offset_days
        from range(0, {{ labelled_snapshots }}) as steps(k)
    ) as offsets
    where as_of_date - offset_days >= data_start + {{ min_history }}

),

-- A customer exists for a snapshot once anything about them happened before its cutoff.
first_seen as (

    select customer_id, min(day) as first_seen_date
    from (
        select customer_id, day from activity_days
        union all
        select customer_id, cast(created_at as date) from tickets
        union all
        select customer_id, cast(submitted_at as date) from feedback
        union all
        select customer_id, cast(valid_from as date) from customer_versions
    ) as seen
    group by 1

),

population as (

    select
        spine.snapshot_date,
        spine.is_scoring_snapshot,
        first_seen.customer_id,
        first_seen.first_seen_date
    from spine
    inner join first_seen on first_seen.first_seen_date <= spine.snapshot_date

    union all

    -- The scoring snapshot also holds the customers first seen after it: a rerun or backfill of
    -- an earlier date after later data has landed. customer_360 lists every customer the
    -- warehouse knows (the facts refer to them all) and each needs a score from this run, so
    -- they are scored as what they were at the cutoff: known, with no history yet (tenure 0,
    -- every count 0). Training never sees them (labelled snapshots keep the rule above).
    select
        spine.snapshot_date,
        spine.is_scoring_snapshot,
        first_seen.customer_id,
        spine.snapshot_date
    from spine
    inner join first_seen on first_seen.first_seen_date > spine.snapshot_date
    where spine.is_scoring_snapshot

),

activity_features as (

    select
        p.snapshot_date,
        p.customer_id,
        sum(a.orders) as orders_lifetime,
        sum(a.orders) filter (where a.day > p.snapshot_date - 30) as orders_30d,
        sum(a.orders) filter (where a.day > p.snapshot_date - 90) as orders_90d,
        sum(a.orders) filter (where a.day > p.snapshot_date - 365) as orders_365d,
        sum(a.store_orders) as store_orders_lifetime,
        sum(a.net) as net_revenue_lifetime,
        sum(a.net) filter (where a.day > p.snapshot_date - 30) as net_revenue_30d,
        sum(a.net) filter (where a.day > p.snapshot_date - 90) as net_revenue_90d,
        sum(a.net) filter (where a.day > p.snapshot_date - 365) as net_revenue_365d,
        sum(a.gross) filter (where a.day > p.snapshot_date - 365) as gross_365d,
        sum(a.returned) filter (where a.day > p.snapshot_date - 365) as returned_365d,
        min(a.day) filter (where a.orders > 0) as first_order_date,
        max(a.day) filter (where a.orders > 0) as last_order_date,
        sum(a.sessions) filter (where a.day > p.snapshot_date - 7) as sessions_7d,
        sum(a.sessions) filter (where a.day > p.snapshot_date - 28) as sessions_28d,
        sum(a.sessions) filter (where a.day > p.snapshot_date - 90) as sessions_90d,
        sum(a.page_views) filter (where a.day > p.snapshot_date - 28) as page_views_28d,
        sum(a.converted_sessions) filter (where a.day > p.snapshot_date - 90) as converted_sessions_90d,
        max(a.day) filter (where a.sessions > 0) as last_session_date,
        sum(a.product_views) filter (where a.day > p.snapshot_date - 7) as product_views_7d,
        sum(a.product_views) filter (where a.day > p.snapshot_date - 28) as product_views_28d,
        sum(a.product_views) filter (where a.day > p.snapshot_date - 90) as product_views_90d,
        sum(a.product_adds) filter (where a.day > p.snapshot_date - 28) as product_adds_28d,
        sum(a.product_adds) filter (where a.day > p.snapshot_date - 90) as product_adds_90d
    from population as p
    inner join activity_days as a
        on a.customer_id = p.customer_id
       and a.day <= p.snapshot_date
    group by 1, 2

),

ticket_features as (

    select
        p.snapshot_date,
        p.customer_id,
        count(*) filter (where t.created_at >= p.snapshot_date - 89) as tickets_90d,
        count(*) filter (where t.created_at >= p.snapshot_date - 364) as tickets_365d,
        count(*) filter (where t.priority in ('high', 'urgent') and t.created_at >= p.snapshot_date - 364)
            as high_priority_tickets_365d,
        -- open at the cutoff: not closed yet then, whatever its status is today
        count(*) filter (where t.closed_at is null
                            or t.closed_at >= p.snapshot_date + interval 1 day) as open_tickets,
        avg(cast({{ minutes_diff('t.created_at', 't.closed_at') }} as double) / 60)
            filter (where t.closed_at < p.snapshot_date + interval 1 day
                      and t.created_at >= p.snapshot_date - 364) as avg_resolution_hours_365d
    from population as p
    inner join tickets as t
        on t.customer_id = p.customer_id
       and t.created_at < p.snapshot_date + interval 1 day
    group by 1, 2

),

feedback_features as (

    select
        p.snapshot_date,
        p.customer_id,
        {{ arg_max_by('f.score', 'f.submitted_at') }} filter (where f.survey_type = 'NPS') as nps_latest,
        {{ days_diff("max(f.submitted_at) filter (where f.survey_type = 'NPS')",
                     'p.snapshot_date + interval 1 day') }} as days_since_nps,
        avg(f.score) filter (where f.survey_type = 'CSAT'
                               and f.submitted_at >= p.snapshot_date - 364) as csat_avg_365d,
        count(*) as feedback_count
    from population as p
    inner join feedback as f
        on f.customer_id = p.customer_id
       and f.submitted_at < p.snapshot_date + interval 1 day
    group by 1, 2

),

consent_at_cutoff as (

    select
        p.snapshot_date,
        p.customer_id,
        {{ arg_max_by('v.marketing_consent', 'v.valid_from') }} as marketing_consent
    from population as p
    inner join customer_versions as v
        on v.customer_id = p.customer_id
       and v.valid_from < p.snapshot_date + interval 1 day
       and (v.valid_to is null or v.valid_to >= p.snapshot_date + interval 1 day)
    group by 1, 2

),

future_orders as (

    select
        p.snapshot_date,
        p.customer_id,
        sum(a.orders) filter (where a.day <= p.snapshot_date + {{ horizon }}) as orders_in_horizon,
        sum(a.orders) filter (where a.day <= p.snapshot_date + {{ repurchase_horizon }})
            as orders_in_repurchase_horizon
    from population as p
    inner join activity_days as a
        on a.customer_id = p.customer_id
       and a.day > p.snapshot_date
       and a.day <= p.snapshot_date + {{ [horizon, repurchase_horizon] | max }}
    where not p.is_scoring_snapshot
    group by 1, 2

)

select
    p.customer_id,
    p.snapshot_date,
    p.is_scoring_snapshot,
    b.as_of_date,

    {#- Types spelled out where the engines differ (Spark's datediff is int, DuckDB's bigint;
        Spark divides decimals as decimals): the ML stage gets the same frame from either. -#}
    cast({{ days_diff('p.first_seen_date', 'p.snapshot_date') }} as bigint) as tenure_days,
    cast({{ days_diff('af.first_order_date', 'p.snapshot_date') }} as bigint) as days_since_first_order,
    cast({{ days_diff('af.last_order_date', 'p.snapshot_date') }} as bigint) as recency_days,

    cast(coalesce(af.orders_30d, 0) as bigint) as orders_30d,
    cast(coalesce(af.orders_90d, 0) as bigint) as orders_90d,
    cast(coalesce(af.orders_365d, 0) as bigint) as orders_365d,
    cast(coalesce(af.orders_lifetime, 0) as bigint) as orders_lifetime,
    coalesce(af.net_revenue_30d, 0) as net_revenue_30d,
    coalesce(af.net_revenue_90d, 0) as net_revenue_90d,
    coalesce(af.net_revenue_365d, 0) as net_revenue_365d,
    coalesce(af.net_revenue_lifetime, 0) as net_revenue_lifetime,
    cast(af.net_revenue_365d as double) / nullif(af.orders_365d, 0) as avg_order_value_365d,
    cast(af.returned_365d as double) / nullif(af.gross_365d, 0) as returns_share_365d,
    af.store_orders_lifetime / nullif(af.orders_lifetime, 0) as store_order_share,
    1 - af.store_orders_lifetime / nullif(af.orders_lifetime, 0) as web_order_share,
    {{ days_diff('af.first_order_date', 'af.last_order_date') }}
        / nullif(af.orders_lifetime - 1, 0) as avg_days_between_orders,

    cast(coalesce(af.sessions_7d, 0) as bigint) as sessions_7d,
    cast(coalesce(af.sessions_28d, 0) as bigint) as sessions_28d,
    cast(coalesce(af.sessions_90d, 0) as bigint) as sessions_90d,
    cast(coalesce(af.page_views_28d, 0) as bigint) as page_views_28d,
    cast(coalesce(af.converted_sessions_90d, 0) as bigint) as converted_sessions_90d,
    cast({{ days_diff('af.last_session_date', 'p.snapshot_date') }} as bigint) as days_since_last_session,
    cast(coalesce(af.product_views_7d, 0) as bigint) as product_views_7d,
    cast(coalesce(af.product_views_28d, 0) as bigint) as product_views_28d,
    cast(coalesce(af.product_views_90d, 0) as bigint) as product_views_90d,
    cast(coalesce(af.product_adds_28d, 0) as bigint) as product_adds_28d,
    cast(coalesce(af.product_adds_90d, 0) as bigint) as product_adds_90d,

    coalesce(tf.tickets_90d, 0) as tickets_90d,
    coalesce(tf.tickets_365d, 0) as tickets_365d,
    coalesce(tf.high_priority_tickets_365d, 0) as high_priority_tickets_365d,
    coalesce(tf.open_tickets, 0) as open_tickets,
    tf.avg_resolution_hours_365d,

    ff.nps_latest,
    cast(ff.days_since_nps as bigint) as days_since_nps,
    ff.csat_avg_365d,
    coalesce(ff.feedback_count, 0) as feedback_count,

    ca.marketing_consent,

    {{ horizon }} as label_horizon_days,
    p.snapshot_date + {{ horizon }} <= b.as_of_date as label_known,
    case
        when p.snapshot_date + {{ horizon }} <= b.as_of_date and coalesce(af.orders_lifetime, 0) > 0
            then cast(coalesce(fo.orders_in_horizon, 0) = 0 as integer)
    end as churn_label,
    case
        when p.snapshot_date + {{ repurchase_horizon }} <= b.as_of_date and coalesce(af.orders_lifetime, 0) > 0
            then cast(coalesce(fo.orders_in_repurchase_horizon, 0) > 0 as integer)
    end as repurchase_30d_label

from population as p
cross join bounds as b
left join activity_features as af
    on af.customer_id = p.customer_id and af.snapshot_date = p.snapshot_date
left join ticket_features as tf
    on tf.customer_id = p.customer_id and tf.snapshot_date = p.snapshot_date
left join feedback_features as ff
    on ff.customer_id = p.customer_id and ff.snapshot_date = p.snapshot_date
left join consent_at_cutoff as ca
    on ca.customer_id = p.customer_id and ca.snapshot_date = p.snapshot_date
left join future_orders as fo
    on fo.customer_id = p.customer_id and fo.snapshot_date = p.snapshot_date
