"""Shared set-up for end-to-end tests: a simulated landing folder, the mock CRM server on
127.0.0.1 and the environment a real user would set, all under a temporary C360_HOME."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from contextlib import contextmanager
from pathlib import Path

import duckdb

from customer360.core.settings import get_settings

START = dt.date(2026, 3, 1)


@contextmanager
def pipeline_env(home: Path, people: int = 200, days: int = 21, seed: int = 7, knobs=(),
                 deliver_through: dt.date | None = None):
    """Simulate into ``home`` and serve the CRM; yields (settings, server, last_day)."""
    from customer360.demo.crm_server import start_server
    from customer360.demo.simulator import SimulationConfig, deliver, simulate

    saved = dict(os.environ)
    os.environ.update({
        "C360_HOME": str(home),
        "C360_PII_KEY": "test-pii-key-0123456789abcdef",
        "C360_CRM_TOKEN": "test-crm-token-abcdef123456",
        "C360_DUCKDB_MEMORY_LIMIT": "2GB",
    })
    os.environ.pop("C360_LANDING", None)
    os.environ.pop("C360_PUBLISH_POSTGRES_DSN", None)
    try:
        settings = get_settings()
        cfg = SimulationConfig.from_overrides(people=people, days=days, start=START, seed=seed,
                                              overrides=list(knobs))
        simulate(cfg, landing=settings.landing, sim_dir=settings.simulation_dir, progress=False,
                 deliver_all=False)
        last = START + dt.timedelta(days=days - 1)
        deliver(settings.simulation_dir, settings.landing, through=deliver_through or last + dt.timedelta(days=3))
        with start_server(settings.simulation_dir / "crm", token=os.environ["C360_CRM_TOKEN"]) as server:
            os.environ["C360_CRM_BASE_URL"] = server.base_url
            yield settings, server, last
    finally:
        os.environ.clear()
        os.environ.update(saved)


def published_checksums(settings, exclude_columns=("scored_at", "published_at", "_loaded_at")) -> dict[str, str]:
    """Content checksum a published table (order-independent), ignoring wall-clock columns."""
    path = settings.published_dir / "c360.duckdb"
    con = duckdb.connect(str(path), read_only=True)
    try:
        out = {}
        tables = con.execute("SELECT table_schema, table_name FROM information_schema.tables "
                             "WHERE table_schema IN ('marts', 'ml') ORDER BY 1, 2").fetchall()
        for schema, name in tables:
            cols = [c for (c,) in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema=? AND table_name=? "
                "ORDER BY ordinal_position", [schema, name]).fetchall() if c not in exclude_columns]
            if name == "ml_model_runs":
                continue  # the registry records each run, by design
            col_list = ", ".join(f'"{c}"' for c in cols)
            n, h = con.execute(f"SELECT count(*), sum(hash(CAST(struct_pack({col_list}) AS VARCHAR)))::VARCHAR "
                               f"FROM {schema}.{name}").fetchone()
            out[f"{schema}.{name}"] = hashlib.sha256(f"{n}:{h}".encode()).hexdigest()[:16]
        return out
    finally:
        con.close()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
