-- One row per date from the first day with data to the as-of date.
--   active_customers: customers with a purchase or a logged-in web session in the 30 days
--                     ending on the date (the date and the 29 before it)
--   new_customers:    customers whose first purchase is on the date
--   nps:              % promoters - % detractors over NPS answers of the 90 days ending on
--                     the date; csat: mean CSAT score over the same window
with as_of as (

    select as_of_date from {{ ref('int_run__as_of') }}

),

orders as (

    select * from {{ ref('fct_orders') }}

),

feedback as (

    select * from {{ ref('fct_feedback') }}

),

activity as (

    select distinct customer_id, order_date as activity_date
    from orders where customer_id is not null and order_kind = 'purchase'
    union
    select distinct customer_id, session_date
    from {{ ref('fct_web_sessions') }} where customer_id is not null and is_logged_in

),

first_purchases as (

    select customer_id, min(order_date) as first_order_date
    from orders
    where customer_id is not null and order_kind = 'purchase'
    group by customer_id

),

days as (

    {{ days_between(
        "(select least(min(activity_date), (select min(submitted_date) from " ~ ref('fct_feedback') ~ ")) from activity)",
        "(select as_of_date from " ~ ref('int_run__as_of') ~ ")") }}

),

daily_orders as (

    select
        order_date,
        count(case when order_kind = 'purchase' then 1 end) as orders,
        sum(gross_amount) as gross_revenue,
        sum(returned_amount) as returned_amount,
        sum(net_amount) as net_revenue,
        sum(case when channel = 'web' then net_amount end) as web_net_revenue,
        sum(case when channel = 'store' then net_amount end) as store_net_revenue
    from orders
    group by order_date

),

-- Active customers without joining every day to 30 days of activity (30 copies of every
-- customer-day, then a distinct count): an activity on day a makes its customer active on
-- days a..a+29, so each customer's activities are merged into runs whose gaps are at most 30
-- days, each run covers [first activity, last activity + 29], and a day's count is the number
-- of runs covering it: a running sum of +1 at each run's start and -1 after its end.
activity_runs as (

    select
        customer_id,
        activity_date,
        sum(starts_run) over (partition by customer_id order by activity_date
                              rows between unbounded preceding and current row) as run_no
    from (
        select
            customer_id,
            activity_date,
            case when {{ days_diff('lag(activity_date) over (partition by customer_id order by activity_date)', 'activity_date') }} <= 30
                 then 0 else 1 end as starts_run
        from activity
    ) as marked

),

coverage as (

    select min(activity_date) as first_day, max(activity_date) + 30 as ended_day
    from activity_runs
    group by customer_id, run_no

),

coverage_changes as (

    select change_day, sum(delta) as delta
    from (
        select first_day as change_day, 1 as delta from coverage
        union all
        select ended_day, -1 from coverage
    ) as changes
    group by change_day

),

daily_active as (

    select
        days.date_day,
        sum(coalesce(coverage_changes.delta, 0)) over (order by days.date_day
                                                       rows between unbounded preceding and current row) as active_customers
    from days
    left join coverage_changes on coverage_changes.change_day = days.date_day

),

daily_new as (

    select first_order_date, count(*) as new_customers
    from first_purchases
    group by first_order_date

),

daily_satisfaction as (

    select
        days.date_day,
        count(case when feedback.survey_type = 'NPS' then 1 end) as nps_answers,
        count(case when feedback.nps_category = 'promoter' then 1 end) as promoters,
        count(case when feedback.nps_category = 'detractor' then 1 end) as detractors,
        avg(case when feedback.survey_type = 'CSAT' then feedback.score end) as csat
    from days
    inner join feedback
        on feedback.submitted_date between days.date_day - 89 and days.date_day
    group by days.date_day

)

select
    days.date_day as date,
    cast(coalesce(daily_active.active_customers, 0) as integer) as active_customers,
    cast(coalesce(daily_new.new_customers, 0) as integer) as new_customers,
    cast(coalesce(daily_orders.orders, 0) as integer) as orders,
    cast(coalesce(daily_orders.gross_revenue, 0) as decimal(18, 2)) as gross_revenue,
    cast(coalesce(daily_orders.returned_amount, 0) as decimal(18, 2)) as returned_amount,
    cast(coalesce(daily_orders.net_revenue, 0) as decimal(18, 2)) as net_revenue,
    cast(coalesce(daily_orders.web_net_revenue, 0) as decimal(18, 2)) as web_net_revenue,
    cast(coalesce(daily_orders.store_net_revenue, 0) as decimal(18, 2)) as store_net_revenue,
    cast(case when daily_satisfaction.nps_answers > 0
              then round(100.0 * (daily_satisfaction.promoters - daily_satisfaction.detractors)
                         / daily_satisfaction.nps_answers, 1) end as double) as nps,
    cast(round(daily_satisfaction.csat, 2) as double) as csat
from days
left join daily_orders on daily_orders.order_date = days.date_day
left join daily_active on daily_active.date_day = days.date_day
left join daily_new on daily_new.first_order_date = days.date_day
left join daily_satisfaction on daily_satisfaction.date_day = days.date_day
