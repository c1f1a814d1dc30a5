"""Every knob of the pipeline, read from the environment and validated in one place.

:data:`KNOBS` lists every environment variable the package reads (name, default, meaning);
:func:`get_settings` reads them through it into one frozen :class:`Settings`, so code asks
``settings.<field>`` and never the environment (tests/test_settings_knobs.py checks that the
README table, this registry and the code agree). Paths of the repository checkout
(``dbt_project/``, ``expectations/``, ``models/``, ``dags/``) and of ``$C360_HOME`` are
worked out here and nowhere else.

Outside Airflow the CRM comes from ``C360_CRM_BASE_URL`` / ``C360_CRM_TOKEN``; under
Airflow from the connection ``crm_api`` (see :func:`crm_connection`). A missing or
malformed variable raises :class:`SettingsError` naming the variable, never its value
when the value is a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

CRM_CONNECTION_ID = "crm_api"
RUN_LOCK_TOKEN_VAR = "C360_RUN_LOCK_TOKEN"
# The checkout the package runs from (it is installed editable): dags/, dbt_project/,
# expectations/, models/. plugins/customer360/core/settings.py -> three levels up from plugins.
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_GATE_CHUNK_ROWS = 500_000


class SettingsError(ValueError):
    """A configuration variable is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Knob:
    """One environment variable of the pipeline.

    ``default`` is written as it would be in the environment: ``$C360_HOME`` and ``<repo>`` in
    it stand for the home and the repository checkout, "" means unset (the feature is off, or
    the variable is required where it is used). A ``secret`` value is never shown.
    """

    name: str
    default: str
    meaning: str
    secret: bool = False


# The warehouse engines: each is a dbt target of the same name in dbt_project/profiles.yml.
ENGINES = ("duckdb", "spark")

KNOBS: dict[str, Knob] = {k.name: k for k in (
    # Where things are.
    Knob("C360_HOME", "./data",
         "Where everything is written: lake, warehouse, published, artifacts, audit, Airflow's home."),
    Knob("C360_LANDING", "$C360_HOME/landing",
         "What the sources drop: web/ and pos/ folders as in docs/sources.md."),
    Knob("C360_DUCKDB_TEMP_DIR", "$C360_HOME/tmp/duckdb",
         "Where DuckDB spills when a query outgrows the memory limit (pipeline and dbt)."),
    Knob("C360_DBT_PROJECT_DIR", "<repo>/dbt_project", "The dbt project that builds the warehouse."),
    Knob("C360_EXPECTATIONS_DIR", "<repo>/expectations",
         "The quality gates' expectation suites, one folder a gate."),
    Knob("C360_MODELS_DIR", "<repo>/models", "The ML model specs, one YAML a model."),
    Knob("C360_DAGS_FOLDER", "<repo>/dags",
         "The DAG folder `c360 run`, `backfill`, `demo` and `airflow` give Airflow."),
    # The CRM API.
    Knob("C360_CRM_BASE_URL", "",
         "The CRM API's http(s) base URL outside Airflow (under Airflow: the connection crm_api); "
         "required by the CRM extract."),
    Knob("C360_CRM_TOKEN", "",
         "The CRM API's bearer token outside Airflow (the crm_api connection's password under "
         "Airflow); also the token `c360 crm-server` accepts.", secret=True),
    Knob("C360_CRM_PAGE_SIZE", "100",
         "Records asked for per CRM list page (`limit`; HubSpot allows at most 100)."),
    Knob("C360_CRM_SEARCH_PAGE_SIZE", "200",
         "Records asked for per CRM search page (`limit`; HubSpot allows at most 200)."),
    Knob("C360_CRM_PAGES_PER_BATCH", "10", "CRM pages per raw batch, and per commit of the watermark."),
    Knob("C360_CRM_LOOKBACK_SECONDS", "600",
         "How far before its watermark a CRM search starts again: HubSpot's search is eventually "
         "consistent (the versions re-read there are skipped)."),
    Knob("C360_CRM_FUTURE_TOLERANCE_SECONDS", "300",
         "How far past the extraction's own clock a CRM last-modified time may be (clock skew) "
         "before the version is landed flagged `_modified_in_future`; the watermark never "
         "passes the extraction's clock minus C360_CRM_LOOKBACK_SECONDS either way."),
    Knob("C360_CRM_SEARCH_PER_SECOND", "4",
         "Most CRM search requests sent in any second (HubSpot allows 5); 0: no limit."),
    Knob("C360_CRM_REQUESTS_PER_TEN_SECONDS", "90",
         "Most other CRM requests (list, associations) sent in any 10 seconds (HubSpot allows "
         "100 to 190 by plan); 0: no limit."),
    Knob("C360_CRM_MAX_PAGES", "100000",
         "Most CRM requests for one object in one run: past it the extract fails (pages that "
         "never end)."),
    Knob("C360_CRM_MAX_ATTEMPTS", "8",
         "Attempts per CRM request, over every retryable failure (429, 5xx, cut page, timeout)."),
    Knob("C360_CRM_BACKOFF_SECONDS", "0.5",
         "First wait before a CRM retry, doubled each retry (with jitter)."),
    Knob("C360_CRM_BACKOFF_MAX_SECONDS", "30", "Longest wait before a CRM retry."),
    Knob("C360_CRM_MAX_RETRY_AFTER_SECONDS", "300", "Longest sleep on one Retry-After of the CRM."),
    Knob("C360_CRM_TIMEOUT_SECONDS", "60", "Read timeout of one CRM request."),
    Knob("C360_CRM_PROPERTIES", "<repo>/config/crm_properties.yml",
         "The CRM property map: the portal's internal property names of our columns and its "
         "enumeration values mapped to ours (HubSpot's standard names by default)."),
    # Landing files.
    Knob("C360_MAX_DECOMPRESSED_BYTES", str(2**30),
         "Most bytes one landing file may hold once decompressed (a gzip bomb is refused at it, "
         "read as a stream): past it the file is quarantined whole with the reason."),
    Knob("C360_MAX_LINE_BYTES", str(2**20),
         "Longest line of a landing file, in bytes (Segment refuses events over 32 KB): a longer "
         "line is quarantined with its line number and the rest of its file loads."),
    # The warehouse.
    Knob("C360_PII_KEY", "",
         "The key (16 characters or more) of the HMAC-SHA256 hashes of emails and phones; "
         "required wherever hashes are made.", secret=True),
    Knob("C360_AUDIT_KEY", "",
         "The key (16 characters or more) of the audit chain's HMAC-SHA256; unset: a sub-key "
         "derived from C360_PII_KEY (HMAC of a fixed label), and with neither set the chain is "
         "unkeyed (SHA-256) and `c360 audit verify` says so.", secret=True),
    Knob("C360_REPORTING_CURRENCY", "CNY", "ISO-4217 currency all money is converted to."),
    Knob("C360_DUCKDB_MEMORY_LIMIT", "auto",
         "DuckDB's memory limit (pipeline and dbt), like `4GB`; `auto` is half of the machine's "
         "memory (of its cgroup limit when that is lower)."),
    Knob("C360_DUCKDB_THREADS", "2", "DuckDB's threads (pipeline and dbt)."),
    Knob("C360_DBT_THREADS", "1",
         "dbt threads (models built at once); one writer is safest on a DuckDB file."),
    Knob("C360_ENGINE", "duckdb",
         "The engine dbt builds the warehouse on: duckdb (one file, one machine) or spark "
         "(dbt-spark; docs/engines.md)."),
    Knob("C360_SPARK_MASTER", "local[2]",
         "Spark master of the in-process session the spark engine starts (local[N], or a "
         "cluster's spark:// URL)."),
    Knob("C360_SPARK_SHUFFLE_PARTITIONS", "4",
         "spark.sql.shuffle.partitions of that session: Spark's default 200 is for clusters."),
    Knob("C360_ML_SCORING_ONLY", "0",
         "1 builds only the scoring snapshot of ml_customer_features; the ML stage sets it for "
         "its own build (1 on days no model trains)."),
    # The quality gates.
    Knob("C360_GATE_CHUNK_ROWS", str(DEFAULT_GATE_CHUNK_ROWS),
         "Rows a gate validates at a time (bounds a gate's memory)."),
    Knob("C360_DBT_RESULTS", "",
         "dbt run_results.json paths or globs, separated by `:`, that the gates read instead of "
         "each layer's kept results."),
    Knob("C360_QUARANTINE_WARN_SHARE", "",
         "Share (0-1) of a batch's records the loaders may quarantine before the raw gate warns; "
         "unset: each entity's value in expectations/raw/loader_quarantine.yml."),
    Knob("C360_QUARANTINE_ERROR_SHARE", "",
         "Share (0-1) of a batch's records quarantined by the loaders past which the raw gate "
         "fails; unset: each entity's value in expectations/raw/loader_quarantine.yml."),
    # Publication and alerts.
    Knob("C360_PUBLISH_POSTGRES_DSN", "",
         "Publish the marts to PostgreSQL too: a postgresql:// URL or a libpq key=value string.",
         secret=True),
    Knob("C360_PUBLISH_LOCK_TIMEOUT_SECONDS", "30",
         "Longest wait of one PostgreSQL publish for a lock an analyst's open transaction holds; "
         "past it the publish rolls back and tries again (3 attempts in all), then fails."),
    Knob("C360_PUBLISH_KEEP_VERSIONS", "3",
         "Publications kept under published/v<N>/ (the current one included), so that a reader "
         "still inside an older one can finish; an erasure keeps only the current one."),
    Knob("C360_RUN_LOCK_TOKEN", "",
         "Set by the process holding the run lock for its child processes (the DAG's tasks under "
         "`c360 run`), so that they go on under its lock; not to be set by hand."),
    Knob("C360_ALERT_WEBHOOK", "",
         "An http(s) URL failure alerts are POSTed to (JSON), besides the log line and the file "
         "under artifacts/alerts.", secret=True),
)}
SECRET_VARS = tuple(name for name, knob in KNOBS.items() if knob.secret)


def _env(name: str) -> str | None:
    """The variable's value, or None when unset or blank. Only variables of :data:`KNOBS`."""
    if name not in KNOBS:  # a programming error: every variable is registered, documented
        raise KeyError(f"{name} is not in customer360.core.settings.KNOBS")
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _raw(name: str, home: Path | None = None) -> str | None:
    """The variable's value, else its default from :data:`KNOBS` (None when that is unset)."""
    value = _env(name)
    if value is not None:
        return value
    default = KNOBS[name].default
    if not default:
        return None
    if home is not None:
        default = default.replace("$C360_HOME", str(home))
    return default.replace("<repo>", str(REPO_ROOT))


def _require(name: str, value: str | None, why: str) -> str:
    if not value:
        raise SettingsError(f"{name} is not set: {why}")
    return value


# Values that are someone's placeholder, not a secret: deploy/.env.example's ("change-me...")
# and the usual others. A key from an example file passes any length check, and hashes keyed
# with a published key are reversible by dictionary: refused wherever a secret is read.
_PLACEHOLDER = re.compile(r"(?i)^\W*(change[-_ ]?me|replace[-_ ]?me|your[-_ ]|example|placeholder|"
                          r"dummy|xxxx|todo|secret\W*$|password\W*$|<[^>]*>$)")


def is_placeholder(value: str | None) -> bool:
    return bool(value) and bool(_PLACEHOLDER.match(value.strip()))


def _refuse_placeholder(name: str, value: str | None, part: str = "") -> None:
    if is_placeholder(value):
        raise SettingsError(f"{name}{part} is a placeholder (like deploy/.env.example's), not a "
                            "secret: set a real, random value in .env")


def _dsn_password(dsn: str | None) -> str | None:
    if not dsn:
        return None
    if "://" in dsn:
        return urlparse(dsn).password
    match = re.search(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn)
    return match.group(1).strip("'") if match else None


def check_secrets() -> list[str]:
    """Refuse (:class:`SettingsError`) any secret knob set to a placeholder, the publish DSN's
    password included; returns the names of the secret knobs that are set. What services run
    at start (``c360 check-config``), and what each secret's accessor checks for its own."""
    found = []
    for name in SECRET_VARS:
        value = _env(name)
        if value is None:
            continue
        found.append(name)
        if name == "C360_PUBLISH_POSTGRES_DSN":
            _refuse_placeholder(name, _dsn_password(value), "'s password")
        elif name != "C360_ALERT_WEBHOOK":
            _refuse_placeholder(name, value)
    if _crm_from_airflow() is not None:  # refuses a placeholder password itself
        found.append(f"airflow connection {CRM_CONNECTION_ID}")
    return found


def _path(name: str, home: Path | None = None) -> Path:
    return Path(_raw(name, home)).expanduser().resolve()


def _int(name: str, minimum: int = 0) -> int:
    raw = _raw(name)
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(name: str, minimum: float = 0.0) -> float:
    raw = _raw(name)
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum or value == float("inf"):  # also refuses nan
        raise SettingsError(f"{name} must be a finite number >= {minimum:g}, got {raw!r}")
    return value


def _share(name: str) -> float | None:
    """An optional share in [0, 1]."""
    if _raw(name) is None:
        return None
    value = _float(name)
    if value > 1:
        raise SettingsError(f"{name} must be a share between 0 and 1, got {value:g}")
    return value


def _bool(name: str) -> bool:
    raw = _raw(name).lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be 0 or 1, got {raw!r}")


def _url(name: str) -> str | None:
    """An optional http(s) URL; a secret one is never repeated in the error."""
    url = _raw(name)
    if url is None:
        return None
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        shown = "" if KNOBS[name].secret else f", got {url!r}"
        raise SettingsError(f"{name} must be an http(s) URL{shown}")
    return url


@dataclass(frozen=True)
class CrmConnection:
    base_url: str
    token: str = field(repr=False)
    source: str  # where it came from: "airflow connection crm_api" or "environment"

    def __repr__(self) -> str:  # never show the token
        return f"CrmConnection(base_url={self.base_url!r}, source={self.source!r})"


@dataclass(frozen=True)
class Settings:
    """Every knob, validated (:func:`get_settings` makes one; the comment names the variable).

    Secrets are never fields that show: the PII key and the CRM token are read when asked
    for (:meth:`pii_key`, :func:`crm_connection`), the DSN and the webhook are ``repr=False``.
    """

    home: Path                          # C360_HOME
    landing: Path                       # C360_LANDING
    reporting_currency: str             # C360_REPORTING_CURRENCY
    duckdb_memory_limit: str            # C360_DUCKDB_MEMORY_LIMIT
    duckdb_threads: int                 # C360_DUCKDB_THREADS
    duckdb_temp_dir: Path               # C360_DUCKDB_TEMP_DIR
    dbt_project_dir: Path               # C360_DBT_PROJECT_DIR
    dbt_threads: int                    # C360_DBT_THREADS
    engine: str                         # C360_ENGINE
    spark_master: str                   # C360_SPARK_MASTER
    spark_shuffle_partitions: int       # C360_SPARK_SHUFFLE_PARTITIONS
    ml_scoring_only: bool               # C360_ML_SCORING_ONLY
    expectations_dir: Path              # C360_EXPECTATIONS_DIR
    models_dir: Path                    # C360_MODELS_DIR
    dags_folder: Path                   # C360_DAGS_FOLDER
    crm_page_size: int                  # C360_CRM_PAGE_SIZE
    crm_search_page_size: int           # C360_CRM_SEARCH_PAGE_SIZE
    crm_lookback_seconds: float         # C360_CRM_LOOKBACK_SECONDS
    crm_future_tolerance_seconds: float  # C360_CRM_FUTURE_TOLERANCE_SECONDS
    crm_search_per_second: float        # C360_CRM_SEARCH_PER_SECOND
    crm_requests_per_ten_seconds: float  # C360_CRM_REQUESTS_PER_TEN_SECONDS
    crm_max_pages: int                  # C360_CRM_MAX_PAGES
    crm_pages_per_batch: int            # C360_CRM_PAGES_PER_BATCH
    crm_max_attempts: int               # C360_CRM_MAX_ATTEMPTS
    crm_backoff_seconds: float          # C360_CRM_BACKOFF_SECONDS
    crm_backoff_max_seconds: float      # C360_CRM_BACKOFF_MAX_SECONDS
    crm_max_retry_after_seconds: float  # C360_CRM_MAX_RETRY_AFTER_SECONDS
    crm_timeout_seconds: float          # C360_CRM_TIMEOUT_SECONDS
    crm_properties: Path                # C360_CRM_PROPERTIES
    gate_chunk_rows: int                # C360_GATE_CHUNK_ROWS
    max_decompressed_bytes: int         # C360_MAX_DECOMPRESSED_BYTES
    max_line_bytes: int                 # C360_MAX_LINE_BYTES
    dbt_results: tuple[str, ...]        # C360_DBT_RESULTS (split on os.pathsep)
    quarantine_warn_share: float | None = None   # C360_QUARANTINE_WARN_SHARE
    quarantine_error_share: float | None = None  # C360_QUARANTINE_ERROR_SHARE
    publish_lock_timeout_seconds: float = 30.0  # C360_PUBLISH_LOCK_TIMEOUT_SECONDS
    publish_keep_versions: int = 3      # C360_PUBLISH_KEEP_VERSIONS
    publish_postgres_dsn: str | None = field(default=None, repr=False)  # C360_PUBLISH_POSTGRES_DSN
    alert_webhook: str | None = field(default=None, repr=False)         # C360_ALERT_WEBHOOK
    run_lock_token: str | None = None   # C360_RUN_LOCK_TOKEN

    @property
    def repo_root(self) -> Path:
        """The repository checkout the package runs from (not a knob)."""
        return REPO_ROOT

    # Layout of $C360_HOME (docs/architecture.md, "Runtime layout").
    @property
    def lake_raw(self) -> Path:
        return self.home / "lake" / "raw"

    @property
    def quarantine(self) -> Path:
        return self.home / "lake" / "quarantine"

    @property
    def lake_broken(self) -> Path:
        """Raw and quarantine batches a repair set aside as unreadable (``c360 doctor``)."""
        return self.home / "lake" / "broken"

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

    @property
    def dbt_target_dir(self) -> Path:
        return self.dbt_artifacts_dir / "target"

    @property
    def dbt_logs_dir(self) -> Path:
        return self.dbt_artifacts_dir / "logs"

    def dbt_results_path(self, layer: str) -> Path:
        """Where a dbt layer's run_results.json is kept: the pipeline writes it, the gates and
        the report read it (one place, so a layer's test warnings always reach its gate)."""
        return self.dbt_artifacts_dir / "run_results" / f"{layer}.json"

    @property
    def model_artifacts_dir(self) -> Path:
        """The ML registry's artifacts: ``<model>/<version>/`` under it."""
        return self.artifacts / "models"

    @property
    def data_docs_dir(self) -> Path:
        return self.artifacts / "data_docs"

    @property
    def reports_dir(self) -> Path:
        return self.artifacts / "reports"

    @property
    def alerts_dir(self) -> Path:
        return self.artifacts / "alerts"

    @property
    def published_db(self) -> Path:
        """The published DuckDB file (marts and ML outputs), what consumers read: a symlink
        into ``published/current/`` (the current version folder, serve/publish.py)."""
        return self.published_dir / "c360.duckdb"

    @property
    def published_marts_dir(self) -> Path:
        """The published tables as Parquet, one file a table."""
        return self.published_dir / "marts"

    @property
    def publication_path(self) -> Path:
        """publication.json: what the last publication holds (date, tables, checksums)."""
        return self.published_dir / "publication.json"

    @property
    def audiences_dir(self) -> Path:
        return self.published_dir / "audiences"

    @property
    def audit_db(self) -> Path:
        """The audit store: gate results, events, erasures (never in the warehouse file)."""
        return self.audit_dir / "audit.duckdb"

    @property
    def reconciliation_path(self) -> Path:
        """The extracts' reconciliation lines, appended one JSON line a batch."""
        return self.audit_dir / "reconciliation.jsonl"

    @property
    def audit_anchors_path(self) -> Path:
        """Append-only heads of the audit chain (one JSON line a publication or an erasure),
        outside the audit store so that truncating or deleting it shows."""
        return self.published_dir / "audit_anchors.jsonl"

    @property
    def erased_keys_copy_path(self) -> Path:
        """The erased keys' tokens again (one JSON line each), outside the audit store so that
        losing audit.duckdb does not forget who was erased."""
        return self.state_dir / "erased_keys.jsonl"

    @property
    def run_lock_path(self) -> Path:
        """Held by a pipeline run, so two runs never write one home at once."""
        return self.home / ".run.lock"

    @property
    def demo_env_path(self) -> Path:
        """Demo-only: the generated CRM token and PII key of ``c360 demo`` (mode 0600)."""
        return self.home / "demo.env"

    def pii_key(self) -> bytes:
        """The HMAC key for pseudonymizing PII; required wherever hashes are made."""
        key = _require("C360_PII_KEY", _env("C360_PII_KEY"),
                       "it keys the HMAC-SHA256 hashes of emails and phones in published tables")
        if len(key) < 16:
            raise SettingsError("C360_PII_KEY must be at least 16 characters long")
        _refuse_placeholder("C360_PII_KEY", key)
        return key.encode("utf-8")

    def audit_key(self) -> bytes | None:
        """The HMAC key of the audit chain: ``C360_AUDIT_KEY``, else a sub-key of the PII key
        (domain-separated, so that neither key's MACs can stand in for the other's), else None
        (an unkeyed chain: tamper-evident only against someone who cannot recompute SHA-256)."""
        key = _env("C360_AUDIT_KEY")
        if key is not None:
            if len(key) < 16:
                raise SettingsError("C360_AUDIT_KEY must be at least 16 characters long")
            _refuse_placeholder("C360_AUDIT_KEY", key)
            return key.encode("utf-8")
        if _env("C360_PII_KEY") is None:
            return None
        return hmac.new(self.pii_key(), b"customer360 audit chain v1", hashlib.sha256).digest()

    def crm_token(self) -> str:
        """The CRM bearer token of the environment (``c360 crm-server`` serves with it)."""
        token = _require("C360_CRM_TOKEN", _env("C360_CRM_TOKEN"), "set it to the CRM API bearer token")
        _refuse_placeholder("C360_CRM_TOKEN", token)
        return token


_CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"),                      # cgroup v2
                  Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))   # cgroup v1


def machine_memory_bytes() -> int:
    """The memory this process may use: the machine's, or its cgroup's limit when lower (in a
    container DuckDB would otherwise size itself by the host and be killed)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:  # "max", or v1's huge "no limit" number
            total = int(text)
    return total


def machine_memory_limit(fraction: float = 0.5) -> str:
    """``C360_DUCKDB_MEMORY_LIMIT=auto``: half the memory, in whole MB, at least 512MB.

    Half, not DuckDB's own 80%: the stage's Python (pandas and scikit-learn in the ML stage,
    dbt itself) and Airflow's processes live beside the DuckDB instance, and DuckDB spills to
    ``C360_DUCKDB_TEMP_DIR`` past its limit rather than failing. The machine's total, not what
    is free now: the value is part of dbt's profile, and one that changed from run to run
    would make dbt re-parse the project every time.
    """
    return f"{max(int(machine_memory_bytes() * fraction) // 2**20, 512)}MB"


def get_settings(home: str | Path | None = None) -> Settings:
    """The settings of this process's environment, every knob of :data:`KNOBS` validated.

    ``home`` replaces ``$C360_HOME`` (and what defaults to a place in it): for the demo and
    tests that build a home elsewhere.
    """
    home = Path(home).expanduser().resolve() if home is not None else _path("C360_HOME")
    currency = _raw("C360_REPORTING_CURRENCY").upper()
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise SettingsError(
            f"C360_REPORTING_CURRENCY must be an ISO-4217 code like CNY, got {currency!r}")
    mem = _raw("C360_DUCKDB_MEMORY_LIMIT")
    if mem.strip().lower() == "auto":
        mem = machine_memory_limit()
    elif not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", mem, re.IGNORECASE):
        raise SettingsError(f"C360_DUCKDB_MEMORY_LIMIT must look like 4GB or be auto, got {mem!r}")
    dsn = _raw("C360_PUBLISH_POSTGRES_DSN")
    if dsn is not None and not dsn.startswith(("postgresql://", "postgres://", "host=", "dbname=")):
        raise SettingsError("C360_PUBLISH_POSTGRES_DSN must be a postgresql:// URL or a libpq "
                            "key=value string")
    _refuse_placeholder("C360_PUBLISH_POSTGRES_DSN", _dsn_password(dsn), "'s password")
    results = _raw("C360_DBT_RESULTS")
    engine = (_raw("C360_ENGINE") or "duckdb").strip().lower()
    if engine not in ENGINES:
        raise SettingsError(f"C360_ENGINE must be one of {', '.join(ENGINES)}, got {engine!r}")
    return Settings(
        home=home,
        landing=_path("C360_LANDING", home),
        reporting_currency=currency,
        duckdb_memory_limit=mem,
        duckdb_threads=_int("C360_DUCKDB_THREADS", minimum=1),
        duckdb_temp_dir=_path("C360_DUCKDB_TEMP_DIR", home),
        dbt_project_dir=_path("C360_DBT_PROJECT_DIR"),
        dbt_threads=_int("C360_DBT_THREADS", minimum=1),
        engine=engine,
        spark_master=_raw("C360_SPARK_MASTER"),
        spark_shuffle_partitions=_int("C360_SPARK_SHUFFLE_PARTITIONS", minimum=1),
        ml_scoring_only=_bool("C360_ML_SCORING_ONLY"),
        expectations_dir=_path("C360_EXPECTATIONS_DIR"),
        models_dir=_path("C360_MODELS_DIR"),
        dags_folder=_path("C360_DAGS_FOLDER"),
        crm_page_size=_int("C360_CRM_PAGE_SIZE", minimum=1),
        crm_search_page_size=_int("C360_CRM_SEARCH_PAGE_SIZE", minimum=1),
        crm_lookback_seconds=_float("C360_CRM_LOOKBACK_SECONDS"),
        crm_future_tolerance_seconds=_float("C360_CRM_FUTURE_TOLERANCE_SECONDS"),
        crm_search_per_second=_float("C360_CRM_SEARCH_PER_SECOND"),
        crm_requests_per_ten_seconds=_float("C360_CRM_REQUESTS_PER_TEN_SECONDS"),
        crm_max_pages=_int("C360_CRM_MAX_PAGES", minimum=1),
        crm_pages_per_batch=_int("C360_CRM_PAGES_PER_BATCH", minimum=1),
        crm_max_attempts=_int("C360_CRM_MAX_ATTEMPTS", minimum=1),
        crm_backoff_seconds=_float("C360_CRM_BACKOFF_SECONDS"),
        crm_backoff_max_seconds=_float("C360_CRM_BACKOFF_MAX_SECONDS"),
        crm_max_retry_after_seconds=_float("C360_CRM_MAX_RETRY_AFTER_SECONDS"),
        crm_timeout_seconds=_float("C360_CRM_TIMEOUT_SECONDS", minimum=0.001),
        crm_properties=_path("C360_CRM_PROPERTIES"),
        gate_chunk_rows=_int("C360_GATE_CHUNK_ROWS", minimum=1),
        max_decompressed_bytes=_int("C360_MAX_DECOMPRESSED_BYTES", minimum=1),
        max_line_bytes=_int("C360_MAX_LINE_BYTES", minimum=1),
        dbt_results=tuple(p for p in (results or "").split(os.pathsep) if p.strip()),
        quarantine_warn_share=_share("C360_QUARANTINE_WARN_SHARE"),
        quarantine_error_share=_share("C360_QUARANTINE_ERROR_SHARE"),
        publish_lock_timeout_seconds=_float("C360_PUBLISH_LOCK_TIMEOUT_SECONDS", minimum=0.001),
        publish_keep_versions=_int("C360_PUBLISH_KEEP_VERSIONS", minimum=1),
        publish_postgres_dsn=dsn,
        alert_webhook=_url("C360_ALERT_WEBHOOK"),
        run_lock_token=_raw(RUN_LOCK_TOKEN_VAR),
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
    register_secret(token)  # not a knob's value: secret_values() must still know it
    _refuse_placeholder(f"the password of the Airflow connection {CRM_CONNECTION_ID}", token)
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
    _refuse_placeholder("C360_CRM_TOKEN", token)
    return CrmConnection(base_url=url.rstrip("/"), token=token, source="environment")


# Secrets met at run time outside the knobs (the CRM token of the Airflow connection).
_RUNTIME_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """A secret read from somewhere other than a secret knob: from now on it is one of
    :func:`secret_values`, so every log line and alert masks it."""
    if value and len(value) >= 4:
        _RUNTIME_SECRETS.add(value)


def secret_values() -> list[str]:
    """Values that must never appear in logs or outputs (used by redaction and tests): the
    secret knobs' values and the secrets registered at run time."""
    found = [v for v in (os.environ.get(n) for n in SECRET_VARS) if v and len(v) >= 4]
    return found + sorted(_RUNTIME_SECRETS - set(found))


def crm_configured() -> bool:
    """Whether the environment names a CRM (``C360_CRM_BASE_URL`` and ``C360_CRM_TOKEN``)."""
    return bool(_env("C360_CRM_BASE_URL") and _env("C360_CRM_TOKEN"))


# --------------------------------------------------------------------------- child processes
# The environment is written (never read for a knob) where a library or a child process reads
# it: dbt's env_var() (values from warehouse.dbt_runner.build_env), Airflow's subprocesses
# (pipeline.airflow.airflow_env), the demo's generated secrets.

# Third-party variables set when the user has not: they are the libraries' knobs, not ours.
LIBRARY_DEFAULTS = {"GX_ANALYTICS_ENABLED": "false"}  # Great Expectations: no usage statistics


def apply_library_defaults() -> None:
    for name, value in LIBRARY_DEFAULTS.items():
        os.environ.setdefault(name, value)


def child_environment() -> dict[str, str]:
    """A copy of this process's environment, for a child process to start from."""
    return dict(os.environ)


@contextmanager
def scoped_environment(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in this process's environment for the block only (dbt runs in-process
    and reads it), then put back what was there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
