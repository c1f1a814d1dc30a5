-- The identity graph's edges: the keys one record carries belong to one person, so each
-- record links all its (unambiguous) keys to the record's first key. One row per distinct
-- pair, with the kinds of record that link them.
with usable as (

    select obs.*
    from {{ ref('int_identity__observations') }} as obs
    left join {{ ref('int_identity__ambiguous_keys') }} as ambiguous
        on ambiguous.identity_key = obs.identity_key
    where ambiguous.identity_key is null

),

anchored as (

    select
        record_type,
        record_id,
        identity_key,
        min(identity_key) over (partition by record_type, record_id) as anchor_key
    from usable

)

select
    anchor_key as left_key,
    identity_key as right_key,
    {{ sorted_distinct_join('record_type', ',') }} as record_types,
    count(*) as records
from anchored
where identity_key <> anchor_key
group by anchor_key, identity_key
