{#- The line items of web "Order Completed" events: one row per element of
    properties.products, numbered from 1 in the order sent. An item names its product by sku,
    product_id or both (Segment's e-commerce spec); web_product_sku maps it to a sku. `relation` must have order_id,
    order_products (JSON text), order_currency, event_at, anonymous_id, user_id, _loaded_at.
    Each engine has its own JSON unnesting (dispatched). -#}
{% macro web_order_items(relation) -%}{{ return(adapter.dispatch('web_order_items')(relation)) }}{%- endmacro %}

{% macro default__web_order_items(relation) -%}
    select
        orders.*,
        unnest(json_transform(orders.order_products,
            '[{"sku": "VARCHAR", "product_id": "VARCHAR", "quantity": "INTEGER", "price": "DECIMAL(18,2)"}]')) as item,
        generate_subscripts(json_transform(orders.order_products,
            '[{"sku": "VARCHAR", "product_id": "VARCHAR", "quantity": "INTEGER", "price": "DECIMAL(18,2)"}]'), 1) as item_no
    from {{ relation }} as orders
{%- endmacro %}

{% macro spark__web_order_items(relation) -%}
    select orders.*, items.item, items.pos + 1 as item_no
    from {{ relation }} as orders
    lateral view posexplode(from_json(orders.order_products,
        'array<struct<sku: string, product_id: string, quantity: int, price: decimal(18,2)>>')) items as pos, item
{%- endmacro %}


{#- The sku of a web product: its own sku, else its product_id when the product reference
    (stg_pos__products) has that sku - the shop's catalogue uses the sku as the product id.
    `products` is a relation alias of stg_pos__products joined on the product_id; a product_id
    that is no catalogue sku stays unmapped (null sku, product_id kept). -#}
{% macro web_product_sku(sku, product_id, products) -%}
    coalesce(nullif(trim({{ sku }}), ''), {{ products }}.sku)
{%- endmacro %}
