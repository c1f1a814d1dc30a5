{#- Key normalization and type parsing shared by the staging models. Engine-specific
    functions stay inside these macros (dispatched, or through macros/engine.sql) so the
    models read the same on both engines. -#}

{# Trimmed text, or null when nothing is left. #}
{% macro clean_text(expr) -%}
    nullif({{ regex_replace_all(expr, '^\s+|\s+$', '') }}, '')
{%- endmacro %}

{# Lowercased, trimmed email; null when it does not look like one (so "n/a" links nobody). #}
{% macro normalize_email(expr) -%}
    case when {{ regex_full_match('lower(' ~ clean_text(expr) ~ ')', '[^@\s]+@[^@\s]+\.[^@\s]+') }}
         then lower({{ clean_text(expr) }}) end
{%- endmacro %}

{# Loyalty ids as printed on the card: tills add spaces, dashes and lower case ("ly 0001 2345"). #}
{% macro normalize_loyalty_id(expr) -%}
    nullif(upper({{ regex_replace_all(expr, '[^0-9A-Za-z]', '') }}), '')
{%- endmacro %}

{# E.164 phone (the normalize_phone function from customer360.warehouse.sql_functions). The CASE keeps
   null phones (most web events) from ever reaching the Python function. #}
{% macro normalize_phone(raw_expr, country_expr) -%}
    case when {{ raw_expr }} is not null
         then normalize_phone({{ raw_expr }}, upper({{ clean_text(country_expr) }})) end
{%- endmacro %}

{# ISO-3166 alpha-2 of a country as typed ("China", "United Kingdom", "UK", "中国", "cn"): the
   normalize_country function (customer360.core.countries); null when not recognized. #}
{% macro normalize_country(expr) -%}
    case when {{ expr }} is not null then normalize_country({{ expr }}) end
{%- endmacro %}

{# An ISO-8601 text with offset ("2026-03-01T09:12:44.120Z") as a UTC timestamp. #}
{% macro iso_to_utc(expr) -%}{{ return(adapter.dispatch('iso_to_utc')(expr)) }}{%- endmacro %}
{% macro default__iso_to_utc(expr) -%}
    timezone('UTC', try_cast({{ expr }} as timestamptz))
{%- endmacro %}
{# Spark's timestamp is an instant shown in the session's zone, UTC. #}
{% macro spark__iso_to_utc(expr) -%}
    try_cast({{ expr }} as timestamp)
{%- endmacro %}

{# A local wall-clock timestamp in an IANA zone as a UTC timestamp (ICU rules, DST included). #}
{% macro local_to_utc(ts_expr, tz_expr) -%}{{ return(adapter.dispatch('local_to_utc')(ts_expr, tz_expr)) }}{%- endmacro %}
{% macro default__local_to_utc(ts_expr, tz_expr) -%}
    timezone('UTC', timezone({{ tz_expr }}, {{ ts_expr }}))
{%- endmacro %}
{% macro spark__local_to_utc(ts_expr, tz_expr) -%}
    to_utc_timestamp(cast({{ ts_expr }} as timestamp_ntz), {{ tz_expr }})
{%- endmacro %}

{# Several string fields out of a JSON text column in one parse: a list, in the order of
   `paths` (like '$.page.url'); each element is what json_text gives for that path. #}
{% macro json_text_list(expr, paths) -%}{{ return(adapter.dispatch('json_text_list')(expr, paths)) }}{%- endmacro %}
{% macro default__json_text_list(expr, paths) -%}
    json_extract_string({{ expr }}, [{% for path in paths %}'{{ path }}'{{ ", " if not loop.last }}{% endfor %}])
{%- endmacro %}
{#- Spark: one get_json_object a path (the list keeps DuckDB's 1-based positions through
    json_text_list_item). -#}
{% macro spark__json_text_list(expr, paths) -%}
    array({% for path in paths %}{{ json_extract_text(expr, path) }}{{ ", " if not loop.last }}{% endfor %})
{%- endmacro %}

{# Element n (from 1) of a json_text_list. #}
{% macro json_text_list_item(list_expr, n) -%}{{ return(adapter.dispatch('json_text_list_item')(list_expr, n)) }}{%- endmacro %}
{% macro default__json_text_list_item(list_expr, n) -%}{{ list_expr }}[{{ n }}]{%- endmacro %}
{% macro spark__json_text_list_item(list_expr, n) -%}element_at({{ list_expr }}, {{ n }}){%- endmacro %}

{# One string field out of a JSON text column; path like '$.page.url'. #}
{% macro json_text(expr, path) -%}
    {{ json_extract_text(expr, path) }}
{%- endmacro %}

{# A till's amount as its store's locale writes it ("1,299.00", "¥88.00", "1.299,00 €" in a
   decimal-comma country): the c360_pos_amount macro of customer360.ingest.landing.pos_amounts,
   the same rule the POS loader quarantines by. A null country reads a decimal dot. #}
{% macro pos_amount(expr, country_expr) -%}
    c360_pos_amount({{ expr }}, {{ country_expr }})
{%- endmacro %}

{# A money amount sent as text. #}
{% macro to_money(expr) -%}
    try_cast({{ clean_text(expr) }} as decimal(18, 2))
{%- endmacro %}
