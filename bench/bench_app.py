"""How fast the Streamlit app is on a store of about a million messages.

    python bench/bench_app.py                       # builds /tmp/mcp-app-bench/history.db once, then reuses it
    python bench/bench_app.py /path/to/history.db   # an existing store (built if missing)
    python bench/bench_app.py --no-browser          # data timings only

Two figures per page, against the app's targets:
* data: the reads behind the page's default view (the very functions the page calls in
  ``ui.queries``, here uncached), median of 5 after one warm-up, target <= 300 ms;
* render: a real page load in headless Chromium, from navigation until the page's title is
  drawn and the app has finished running the page, target <= 2 s; "cold" is the first visit
  (nothing cached in the app), "warm" a second visit within the cache TTL.

This is a benchmark, not a test: it prints, it does not fail.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import persistence  # noqa: E402
from ui import period as periods  # noqa: E402
from ui import queries as q  # noqa: E402

DATA_TARGET_MS = 300
RENDER_TARGET_S = 2.0
DEFAULT_PATH = Path("/tmp/mcp-app-bench/history.db")
CONVERSATIONS = 120_000  # about 8.4 messages a thread: a million messages


def build(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"Building {path} with {CONVERSATIONS:,} demo threads (several minutes)…", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "persistence",
            "demo",
            "--url",
            f"sqlite:///{path}",
            "--conversations",
            str(CONVERSATIONS),
            "--seed",
            "1",
        ],
        check=True,
        cwd=ROOT,
    )


def timed(fn: Callable[[], Any], runs: int = 5) -> tuple[float, float]:
    """(first call, median of ``runs`` more) in milliseconds."""
    start = time.perf_counter()
    fn()
    first = (time.perf_counter() - start) * 1000
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return first, statistics.median(samples)


def uncached(read: Any) -> Callable[..., Any]:
    """A read of ``ui.queries`` without its ``st.cache_data``: what a page waits for on a miss."""
    return read.__wrapped__


def page_reads(store: persistence.Store, url: str) -> dict[str, Callable[[], Any]]:
    """What each page reads for its default view (the last 30 days), as the page calls it."""
    today = datetime.now(UTC).date()
    p = periods.resolve(periods.DEFAULT, today)
    newest = store.list_conversations(limit=1).items[0]
    span = {"since": p.since, "until": p.until}
    filters = {
        **span,
        "model": None,
        "provider": None,
        "tool_name": None,
        "tag": None,
        "min_cost": None,
        "text": None,
    }

    def overview() -> Any:
        uncached(q.is_empty)(url)
        return uncached(q.overview)(url, p.since, p.until, p.prev_since, p.prev_until, today)

    def threads() -> Any:
        uncached(q.is_empty)(url)
        uncached(q.facets)(url)
        uncached(q.list_threads)(url, order="recent", limit=50, **filters)
        return uncached(q.count_threads)(url, **filters)

    def threads_by_model() -> Any:
        # The page draws the table first and fills in the count after it (see views/threads.py).
        uncached(q.is_empty)(url)
        uncached(q.facets)(url)
        return uncached(q.list_threads)(url, order="recent", limit=50, **{**filters, "model": "glm-4.6"})

    def threads_by_model_count() -> Any:
        return uncached(q.count_threads)(url, **{**filters, "model": "glm-4.6"})

    def thread() -> Any:
        uncached(q.is_empty)(url)
        conv = uncached(q.thread)(url, newest.continuation_id)
        return uncached(q.related_threads)(url, newest.continuation_id, conv.parent_id if conv else None)

    def search() -> Any:
        uncached(q.is_empty)(url)
        uncached(q.choices)(url)
        return uncached(q.search)(url, "connection pool", **span, order="rank", limit=20)

    def usage() -> Any:
        uncached(q.is_empty)(url)
        uncached(q.choices)(url)
        return uncached(q.usage)(url, "model", **span)

    def storage() -> Any:
        uncached(q.is_empty)(url)
        return uncached(q.storage)(url, p.since, p.until)

    def files() -> Any:
        uncached(q.is_empty)(url)
        uncached(q.mime_types)(url)
        return uncached(q.list_files)(
            url,
            order="recent",
            limit=50,
            **span,
            mime_type=None,
            continuation_id=None,
            session_id=None,
            unused=False,
        )

    return {
        "overview": overview,
        "threads": threads,
        "threads, model filter: table": threads_by_model,
        "threads, model filter: count (drawn after the table)": threads_by_model_count,
        "thread": thread,
        "search": search,
        "usage": usage,
        "storage": storage,
        "files": files,
        "health check (background)": lambda: q.check_health(url),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render_times(url: str, paths: dict[str, str]) -> dict[str, tuple[float, float]]:
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PERSISTENCE_", "SUPABASE_"))}
    env["PERSISTENCE_URL"] = url
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    results: dict[str, tuple[float, float]] = {}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/_stcore/health", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                ],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})

            def load(path: str) -> float:
                start = time.perf_counter()
                page.goto(f"{base}/{path}")
                page.wait_for_selector("[data-testid=stMainBlockContainer] h1", timeout=60_000)
                page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=60_000)
                return time.perf_counter() - start

            load("thread")  # the server's first run, and the browser's first load of the app's assets
            for name, path in paths.items():
                cold = load(path)
                warm = load(path)
                results[name] = (cold, warm)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "path", nargs="?", type=Path, default=DEFAULT_PATH, help="SQLite store to use (built if missing)"
    )
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium render timings")
    args = parser.parse_args()

    path: Path = args.path.resolve()
    if not path.exists():
        build(path)
    url = f"sqlite:///{path}"
    store = persistence.open_store(url)
    messages = int(store.usage(()).iloc[0]["messages"])
    print(f"Store: {url}: {store.count_conversations():,} threads, {messages:,} messages")
    print(f"Data: the reads behind each page's default view (last 30 days), uncached; target <= {DATA_TARGET_MS} ms")

    data: dict[str, tuple[float, float]] = {}
    for name, fn in page_reads(store, url).items():
        data[name] = timed(fn)

    renders: dict[str, tuple[float, float]] = {}
    if not args.no_browser:
        newest = store.list_conversations(limit=1).items[0].continuation_id
        paths = {
            "overview": "",
            "threads": "threads",
            "thread": f"thread?thread={newest}",
            "search": "search?q=connection+pool",
            "usage": "usage",
            "storage": "storage",
            "files": "files",
        }
        renders = render_times(url, paths)
    store.close()

    print()
    print(
        f"| page | data first (ms) | data median (ms) | <= {DATA_TARGET_MS} ms | render cold (s) | render warm (s) | <= {RENDER_TARGET_S:g} s |"
    )
    print("|---|---:|---:|:-:|---:|---:|:-:|")
    for name, (first, median) in data.items():
        ok = "yes" if median <= DATA_TARGET_MS else "NO"
        if name in renders:
            cold, warm = renders[name]
            rok = "yes" if cold <= RENDER_TARGET_S else ("warm only" if warm <= RENDER_TARGET_S else "NO")
            print(f"| {name} | {first:,.0f} | {median:,.0f} | {ok} | {cold:.2f} | {warm:.2f} | {rok} |")
        else:
            print(f"| {name} | {first:,.0f} | {median:,.0f} | {ok} | – | – | – |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
