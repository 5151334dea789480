"""Running the report notebook headless: inject the parameters, execute it with a fresh
kernel, and export the outputs as one self-contained HTML file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .tables import ReportError

if TYPE_CHECKING:  # pragma: no cover
    import nbformat


NOTEBOOK = Path(__file__).resolve().parent / "usage_report.ipynb"
"""The report notebook, shipped in the package (``--notebook`` points elsewhere)."""

_TEMPLATE = """{%- extends 'index.html.j2' -%}
{#- Self-contained: no require.js, MathJax or mermaid from a CDN (the report uses none). -#}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{#- Its own small stylesheet instead of JupyterLab's 250 KB one: the report shows only text,
    tables and charts, which carry their own styles. -#}
{%- block notebook_css -%}
<style>
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 12px 24px 48px; }
h1 { font-size: 1.9em; margin: .6em 0 .3em; } h2 { font-size: 1.35em; margin: 1.4em 0 .4em; border-bottom: 1px solid #e3e6ea; padding-bottom: .2em; }
p { margin: .4em 0; } code { font-size: .9em; background: #f3f4f6; padding: 0 .25em; border-radius: 3px; }
hr { border: 0; border-top: 1px solid #e3e6ea; margin: 2em 0 1em; }
a.anchor-link { display: none; }
.jp-OutputArea-output { overflow-x: auto; }
.jp-RenderedText pre, .jp-OutputArea-output pre { white-space: pre-wrap; font-size: .85em; }
@media (max-width: 640px) { main { padding: 8px 10px 32px; } body { font-size: 14px; } }
@media print { * { -webkit-print-color-adjust: exact; print-color-adjust: exact; } }
</style>
{%- endblock notebook_css -%}
"""


def inject_parameters(nb: nbformat.NotebookNode, params: dict[str, Any]) -> nbformat.NotebookNode:
    """Papermill's convention: a cell tagged ``injected-parameters`` right after the one
    tagged ``parameters`` overrides its defaults."""
    import nbformat

    cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    index = next(
        (i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])),
        None,
    )
    if index is None:
        raise ReportError("the notebook has no cell tagged 'parameters'")
    source = "# Parameters injected by `python -m persistence report`\n" + "".join(
        f"{key} = {value!r}\n" for key, value in params.items()
    )
    cell = nbformat.v4.new_code_cell(source=source, metadata={"tags": ["injected-parameters"]})
    cells.insert(index + 1, cell)
    nb.cells = cells
    return nb


def load_notebook(
    notebook: str | Path = NOTEBOOK,
    *,
    url: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    top: int = 20,
    app_url: str | None = None,
) -> nbformat.NotebookNode:
    """The report notebook with these parameters injected, ready to execute."""
    import nbformat

    path = Path(notebook)
    if not path.is_file():
        raise ReportError(f"report notebook {path} not found (pass --notebook PATH)")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several kinds for a file that is not a notebook
        raise ReportError(f"{path} is not a readable notebook: {exc}") from None
    params = {
        "url": url,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "top": top,
    }
    if app_url is not None:  # else the notebook's own default (PERSISTENCE_APP_URL, localhost)
        params["app_url"] = app_url
    return inject_parameters(nb, params)


def execute_notebook(
    nb: nbformat.NotebookNode,
    *,
    timeout: int = 600,
    cwd: str | Path | None = None,
    progress: Callable[[int], object] | None = None,
) -> nbformat.NotebookNode:
    """Execute ``nb`` in place with a fresh kernel; ``progress(1)`` after each code cell.

    The kernel is this interpreter (``python3`` resolves to ``sys.executable``), imports
    this copy of the package and starts in ``cwd`` (default: the current directory), so a
    relative ``sqlite:///`` URL and ``.env`` mean there what they mean to the caller.
    """
    from nbclient import NotebookClient
    from traitlets.config import Config

    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])  # the folder holding ``persistence``
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiets a debugpy warning on stderr
    with tempfile.TemporaryDirectory(prefix="persistence-report-") as sockets:
        # Where the OS has them, IPC sockets in a private temp folder rather than TCP ports.
        kernel = {"transport": "ipc", "ip": os.path.join(sockets, "kernel")} if os.name == "posix" else {}
        client = NotebookClient(
            nb,
            config=Config({"KernelManager": kernel}),
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(cwd or os.getcwd())}},
        )
        if progress:
            client.on_cell_executed = lambda **_: progress(1)
        _execute(client, env)
    return nb


def _execute(client: Any, env: dict[str, str]) -> None:
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    try:
        client.execute(env=env)
    except CellExecutionError as exc:
        raise ReportError(f"a report notebook cell failed:\n{_last_lines(str(exc))}") from None
    except (CellTimeoutError, DeadKernelError, TimeoutError, RuntimeError) as exc:
        raise ReportError(f"running the report notebook failed: {exc}") from None


def run_notebook(
    notebook: str | Path = NOTEBOOK,
    *,
    url: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    top: int = 20,
    timeout: int = 600,
    cwd: str | Path | None = None,
    progress: Callable[[int], object] | None = None,
    app_url: str | None = None,
) -> nbformat.NotebookNode:
    """:func:`load_notebook` then :func:`execute_notebook`: the executed report notebook."""
    nb = load_notebook(notebook, url=url, since=since, until=until, top=top, app_url=app_url)
    return execute_notebook(nb, timeout=timeout, cwd=cwd, progress=progress)


def code_cells(nb: nbformat.NotebookNode) -> int:
    return sum(c.cell_type == "code" for c in nb.cells)


def _last_lines(text: str, n: int = 12) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-n:])


def export_html(nb: nbformat.NotebookNode, *, title: str = "Cost and usage report") -> str:
    """The executed notebook as one self-contained HTML page: outputs only (no code, no
    cells tagged ``notebook-only``), plotly.js inline once (compressed), nothing loaded from
    the network, no stylesheet but the report's own."""
    import jinja2
    from nbconvert import HTMLExporter

    nb.metadata["title"] = title
    from traitlets.config import Config

    config = Config({"TagRemovePreprocessor": {"enabled": True, "remove_cell_tags": {"notebook-only"}}})
    exporter = HTMLExporter(
        config=config,
        template_name="lab",
        extra_loaders=[jinja2.DictLoader({"persistence_report.html.j2": _TEMPLATE})],
        template_file="persistence_report.html.j2",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    body, _ = exporter.from_notebook_node(nb)
    return str(body)


def write_html(html_text: str, out: str | Path) -> Path:
    path = Path(out)
    try:
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(html_text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc.strerror}") from None
    return path
