{#- Schemas are exactly the layer names (staging, intermediate, marts, snapshots), not dbt's
    default "<target schema>_<custom schema>", so readers and the publisher can rely on them. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
