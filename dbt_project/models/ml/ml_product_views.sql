{{ config(materialized='table', schema='ml') }}
{#-
    Product views and cart adds, one row an event, tied to a web session and (when the session
    is linked to one) a customer. The recommender reads it for co-view affinity (sessions with
    no customer still count there) and ml_customer_features counts it per customer and day.

    Upstream columns relied on:
      stg_web__events: message_id, anonymous_id, event_at (UTC timestamp), event_name and
        event_type, sku (or, if staging has no sku column, properties JSON text with $.sku or
        $.product_id).
      fct_web_sessions: session_id, customer_id, anonymous_id, started_at, ended_at.
    The customer comes from the session (the marts' identity resolution, shared devices
    included), so this model needs no identity table of its own.
    Column names are looked up at run time so a renamed staging column degrades to null
    (and a failing not_null test) instead of a parse error.
-#}

{%- set event_columns = [] -%}
{%- if execute -%}
    {%- set event_columns = adapter.get_columns_in_relation(ref('stg_web__events'))
                            | map(attribute='name') | map('lower') | list -%}
{%- endif -%}
{#- the first name present wins: candidates are listed last-preferred first -#}
{%- set found = namespace(event_name='null', event_at='null') -%}
{#- adapter.quote: a double-quoted name is a string literal on Spark (ANSI mode off) -#}
{%- for name in ['event', 'event_name'] if name in event_columns -%}
    {%- set found.event_name = adapter.quote(name) -%}
{%- endfor -%}
{%- for name in ['timestamp', 'event_timestamp', 'event_at'] if name in event_columns -%}
    {%- set found.event_at = adapter.quote(name) -%}
{%- endfor -%}
{%- set event_name = found.event_name -%}
{%- set event_at = found.event_at -%}

-- depends_on: {{ ref('stg_pos__products') }}
with events as (

    select
        message_id,
        anonymous_id,
        cast({{ event_at }} as timestamp) as event_at,
        {{ event_name }} as event_name,
        {% if 'sku' in event_columns and 'product_id' in event_columns -%}
        {#- a product sent with only a product_id: the catalogue sku equal to it -#}
        cast({{ web_product_sku('web.sku', 'web.product_id', 'catalogue') }} as string)
        {%- elif 'sku' in event_columns -%}
        cast(sku as string)
        {%- elif 'properties' in event_columns -%}
        coalesce({{ json_text('properties', '$.sku') }},
                 {{ json_text('properties', '$.product_id') }})
        {%- else -%}
        cast(null as string)
        {%- endif %} as sku
    from {{ ref('stg_web__events') }} as web
    {%- if 'product_id' in event_columns %}
    left join {{ ref('stg_pos__products') }} as catalogue
        on catalogue.sku = nullif(trim(web.product_id), '')
    {%- endif %}
    where {{ event_name }} in ('Product Viewed', 'Product Added')
    {%- if 'event_type' in event_columns %}
      and event_type = 'track'
    {%- endif %}

),

sessions as (

    select session_id, customer_id, anonymous_id, started_at, ended_at
    from {{ ref('fct_web_sessions') }}

),

-- The session an event belongs to is the device's last session started at or before it
-- (an as-of join: sorted merge instead of comparing every event with every session of the
-- device), provided the event is not after that session's end.
located as (

    select
        events.message_id,
        events.event_at,
        events.event_name,
        events.sku,
        events.anonymous_id,
        case when events.event_at <= sessions.ended_at then sessions.session_id end as session_id,
        case when events.event_at <= sessions.ended_at then sessions.customer_id end as customer_id
    from {{ asof_left_join('events', 'sessions', 'anonymous_id', 'event_at', 'started_at',
                           'message_id', "events.sku is not null and events.event_at is not null") }}

)

select
    message_id,
    event_at,
    cast(event_at as date) as event_date,
    event_name,
    sku,
    anonymous_id,
    session_id,
    customer_id
from located
