"""Every knob of the pipeline, read from the environment and validated in one place.

Outside Airflow the CRM comes from ``C360_CRM_BASE_URL`` / ``C360_CRM_TOKEN``; under
Airflow from the connection ``crm_api`` (see :func:`crm_connection`). A missing or
malformed variable raises :class:`SettingsError` naming the variable, never its value
when the value is a secret.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

CRM_CONNECTION_ID = "crm_api"
SECRET_VARS = ("C360_CRM_TOKEN", "C360_PII_KEY", "C360_PUBLISH_POSTGRES_DSN")


class SettingsError(ValueError):
    """A configuration variable is missing or malformed; the message names it."""


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def _require(name: str, value: str | None, why: str) -> str:
    if not value:
        raise SettingsError(f"{name} is not set: {why}")
    return value


def _int(name: str, default: int, minimum: int = 0) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class CrmConnection:
    base_url: str
    token: str = field(repr=False)
    source: str  # where it came from: "airflow connection crm_api" or "environment"

    def __repr__(self) -> str:  # never show the token
        return f"CrmConnection(base_url={self.base_url!r}, source={self.source!r})"


@dataclass(frozen=True)
class Settings:
    home: Path
    landing: Path
    reporting_currency: str
    duckdb_memory_limit: str
    duckdb_threads: int
    crm_page_size: int
    publish_postgres_dsn: str | None = field(default=None, repr=False)

    # Layout of $C360_HOME (docs/architecture.md, "Runtime layout").
    @property
    def lake_raw(self) -> Path:
        return self.home / "lake" / "raw"

    @property
    def quarantine(self) -> Path:
        return self.home / "lake" / "quarantine"

    @property
    def state_dir(self) -> Path:
        """Manifests and watermarks of the extract tasks (never the warehouse file)."""
        return self.home / "lake" / "_state"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse" / "c360.duckdb"

    @property
    def published_dir(self) -> Path:
        return self.home / "published"

    @property
    def artifacts(self) -> Path:
        return self.home / "artifacts"

    @property
    def audit_dir(self) -> Path:
        return self.home / "audit"

    @property
    def simulation_dir(self) -> Path:
        """Demo-only: the simulated CRM and the ground truth. The pipeline never reads it."""
        return self.home / "simulation"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def dbt_artifacts_dir(self) -> Path:
        """dbt's target folder, logs and each layer's kept run results."""
        return self.artifacts / "dbt"

    def dbt_results_path(self, layer: str) -> Path:
        """Where a dbt layer's run_results.json is kept: the pipeline writes it, the gates and
        the report read it (one place, so a layer's test warnings always reach its gate)."""
        return self.dbt_artifacts_dir / "run_results" / f"{layer}.json"

    @property
    def duckdb_temp_dir(self) -> Path:
        return self.home / "tmp" / "duckdb"

    def pii_key(self) -> bytes:
        """The HMAC key for pseudonymizing PII; required wherever hashes are made."""
        key = _require("C360_PII_KEY", _env("C360_PII_KEY"),
                       "it keys the HMAC-SHA256 hashes of emails and phones in published tables")
        if len(key) < 16:
            raise SettingsError("C360_PII_KEY must be at least 16 characters long")
        return key.encode("utf-8")


def get_settings() -> Settings:
    home = Path(_env("C360_HOME", "./data")).expanduser().resolve()
    landing = Path(_env("C360_LANDING", str(home / "landing"))).expanduser().resolve()
    currency = _env("C360_REPORTING_CURRENCY", "CNY").upper()
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise SettingsError(
            f"C360_REPORTING_CURRENCY must be an ISO-4217 code like CNY, got {currency!r}")
    mem = _env("C360_DUCKDB_MEMORY_LIMIT", "4GB")
    if not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", mem, re.IGNORECASE):
        raise SettingsError(f"C360_DUCKDB_MEMORY_LIMIT must look like 4GB, got {mem!r}")
    dsn = _env("C360_PUBLISH_POSTGRES_DSN")
    if dsn is not None and not dsn.startswith(("postgresql://", "postgres://", "host=", "dbname=")):
        raise SettingsError("C360_PUBLISH_POSTGRES_DSN must be a postgresql:// URL or a libpq "
                            "key=value string")
    return Settings(
        home=home,
        landing=landing,
        reporting_currency=currency,
        duckdb_memory_limit=mem,
        duckdb_threads=_int("C360_DUCKDB_THREADS", 2, minimum=1),
        crm_page_size=_int("C360_CRM_PAGE_SIZE", 100, minimum=1),
        publish_postgres_dsn=dsn,
    )


def _crm_from_airflow() -> CrmConnection | None:
    """The ``crm_api`` Airflow connection, when running inside Airflow and it is defined."""
    if not (os.environ.get("AIRFLOW_CTX_DAG_ID") or os.environ.get(f"AIRFLOW_CONN_{CRM_CONNECTION_ID.upper()}")):
        return None
    try:
        from airflow.sdk import BaseHook
    except Exception:  # airflow absent or too old: fall back to the environment
        return None
    try:
        conn = BaseHook.get_connection(CRM_CONNECTION_ID)
    except Exception:
        return None
    host = conn.host or ""
    if host and "://" not in host:
        scheme = conn.schema or "http"
        host = f"{scheme}://{host}"
    if conn.port and host and urlparse(host).port is None:
        host = f"{host}:{conn.port}"
    token = conn.password or (conn.extra_dejson or {}).get("token")
    if not host or not token:
        raise SettingsError(f"Airflow connection {CRM_CONNECTION_ID!r} needs a host and a "
                            "password (the bearer token)")
    return CrmConnection(base_url=host.rstrip("/"), token=token,
                         source=f"airflow connection {CRM_CONNECTION_ID}")


def crm_connection() -> CrmConnection:
    """Where the CRM API is and how to authenticate: Airflow connection first, then env vars."""
    conn = _crm_from_airflow()
    if conn is not None:
        return conn
    url = _require("C360_CRM_BASE_URL", _env("C360_CRM_BASE_URL"),
                   "set it to the CRM API base URL, e.g. http://127.0.0.1:8765, "
                   f"or define the Airflow connection {CRM_CONNECTION_ID!r}")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SettingsError(f"C360_CRM_BASE_URL must be an http(s) URL, got {url!r}")
    token = _require("C360_CRM_TOKEN", _env("C360_CRM_TOKEN"),
                     "set it to the CRM API bearer token")
    return CrmConnection(base_url=url.rstrip("/"), token=token, source="environment")


def secret_values() -> list[str]:
    """Values that must never appear in logs or outputs (used by redaction and tests)."""
    return [v for v in (os.environ.get(n) for n in SECRET_VARS) if v and len(v) >= 4]
