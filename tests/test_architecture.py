"""The package's import graph has no cycles.

Every module under ``persistence/`` is parsed with :mod:`ast` and every import in it counts:
at module level, inside functions and methods, and under ``if TYPE_CHECKING:`` too. A
type-only import is still a dependency a reader has to follow, and a cycle held together by
one is a tangle all the same (it merely fails later, or only for mypy). An import that stays
inside a function to avoid loading an optional dependency is fine; one that stays there to
avoid a cycle is what this test finds.

``import a.b.c`` and ``from a.b import c`` count as importing ``a.b.c`` (the module, when
there is one) and not its parent packages: a package's ``__init__`` runs first, but it is the
package's business, and counting it would join every module to everything ``persistence``
re-exports.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "persistence"


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import …`` written in ``module``."""
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _imports(source: str, module: str, is_package: bool, modules: Collection[str]) -> Iterator[tuple[str, int]]:
    """(imported module of the package, line) for every import in ``source``, at any depth."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in modules:  # from package import submodule
                    yield submodule, node.lineno
                elif target in modules:  # from module import name
                    yield target, node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {module it imports: first line that does}."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name, path in modules.items():
        source = path.read_text(encoding="utf-8")
        for target, line in _imports(source, name, path.name == "__init__.py", modules):
            if target != name:
                graph[name].setdefault(target, line)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def a_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """One shortest import path from the component's first module back to itself."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph[node]):
                if succ not in members or succ in previous:
                    continue
                previous[succ] = node
                if succ == start:
                    path = [start]
                    while path[-1] != start or len(path) == 1:
                        path.append(previous[path[-1]])
                    return path[::-1]
                following.append(succ)
        frontier = following
    return component


def _short(name: str) -> str:
    return name.removeprefix(f"{PACKAGE}.")


def describe(graph: dict[str, dict[str, int]], component: list[str]) -> str:
    steps = [f"    {_short(a)} -> {_short(b)} (line {graph[a][b]})" for a, b in pairwise(a_cycle(graph, component))]
    members = ", ".join(_short(m) for m in component)
    return f"  {len(component)} modules: {members}\n  for example:\n" + "\n".join(steps)


def test_imports_count_at_every_depth() -> None:
    source = """
import persistence.a
from . import b
from .c import thing
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from ..d import Type
def f():
    from .e import g
class C:
    def m(self):
        import persistence.sub.f
"""
    modules = {f"persistence.{m}" for m in ("a", "sub.b", "sub.c", "d", "sub.e", "sub.f", "sub.mod")}
    found = {target for target, _ in _imports(source, "persistence.sub.mod", False, modules)}
    assert found == modules - {"persistence.sub.mod"}
    assert {t for t, _ in _imports("from .. import d", "persistence.sub", True, modules)} == {"persistence.d"}
    graph = import_graph()
    assert "persistence.errors" in graph["persistence.store"]


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles in persistence/:\n" + "\n".join(describe(graph, c) for c in cycles)


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert a_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
