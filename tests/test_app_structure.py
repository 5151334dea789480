"""How the app is put together: Streamlit's public navigation over ``views/``, reads cached where
the store is called and drawing nothing, and no import cycle in ``ui/``. Source checks only."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from ui.nav import PAGES

ROOT = Path(__file__).resolve().parents[1]
APP_SOURCES = [ROOT / "app.py", *sorted((ROOT / "ui").glob("*.py")), *sorted((ROOT / "views").glob("*.py"))]


def test_the_pages_are_the_views_and_nothing_else() -> None:
    # A folder named pages/ beside app.py would also be run by Streamlit's older multipage mechanism.
    assert not (ROOT / "pages").exists()
    assert sorted(info.path for info in PAGES.values()) == sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "views").glob("*.py")
    )
    paths = [info.url_path for info in PAGES.values()]
    assert len(set(paths)) == len(paths) and all(p and "/" not in p for p in paths)


def test_only_public_streamlit() -> None:
    for path in APP_SOURCES:
        source = path.read_text(encoding="utf-8")
        for private in ("streamlit.runtime", "PagesManager", "uses_pages_directory", "st._"):
            assert private not in source, (path.name, private)


def _decorated_with(node: ast.FunctionDef, name: str) -> bool:
    return any(ast.unparse(d).startswith(f"st.{name}") for d in node.decorator_list)


def test_cached_reads_draw_nothing() -> None:
    """A widget or element inside a cached function is drawn only on a cache miss."""
    tree = ast.parse((ROOT / "ui" / "queries.py").read_text(encoding="utf-8"))
    cached = [n for n in tree.body if isinstance(n, ast.FunctionDef) and _decorated_with(n, "cache_data")]
    assert len(cached) >= 10
    for fn in cached:
        calls = [ast.unparse(c.func) for stmt in fn.body for c in ast.walk(stmt) if isinstance(c, ast.Call)]
        assert not [c for c in calls if c.startswith("st.")], fn.name


def _ui_imports(path: Path) -> Iterator[str]:
    """The ``ui`` modules ``path`` imports, at any depth (inside functions too)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                yield node.module.split(".")[0]
            elif node.level == 1:
                yield from (alias.name for alias in node.names)
            elif node.module and node.module.startswith("ui."):
                yield node.module.split(".")[1]


def test_ui_has_no_import_cycle() -> None:
    graph = {p.stem: set(_ui_imports(p)) for p in (ROOT / "ui").glob("*.py")}
    done: set[str] = set()

    def visit(module: str, trail: tuple[str, ...]) -> None:
        assert module not in trail, " -> ".join([*trail, module])
        if module in done:
            return
        for target in graph.get(module, ()):
            visit(target, (*trail, module))
        done.add(module)

    for module in graph:
        visit(module, ())
