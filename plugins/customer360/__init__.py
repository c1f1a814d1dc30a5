"""customer360: a batch pipeline that builds a customer 360 warehouse.

Logic lives here and is importable without Airflow running; the DAG files in
``dags/`` and the ``c360`` CLI both call these functions (one code path).
"""

__version__ = "0.1.0"

# Every log line of a process that uses the package is redacted (secrets, PII) from here on.
from customer360.core.masking import install_log_masking as _install_log_masking  # noqa: E402

_install_log_masking()

# Great Expectations imports pyspark when it is installed (it is, for the Spark engine), and
# pyspark warns on every import that it does not yet fully support pandas 3; the Spark engine
# is tested for equality with DuckDB instead, so the warning only buries real ones.
import warnings as _warnings  # noqa: E402

_warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas",
                         category=FutureWarning)
