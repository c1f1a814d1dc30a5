-- Products from the newest products.csv batch.
with batches as (

    select
        raw.*,
        dense_rank() over (order by raw._loaded_at desc, raw._batch_id desc) as batch_rank
    from {{ raw_source('pos', 'products') }} as raw

)

select
    {{ clean_text('sku') }} as sku,
    {{ clean_text('name') }} as product_name,
    {{ clean_text('category') }} as category,
    {{ clean_text('brand') }} as brand,
    {{ pos_amount('list_price', 'null') }} as list_price,
    _batch_id,
    _loaded_at
from batches
where batch_rank = 1
