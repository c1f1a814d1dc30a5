"""Secrets and personal data against what a real Airflow run writes: task logs, the metadata
DB (XComs, rendered fields), dbt's logs, the report, Data Docs, the published copies.

One DAG run on small simulated data with a person planted in all three sources, the CRM
token and PII key from the environment (the CRM through the Airflow connection the runner
defines), and - when PostgreSQL is installed - a publish DSN with a password.
"""

from __future__ import annotations

import os

import pytest

from customer360.pipeline.airflow import run_dag
from customer360.privacy.scan import scan_tree
from tests.e2e import pipeline_env
from tests.pg_server import _pg_bin, postgres_server
from tests.test_privacy_pipeline import DAYS, LAST, ZELDA, plant

pytestmark = pytest.mark.slow


def test_a_dag_run_writes_no_secret_and_its_logs_no_personal_data(tmp_path):
    with pipeline_env(tmp_path / "home", people=120, days=DAYS, seed=5) as (settings, _, last):
        assert last == LAST
        plant(settings)
        secrets = [os.environ["C360_CRM_TOKEN"], os.environ["C360_PII_KEY"]]
        if _pg_bin() is not None:
            with postgres_server(password="pg-secret-" + "4" * 16) as pg:
                os.environ["C360_PUBLISH_POSTGRES_DSN"] = pg["dsn"]
                secrets += [pg["password"], pg["dsn"]]
                result = run_dag(settings, LAST)
        else:
            result = run_dag(settings, LAST)
        log_text = result.log_path.read_text()
        # the run got far enough for the check to mean something: data was built from raw
        assert "task_id=dbt_marts" in log_text and "[DAG TEST] end task task_id=ml" in log_text, log_text[-3000:]
        secret_hits = [h for h in scan_tree(settings.home, secrets) if h.needle >= 0]
        assert secret_hits == [], [str(h) for h in secret_hits]
        # Airflow's own files (task logs, XComs) and dbt's logs: counts, never values
        personal = ZELDA["traces"][:8]
        for folder in (settings.airflow_home, settings.artifacts):
            hits = [h for h in scan_tree(folder, personal) if h.needle >= 0]
            assert hits == [], [f"{h.path} {h.where} {personal[h.needle]}" for h in hits]
        assert "zelda" not in log_text.lower()
