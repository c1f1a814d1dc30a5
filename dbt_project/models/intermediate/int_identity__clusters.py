"""One customer_id per person: connected components of the identity graph (scipy), with ids
kept from the previous run. The rules are in customer360.warehouse.identity_clusters and in
_intermediate__models.yml.

The model reads its own previous version (dbt.this) before dbt replaces it: that is the
memory that keeps ids stable. It is a table, not an incremental model, so keys that vanish
(an erased contact) vanish here too, and --full-refresh keeps the ids.
"""

import pandas as pd
import pyarrow as pa

from customer360.warehouse.identity_clusters import assign_ids, component_labels, keyed_id_maker

SCHEMA = pa.schema([
    ("identity_key", pa.string()),
    ("key_type", pa.string()),
    ("customer_id", pa.string()),
    ("cluster_size", pa.int64()),
])
PERSON_KEY_TYPES = ("contact", "email", "phone", "loyalty")


def previous_ids(session, this) -> pd.DataFrame:
    exists = session.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [this.schema, this.identifier]).fetchone()[0]
    if not exists:
        return pd.DataFrame({"identity_key": pd.Series(dtype="str"),
                             "previous_id": pd.Series(dtype="str")})
    return session.sql(f"select identity_key, customer_id as previous_id from {this}").df()


def model(dbt, session):
    dbt.config(materialized="table")
    nodes = dbt.ref("int_identity__nodes").project("identity_key, key_type").df()
    edges = dbt.ref("int_identity__edges").project("left_key, right_key").df()
    if nodes.empty:
        return SCHEMA.empty_table()
    nodes = nodes.sort_values("identity_key", ignore_index=True)
    nodes["component"] = component_labels(nodes["identity_key"], edges["left_key"],
                                          edges["right_key"])
    # a cluster of devices alone is a visitor, not a customer
    is_person = nodes["key_type"].isin(PERSON_KEY_TYPES)
    nodes = nodes[is_person.groupby(nodes["component"]).transform("any")]
    out = assign_ids(nodes, previous_ids(session, dbt.this), keyed_id_maker())
    out = out[SCHEMA.names].sort_values("identity_key")
    return pa.Table.from_pandas(out, schema=SCHEMA, preserve_index=False)
