{#- Fails on every value of `column_name` shared by more than `max_rows` rows. On the identity
    clusters it catches a runaway cluster: one key shared by many people can chain thousands
    of keys into one "customer". -#}
{% test max_group_size(model, column_name, max_rows) %}
    select {{ column_name }}, count(*) as group_rows
    from {{ model }}
    group by {{ column_name }}
    having count(*) > {{ max_rows }}
{% endtest %}
