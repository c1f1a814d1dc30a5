"""The package's house plan: its top level shows the stages in the order data flows through
them, imports only run downward (a stage may use the stages before it, never one after it),
nothing imports in a circle, and production code never imports the demo.

Every import counts, module-level or inside a function: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "plugins" / "customer360"

# The order data flows through the stages; the CLI and the demo sit on top of them all.
ORDER = ("core", "ingest", "warehouse", "quality", "ml", "serve", "privacy", "pipeline", "demo", "cli")
PRODUCTION = ORDER[:ORDER.index("demo")]


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in package.rglob("*.py"):
        parts = ("customer360", *path.relative_to(package).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = _modules(package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                if target.startswith("customer360"):
                    resolved = _resolve(target, modules)
                    if resolved and resolved != name:
                        graph[name].add(resolved)
    return graph


def group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(package)"


def test_the_top_level_is_the_stages_in_order():
    entries = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
               if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py")}
    assert entries == {*ORDER, "__init__"}, sorted(entries - {*ORDER, "__init__"})


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if group(a) in ORDER and group(b) in ORDER
                  and ORDER.index(group(b)) > ORDER.index(group(a)))


def test_imports_only_run_downward():
    assert upward_imports(import_graph()) == []


def test_production_code_never_imports_the_demo():
    into_demo = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
                       if group(a) in PRODUCTION and group(b) == "demo")
    assert into_demo == []


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the import cycles are the components of two or more."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_no_import_cycles():
    assert strongly_connected(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    """The check above can fail: a planted loop is found, a chain is not."""
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_checks_see_lazy_relative_and_demo_imports(tmp_path):
    """The checks above can fail: in a planted package, a function-level import running upward,
    a relative one and one into the demo are all found."""
    for folder in ("core", "pipeline", "ingest", "demo"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "core" / "a.py").write_text("def f():\n    from customer360.pipeline import b\n")
    (tmp_path / "pipeline" / "b.py").write_text("from ..core import a\n")
    (tmp_path / "ingest" / "c.py").write_text("import customer360.demo.d\n")
    (tmp_path / "demo" / "d.py").write_text("")
    graph = import_graph(tmp_path)
    assert upward_imports(graph) == ["customer360.core.a -> customer360.pipeline.b",
                                     "customer360.ingest.c -> customer360.demo.d"]
    assert strongly_connected(graph) == [["customer360.core.a", "customer360.pipeline.b"]]
