-- FX rates into the reporting currency, as validity intervals: a rate holds from its date
-- until the next dated rate of that currency (an as-of lookup as a range join).
with rates as (

    select
        cast(rate_date as date) as rate_date,
        upper(currency) as currency,
        cast(cny_per_unit as double) as cny_per_unit
    from {{ ref('fx_rates') }}

),

reporting as (

    select rate_date, cny_per_unit as reporting_cny_per_unit
    from rates
    where currency = '{{ reporting_currency() }}'

)

select
    rates.currency,
    rates.rate_date as valid_from,
    lead(rates.rate_date) over (partition by rates.currency order by rates.rate_date) as valid_to,
    rates.cny_per_unit / reporting.reporting_cny_per_unit as rate_to_reporting,
    '{{ reporting_currency() }}' as reporting_currency
from rates
inner join reporting on reporting.rate_date = rates.rate_date
