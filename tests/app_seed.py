"""A seeded store for the app's tests: demo data plus a few hand-written threads the tests know.

Used by ``tests/test_app_*.py`` (AppTest) and ``tests/test_browser.py`` (real Chromium).
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import persistence
from persistence.demo import generate

DEMO_END = date(2026, 1, 31)  # demo threads fill the 8 weeks before this day
AT = datetime(2026, 1, 20, 9, 0, tzinfo=UTC)

XSS_THREAD = "thread-xss"
XSS_TITLE = "<b>Bold</b> [x](javascript:alert(3)) *title*"
XSS_PAYLOADS = (
    "Look: <script>alert('xss-script')</script> and <img src=x onerror=alert('xss-img')> "
    "then [click me](javascript:alert('xss-link')) or [data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==) "
    "and <javascript:alert('xss-auto')> and ![pixel](https://tracker.invalid/pixel.gif)"
)
XSS_REPLY = "Those are **zebracorn** payloads; they must stay text. See [the docs](https://example.com/docs)."

CJK_THREAD = "thread-cjk"
CJK_QUESTION = "为什么数据库连接池在高并发下耗尽？"
CJK_REPLY = "最可能的原因是连接池在多个请求之间共享，却没有加锁。"

LONG_THREAD = "thread-long"
LONG_TURNS = 75
CHILD_THREAD = "thread-child"

UNPRICED_MODEL = "my-local-model"
FILE_TEXT = b"pool:\n  size: 20\n  timeout: 30\n"


def seed(store: persistence.Store) -> None:
    generate(store, 60, seed=5, end=DEMO_END)

    store.start_conversation(XSS_THREAD, title=XSS_TITLE, tool_name="chat", tags=["security"], created_at=AT)
    store.record_message(XSS_THREAD, "user", XSS_PAYLOADS, created_at=AT)
    store.record_message(
        XSS_THREAD,
        "assistant",
        XSS_REPLY,
        model="kimi-k2-0905-preview",
        usage={"prompt_tokens": 1200, "completion_tokens": 300, "cached_tokens": 200},
        duration_ms=2300,
        created_at=AT + timedelta(seconds=5),
    )
    store.put_file(
        FILE_TEXT, filename="pool-config.yaml", mime_type="application/yaml", continuation_id=XSS_THREAD, created_at=AT
    )
    store.put_file(b"nobody uses me\n", filename="orphan.txt", mime_type="text/plain", created_at=AT)

    store.record_message(CJK_THREAD, "user", CJK_QUESTION, tool_name="chat", created_at=AT + timedelta(hours=1))
    store.record_message(
        CJK_THREAD,
        "assistant",
        CJK_REPLY,
        model="glm-4.6",
        usage={"prompt_tokens": 900, "completion_tokens": 120},
        created_at=AT + timedelta(hours=1, seconds=3),
    )

    store.start_conversation(LONG_THREAD, title="A long debugging session", tool_name="debug", created_at=AT)
    for i in range(1, LONG_TURNS + 1):
        role = "user" if i % 2 else "assistant"
        kwargs: dict[str, Any] = (
            {} if role == "user" else {"model": "glm-4.6", "usage": {"prompt_tokens": 100, "completion_tokens": 10}}
        )
        store.record_message(
            LONG_THREAD, role, f"Turn number {i} of the long thread.", created_at=AT + timedelta(minutes=i), **kwargs
        )

    store.start_conversation(
        CHILD_THREAD, title="Continuing the long session", parent_id=LONG_THREAD, created_at=AT + timedelta(hours=2)
    )
    store.record_message(
        CHILD_THREAD,
        "assistant",
        "An answer from a model with no price.",
        model=UNPRICED_MODEL,
        provider="custom",
        usage={"prompt_tokens": 500, "completion_tokens": 50},
        created_at=AT + timedelta(hours=2),
    )


def seeded_url(folder: Path) -> str:
    """Create and seed a store in ``folder``; returns its URL."""
    url = f"sqlite:///{folder / 'history.db'}"
    store = persistence.open_store(url)
    try:
        seed(store)
    finally:
        store.close()
    return url


# -- fixtures and helpers for the AppTest suites -------------------------------------------------

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(scope="session")
def seeded_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("app-store")
    seeded_url(folder)
    return folder


@pytest.fixture
def app_url(seeded_folder: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The seeded store's URL, set as PERSISTENCE_URL for the app under test."""
    url = f"sqlite:///{seeded_folder / 'history.db'}"
    monkeypatch.setenv("PERSISTENCE_URL", url)
    return url


@pytest.fixture
def app_store(app_url: str) -> Iterator[persistence.Store]:
    """The same store, opened read-only for the test's own expectations."""
    s = persistence.open_store(app_url, read_only=True)
    yield s
    s.close()


def first_run(at: AppTest) -> None:
    """Run a fresh AppTest once: app.py's navigation runs from the very first run."""
    at.run()
    assert not at.exception, at.exception


def open_page(page: str | None = None, **query: str) -> AppTest:
    """Run the app (it lands on the Overview), then switch to ``views/<page>.py`` with ``query``
    as the URL's query string, as a browser following a link would."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update(query)
    first_run(at)
    if page:
        go_to(at, page, query)
    return at


def go_to(at: AppTest, page: str, query: dict[str, str]) -> None:
    """Follow a link to ``views/<page>.py`` with ``query`` as the URL's query string."""
    at.switch_page(f"views/{page}.py")
    at.query_params.clear()
    at.query_params.update(query)
    at.run()


def texts(at: AppTest) -> str:
    """Everything a reader sees as text on the page, joined (for 'is it there' checks)."""
    parts: list[str] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error", "success"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [str(e.label) for e in at.metric] + [str(e.value) for e in at.metric]
    parts += [str(e.proto.label) for e in at.get("page_link")]
    return "\n".join(parts)


def plotly_figure(at: AppTest, key: str) -> dict[str, Any]:
    """The JSON figure of the plotly chart with ``key``."""
    for element in at.get("plotly_chart"):
        if key in element.proto.id:
            return json.loads(element.proto.spec)
    raise AssertionError(f"no plotly chart with key {key!r}")


def plotly_values(values: Any) -> list[Any]:
    """A trace's x or y as a list (plotly sends numeric arrays as base64 typed arrays)."""
    if isinstance(values, dict) and "bdata" in values:
        return [float(v) for v in np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])]
    return list(values)


def table_with(at: AppTest, column: str) -> Any:
    """The first table on the page that has ``column`` (read-only tables carry no key)."""
    for frame in at.dataframe:
        if column in frame.value.columns:
            return frame.value
    raise AssertionError(f"no table with a {column!r} column")


@contextlib.contextmanager
def streamlit_running(
    env: dict[str, str], log_path: Path, *, cwd: Path, args: Sequence[str] = (), app: str = APP
) -> Iterator[int]:
    """`streamlit run app.py` in a subprocess until the block ends; yields its port once its
    health check answers (a start that fails raises with the end of its log)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    command = [sys.executable, "-m", "streamlit", "run", app, "--server.headless", "true", "--server.port", str(port)]
    with log_path.open("w") as log:
        proc = subprocess.Popen([*command, *args], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"streamlit did not start: {log_path.read_text()[-2000:]}")
                time.sleep(0.3)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
