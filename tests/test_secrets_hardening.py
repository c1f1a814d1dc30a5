"""Secrets out of deployments and logs (issue 18 item 8): compose reads .env and never the
example, services refuse placeholder secrets at start, the publisher is no superuser (its
PostgreSQL test is in test_publish.py), and every log line and alert is redacted at -v."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from customer360.cli import app
from customer360.core.settings import REPO_ROOT, SettingsError, get_settings
from tests.landing_fixtures import event, write_web_part

EXAMPLE = REPO_ROOT / "deploy" / ".env.example"
COMPOSE = REPO_ROOT / "docker-compose.yml"


@pytest.fixture(autouse=True)
def _runtime_secrets_of_this_test_only(monkeypatch):
    """Secrets a test registers (as crm_connection() does under Airflow) stay with that test:
    the registry is process-wide, and other tests list what it holds."""
    from customer360.core import settings as settings_mod

    monkeypatch.setattr(settings_mod, "_RUNTIME_SECRETS", set())


def _example_values() -> dict[str, str]:
    values = {}
    for line in EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


# --------------------------------------------------------------------------- compose

def test_compose_reads_dot_env_and_never_the_example():
    text = COMPOSE.read_text()
    spec = yaml.safe_load(text)
    for name, svc in spec["services"].items():
        env_files = svc.get("env_file") or []
        assert ".env.example" not in json.dumps(env_files), name
        for mount in svc.get("volumes", []):
            assert ".env.example" not in mount, name
    # every password or key comes from .env and is required: no silent default
    for var, default in re.findall(r"\$\{(\w+)(:-[^}]*)?\}", text):
        if re.search(r"PASSWORD|PII_KEY|CONN_CRM", var):
            assert not default, f"{var} has a default in docker-compose.yml"
    for var in ("AIRFLOW_DB_PASSWORD", "PUBLISH_DB_PASSWORD", "PUBLISH_DB_SUPERUSER_PASSWORD",
                "C360_PII_KEY", "AIRFLOW_CONN_CRM_API", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY",
                "AIRFLOW_FERNET_KEY"):
        assert f"${{{var}:?" in text, var
        assert var in _example_values(), f"{var} missing from deploy/.env.example"


def test_compose_publishes_as_a_dedicated_role_and_checks_secrets_first():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    dsn = services["airflow-scheduler"]["environment"]["C360_PUBLISH_POSTGRES_DSN"]
    publisher = dsn.split("://", 1)[1].split(":", 1)[0]
    superuser = services["publish-db"]["environment"]["POSTGRES_USER"]
    assert publisher == "c360_publisher" and publisher != superuser
    init = [v for v in services["publish-db"]["volumes"] if "docker-entrypoint-initdb.d" in v]
    assert init and (REPO_ROOT / init[0].split(":")[0]).exists()
    assert "c360 check-config" in " ".join(services["airflow-init"]["command"])
    for name, svc in services.items():
        if "build" in svc and name != "airflow-init":  # the Airflow services
            assert svc["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


# --------------------------------------------------------------------------- placeholders

@pytest.fixture
def clean(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith(("C360_", "AIRFLOW_CONN_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
    return monkeypatch


def _check(*args):
    out = CliRunner().invoke(app, ["check-config", *args])
    return out.exit_code, " ".join(out.output.split())  # rich wraps long lines


def test_the_examples_placeholders_are_refused_at_start(clean):
    values = _example_values()
    clean.setenv("C360_PII_KEY", values["C360_PII_KEY"])  # 33 characters: passes the length check
    code, out = _check()
    assert code == 2 and "C360_PII_KEY is a placeholder" in out
    assert values["C360_PII_KEY"] not in out
    with pytest.raises(SettingsError, match="placeholder"):
        get_settings().pii_key()  # and wherever the key is used

    clean.setenv("C360_PII_KEY", "a-real-random-key-9f8e7d6c5b4a")
    clean.setenv("C360_PUBLISH_POSTGRES_DSN",
                 f"postgresql://c360_publisher:{values['PUBLISH_DB_PASSWORD']}@publish-db/c360")
    code, out = _check()
    assert code == 2 and "C360_PUBLISH_POSTGRES_DSN's password is a placeholder" in out
    clean.setenv("C360_PUBLISH_POSTGRES_DSN", "host=db dbname=c360 user=p password='change-me'")
    assert _check()[0] == 2

    clean.setenv("C360_PUBLISH_POSTGRES_DSN", "postgresql://c360_publisher:Zq8-real-pw@publish-db/c360")
    clean.setenv("AIRFLOW_CONN_CRM_API", values["AIRFLOW_CONN_CRM_API"])
    code, out = _check()
    assert code == 2 and "connection crm_api is a placeholder" in out

    clean.setenv("AIRFLOW_CONN_CRM_API", json.dumps({"conn_type": "http", "host": "https://crm.example",
                                                     "password": "pat-na1-real-token-0042"}))
    code, out = _check()
    assert code == 0, out
    assert "pat-na1-real-token-0042" not in out and "Zq8-real-pw" not in out


def test_a_missing_pii_key_is_refused_by_check_config(clean):
    code, out = _check()
    assert code == 2 and "C360_PII_KEY is not set" in out


# --------------------------------------------------------------------------- logs and alerts

EMAIL, PHONE = "zelda.quist@example.org", "+86 139 1234 5678"
SECRETS = {"C360_PII_KEY": "pii-key-planted-7c1e9a55d0", "C360_CRM_TOKEN": "crm-token-planted-44b1",
           "C360_AUDIT_KEY": "audit-key-planted-93aa01f2",
           "C360_ALERT_WEBHOOK": "https://hooks.example/T000/planted-webhook-path"}
URL_PASSWORD = "url-password-planted-61"
DAY = dt.date(2026, 3, 2)


def _all_files(root: Path):
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def test_nothing_secret_or_personal_reaches_a_log_at_debug(tmp_path):
    """Plant PII (in web events: a trait and a line no parser reads) and secrets (every secret
    knob, credentials in the CRM URL), run extracts at -v in real processes, then grep their
    output and every file under C360_HOME."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("C360_", "AIRFLOW_CONN_"))}
    env.update(SECRETS, C360_HOME=str(home), C360_CRM_MAX_ATTEMPTS="1", C360_CRM_TIMEOUT_SECONDS="1",
               C360_CRM_BASE_URL=f"http://crm-user:{URL_PASSWORD}@127.0.0.1:9")
    landing = home / "landing"
    write_web_part(landing, DAY, 1, [
        event("m-1", DAY, type="identify", userId="1042", traits={"email": EMAIL, "phone": PHONE}),
        f'{{"messageId": "m-2", "broken": "{EMAIL} {PHONE}"',  # not JSON: quarantined, logged
        "\x00\x01 binary junk " + EMAIL])
    runs = [subprocess.run([sys.executable, "-m", "customer360.cli", "-v", *args], env=env,
                           capture_output=True, text=True, timeout=300)
            for args in (["extract", "web", "--date", DAY.isoformat()],
                         ["extract", "crm", "--date", DAY.isoformat()],
                         ["audit", "verify"])]
    assert runs[0].returncode == 0, runs[0].stderr[-3000:]
    assert runs[1].returncode != 0  # no CRM there: its error is logged and printed
    output = "".join(r.stdout + r.stderr for r in runs)
    assert "DEBUG" in output  # -v took effect
    assert "crm-user:***@" not in output or URL_PASSWORD not in output
    for value in [*SECRETS.values(), URL_PASSWORD]:
        assert value not in output, f"a planted secret reached the output: {value[:12]}..."
        for path in _all_files(home):
            assert value.encode() not in path.read_bytes(), f"{value[:12]}... in {path}"
    for pii in (EMAIL, "13912345678", "139 1234 5678"):
        assert pii not in output, f"planted PII reached the output: {pii}"
        # where personal data may be: the landing copies, raw and quarantine batches (the
        # restricted zones). Anything else (audit, artifacts, state, logs) must not hold it.
        for path in _all_files(home):
            rel = path.relative_to(home).as_posix()
            if rel.startswith(("landing/", "lake/raw/", "lake/quarantine/")):
                continue
            assert pii.encode() not in path.read_bytes(), f"{pii} in {rel}"


def test_records_are_redacted_whatever_handler_or_level(caplog, monkeypatch):
    """The masking is the process's record factory: a handler added after it (Airflow's), a
    library's logger, a traceback, DEBUG: all redacted."""
    monkeypatch.setenv("C360_CRM_TOKEN", "crm-token-planted-44b1")
    from customer360.core import masking

    masking.install_log_masking()
    log = logging.getLogger("some.library")
    with caplog.at_level(logging.DEBUG):
        log.debug("row %s failed: %s", 7, f"{EMAIL},{PHONE}")
        log.info("GET http://u:%s@crm/x Authorization: Bearer %s", URL_PASSWORD, "crm-token-planted-44b1")
        try:
            raise ValueError(f"could not parse {EMAIL}")
        except ValueError:
            log.exception("failed")
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    for value in (EMAIL, "1234 5678", URL_PASSWORD, "crm-token-planted-44b1"):
        assert value not in text, value
    assert "z***@e***.org" in text and "Bearer ***" in text and "could not parse" in text


def test_alerts_mask_pii_and_the_airflow_connections_token(tmp_path, monkeypatch):
    from customer360.core import alerts
    from customer360.core.settings import register_secret

    monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
    register_secret("airflow-conn-token-5150")  # what crm_connection() does under Airflow

    class TI:
        task_id, dag_id, try_number = "extract_crm", "c360_daily", 1

    alerts.on_task_failure({"task_instance": TI(), "ds": "2026-03-02", "exception": RuntimeError(
        f"401 for token airflow-conn-token-5150 on contact {EMAIL} / {PHONE}")})
    files = list((tmp_path / "home" / "artifacts" / "alerts").glob("*.json"))
    assert len(files) == 1
    text = files[0].read_text()
    assert "airflow-conn-token-5150" not in text and EMAIL not in text and "1234 5678" not in text
    assert "401 for token" in text
