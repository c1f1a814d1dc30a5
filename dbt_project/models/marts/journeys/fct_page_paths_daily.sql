-- Where visits start and end, per day and page path (app screens by name): sessions landing
-- on the path, of which bounced (saw only it), and sessions leaving from it. "Top landing
-- paths and exit pages" are this table ordered by landing_sessions or exit_sessions.
with journeys as (

    select * from {{ ref('int_web__session_journeys') }}

),

landings as (

    select session_date as date, landing_path as page_path,
           count(*) as landing_sessions, count(*) filter (where is_bounce) as bounced_sessions
    from journeys
    where landing_path is not null
    group by all

),

exits as (

    select session_date as date, exit_path as page_path, count(*) as exit_sessions
    from journeys
    where exit_path is not null
    group by all

)

select
    coalesce(landings.date, exits.date) as date,
    coalesce(landings.page_path, exits.page_path) as page_path,
    cast(coalesce(landings.landing_sessions, 0) as integer) as landing_sessions,
    cast(coalesce(landings.bounced_sessions, 0) as integer) as bounced_sessions,
    cast(coalesce(exits.exit_sessions, 0) as integer) as exit_sessions
from landings
full outer join exits on exits.date = landings.date and exits.page_path = landings.page_path
