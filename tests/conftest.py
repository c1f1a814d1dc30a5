"""Shared pytest fixtures. Keep each fixture small and say what real thing it starts."""

from __future__ import annotations

import gzip
import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import pytest

if TYPE_CHECKING:
    from customer360.demo.crm_server import RunningServer


@pytest.fixture
def write_crm_versions() -> Callable[[Path, str, list[dict]], Path]:
    """Write ``<dir>/<object>.jsonl.gz`` (one line a record version), as the simulator does."""

    def write(data_dir: Path, obj: str, versions: list[dict]) -> Path:
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / f"{obj}.jsonl.gz"
        tmp = path.with_name(f".{path.name}.tmp")
        with gzip.open(tmp, "wt", encoding="utf-8") as fh:
            for version in versions:
                fh.write(json.dumps(version, ensure_ascii=False) + "\n")
        tmp.replace(path)  # the server reloads on change; never let it see half a file
        return path

    return write


@pytest.fixture
def crm_server(tmp_path: Path) -> Iterator[RunningServer]:
    """The mock CRM API on 127.0.0.1 (any free port) over ``tmp_path/crm_store``, stopped after.

    Write data with ``write_crm_versions(crm_server.data_dir, ...)``; the server reloads changed
    files. ``crm_server.token`` is the bearer token it accepts.
    """
    from customer360.demo.crm_server import start_server

    data_dir = tmp_path / "crm_store"
    data_dir.mkdir()
    with start_server(data_dir, token="test-" + secrets.token_hex(12)) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_session():
    """One throwaway PostgreSQL server (tests/pg_server.py) for the whole session: a test that
    uses it creates its own database in it rather than starting another cluster."""
    from tests.pg_server import postgres_server

    with postgres_server() as pg:
        yield pg
