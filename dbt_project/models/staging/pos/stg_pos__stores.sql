-- Stores from the newest stores.csv batch.
with batches as (

    select
        raw.*,
        dense_rank() over (order by raw._loaded_at desc, raw._batch_id desc) as batch_rank
    from {{ raw_source('pos', 'stores') }} as raw

)

select
    {{ clean_text('store_id') }} as store_id,
    {{ clean_text('name') }} as store_name,
    {{ clean_text('city') }} as city,
    {{ clean_text('region') }} as region,
    upper({{ clean_text('country') }}) as country,
    {{ clean_text('timezone') }} as timezone,
    lower({{ clean_text('file_encoding') }}) as file_encoding,
    try_cast({{ clean_text('opened_on') }} as date) as opened_on,
    _batch_id,
    _loaded_at
from batches
where batch_rank = 1
