{#- Identity keys are "<type>:<normalized value>" strings, one namespace for every source, so
    the identity graph is one edge list. The types are listed in _intermediate__models.yml. -#}
{% macro identity_key(key_type, value_expr) -%}
    case when {{ value_expr }} is not null then '{{ key_type }}:' || {{ value_expr }} end
{%- endmacro %}
