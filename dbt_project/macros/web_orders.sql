{#- The line items of web "Order Completed" events: one row per element of
    properties.products, numbered from 1 in the order sent. `relation` must have order_id,
    order_products (JSON text), order_currency, event_at, anonymous_id, user_id, _loaded_at.
    DuckDB-specific (json_transform + unnest); another engine rewrites only this macro. -#}
{% macro web_order_items(relation) -%}
    select
        orders.*,
        unnest(json_transform(orders.order_products,
            '[{"sku": "VARCHAR", "quantity": "INTEGER", "price": "DECIMAL(18,2)"}]')) as item,
        generate_subscripts(json_transform(orders.order_products,
            '[{"sku": "VARCHAR", "quantity": "INTEGER", "price": "DECIMAL(18,2)"}]'), 1) as item_no
    from {{ relation }} as orders
{%- endmacro %}
