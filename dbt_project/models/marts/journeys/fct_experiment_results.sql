-- A/B test results per experiment and variation, from Segment "Experiment Viewed" calls.
-- The unit is the customer (identity resolution: the logged-in contact's, else the device's);
-- a device linked to no customer is its own unit. A unit's exposure is its first Experiment
-- Viewed; a unit seen in two variations of one experiment is left out of the comparison and
-- counted in mixed_units. A unit converts when the customer places a purchase (web, or store
-- through identity) from the exposure to var('experiment_conversion_window_days') days after.
-- The control is the variation named by var('experiment_control_variations'), else the
-- experiment's lowest variation_id. Against it: lift (difference of conversion rates), a
-- two-proportion z-test (pooled standard error) with its two-sided p-value, a 95% confidence
-- interval of the difference (unpooled), is_significant = p < var('experiment_alpha'). The
-- sample-ratio-mismatch check compares the units per variation with an equal planned split
-- (chi-square); srm_detected when its p-value is below 0.001.
with views as (

    select
        events.experiment_id,
        events.variation_id,
        events.event_at,
        events.message_id,
        coalesce(by_user.customer_id, by_device.customer_id, 'anon:' || events.anonymous_id) as unit_id,
        coalesce(by_user.customer_id, by_device.customer_id) as customer_id
    from {{ ref('stg_web__events') }} as events
    left join {{ ref('int_identity__clusters') }} as by_user
        on by_user.identity_key = {{ identity_key('contact', 'events.user_id') }}
    left join {{ ref('int_identity__clusters') }} as by_device
        on by_device.identity_key = {{ identity_key('anon', 'events.anonymous_id') }}
    where events.event_name = 'Experiment Viewed'
      and events.experiment_id is not null and events.variation_id is not null
      and events.event_at is not null
      and (events.user_id is not null or events.anonymous_id is not null)

),

units as (

    select
        experiment_id, unit_id,
        min(customer_id) as customer_id,
        min(event_at) as exposed_at,
        count(distinct variation_id) as variations_seen,
        min(variation_id) as variation_id
    from views
    group by experiment_id, unit_id

),

outcomes as (

    select
        units.experiment_id, units.variation_id, units.unit_id,
        count(orders.order_id) > 0 as converted,
        coalesce(sum(orders.net_amount), 0) as revenue
    from units
    left join {{ ref('fct_orders') }} as orders
        on orders.customer_id = units.customer_id
       and orders.order_kind = 'purchase'
       and orders.ordered_at >= units.exposed_at
       and orders.ordered_at < units.exposed_at + {{ days_interval(var('experiment_conversion_window_days')) }}
    where units.variations_seen = 1
    group by all

),

arms as (

    select
        experiment_id, variation_id,
        count(*) as exposed_customers,
        count(*) filter (where converted) as converted_customers,
        sum(revenue) as revenue
    from outcomes
    group by all

),

mixed as (

    select experiment_id, count(*) as mixed_units
    from units where variations_seen > 1
    group by experiment_id

),

with_control as (

    select
        arms.*,
        coalesce(
            min(case when arms.variation_id in ({%- for v in var('experiment_control_variations') %}'{{ v }}'{{ "," if not loop.last }}{% endfor %})
                     then arms.variation_id end) over (partition by arms.experiment_id),
            min(arms.variation_id) over (partition by arms.experiment_id)) as control_variation,
        sum(arms.exposed_customers) over (partition by arms.experiment_id) as experiment_units,
        count(*) over (partition by arms.experiment_id) as variations
    from arms

),

compared as (

    select
        arms.*,
        arms.converted_customers / arms.exposed_customers as conversion_rate,
        control.exposed_customers as control_exposed,
        control.converted_customers / control.exposed_customers as control_rate,
        (arms.converted_customers + control.converted_customers)
            / (arms.exposed_customers + control.exposed_customers) as pooled_rate,
        -- chi-square of the units per variation against an equal split, summed per experiment
        sum(pow(arms.exposed_customers - arms.experiment_units / arms.variations, 2)
            / (arms.experiment_units / arms.variations)) over (partition by arms.experiment_id) as srm_chi_square
    from with_control as arms
    inner join arms as control
        on control.experiment_id = arms.experiment_id and control.variation_id = arms.control_variation

),

tested as (

    select
        compared.*,
        case when variation_id <> control_variation and pooled_rate > 0 and pooled_rate < 1 then
            (conversion_rate - control_rate)
            / sqrt(pooled_rate * (1 - pooled_rate) * (1.0 / exposed_customers + 1.0 / control_exposed))
        end as z_score,
        case when variation_id <> control_variation then
            sqrt(conversion_rate * (1 - conversion_rate) / exposed_customers
                 + control_rate * (1 - control_rate) / control_exposed)
        end as diff_standard_error
    from compared

)

select
    tested.experiment_id,
    tested.variation_id,
    tested.variation_id = tested.control_variation as is_control,
    cast(tested.exposed_customers as integer) as exposed_customers,
    cast(tested.converted_customers as integer) as converted_customers,
    tested.conversion_rate,
    cast(tested.revenue as double) / tested.exposed_customers as revenue_per_exposed,
    case when not tested.variation_id = tested.control_variation
         then tested.conversion_rate - tested.control_rate end as lift_vs_control,
    case when not tested.variation_id = tested.control_variation and tested.control_rate > 0
         then tested.conversion_rate / tested.control_rate - 1 end as relative_lift,
    tested.z_score,
    {{ two_sided_p('tested.z_score') }} as p_value,
    -- 1.959963985 = the standard normal's 97.5% quantile: a 95% interval
    tested.conversion_rate - tested.control_rate - 1.959963985 * tested.diff_standard_error as ci_low,
    tested.conversion_rate - tested.control_rate + 1.959963985 * tested.diff_standard_error as ci_high,
    coalesce({{ two_sided_p('tested.z_score') }} < {{ var('experiment_alpha') }}, false) as is_significant,
    {{ chi_square_p('tested.srm_chi_square', 'tested.variations - 1') }} as srm_p_value,
    coalesce({{ chi_square_p('tested.srm_chi_square', 'tested.variations - 1') }} < 0.001, false) as srm_detected,
    cast(coalesce(mixed.mixed_units, 0) as integer) as mixed_units
from tested
left join mixed on mixed.experiment_id = tested.experiment_id
