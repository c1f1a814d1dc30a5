-- The identity graph's vertices: every usable key, with when and how often it was seen.
select
    obs.identity_key,
    obs.key_type,
    min(obs.observed_at) as first_seen_at,
    max(obs.observed_at) as last_seen_at,
    count(distinct obs.record_type || ':' || obs.record_id) as records
from {{ ref('int_identity__observations') }} as obs
left join {{ ref('int_identity__ambiguous_keys') }} as ambiguous
    on ambiguous.identity_key = obs.identity_key
where ambiguous.identity_key is null
group by obs.identity_key, obs.key_type
