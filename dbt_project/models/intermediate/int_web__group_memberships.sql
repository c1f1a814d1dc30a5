-- Account membership from Segment group calls: one row per (member, groupId), the member
-- being the call's userId (a contact) or, for a logged-out call, its anonymousId (a device).
-- The account's name and traits are the newest group call's for that pair; the customer is
-- joined where it is read (customer_360), as identity can change any day.
with group_calls as (

    select
        case when user_id is not null then 'contact' else 'anon' end as member_type,
        coalesce(user_id, anonymous_id) as member_id,
        group_id,
        group_name,
        group_traits,
        event_at,
        message_id
    from {{ ref('stg_web__events') }}
    where event_type = 'group' and group_id is not null
      and coalesce(user_id, anonymous_id) is not null

)

select
    member_type,
    member_id,
    member_type || ':' || member_id as identity_key,
    group_id,
    max_by(group_name, (event_at, message_id)) filter (where group_name is not null) as group_name,
    max_by(group_traits, (event_at, message_id)) as group_traits,
    min(event_at) as first_seen_at,
    max(event_at) as last_seen_at,
    count(*) as group_calls
from group_calls
group by member_type, member_id, group_id
