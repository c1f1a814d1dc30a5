{#- Identity clustering in SQL that DuckDB and Spark SQL both run: connected components of the
    identity graph by iterated min-label propagation, then customer ids kept from the model's
    previous version. int_identity__clusters calls identity_clusters_prepare() as its pre-hook
    (hooks render only when the model runs, never on compile or docs) and reads the work tables
    it leaves; its post-hook drops them.

    The rules are those of customer360.warehouse.identity_clusters, which stays as the test
    oracle (tests/test_dbt_identity_sql.py runs both on the same graphs). Only the table
    statements differ between engines; they are dispatched below. -#}


{#- ------------------------------------------------------------ engine-specific statements -#}

{#- Make `relation` a table holding `sql`'s rows, replacing any previous one. -#}
{% macro replace_table(relation, sql) -%}
    {{ return(adapter.dispatch('replace_table', 'customer360')(relation, sql)) }}
{%- endmacro %}

{% macro default__replace_table(relation, sql) -%}
    {% do adapter.drop_relation(relation) %}
    {% do run_query('create table ' ~ relation ~ ' as ' ~ sql) %}
{%- endmacro %}

{% macro duckdb__replace_table(relation, sql) -%}
    {% do run_query('create or replace table ' ~ relation ~ ' as ' ~ sql) %}
{%- endmacro %}

{#- Spark's session catalog has no CREATE OR REPLACE for file tables (only v2 tables such as
    Delta), and a work table needs no format beyond the engine's own. -#}
{% macro spark__replace_table(relation, sql) -%}
    {% do adapter.drop_relation(relation) %}
    {% do run_query('create table ' ~ relation ~ ' using parquet as ' ~ sql) %}
{%- endmacro %}


{#- ------------------------------------------------------------------------ work tables -#}

{% macro identity_work_relation(this_relation, suffix) -%}
    {{ return(api.Relation.create(database=this_relation.database, schema=this_relation.schema,
                                  identifier=this_relation.identifier ~ '__' ~ suffix,
                                  type='table')) }}
{%- endmacro %}

{% macro identity_work_suffixes() -%}
    {{ return(['memory', 'ranks', 'edges', 'labels_0', 'labels_1', 'keys', 'components',
               'fresh_0', 'fresh_1', 'ids']) }}
{%- endmacro %}

{% macro identity_clusters_cleanup(this_relation) -%}
    {% if not execute %}{{ return('') }}{% endif %}
    {% for suffix in identity_work_suffixes() %}
        {% do adapter.drop_relation(identity_work_relation(this_relation, suffix)) %}
    {% endfor %}
{%- endmacro %}

{% macro scalar(sql) -%}
    {{ return(run_query(sql).columns[0].values()[0]) }}
{%- endmacro %}


{#- -------------------------------------------------------------------- connected components

    Every key points at a label, a key of its component no larger than itself (keys go by
    their rank, below); at the end the label is the component's smallest key. A round lowers each label to the smallest of
    - its label's label (pointer jumping: a chain's labels halve their distance each round),
    - what it sees: its own and its neighbours' labels,
    - what the keys pointing at it see (a label hears of a smaller one from below).
    Labels only fall and stay inside the component, so the rounds end. When no label moves,
    every edge joins equal labels and every label labels itself: the label of each key is the
    smallest key of its component. Rounds grow with the log of the longest chain (a
    50,000-key chain in random key order takes 23); a cap that fails the build keeps a bug
    from looping. Not a recursive CTE: that would carry every (key, key reachable from it)
    pair, and recursion is not in the SQL the two engines share. -#}

{#- Returns (ranks, labels): ranks numbers the keys in key order (identity_key, key_type, k);
    labels maps each k to the k of its component's smallest key. The rounds join integers,
    not keys: at 100k people a round on the string keys took 3-4 s, on their ranks 0.9 s.
    The numbering keeps key order, so the smallest rank is the smallest key. -#}
{% macro identity_components(nodes, edges, this_relation, max_rounds) -%}
    {%- set ranks = identity_work_relation(this_relation, 'ranks') -%}
    {%- set work_edges = identity_work_relation(this_relation, 'edges') -%}
    {%- set labels = [identity_work_relation(this_relation, 'labels_0'),
                      identity_work_relation(this_relation, 'labels_1')] -%}
    {% do replace_table(ranks, "
        select identity_key, key_type, row_number() over (order by identity_key) as k
        from " ~ nodes) %}
    {#- both directions of every edge between known keys (scipy's rule: others are ignored) -#}
    {% do replace_table(work_edges, "
        with ranked as (
            select l.k as a, r.k as b
            from " ~ edges ~ " as e
            join " ~ ranks ~ " as l on l.identity_key = e.left_key
            join " ~ ranks ~ " as r on r.identity_key = e.right_key
            where e.left_key <> e.right_key
        )
        select a as node, b as neighbour from ranked
        union all
        select b as node, a as neighbour from ranked") %}
    {% do replace_table(labels[0], "
        select n.k as node, least(n.k, coalesce(min(e.neighbour), n.k)) as label, 1 as moved
        from " ~ ranks ~ " as n
        left join " ~ work_edges ~ " as e on e.node = n.k
        group by n.k") %}
    {%- set state = namespace(current=0, rounds=0, done=false) -%}
    {% for round in range(max_rounds) %}
        {% if not state.done %}
            {%- set old = labels[state.current] -%}
            {%- set new = labels[1 - state.current] -%}
            {% do replace_table(new, "
                with sees as (
                    select l.node, l.label,
                           least(l.label, coalesce(min(n.label), l.label)) as seen
                    from " ~ old ~ " as l
                    left join " ~ work_edges ~ " as e on e.node = l.node
                    left join " ~ old ~ " as n on n.node = e.neighbour
                    group by l.node, l.label
                ),
                heard as (
                    select label as node, min(seen) as heard
                    from sees
                    group by label
                ),
                lowered as (
                    select s.node, s.label,
                           least(up.label, s.seen, coalesce(h.heard, s.seen)) as new_label
                    from sees as s
                    join " ~ old ~ " as up on up.node = s.label
                    left join heard as h on h.node = s.node
                )
                select node, new_label as label,
                       case when new_label < label then 1 else 0 end as moved
                from lowered") %}
            {%- set state.current = 1 - state.current -%}
            {%- set state.rounds = state.rounds + 1 -%}
            {% if scalar("select count(*) from " ~ new ~ " where moved = 1") | int == 0 %}
                {%- set state.done = true -%}
            {% endif %}
        {% endif %}
    {% endfor %}
    {% if not state.done %}
        {{ exceptions.raise_compiler_error(
            "identity clustering: labels still moving after " ~ max_rounds ~ " rounds "
            ~ "(var identity_max_rounds); the graph has a longer chain than the cap allows "
            ~ "or the propagation has a bug") }}
    {% endif %}
    {{ log("identity clustering: components settled in " ~ state.rounds ~ " rounds", info=True) }}
    {{ return([ranks, labels[state.current]]) }}
{%- endmacro %}


{#- ----------------------------------------------------------------------------- customer ids

    Per component holding a person key (a device alone is a visitor, not a customer), as
    assign_ids() does: each component votes for the previous id most of its keys had (ties:
    the smallest id); each previous id goes to the component that gave it most votes (ties:
    the one with the smallest key); a component left without one gets
    "c_" + the first 16 hex of pii_hash(its smallest key). A new id never equals an id of
    the previous version: on a clash the key is salted ("<key>#1", "#2", ...) - a split part
    whose smallest key is the old cluster's needs this, its first candidate being the id the
    other part kept. Clashes are settled in rounds, the smaller key first; assign_ids() hands
    out new ids one by one in key order, which is the same unless two new components' salted
    HMACs agree in 64 bits (never seen; the salt loop's cap fails the build if it spins). -#}

{% macro identity_clusters_prepare(this_relation, nodes, edges, person_key_types, max_rounds) -%}
    {#- dbt renders hooks at parse time too, when no query runs -#}
    {% if not execute %}{{ return('') }}{% endif %}
    {%- set memory = identity_work_relation(this_relation, 'memory') -%}
    {%- set keys = identity_work_relation(this_relation, 'keys') -%}
    {%- set components = identity_work_relation(this_relation, 'components') -%}
    {%- set fresh = [identity_work_relation(this_relation, 'fresh_0'),
                     identity_work_relation(this_relation, 'fresh_1')] -%}
    {%- set ids = identity_work_relation(this_relation, 'ids') -%}
    {#- The id memory is the model's own last version; copied first, because the table
        materialization may drop it (Spark does) before the model's select runs. -#}
    {%- set previous = adapter.get_relation(database=this_relation.database,
                                            schema=this_relation.schema,
                                            identifier=this_relation.identifier) -%}
    {% if previous is not none %}
        {% do replace_table(memory, "select identity_key, customer_id as previous_id from "
                                    ~ previous) %}
    {% else %}
        {% do replace_table(memory, "select identity_key, identity_key as previous_id from "
                                    ~ nodes ~ " where 1 = 0") %}
    {% endif %}
    {%- set ranks, labels = identity_components(nodes, edges, this_relation, max_rounds) -%}
    {%- set person_types = "'" ~ person_key_types | join("', '") ~ "'" -%}
    {% do replace_table(keys, "
        with members as (
            select n.identity_key, n.key_type, l.label as component
            from " ~ ranks ~ " as n
            join " ~ labels ~ " as l on l.node = n.k
        ),
        people as (
            select component
            from members
            group by component
            having max(case when key_type in (" ~ person_types ~ ") then 1 else 0 end) = 1
        )
        select m.identity_key, m.key_type, m.component, memory.previous_id
        from members as m
        join people as p on p.component = m.component
        left join " ~ memory ~ " as memory on memory.identity_key = m.identity_key") %}
    {% do replace_table(components, "
        with votes as (
            select component, previous_id, count(*) as votes
            from " ~ keys ~ "
            where previous_id is not null
            group by component, previous_id
        ),
        candidates as (
            select component, previous_id, votes,
                   row_number() over (partition by component
                                      order by votes desc, previous_id) as preference
            from votes
        ),
        winners as (
            select component, previous_id,
                   row_number() over (partition by previous_id
                                      order by votes desc, component) as standing
            from candidates
            where preference = 1
        ),
        sizes as (
            select component, count(*) as cluster_size
            from " ~ keys ~ "
            group by component
        )
        select s.component, smallest.identity_key as component_key, s.cluster_size,
               w.previous_id as kept_id
        from sizes as s
        join " ~ ranks ~ " as smallest on smallest.k = s.component
        left join winners as w on w.component = s.component and w.standing = 1") %}
    {% do replace_table(fresh[0], "
        select component, component_key, 0 as salt,
               cast(null as " ~ dbt.type_string() ~ ") as customer_id
        from " ~ components ~ "
        where kept_id is null") %}
    {%- set state = namespace(current=0, done=false) -%}
    {% for round in range(max_rounds) %}
        {% if not state.done %}
            {%- set old = fresh[state.current] -%}
            {%- set new = fresh[1 - state.current] -%}
            {% do replace_table(new, "
                with taken as (
                    select distinct previous_id as id from " ~ memory ~ "
                    where previous_id is not null
                    union
                    select customer_id as id from " ~ old ~ " where customer_id is not null
                ),
                proposals as (
                    select component, component_key, salt,
                           'c_' || substr(pii_hash(case when salt = 0 then component_key
                                                        else component_key || '#' || cast(salt as "
                                                             ~ dbt.type_string() ~ ") end),
                                          1, 16) as candidate
                    from " ~ old ~ "
                    where customer_id is null
                ),
                judged as (
                    select p.component, p.component_key, p.salt, p.candidate,
                           case when t.id is null
                                 and row_number() over (partition by p.candidate
                                                        order by p.component) = 1
                                then 1 else 0 end as accepted
                    from proposals as p
                    left join taken as t on t.id = p.candidate
                )
                select component, component_key, salt, customer_id from " ~ old ~ "
                where customer_id is not null
                union all
                select component, component_key,
                       case when accepted = 1 then salt else salt + 1 end as salt,
                       case when accepted = 1 then candidate end as customer_id
                from judged") %}
            {%- set state.current = 1 - state.current -%}
            {% if scalar("select count(*) from " ~ new ~ " where customer_id is null") | int == 0 %}
                {%- set state.done = true -%}
            {% endif %}
        {% endif %}
    {% endfor %}
    {% if not state.done %}
        {{ exceptions.raise_compiler_error(
            "identity clustering: new customer ids still clash after " ~ max_rounds
            ~ " salts (var identity_max_rounds)") }}
    {% endif %}
    {% do replace_table(ids, "
        select c.component, c.cluster_size, coalesce(c.kept_id, f.customer_id) as customer_id
        from " ~ components ~ " as c
        left join " ~ fresh[state.current] ~ " as f on f.component = c.component") %}
{%- endmacro %}
