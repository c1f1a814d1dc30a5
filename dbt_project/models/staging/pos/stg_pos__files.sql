-- The POS loader's manifest: one row per file version loaded or quarantined.
select
    source_file,
    {{ clean_text('store_id') }} as store_id,
    try_cast(business_date as date) as business_date,
    status,
    size as size_bytes,
    sha256,
    rows_read,
    rows_landed,
    rows_quarantined,
    supersedes_batch_id,
    _batch_id,
    _loaded_at
from {{ raw_source('pos', 'files') }} as raw
