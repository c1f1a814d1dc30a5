-- POS line items of the newest version of each store-day file (a corrected file replaces
-- the earlier one entirely), typed; txn_at is the store's wall clock converted to UTC with
-- the store's IANA zone; customer keys normalized with the store's country. Zone and
-- country come with each row (as the loader saw stores.csv), else from stg_pos__stores.
-- Amounts are read in the store's locale (pos_amount), by the rule the loader checked.
-- Incremental, keyed by file: a run reads the files that have a batch landed since the last
-- run and replaces every row of those files (delete+insert on _source_file) with the newest
-- version among all their batches, so a corrected file replaces the earlier one as in a full
-- refresh; the rows of files with nothing new are neither read nor written again.
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='_source_file',
        on_schema_change='append_new_columns'
    )
}}

with stores as (

    select store_id, timezone, country from {{ ref('stg_pos__stores') }}

),

lines as (

    select
        raw.*,
        dense_rank() over (
            partition by raw._source_file
            order by raw._loaded_at desc, raw._batch_id desc
        ) as file_version_rank
    from {{ raw_source('pos', 'transactions') }} as raw
    where raw.transaction_id is not null
    {% if is_incremental() %}
      -- ">=": the newest batch already seen is read again; its file's rows are replaced by
      -- the same rows
      and raw._source_file in (
          select new_batches._source_file
          from {{ raw_source('pos', 'transactions') }} as new_batches
          where new_batches._loaded_at >= (
              select coalesce(max(_loaded_at), {{ epoch_timestamp() }}) from {{ this }})
      )
    {% endif %}

),

typed as (

    select
        {{ clean_text('lines.transaction_id') }} as transaction_id,
        try_cast({{ clean_text('line_no') }} as integer) as line_no,
        {{ clean_text('lines.store_id') }} as store_id,
        try_cast({{ clean_text('business_date') }} as date) as business_date,
        try_cast({{ clean_text('txn_ts') }} as timestamp) as txn_local_ts,
        coalesce({{ clean_text('lines._store_timezone') }}, stores.timezone) as store_timezone,
        coalesce(upper({{ clean_text('lines._store_country') }}), stores.country) as store_country,
        upper({{ clean_text('txn_type') }}) as txn_type,
        loyalty_id as loyalty_id_raw,
        customer_phone as customer_phone_raw,
        customer_email as customer_email_raw,
        {{ clean_text('sku') }} as sku,
        try_cast({{ clean_text('quantity') }} as integer) as quantity,
        {{ pos_amount('unit_price', 'coalesce(lines._store_country, stores.country)') }} as unit_price,
        coalesce({{ pos_amount('discount_amount', 'coalesce(lines._store_country, stores.country)') }}, 0)
            as discount_amount,
        {{ pos_amount('line_amount', 'coalesce(lines._store_country, stores.country)') }} as line_amount,
        upper({{ clean_text('currency') }}) as currency,
        {{ clean_text('payment_method') }} as payment_method,
        _folder_date as folder_date,
        _source_file,
        _source_line,
        _batch_id,
        _loaded_at
    from lines
    left join stores on stores.store_id = {{ clean_text('lines.store_id') }}
    where lines.file_version_rank = 1

)

select
    transaction_id,
    line_no,
    store_id,
    business_date,
    txn_local_ts,
    {{ local_to_utc('txn_local_ts', 'store_timezone') }} as txn_at,
    store_timezone,
    store_country,
    txn_type,
    {{ normalize_loyalty_id('loyalty_id_raw') }} as loyalty_id,
    {{ normalize_phone('customer_phone_raw', 'store_country') }} as customer_phone,
    {{ clean_text('customer_phone_raw') }} as customer_phone_raw,
    {{ normalize_email('customer_email_raw') }} as customer_email,
    sku,
    quantity,
    unit_price,
    discount_amount,
    line_amount,
    currency,
    payment_method,
    folder_date,
    _source_file,
    _source_line,
    _batch_id,
    _loaded_at
from typed
