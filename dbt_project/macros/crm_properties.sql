{#- Reading CRM properties through the property map (config/crm_properties.yml, knob
    C360_CRM_PROPERTIES): warehouse.dbt_runner.build_env hands it to dbt as the JSON env var
    C360_CRM_PROPERTY_MAP, {object: {last_modified, columns: {our column: portal property},
    values: {our column: {portal value: our value}}, associations}}. Staging never names a
    portal property itself, so a portal with other internal names needs only the YAML. -#}

{% macro crm_property_map() -%}
    {%- set text = env_var('C360_CRM_PROPERTY_MAP', '') -%}
    {%- if not text -%}
        {{ exceptions.raise_compiler_error(
            "C360_CRM_PROPERTY_MAP is not set: run dbt through the pipeline (c360, or "
            ~ "customer360.warehouse.dbt_runner.run_dbt), which passes the CRM property map") }}
    {%- endif -%}
    {{- return(fromjson(text)) -}}
{%- endmacro %}


{% macro crm_object_map(object_name) -%}
    {%- set property_map = crm_property_map() -%}
    {%- if object_name not in property_map -%}
        {{ exceptions.raise_compiler_error("the CRM property map has no object " ~ object_name) }}
    {%- endif -%}
    {{- return(property_map[object_name]) -}}
{%- endmacro %}


{# The portal's internal name of one of our columns. #}
{% macro crm_prop_name(object_name, column) -%}
    {%- set columns = crm_object_map(object_name)['columns'] -%}
    {%- if column not in columns -%}
        {{ exceptions.raise_compiler_error("the CRM property map has no column " ~ column
            ~ " for " ~ object_name ~ " (columns: " ~ (columns.keys() | sort | join(', ')) ~ ")") }}
    {%- endif -%}
    {{- return(columns[column]) -}}
{%- endmacro %}


{# One of our columns out of the raw `properties` JSON, trimmed; "" (HubSpot's cleared value),
   blanks and null are all null. #}
{% macro crm_prop(object_name, column, properties='properties') -%}
    {{ clean_text(json_text(properties, '$."' ~ crm_prop_name(object_name, column) ~ '"')) }}
{%- endmacro %}


{# The portal's enumeration value `expr` as ours, through the column's values map; a value
   outside the map is null here (the raw gate reports it, with the value, and raw keeps it). #}
{% macro crm_value_map(object_name, column, expr) -%}
    {%- set values = crm_object_map(object_name)['values'].get(column, {}) -%}
    {%- if values | length == 0 -%}
        {{ expr }}
    {%- else -%}
    case {{ expr }}
        {%- for portal, ours in values | dictsort %}
        when '{{ portal | replace("'", "''") }}' then '{{ ours | replace("'", "''") }}'
        {%- endfor %}
    end
    {%- endif -%}
{%- endmacro %}


{# The first associated record id of `to_object` ("contacts") in the raw `associations` JSON
   ({"contacts": ["101", "102"]}), or null. #}
{% macro crm_first_association(to_object, associations='associations') -%}
    {{ clean_text(json_text(associations, '$."' ~ to_object ~ '"[0]')) }}
{%- endmacro %}
