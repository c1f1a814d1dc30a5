"""Build the `ml` dbt models straight into a DuckDB file, without a dbt invocation.

Production builds them with dbt (`dbt build --select ml`). Tests and the benchmark build them
here instead: rendering the same SQL files costs milliseconds where a dbt run costs seconds, and
it does not depend on the rest of the dbt project being buildable at that moment. The models in
dbt_project/models/ml use only the Jinja that this renderer provides: ref(), var(), config(),
execute and adapter.get_columns_in_relation(); tests/test_ml_features.py checks that the
rendered SQL builds, and a dbt run of the same files must give the same tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import jinja2

from customer360.core.settings import get_settings
from customer360.warehouse.dbt_runner import build_env

ML_MODELS_DIR = Path("models") / "ml"  # in the dbt project


@dataclass(frozen=True)
class _Relation:
    schema: str
    identifier: str

    def __str__(self) -> str:
        return f'"{self.schema}"."{self.identifier}"'


@dataclass(frozen=True)
class _Column:
    name: str
    dtype: str


def schema_of(model: str) -> str:
    """The schema dbt_project.yml assigns a model, from its naming convention."""
    if model.startswith("stg_"):
        return "staging"
    if model.startswith("int_"):
        return "intermediate"
    if model.startswith("ml_"):
        return "ml"
    return "marts"


class _Adapter:
    def __init__(self, con: duckdb.DuckDBPyConnection):
        self._con = con

    def get_columns_in_relation(self, relation: _Relation) -> list[_Column]:
        rows = self._con.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = ? and table_name = ? order by ordinal_position",
            [relation.schema, relation.identifier]).fetchall()
        return [_Column(name, dtype) for name, dtype in rows]

    def quote(self, identifier: str) -> str:
        """dbt-duckdb's quoting (the models quote a column name through the adapter)."""
        return '"' + identifier.replace('"', '""') + '"'


def _model_files(models_dir: Path) -> dict[str, str]:
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(models_dir.glob("*.sql"))}


def _build_order(sources: dict[str, str]) -> list[str]:
    """Models in dependency order (a model after the ml models it refs)."""
    deps = {name: set(re.findall(r"ref\(\s*['\"](\w+)['\"]\s*\)", sql)) & sources.keys()
            for name, sql in sources.items()}
    order: list[str] = []
    while len(order) < len(sources):
        ready = [n for n in sources if n not in order and deps[n] <= set(order)]
        if not ready:
            raise ValueError(f"cycle among ml models: {sorted(set(sources) - set(order))}")
        order.extend(sorted(ready))
    return order


# The project's macros the ML models call, in their DuckDB (default__) implementation: this
# renderer is DuckDB only, so adapter.dispatch resolves to the default__ macro, and dbt's
# return() of a rendered string is the string itself.
_MACRO_FILES = ("engine.sql", "normalize.sql", "web_orders.sql")
_DISPATCH = re.compile(r"adapter\.dispatch\('(\w+)'\)")
_RETURN = re.compile(r"\{\{-? *return\((.*)\) *-?\}\}")


def _project_macros() -> str:
    macros_dir = get_settings().dbt_project_dir / "macros"
    text = "".join((macros_dir / name).read_text(encoding="utf-8") for name in _MACRO_FILES)
    return _RETURN.sub(r"{{ \1 }}", _DISPATCH.sub(r"default__\1", text))


def render_model(sql: str, con: duckdb.DuckDBPyConnection, variables: dict | None = None) -> str:
    variables = dict(variables or {})
    env_vars = build_env(get_settings())  # what dbt's env_var() sees (warehouse.dbt_runner)

    def var(name, default=None):
        return variables.get(name, default)

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, extensions=["jinja2.ext.do"])
    template = env.from_string(_project_macros() + sql)
    return template.render(
        ref=lambda name: _Relation(schema_of(name), name),
        var=var,
        env_var=lambda name, default=None: env_vars.get(name, default),
        config=lambda *a, **k: "",
        execute=True,
        adapter=_Adapter(con),
    )


def build_ml_models(con: duckdb.DuckDBPyConnection, variables: dict | None = None,
                    models_dir: Path | None = None) -> list[str]:
    """Render every model of dbt_project/models/ml and create it as a table in schema ml."""
    sources = _model_files(models_dir or get_settings().dbt_project_dir / ML_MODELS_DIR)
    con.execute("set TimeZone = 'UTC'")  # what the dbt profile sets
    con.execute("create schema if not exists ml")
    built = []
    for name in _build_order(sources):
        sql = render_model(sources[name], con, variables)
        con.execute(f'create or replace table ml."{name}" as {sql}')
        built.append(name)
    return built
