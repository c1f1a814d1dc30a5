"""One settings object owns every knob and path.

- the README's knob table is exactly ``settings.KNOBS`` (names and defaults), and every knob
  of the registry is read by the settings (so neither can drift from the code);
- nothing in plugins/ or dags/ reads the environment outside ``customer360/core/settings.py``
  (writing it for a child process or for dbt is allowed);
- a bad value raises :class:`SettingsError` naming the variable (never showing a secret);
- the paths of the checkout and of ``$C360_HOME`` come from the settings, laid out as before.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from customer360.core import settings as settings_mod
from customer360.core.settings import KNOBS, REPO_ROOT, SettingsError, get_settings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS_FILE = ROOT / "plugins" / "customer360" / "core" / "settings.py"
_ROW = re.compile(r"^\|\s*`(?P<name>[A-Z0-9_]+)`\s*\|\s*(?P<default>[^|]*?)\s*\|\s*(?P<meaning>.*?)\s*\|\s*$")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No knob set, except a home in tmp_path."""
    for name in KNOBS:
        monkeypatch.delenv(name, raising=False)
    for name in ("AIRFLOW_CTX_DAG_ID", "AIRFLOW_CONN_CRM_API"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("C360_HOME", str(tmp_path / "home"))
    return monkeypatch


# --------------------------------------------------------------------------- the README table

def readme_knobs() -> dict[str, str]:
    """{variable: default cell} of the README's knob table (the one headed Variable|Default)."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines)
                 if re.match(r"^\|\s*Variable\s*\|\s*Default\s*\|\s*Meaning\s*\|", line))
    rows: dict[str, str] = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        match = _ROW.match(line)
        assert match, f"README knob table: cannot read row {line!r}"
        assert match["name"] not in rows, f"README knob table: {match['name']} twice"
        assert match["meaning"], f"README knob table: {match['name']} has no meaning"
        rows[match["name"]] = match["default"]
    return rows


def _cell(default: str) -> str:
    return f"`{default}`" if default else "unset"


def test_the_readme_table_is_the_knobs_registry():
    documented = readme_knobs()
    assert sorted(documented) == sorted(KNOBS), (
        f"only in README: {sorted(set(documented) - set(KNOBS))}; "
        f"only in settings.KNOBS: {sorted(set(KNOBS) - set(documented))}")
    wrong = {n: (documented[n], _cell(k.default)) for n, k in KNOBS.items() if documented[n] != _cell(k.default)}
    assert not wrong, f"README default differs from settings.KNOBS (README, KNOBS): {wrong}"


def test_every_knob_is_read_by_the_settings(clean_env):
    """get_settings, the secrets' accessors and crm_connection between them read every knob."""
    read: list[str] = []
    real = settings_mod._env

    def recording(name: str):
        read.append(name)
        return real(name)

    clean_env.setattr(settings_mod, "_env", recording)
    clean_env.setenv("C360_PII_KEY", "k" * 20)
    clean_env.setenv("C360_CRM_BASE_URL", "http://127.0.0.1:9")
    clean_env.setenv("C360_CRM_TOKEN", "token-for-the-test")
    s = get_settings()
    s.pii_key()
    s.audit_key()
    s.crm_token()
    settings_mod.crm_connection()
    assert sorted(set(read)) == sorted(KNOBS)


def test_an_unregistered_variable_cannot_be_read():
    with pytest.raises(KeyError, match="KNOBS"):
        settings_mod._env("C360_NOT_A_KNOB")


# --------------------------------------------------------------------------- no reads elsewhere

_ENV_ATTRS = {"environ", "environb", "getenv", "getenvb"}


def environment_reads(source: str, filename: str = "<string>") -> list[tuple[int, str]]:
    """(line, code) of every read of the process environment in ``source``.

    Reads: ``os.getenv(...)``, ``os.environ.get(...)``, ``os.environ[...]`` as a value,
    ``dict(os.environ)``, ``x in os.environ``, ``from os import environ`` ... Writes are not
    reads: ``os.environ[k] = v``, ``del os.environ[k]``, ``os.environ.update(...)``.
    """
    tree = ast.parse(source, filename)
    os_names = {"os"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            os_names |= {a.asname or a.name for a in node.names if a.name == "os"}
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    lines = source.splitlines()
    found = []
    for node in ast.walk(tree):
        hit = False
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            hit = any(a.name in _ENV_ATTRS for a in node.names)
        elif (isinstance(node, ast.Attribute) and node.attr in _ENV_ATTRS
              and isinstance(node.value, ast.Name) and node.value.id in os_names):
            parent = parents.get(node)
            write = ((isinstance(parent, ast.Subscript) and parent.value is node
                      and isinstance(parent.ctx, (ast.Store, ast.Del)))
                     or (isinstance(parent, ast.Attribute) and parent.attr == "update"
                         and isinstance(parents.get(parent), ast.Call)
                         and parents[parent].func is parent))
            hit = not write
        if hit:
            found.append((node.lineno, lines[node.lineno - 1].strip()))
    return sorted(found)


def test_the_scanner_tells_reads_from_writes():
    reads = environment_reads(
        "import os\nimport os as o\nfrom os import getenv\n"
        "a = os.environ.get('X')\nb = os.getenv('X')\nc = os.environ['X']\nd = dict(os.environ)\n"
        "e = 'X' in o.environ\n"
        "os.environ['X'] = '1'\ndel os.environ['X']\nos.environ.update({'X': '1'})\n")
    assert [line for line, _ in reads] == [3, 4, 5, 6, 7, 8]


def test_nothing_outside_settings_reads_the_environment():
    offenders = []
    for top in ("plugins", "dags"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path == SETTINGS_FILE or "__pycache__" in path.parts:
                continue
            for line, code in environment_reads(path.read_text(encoding="utf-8"), str(path)):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {code}")
    assert not offenders, ("read the environment through customer360.core.settings "
                           "(a KNOBS entry and a Settings field):\n" + "\n".join(offenders))


# --------------------------------------------------------------------------- validation

@pytest.mark.parametrize("name,value", [
    ("C360_CRM_TIMEOUT_SECONDS", "abc"),
    ("C360_CRM_TIMEOUT_SECONDS", "0"),
    ("C360_GATE_CHUNK_ROWS", "0"),
    ("C360_GATE_CHUNK_ROWS", "lots"),
    ("C360_CRM_MAX_ATTEMPTS", "0"),
    ("C360_CRM_PAGES_PER_BATCH", "1.5"),
    ("C360_CRM_BACKOFF_SECONDS", "-1"),
    ("C360_CRM_BACKOFF_MAX_SECONDS", "nan"),
    ("C360_CRM_MAX_RETRY_AFTER_SECONDS", "inf"),
    ("C360_CRM_PAGE_SIZE", "0"),
    ("C360_DBT_THREADS", "0"),
    ("C360_DUCKDB_THREADS", "two"),
    ("C360_DUCKDB_MEMORY_LIMIT", "lots"),
    ("C360_REPORTING_CURRENCY", "euro"),
    ("C360_ML_SCORING_ONLY", "maybe"),
    ("C360_PUBLISH_POSTGRES_DSN", "mysql://u:secret-pw@h/db"),
    ("C360_ALERT_WEBHOOK", "hooks.example/secret-path"),
])
def test_a_bad_value_names_its_variable(clean_env, name, value):
    clean_env.setenv(name, value)
    with pytest.raises(SettingsError, match=name) as err:
        get_settings()
    if KNOBS[name].secret:
        assert value not in str(err.value)


def test_defaults_and_overrides(clean_env, tmp_path):
    s = get_settings()
    home = (tmp_path / "home").resolve()
    assert s.home == home and s.landing == home / "landing"
    assert s.duckdb_temp_dir == home / "tmp" / "duckdb"
    assert s.repo_root == REPO_ROOT == ROOT
    assert (s.dbt_project_dir, s.expectations_dir, s.models_dir, s.dags_folder) == (
        ROOT / "dbt_project", ROOT / "expectations", ROOT / "models", ROOT / "dags")
    assert (s.crm_page_size, s.crm_pages_per_batch, s.crm_max_attempts) == (100, 10, 8)
    assert (s.crm_backoff_seconds, s.crm_backoff_max_seconds, s.crm_max_retry_after_seconds,
            s.crm_timeout_seconds) == (0.5, 30.0, 300.0, 60.0)
    assert (s.gate_chunk_rows, s.dbt_threads, s.ml_scoring_only, s.dbt_results) == (500_000, 1, False, ())
    assert s.alert_webhook is None and s.publish_postgres_dsn is None

    clean_env.setenv("C360_EXPECTATIONS_DIR", str(tmp_path / "suites"))
    clean_env.setenv("C360_CRM_TIMEOUT_SECONDS", "2.5")
    clean_env.setenv("C360_GATE_CHUNK_ROWS", "1000")
    clean_env.setenv("C360_ML_SCORING_ONLY", "1")
    clean_env.setenv("C360_DBT_RESULTS", f"{tmp_path}/a/*.json:{tmp_path}/b.json")
    s = get_settings()  # read when called: a test's monkeypatch is seen
    assert s.expectations_dir == (tmp_path / "suites").resolve()
    assert (s.crm_timeout_seconds, s.gate_chunk_rows, s.ml_scoring_only) == (2.5, 1000, True)
    assert s.dbt_results == (f"{tmp_path}/a/*.json", f"{tmp_path}/b.json")


def test_secrets_are_never_in_the_repr(clean_env):
    secrets = {"C360_PII_KEY": "pii-key-value-0123456789", "C360_CRM_TOKEN": "crm-token-value-42",
               "C360_AUDIT_KEY": "audit-key-value-0123456789",
               "C360_PUBLISH_POSTGRES_DSN": "postgresql://u:pg-password-77@127.0.0.1/db",
               "C360_ALERT_WEBHOOK": "https://hooks.example/services/webhook-secret-99"}
    for name, value in secrets.items():
        clean_env.setenv(name, value)
    s = get_settings()
    shown = repr(s)
    assert not [v for v in secrets.values() if v in shown]
    assert s.alert_webhook == secrets["C360_ALERT_WEBHOOK"]
    assert set(settings_mod.SECRET_VARS) == set(secrets)
    assert set(settings_mod.secret_values()) == set(secrets.values())


def test_the_knobs_reach_their_users(clean_env):
    from customer360.ingest.crm import CrmExtractOptions
    from customer360.warehouse.dbt_runner import build_env, project_dir

    clean_env.setenv("C360_CRM_MAX_ATTEMPTS", "3")
    clean_env.setenv("C360_CRM_BACKOFF_SECONDS", "0.01")
    clean_env.setenv("C360_CRM_TIMEOUT_SECONDS", "5")
    clean_env.setenv("C360_DBT_THREADS", "2")
    s = get_settings()
    opts = CrmExtractOptions.from_settings(s)
    assert (opts.max_attempts, opts.backoff_initial, opts.timeout, opts.pages_per_batch) == (3, 0.01, 5.0, 10)
    env = build_env(s)
    assert env["C360_DBT_THREADS"] == "2" and env["C360_ML_SCORING_ONLY"] == "0"
    assert env["C360_DUCKDB_TEMP_DIR"] == str(s.duckdb_temp_dir)
    assert not set(env) & set(settings_mod.SECRET_VARS)
    assert project_dir() == s.dbt_project_dir


def test_the_home_layout_is_unchanged(clean_env):
    s = get_settings()
    h = s.home
    assert {
        "lake_raw": h / "lake" / "raw", "quarantine": h / "lake" / "quarantine",
        "state_dir": h / "lake" / "_state", "warehouse_path": h / "warehouse" / "c360.duckdb",
        "published_db": h / "published" / "c360.duckdb", "published_marts_dir": h / "published" / "marts",
        "publication_path": h / "published" / "publication.json",
        "audiences_dir": h / "published" / "audiences",
        "audit_db": h / "audit" / "audit.duckdb", "reconciliation_path": h / "audit" / "reconciliation.jsonl",
        "dbt_target_dir": h / "artifacts" / "dbt" / "target", "dbt_logs_dir": h / "artifacts" / "dbt" / "logs",
        "model_artifacts_dir": h / "artifacts" / "models", "data_docs_dir": h / "artifacts" / "data_docs",
        "reports_dir": h / "artifacts" / "reports", "alerts_dir": h / "artifacts" / "alerts",
        "airflow_home": h / "airflow", "simulation_dir": h / "simulation",
        "run_lock_path": h / ".run.lock", "demo_env_path": h / "demo.env",
    } == {name: getattr(s, name) for name in (
        "lake_raw", "quarantine", "state_dir", "warehouse_path", "published_db", "published_marts_dir",
        "publication_path", "audiences_dir", "audit_db", "reconciliation_path", "dbt_target_dir",
        "dbt_logs_dir", "model_artifacts_dir", "data_docs_dir", "reports_dir", "alerts_dir",
        "airflow_home", "simulation_dir", "run_lock_path", "demo_env_path")}


def test_a_home_elsewhere_moves_what_defaults_into_it(clean_env, tmp_path):
    other = get_settings(home=tmp_path / "other")
    assert other.home == (tmp_path / "other").resolve()
    assert other.landing == other.home / "landing" and other.duckdb_temp_dir == other.home / "tmp" / "duckdb"


def test_the_duckdb_memory_limit_is_derived_from_the_machine_by_default(clean_env, monkeypatch):
    from customer360.core import settings as settings_mod

    monkeypatch.setattr(settings_mod, "machine_memory_bytes", lambda: 24 * 2**30)
    assert settings_mod.get_settings().duckdb_memory_limit == "12288MB"
    monkeypatch.setenv("C360_DUCKDB_MEMORY_LIMIT", "auto")
    assert settings_mod.get_settings().duckdb_memory_limit == "12288MB"
    monkeypatch.setattr(settings_mod, "machine_memory_bytes", lambda: 600 * 2**20)
    assert settings_mod.get_settings().duckdb_memory_limit == "512MB"  # the floor
    monkeypatch.setenv("C360_DUCKDB_MEMORY_LIMIT", "3GB")
    assert settings_mod.get_settings().duckdb_memory_limit == "3GB"


def test_a_cgroup_limit_below_the_machine_wins(monkeypatch, tmp_path):
    from customer360.core import settings as settings_mod

    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    v2, v1 = tmp_path / "memory.max", tmp_path / "limit_in_bytes"
    monkeypatch.setattr(settings_mod, "_CGROUP_LIMITS", (v2, v1))
    v2.write_text("max\n")
    v1.write_text(str(2**62))  # cgroup v1's "no limit"
    assert settings_mod.machine_memory_bytes() == physical
    v2.write_text(f"{physical // 4}\n")
    assert settings_mod.machine_memory_bytes() == physical // 4
