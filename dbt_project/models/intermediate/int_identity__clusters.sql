-- One customer_id per person: the connected components of the identity graph that hold a
-- person key, with ids kept from this table's previous version. The work is done by the
-- pre-hook (macros/identity_clusters.sql: iterated SQL rounds, on DuckDB and Spark alike);
-- this select joins what it left. A table, not an incremental model: keys that vanish (an
-- erased contact) vanish here too, and --full-refresh keeps the ids.
{{ config(
    materialized='table',
    pre_hook="{{ identity_clusters_prepare(this, ref('int_identity__nodes'), ref('int_identity__edges'),
                                           ['contact', 'email', 'phone', 'loyalty'],
                                           var('identity_max_rounds')) }}",
    post_hook="{{ identity_clusters_cleanup(this) }}",
) }}

{%- set keys = identity_work_relation(this, 'keys') -%}
{%- set ids = identity_work_relation(this, 'ids') -%}
{#- named here too so dbt orders this model after them (refs in hooks are not seen) -#}
-- depends_on: {{ ref('int_identity__nodes') }}, {{ ref('int_identity__edges') }}

select
    k.identity_key,
    k.key_type,
    i.customer_id,
    i.cluster_size
from {{ keys }} as k
join {{ ids }} as i on i.component = k.component
