-- The web loader's manifest: one row per part file loaded or quarantined.
select
    source_file,
    folder_date,
    status,
    size as size_bytes,
    sha256,
    rows_read,
    rows_landed,
    rows_quarantined,
    duplicate_message_ids,
    _batch_id,
    _loaded_at
from {{ raw_source('web', 'files') }} as raw
