"""customer360: a batch pipeline that builds a customer 360 warehouse.

Logic lives here and is importable without Airflow running; the DAG files in
``dags/`` and the ``c360`` CLI both call these functions (one code path).
"""

__version__ = "0.1.0"

# Every log line of a process that uses the package is redacted (secrets, PII) from here on.
from customer360.core.masking import install_log_masking as _install_log_masking  # noqa: E402

_install_log_masking()
