"""The one vocabulary of layers, shared by the DAG's stages, dbt's selectors and the gates.

Data flows raw -> staging -> intermediate -> marts -> ml -> customer_360. Every dbt layer is a
selector of the same name in ``dbt_project/selectors.yml`` (a test checks it), built by one
``dbt build`` whose run results are kept at ``Settings.dbt_results_path(layer)``. A gate is
named after the last layer it follows and reads the dbt results of the layers it covers.
"""

from __future__ import annotations

RAW = "raw"                    # the raw zone the extracts land (no dbt)
STAGING = "staging"            # seeds and typed, deduplicated staging models
INTERMEDIATE = "intermediate"  # identity resolution, golden record, FX intervals
MARTS = "marts"                # facts, dimensions, KPIs and the SCD2 snapshot
ML = "ml"                      # point-in-time features for the ML stage (dbt), then its outputs (Python)
CUSTOMER_360 = "customer_360"  # one row a customer, with the ML scores

LAYERS = (RAW, STAGING, INTERMEDIATE, MARTS, ML, CUSTOMER_360)
DBT_LAYERS = (STAGING, INTERMEDIATE, MARTS, ML, CUSTOMER_360)

# Layers built by one dbt invocation because no gate sits between them: the selector of that
# name in dbt_project/selectors.yml unites the layers' selectors, and the invocation's results
# are kept as each layer's (the gates read them by layer and count a node once). One dbt start
# and one Airflow task fewer a run (issue 19: a small day was all fixed cost).
COMBINED: dict[str, tuple[str, ...]] = {
    "staging_intermediate": (STAGING, INTERMEDIATE),
}

# gate -> the layers whose outputs and dbt test results it checks
GATES: dict[str, tuple[str, ...]] = {
    RAW: (RAW,),
    INTERMEDIATE: (STAGING, INTERMEDIATE),
    MARTS: (MARTS, ML, CUSTOMER_360),
}


def check_dbt_layer(layer: str) -> str:
    """A dbt layer, or a name of :data:`COMBINED` (layers built together)."""
    if layer not in DBT_LAYERS and layer not in COMBINED:
        raise ValueError(f"unknown dbt layer {layer!r}; expected one of "
                         f"{', '.join([*DBT_LAYERS, *COMBINED])}")
    return layer


def covered_layers(layer: str) -> tuple[str, ...]:
    """The dbt layers a build of ``layer`` (a layer or a :data:`COMBINED` name) makes."""
    return COMBINED.get(check_dbt_layer(layer), (layer,))


def check_gate(gate: str) -> str:
    if gate not in GATES:
        raise ValueError(f"unknown gate {gate!r}; expected one of {', '.join(GATES)}")
    return gate
