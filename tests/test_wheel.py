"""What a ``pip install`` gets: the wheel built from this checkout, installed in fresh venvs
and run from a folder outside the checkout.

* ``report`` renders the HTML report from the installed package (the notebook is package
  data), and ``python -m persistence.mcp`` serves over stdio.
* The zen-mcp-server's own venv runs on ``mcp<2``: ``[postgres,supabase]`` installs beside
  it (the base package and the backend extras do not require ``mcp``) and the zen
  integration imports.

The venvs use ``--system-site-packages`` so the heavy dependencies (pandas, Jupyter, psycopg)
come from this interpreter instead of being downloaded again; the package itself is installed
into each venv from the wheel, and every run checks that ``persistence`` is imported from the
venv's site-packages, never from the checkout. This needs PyPI (the build's setuptools,
``mcp<2``); under ``CI=true`` nothing here skips.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

import pytest
from conftest import IN_CI

import persistence
from persistence import report
from persistence.formatting import money

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def run(args: Sequence[str | Path], *, cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    """Run a command; its stdout, or a failure that shows its output."""
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


def clean_env(home: Path) -> dict[str, str]:
    """The environment of an installed command: no checkout on PYTHONPATH, no store settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PERSISTENCE_", "SUPABASE_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env["PERSISTENCE_HOME"] = str(home)
    env["PYTHONNOUSERSITE"] = "1"
    # nbconvert finds its templates under <sys.prefix>/share/jupyter; in a venv that borrows
    # the system site-packages they are under the base interpreter's prefix instead.
    env["JUPYTER_PATH"] = os.pathsep.join(
        p for p in (str(Path(sys.base_prefix) / "share" / "jupyter"), os.environ.get("JUPYTER_PATH")) if p
    )
    return env


@dataclass
class Venv:
    root: Path
    env: dict[str, str]

    @property
    def python(self) -> Path:
        return self.root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")

    def pip_install(self, *requirements: str, cwd: Path) -> None:
        # The venv has no pip of its own (--without-pip): the system's pip, run by the venv's
        # interpreter, installs into the venv.
        run([self.python, "-m", "pip", "install", "-q", *requirements], cwd=cwd, env=self.env)

    def package_file(self, module: str, *, cwd: Path) -> Path:
        code = f"import {module} as m; print(m.__file__)"
        return Path(run([self.python, "-c", code], cwd=cwd, env=self.env).strip())

    def assert_installed_from_wheel(self, cwd: Path) -> None:
        where = self.package_file("persistence", cwd=cwd)
        site = run([self.python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=cwd, env=self.env)
        assert where.is_relative_to(Path(site.strip())), f"persistence imported from {where}, not the venv"
        assert not where.is_relative_to(ROOT), f"persistence imported from the checkout: {where}"


def make_venv(path: Path, home: Path) -> Venv:
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(path)], check=True, timeout=120
    )
    return Venv(path, clean_env(home))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built (with pip's build isolation) from a copy of the package's sources, so
    nothing stale in the checkout (build/, *.egg-info) can slip in and nothing is written there."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "persistence", src / "persistence", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, src], cwd=src, env=dict(os.environ))
    (built,) = out.glob("mcp_persistence-*.whl")
    return built


def test_the_wheel_ships_the_notebook_and_its_extras(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (meta,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(zf.read(meta).decode())
    assert "persistence/report/usage_report.ipynb" in names
    assert "persistence/data/model_prices.toml" in names
    assert any(n.startswith("persistence/sql/migrations/") and n.endswith(".sql") for n in names)
    assert not any("notebooks/" in n or "tests/" in n for n in names)
    requires = metadata.get_all("Requires-Dist") or []
    needing_mcp = [r for r in requires if re.match(r"mcp\b", r)]
    assert needing_mcp and all('extra == "mcp"' in r for r in needing_mcp), needing_mcp


def test_report_and_mcp_server_run_from_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    work = tmp_path / "elsewhere"  # outside the checkout: nothing can come from it
    work.mkdir()
    venv = make_venv(tmp_path / "venv", tmp_path / "home")
    venv.pip_install("--no-deps", str(wheel), cwd=work)
    venv.assert_installed_from_wheel(work)

    demo = ["--conversations", "30", "--seed", "3", "--end", "2025-11-20", "--weeks", "2"]
    run([venv.python, "-m", "persistence", "demo", "--url", "sqlite:///history.db", *demo], cwd=work, env=venv.env)
    out = run([venv.python, "-m", "persistence", "report", "--url", "sqlite:///history.db"], cwd=work, env=venv.env)
    assert out.strip() == "report.html"
    page = (work / "report.html").read_text(encoding="utf-8")

    with persistence.open_store(f"sqlite:///{work / 'history.db'}", read_only=True) as store:
        expected = report.build(store)
    assert expected.kpis["messages"] > 0 and expected.kpis["cost_usd"] > 0
    assert money(expected.kpis["cost_usd"]) in page  # the real total, in a KPI card
    assert html.escape(expected.findings[0], quote=False) in page
    for name in report.CHARTS:
        assert re.search(rf'Plotly\.newPlot\(\s*"chart-{name}"', page), name

    # The history server: its help, then a real MCP session over stdio with the installed copy.
    assert "--url" in run([venv.python, "-m", "persistence.mcp", "--help"], cwd=work, env=venv.env)
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    async def session() -> tuple[list[str], dict[str, object]]:
        params = StdioServerParameters(
            command=str(venv.python),
            args=["-m", "persistence.mcp", "--url", "sqlite:///history.db"],
            env=venv.env,
            cwd=str(work),
        )
        async with Client(params) as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            usage = await client.call_tool("usage_summary", {})
        assert not usage.is_error
        return tools, dict(usage.structured_content or {})

    tools, summary = asyncio.run(session())
    assert {"search_history", "get_thread", "list_threads", "usage_summary"} <= set(tools)
    assert summary["totals"]["messages"] == expected.kpis["messages"]  # type: ignore[index]


def test_the_zen_servers_venv_installs_the_backends_beside_mcp_1(wheel: Path, tmp_path: Path) -> None:
    """zen-mcp-server pins ``mcp<2``; the history server (``[mcp]``, ``mcp>=2.3``) runs in a
    venv of its own. The backend extras must install next to ``mcp<2`` and the zen
    integration must import there."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    venv = make_venv(tmp_path / "venv", tmp_path / "home")
    venv.pip_install(f"{wheel}[postgres,supabase]", "mcp<2", cwd=work)
    venv.assert_installed_from_wheel(work)
    code = (
        "import importlib.metadata as md, mcp, persistence.integrations.zen as zen, psycopg;"
        "print(md.version('mcp'), zen.__file__)"
    )
    version, where = run([venv.python, "-c", code], cwd=work, env=venv.env).split()
    assert int(version.split(".")[0]) < 2, version
    assert not Path(where).is_relative_to(ROOT), where


def test_no_build_output_is_tracked() -> None:
    """``*.egg-info/`` is written by every install: ignored, never committed."""
    if not (ROOT / ".git").exists():
        if IN_CI:
            pytest.fail("CI=true: the checkout must be a git work tree")
        pytest.skip("not a git checkout")
    tracked = run(["git", "ls-files"], cwd=ROOT, env=dict(os.environ)).splitlines()
    assert [p for p in tracked if ".egg-info" in p or p.startswith(("build/", "dist/"))] == []
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "--no-index", "mcp_persistence.egg-info/PKG-INFO"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "mcp_persistence.egg-info/ is not in .gitignore"
