"""The stage front: the one ordered list of stages (:mod:`.stages`) that the DAG, the CLI,
the erasure's rebuild and the benchmarks use, and the Airflow runner (:mod:`.airflow`)."""

from customer360.pipeline.stages import *  # noqa: F401,F403
