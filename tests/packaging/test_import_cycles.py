"""No import cycle among the modules of the `monitor` distribution (monitor/, and dashboard/, grafana/,
trainer_example/ installed as monitor.dashboard, monitor.grafana, monitor.example): dependencies run one way.

The graph is built with `ast` from the source files, without importing anything, and counts EVERY import
statement: at module level, inside functions (deferred imports) and under `if TYPE_CHECKING:`. A deferred
or type-only import is still a dependency; deferring it only hides the cycle from the interpreter (the
watcher -> tracker -> watcher cycle of issue 15 ran through a TYPE_CHECKING import and a deferred one).
An edge goes to the module named: `from a.b import c` -> `a.b.c` when that is a module, else `a.b`;
`import a.b` -> `a.b`. The implicit import of parent packages' `__init__` is not an edge (every module
would depend on `monitor/__init__.py`, which re-exports the API from its submodules).
"""

from __future__ import annotations

import ast

from .layout import module_files, package_folders


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names} & known
    base = node.module or ""
    if node.level:
        package = module if is_package else module.rpartition(".")[0]
        anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    found = {f"{base}.{alias.name}" for alias in node.names} & known
    names_only = [alias.name for alias in node.names if f"{base}.{alias.name}" not in known]
    if names_only and base in known:
        found.add(base)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of the distribution it imports (anywhere in its source)."""
    files = module_files()
    known = set(files)
    packages = set(package_folders())
    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[module] = set()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            graph[module] |= _targets(module, module in packages, node, known)
        graph[module].discard(module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_graph_sees_the_imports_it_must() -> None:
    """The graph is not vacuous: module-level, relative, mapped-folder, deferred and type-only imports."""
    graph = import_graph()
    assert len(graph) > 80
    assert {"monitor.watcher", "monitor.diagnosis", "monitor.errors"} <= graph["monitor"]
    assert "monitor.example.sparse" in graph["monitor.example.attention"]  # relative import in a mapped folder
    assert "monitor.grafana.common" in graph["monitor.grafana.rows.training"]  # `from ..common import`
    assert "monitor.dashboard.cache" in graph["monitor.dashboard.app"]  # absolute monitor.dashboard import
    assert "monitor.example.train" in graph["monitor.commands.demo"]  # imported inside a function
    assert "monitor.example.train" in graph["monitor.example.__main__"]  # `from .train import main`
    assert "monitor.history" in graph["monitor.dashboard.summary"]


def test_no_import_cycle() -> None:
    found = cycles(import_graph())
    listing = "\n".join(" <-> ".join(component) for component in found)
    assert not found, f"import cycles (every import counted, see the module docstring):\n{listing}"


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
