{#- The SQL that differs between the warehouse engines (C360_ENGINE: dbt targets `local`,
    DuckDB, and `spark`, dbt-spark), each as one adapter-dispatched macro, so that the models
    read the same on both (docs/engines.md). Everything else is SQL both engines accept;
    identifiers that need quoting go through adapter.quote, and the Spark session reads string
    literals raw, as DuckDB does (customer360.warehouse.spark_engine). -#}

{# The text type: DuckDB's varchar; Spark's varchar needs a length, its string does not. #}
{% macro t_string() -%}{{ return(adapter.dispatch('t_string')()) }}{%- endmacro %}
{% macro default__t_string() -%}varchar{%- endmacro %}
{% macro spark__t_string() -%}string{%- endmacro %}

{# A type name as the source yml and contracts write it (DuckDB's), in the engine's spelling. #}
{% macro engine_type(data_type) -%}{{ return(adapter.dispatch('engine_type')(data_type)) }}{%- endmacro %}
{% macro default__engine_type(data_type) -%}{{ data_type }}{%- endmacro %}
{% macro spark__engine_type(data_type) -%}
    {%- set t = (data_type or 'varchar') | lower | trim -%}
    {%- set names = {'varchar': 'string', 'text': 'string', 'json': 'string',
                     'timestamptz': 'timestamp', 'timestamp with time zone': 'timestamp',
                     'integer': 'int', 'hugeint': 'decimal(38,0)', 'varchar[]': 'array<string>'} -%}
    {{- names.get(t, t) -}}
{%- endmacro %}

{# Whole match of a regular expression (`pattern`: its text, no quotes). #}
{% macro regex_full_match(expr, pattern) -%}{{ return(adapter.dispatch('regex_full_match')(expr, pattern)) }}{%- endmacro %}
{% macro default__regex_full_match(expr, pattern) -%}regexp_full_match({{ expr }}, '{{ pattern }}'){%- endmacro %}
{% macro spark__regex_full_match(expr, pattern) -%}regexp_like({{ expr }}, '^(?:{{ pattern }})$'){%- endmacro %}

{# A match anywhere in the text. #}
{% macro regex_search(expr, pattern) -%}{{ return(adapter.dispatch('regex_search')(expr, pattern)) }}{%- endmacro %}
{% macro default__regex_search(expr, pattern) -%}regexp_matches({{ expr }}, '{{ pattern }}'){%- endmacro %}
{% macro spark__regex_search(expr, pattern) -%}regexp_like({{ expr }}, '{{ pattern }}'){%- endmacro %}

{# Every match replaced. #}
{% macro regex_replace_all(expr, pattern, replacement) -%}{{ return(adapter.dispatch('regex_replace_all')(expr, pattern, replacement)) }}{%- endmacro %}
{% macro default__regex_replace_all(expr, pattern, replacement) -%}regexp_replace({{ expr }}, '{{ pattern }}', '{{ replacement }}', 'g'){%- endmacro %}
{% macro spark__regex_replace_all(expr, pattern, replacement) -%}regexp_replace({{ expr }}, '{{ pattern }}', '{{ replacement }}'){%- endmacro %}

{# One string out of JSON text; `path` as DuckDB writes it: '$.page.url', '$."hs_prop"[0]'.
   On Spark a quoted member is written bare ($.hs_prop[0]): its $['name'] form would need a
   quote inside the literal, so only plain names are accepted (HubSpot's internal names are). #}
{% macro json_extract_text(expr, path) -%}{{ return(adapter.dispatch('json_extract_text')(expr, path)) }}{%- endmacro %}
{% macro default__json_extract_text(expr, path) -%}json_extract_string({{ expr }}, '{{ path }}'){%- endmacro %}
{% macro spark__json_extract_text(expr, path) -%}
    {%- set plain = modules.re.sub('\\."([A-Za-z0-9_]+)"', '.\\1', path) -%}
    {%- if '"' in plain or "'" in plain -%}
        {{ exceptions.raise_compiler_error("JSON path " ~ path ~ " names a member Spark's get_json_object cannot take bare") }}
    {%- endif -%}
    get_json_object({{ expr }}, '{{ plain }}')
{%- endmacro %}

{# True when the text is a JSON object. #}
{% macro json_is_object(expr) -%}{{ return(adapter.dispatch('json_is_object')(expr)) }}{%- endmacro %}
{% macro default__json_is_object(expr) -%}(json_type({{ expr }}) = 'OBJECT'){%- endmacro %}
{% macro spark__json_is_object(expr) -%}(json_object_keys({{ expr }}) is not null){%- endmacro %}

{# The sorted list of an aggregate's values (distinct ones with distinct=true); callers pass
   non-null values (Spark's collect_list drops nulls, DuckDB's list keeps them). #}
{% macro sorted_list_agg(expr, distinct=false) -%}{{ return(adapter.dispatch('sorted_list_agg')(expr, distinct)) }}{%- endmacro %}
{% macro default__sorted_list_agg(expr, distinct) -%}
    list_sort(list({{ 'distinct ' if distinct }}{{ expr }}))
{%- endmacro %}
{% macro spark__sorted_list_agg(expr, distinct) -%}
    array_sort({{ 'collect_set' if distinct else 'collect_list' }}({{ expr }}))
{%- endmacro %}

{# An empty list of text. #}
{% macro empty_string_list() -%}{{ return(adapter.dispatch('empty_string_list')()) }}{%- endmacro %}
{% macro default__empty_string_list() -%}[]::varchar[]{%- endmacro %}
{% macro spark__empty_string_list() -%}cast(array() as array<string>){%- endmacro %}

{# A row value that orders field by field (arg_min/max keys, min over several columns). #}
{% macro row_tuple(exprs) -%}{{ return(adapter.dispatch('row_tuple')(exprs)) }}{%- endmacro %}
{% macro default__row_tuple(exprs) -%}({{ exprs | join(', ') }}){%- endmacro %}
{% macro spark__row_tuple(exprs) -%}struct({{ exprs | join(', ') }}){%- endmacro %}

{# Whole days from start to end (calendar days crossed, as DuckDB's date_diff('day')). #}
{% macro days_diff(start_expr, end_expr) -%}{{ return(adapter.dispatch('days_diff')(start_expr, end_expr)) }}{%- endmacro %}
{% macro default__days_diff(start_expr, end_expr) -%}date_diff('day', {{ start_expr }}, {{ end_expr }}){%- endmacro %}
{% macro spark__days_diff(start_expr, end_expr) -%}datediff(cast({{ end_expr }} as date), cast({{ start_expr }} as date)){%- endmacro %}

{# Whole minutes from start to end (minute boundaries crossed, as DuckDB's date_diff('minute')). #}
{% macro minutes_diff(start_expr, end_expr) -%}{{ return(adapter.dispatch('minutes_diff')(start_expr, end_expr)) }}{%- endmacro %}
{% macro default__minutes_diff(start_expr, end_expr) -%}date_diff('minute', {{ start_expr }}, {{ end_expr }}){%- endmacro %}
{% macro spark__minutes_diff(start_expr, end_expr) -%}
    (floor(unix_seconds(cast({{ end_expr }} as timestamp)) / 60) - floor(unix_seconds(cast({{ start_expr }} as timestamp)) / 60))
{%- endmacro %}

{# How many files match a glob (raw batches, gate rejects). #}
{% macro count_files(pattern) -%}{{ return(adapter.dispatch('count_files')(pattern)) }}{%- endmacro %}
{% macro default__count_files(pattern) -%}
    {%- set found = run_query("select count(*) from glob('" ~ pattern ~ "')") -%}
    {{- return(found.columns[0].values()[0]) -}}
{%- endmacro %}
{% macro spark__count_files(pattern) -%}
    {#- c360_glob_count: a function of the Spark session (customer360.warehouse.spark_engine);
        Spark SQL has no glob of its own. -#}
    {%- set found = run_query("select c360_glob_count('" ~ pattern ~ "')") -%}
    {{- return(found.columns[0].values()[0]) -}}
{%- endmacro %}

{# Parquet files of a glob as one relation, columns united by name. #}
{% macro read_parquet_glob(pattern) -%}{{ return(adapter.dispatch('read_parquet_glob')(pattern)) }}{%- endmacro %}
{% macro default__read_parquet_glob(pattern) -%}read_parquet('{{ pattern }}', union_by_name = true, hive_partitioning = false){%- endmacro %}
{# spark.sql.parquet.mergeSchema (set by the session) unites the files' columns by name. #}
{% macro spark__read_parquet_glob(pattern) -%}parquet.`{{ pattern }}`{%- endmacro %}

{# The lower-cased column names of a relation or subquery. #}
{% macro column_names_of(relation) -%}{{ return(adapter.dispatch('column_names_of')(relation)) }}{%- endmacro %}
{% macro default__column_names_of(relation) -%}
    {%- set described = run_query("describe select * from " ~ relation) -%}
    {{- return(described.columns[0].values() | map('lower') | list) -}}
{%- endmacro %}
{% macro spark__column_names_of(relation) -%}
    {%- set described = run_query("describe query select * from " ~ relation) -%}
    {{- return(described.columns[0].values() | map('lower') | list) -}}
{%- endmacro %}

{# The consent categories a JSON object of {category: true/false} answers false, lower-cased
   and sorted; null when it is no object. #}
{% macro denied_consent_categories(expr) -%}{{ return(adapter.dispatch('denied_consent_categories')(expr)) }}{%- endmacro %}
{% macro default__denied_consent_categories(expr) -%}
    list_sort(list_transform(list_filter(
        json_keys({{ expr }}),
        k -> lower(json_extract_string({{ expr }}, '$."' || k || '"')) = 'false'),
        k -> lower(k)))
{%- endmacro %}
{#- Spark: the object read as a map of text values (from_json renders true/false as text). -#}
{% macro spark__denied_consent_categories(expr) -%}
    array_sort(transform(filter(map_entries(from_json({{ expr }}, 'map<string, string>')),
                                e -> lower(e.value) = 'false'),
                         e -> lower(e.key)))
{%- endmacro %}

{# Every row of `relation`, with text columns `columns` as nulls where it lacks them. #}
{% macro with_text_columns(relation, columns) -%}{{ return(adapter.dispatch('with_text_columns')(relation, columns)) }}{%- endmacro %}
{% macro default__with_text_columns(relation, columns) -%}
    select * from {{ relation }}
    union all by name
    select
        {%- for column in columns %}
        cast(null as varchar) as {{ adapter.quote(column) }}{{ "," if not loop.last }}
        {%- endfor %}
    where false
{%- endmacro %}
{#- Spark SQL has no union by name; raw_source already gives every column the source yml
    declares (typed nulls where the batches lack it), so the columns must be declared there. -#}
{% macro spark__with_text_columns(relation, columns) -%}
    select * from {{ relation }}
{%- endmacro %}

{#- dbt's cast (contracts build their typed empty query with it): the yml types are DuckDB's
    names, spelled for Spark here, so one contract serves both engines. -#}
{% macro spark__cast(field, type) -%}
    cast({{ field }} as {{ engine_type(type) }})
{%- endmacro %}

{# An interval of n days (n: a number or an expression). #}
{% macro days_interval(n) -%}{{ return(adapter.dispatch('days_interval')(n)) }}{%- endmacro %}
{% macro default__days_interval(n) -%}interval ({{ n }}) day{%- endmacro %}
{% macro spark__days_interval(n) -%}make_dt_interval({{ n }}){%- endmacro %}

{#- A FROM clause: each row of `left` (filtered by `where`) with the row of `right` of the
    same `key` whose `right_ts` is the latest at or before its `left_ts` (an as-of join), or
    none. The relations keep their names as aliases. `left_id` is unused by DuckDB. -#}
{% macro asof_left_join(left, right, key, left_ts, right_ts, left_id, where) -%}
    {{- return(adapter.dispatch('asof_left_join')(left, right, key, left_ts, right_ts, left_id, where)) -}}
{%- endmacro %}
{% macro default__asof_left_join(left, right, key, left_ts, right_ts, left_id, where) -%}
    {{ left }}
    asof left join {{ right }}
        on {{ right }}.{{ key }} = {{ left }}.{{ key }}
       and {{ left }}.{{ left_ts }} >= {{ right }}.{{ right_ts }}
    where {{ where }}
{%- endmacro %}
{#- Spark has no as-of join: each right row spans from its right_ts to the next one's. -#}
{% macro spark__asof_left_join(left, right, key, left_ts, right_ts, left_id, where) -%}
    {{ left }}
    left join (
        select spans.*,
               lead({{ right_ts }}) over (partition by {{ key }} order by {{ right_ts }}) as _c360_next_ts
        from {{ right }} as spans
    ) as {{ right }}
        on {{ right }}.{{ key }} = {{ left }}.{{ key }}
       and {{ left }}.{{ left_ts }} >= {{ right }}.{{ right_ts }}
       and ({{ right }}._c360_next_ts is null or {{ left }}.{{ left_ts }} < {{ right }}._c360_next_ts)
    where {{ where }}
{%- endmacro %}

{#- The value at the smallest (largest) `order_expr` among rows where the value is not null:
    DuckDB's arg_min/min_by skip null values, Spark's min_by does not, so on Spark a null
    value's order is made null (which min_by skips). -#}
{% macro arg_min_by(value, order_expr) -%}{{ return(adapter.dispatch('arg_min_by')(value, order_expr)) }}{%- endmacro %}
{% macro default__arg_min_by(value, order_expr) -%}min_by({{ value }}, {{ order_expr }}){%- endmacro %}
{% macro spark__arg_min_by(value, order_expr) -%}min_by({{ value }}, case when {{ value }} is not null then {{ order_expr }} end){%- endmacro %}
{% macro arg_max_by(value, order_expr) -%}{{ return(adapter.dispatch('arg_max_by')(value, order_expr)) }}{%- endmacro %}
{% macro default__arg_max_by(value, order_expr) -%}max_by({{ value }}, {{ order_expr }}){%- endmacro %}
{% macro spark__arg_max_by(value, order_expr) -%}max_by({{ value }}, case when {{ value }} is not null then {{ order_expr }} end){%- endmacro %}

{# The distinct values of an aggregate, sorted, joined by `sep` (a literal, no quotes). #}
{% macro sorted_distinct_join(expr, sep) -%}{{ return(adapter.dispatch('sorted_distinct_join')(expr, sep)) }}{%- endmacro %}
{% macro default__sorted_distinct_join(expr, sep) -%}{{ dbt.listagg("distinct " ~ expr, "'" ~ sep ~ "'", "order by " ~ expr) }}{%- endmacro %}
{% macro spark__sorted_distinct_join(expr, sep) -%}array_join(array_sort(collect_set({{ expr }})), '{{ sep }}'){%- endmacro %}

{# The earliest instant, typed like the raw zone's _loaded_at (Spark has no timestamptz literal). #}
{% macro epoch_timestamp() -%}{{ return(adapter.dispatch('epoch_timestamp')()) }}{%- endmacro %}
{% macro default__epoch_timestamp() -%}timestamptz '1970-01-01 00:00:00+00'{%- endmacro %}
{% macro spark__epoch_timestamp() -%}timestamp '1970-01-01 00:00:00'{%- endmacro %}
