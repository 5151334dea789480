"""The app in a real browser: `streamlit run app.py` on a seeded store, driven with headless Chromium.

Visits every page (a screenshot each, in $TEST_ARTIFACTS or test-artifacts/), runs a search and
follows a hit to its message, downloads the usage CSV and checks it against ``store.usage()``,
and checks that hostile message content stays inert: no alert fires, no injected element exists.
Every request a page makes is recorded: none may leave 127.0.0.1 (no font server for the
favicon, no CDN, no telemetry).
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pytest
from app_seed import LONG_THREAD, XSS_THREAD, seeded_url, streamlit_running
from conftest import IN_CI

import persistence

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGES = {
    "overview": "",
    "threads": "threads",
    "thread": "thread",
    "search": "search",
    "usage": "usage",
    "storage": "storage",
    "files": "files",
}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not IN_CI, reason="needs Debian's chromium (apt-get install chromium)"
    ),
]


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("TEST_ARTIFACTS") or ROOT / "test-artifacts") / "browser"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, store URL) of a `streamlit run app.py` on a freshly seeded store."""
    folder = tmp_path_factory.mktemp("browser-store")
    url = seeded_url(folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PERSISTENCE_", "SUPABASE_"))}
    env.update(PERSISTENCE_URL=url, PERSISTENCE_HOME=str(folder / "home"))
    args = ("--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false")
    with streamlit_running(env, folder / "streamlit.log", cwd=ROOT, args=args, app="app.py") as port:
        yield f"http://127.0.0.1:{port}", url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


class Tab:
    """A page in the browser that records every alert and script error it sees."""

    def __init__(self, browser: object) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)  # type: ignore[attr-defined]
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []  # the URL of every request the page made, in order
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("request", lambda request: self.requests.append(request.url))

    def _dialog(self, dialog: object) -> None:
        self.dialogs.append(dialog.message)  # type: ignore[attr-defined]
        dialog.dismiss()  # type: ignore[attr-defined]

    def settle(self, timeout: float = 30_000) -> None:
        """Wait until the app has finished running the page and drawn its title."""
        self.page.wait_for_selector("[data-testid=stMainBlockContainer] h1", timeout=timeout)
        self.page.wait_for_function(
            "() => !document.querySelector('[data-testid=stStatusWidget]')"
            " && !document.querySelector('[data-testid=stSkeleton]')",
            timeout=timeout,
        )
        self.page.wait_for_timeout(400)  # let charts and late elements draw

    def goto(self, url: str) -> None:
        self.page.goto(url)
        self.settle()

    def assert_no_error(self, where: str) -> None:
        problems = self.page.eval_on_selector_all(
            "[data-testid=stException], [data-testid=stAlertContentError]", "els => els.map(e => e.innerText)"
        )
        assert not problems, f"{where}: error shown on the page: {problems}"
        assert not self.errors, f"{where}: script errors: {self.errors}"
        assert not self.dialogs, f"{where}: a dialog opened: {self.dialogs}"
        self.assert_stays_local(where)

    def outside_requests(self) -> list[str]:
        """The requests that went anywhere but the app's own server (data: and blob: URLs are
        not requests to anyone)."""
        return [
            url
            for url in self.requests
            if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).hostname != "127.0.0.1"
        ]

    def assert_stays_local(self, where: str) -> None:
        assert self.requests, f"{where}: no request recorded"
        assert not self.outside_requests(), f"{where}: requests left 127.0.0.1: {self.outside_requests()}"

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser: object) -> Iterator[Tab]:
    t = Tab(browser)
    yield t
    t.close()


def test_a_deep_link_first_then_every_page(server: tuple[str, str], tab: Tab, artifacts: Path) -> None:
    base, _ = server
    # The very first request to the fresh server is a deep link: it must get the app's navigation.
    tab.goto(f"{base}/thread?thread={XSS_THREAD}")
    nav = tab.page.eval_on_selector_all(
        "[data-testid=stSidebarNav] a", "els => els.map(e => e.innerText.trim().split('\\n').pop())"
    )
    assert nav == ["Overview", "Threads", "Thread", "Search", "Usage & cost", "Storage", "Files"]
    tab.assert_no_error("deep link")

    for name, path in PAGES.items():
        query = f"?thread={XSS_THREAD}" if name == "thread" else "?period=all"
        started = time.perf_counter()
        tab.goto(f"{base}/{path}{query}")
        elapsed = time.perf_counter() - started
        tab.page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
        tab.assert_no_error(name)
        heading = tab.page.inner_text("[data-testid=stMainBlockContainer] h1")
        assert heading.strip(), name
        print(f"{name:<10} rendered in {elapsed:.2f} s")


def test_hostile_content_stays_inert(server: tuple[str, str], tab: Tab, artifacts: Path) -> None:
    base, _ = server
    tab.goto(f"{base}/thread?thread={XSS_THREAD}")
    main = tab.page.locator("[data-testid=stMain]")
    text = main.inner_text()
    # The payloads are shown as the text they are ...
    assert "<script>alert('xss-script')</script>" in text
    assert "<img src=x onerror=alert('xss-img')>" in text
    assert "[click me](javascript:alert('xss-link'))" in text
    # ... and nothing of them exists as an element.
    injected = tab.page.evaluate(
        """() => ({
            scripts: [...document.querySelectorAll('[data-testid=stMain] script')].filter(s => s.textContent.includes('xss')).length,
            onerror: document.querySelectorAll('[onerror]').length,
            badLinks: [...document.querySelectorAll('a')].map(a => a.getAttribute('href') || '')
                .filter(h => /^\\s*(javascript|data|vbscript):/i.test(h)).length,
            images: document.querySelectorAll('[data-testid=stChatMessage] img').length,
            bold: [...document.querySelectorAll('h1 b, h1 strong, h1 em')].length,
        })"""
    )
    assert injected == {"scripts": 0, "onerror": 0, "badLinks": 0, "images": 0, "bold": 0}, injected
    # Clicking every link in the messages opens nothing that runs.
    links = main.locator("[data-testid=stChatMessage] a")
    for i in range(links.count()):
        href = links.nth(i).get_attribute("href") or ""
        if href.startswith("http"):
            continue  # a real link would leave the test machine
        links.nth(i).click()
    tab.page.wait_for_timeout(500)
    tab.page.screenshot(path=str(artifacts / "thread-hostile-content.png"), full_page=True)
    assert tab.dialogs == []
    tab.assert_no_error("hostile thread")


def test_search_then_open_the_hit_in_its_thread(server: tuple[str, str], tab: Tab, artifacts: Path) -> None:
    from playwright.sync_api import expect

    base, _ = server
    tab.goto(f"{base}/search?period=all")
    box = tab.page.get_by_label("Search messages", exact=True).and_(tab.page.locator("input"))
    box.fill("zebracorn")
    box.press("Enter")
    hit = tab.page.locator("a.tl-hit", has_text="#2")
    hit.wait_for(timeout=30_000)
    # Streamlit streams elements: the hit's link can be drawn before its snippet, so wait for the
    # highlight rather than counting at once (a bare count flaked under CI load).
    expect(tab.page.locator("mark", has_text="zebracorn")).to_have_count(1, timeout=30_000)
    tab.page.screenshot(path=str(artifacts / "search-hit.png"), full_page=True)
    hit.click()
    tab.page.wait_for_url("**/thread?*", timeout=30_000)
    tab.settle()
    assert f"thread={XSS_THREAD}" in tab.page.url and "seq=2" in tab.page.url
    marked = tab.page.locator(".st-key-msg-2")
    assert "Linked message" in marked.inner_text() and "zebracorn" in marked.inner_text()
    tab.page.screenshot(path=str(artifacts / "thread-from-hit.png"), full_page=True)
    tab.assert_no_error("thread from a hit")


def test_usage_csv_is_what_the_store_says(server: tuple[str, str], tab: Tab, artifacts: Path) -> None:
    base, url = server
    tab.goto(f"{base}/usage?period=all")
    with tab.page.expect_download(timeout=30_000) as info:
        tab.page.get_by_role("button", name="Download CSV").click()
    path = artifacts / "usage.csv"
    info.value.save_as(str(path))
    shown = pd.read_csv(path, keep_default_na=False)
    store = persistence.open_store(url, read_only=True)
    try:
        expected = store.usage(("day", "model"))
    finally:
        store.close()
    assert len(shown) == len(expected)
    assert list(shown["day"]) == [d.strftime("%Y-%m-%d") for d in expected["day"]]
    assert list(shown["model"]) == [m or "(no model)" for m in expected["model"]]
    for column in ("messages", "input_tokens", "output_tokens", "total_tokens", "unpriced_messages"):
        assert list(shown[column]) == list(expected[column]), column
    assert shown["cost_usd"].sum() == pytest.approx(expected["cost_usd"].sum())
    tab.assert_no_error("usage")


def test_the_period_follows_from_page_to_page(server: tuple[str, str], tab: Tab) -> None:
    base, _ = server
    tab.goto(f"{base}/threads?period=all")
    tab.page.locator("[data-testid=stSidebarNav] a", has_text="Usage & cost").click()
    tab.page.wait_for_url("**/usage*", timeout=30_000)
    tab.settle()
    assert "period=all" in tab.page.url
    assert tab.page.locator("[data-testid=stSelectbox] input[aria-label=Period]").input_value() == "All time"
    tab.assert_no_error("period")


def test_the_app_asks_no_other_server(server: tuple[str, str], tab: Tab) -> None:
    """The favicon is the app's own file (a Material icon there is fetched from Google's font
    server), and no page asks any server but the app's own."""
    base, _ = server
    tab.goto(f"{base}/?period=all")
    # The page first shows Streamlit's default icon, then the app's once its page config arrives.
    tab.page.wait_for_function(
        "() => /\\/media\\//.test(document.querySelector(\"link[rel='shortcut icon']\")?.href || '')", timeout=30_000
    )
    icon = tab.page.eval_on_selector("link[rel='shortcut icon']", "link => link.href")
    assert icon.startswith(f"{base}/media/"), icon
    with urllib.request.urlopen(icon, timeout=10) as r:
        assert r.headers["Content-Type"] == "image/png"
        assert r.read().startswith(b"\x89PNG")
    for name, path in PAGES.items():
        query = f"?thread={XSS_THREAD}" if name == "thread" else "?period=all"
        tab.goto(f"{base}/{path}{query}")
    tab.page.wait_for_timeout(1000)  # anything a page asks for late
    tab.assert_no_error("every page")


# -- how the pages look at a desktop and a phone width (issue 14, "Looks") ----------------------

LOOK_PAGES = {
    "overview": "?period=all",
    "threads": "threads?period=all",
    "thread": f"thread?thread={LONG_THREAD}",
    "usage": "usage?period=all",
}
DESKTOP, PHONE = (1440, 900), (390, 844)


def page_facts(tab: Tab) -> dict[str, Any]:
    """What a reader would notice is wrong: a page wider than the screen, costs or titles cut off
    at the right edge, a chart toolbar, a title longer than two lines."""
    return dict(
        tab.page.evaluate(
            """() => {
            const width = window.innerWidth;
            const main = document.querySelector('[data-testid=stMain]');
            const h1 = document.querySelector('[data-testid=stMainBlockContainer] h1');
            const lineHeight = h1 ? parseFloat(getComputedStyle(h1).lineHeight) : 0;
            const costs = [...document.querySelectorAll('.tl-cost')];
            return {
                sideways: Math.max(document.documentElement.scrollWidth, main ? main.scrollWidth : 0) - width,
                costs: costs.length,
                costsCut: costs.filter(e => e.getBoundingClientRect().right > width + 1).length,
                costsHidden: costs.filter(e => e.getBoundingClientRect().width === 0).length,
                toolbars: document.querySelectorAll('.modebar-container .modebar, .modebar-btn').length,
                charts: document.querySelectorAll('.js-plotly-plot .main-svg').length,
                titleLines: h1 && lineHeight ? Math.round(h1.getBoundingClientRect().height / lineHeight) : 0,
                title: h1 ? h1.innerText.trim() : '',
                metrics: document.querySelectorAll('[data-testid=stMetric]').length,
                messages: document.querySelectorAll('[data-testid=stChatMessage]').length,
                linkLines: Math.max(0, ...[...document.querySelectorAll('[data-testid=stPageLink] p')].map(
                    p => Math.round(p.getBoundingClientRect().height / parseFloat(getComputedStyle(p).lineHeight)))),
            };
        }"""
        )
    )


@pytest.mark.parametrize(("width", "height"), [DESKTOP, PHONE], ids=["1440px", "390px"])
def test_pages_fit_desktop_and_phone_widths(
    server: tuple[str, str], browser: object, artifacts: Path, width: int, height: int
) -> None:
    """Overview, Threads, a Thread and Usage at 1440 px and 390 px: a screenshot each in the test
    artifacts, real content on each, nothing important off-screen (no sideways scroll, every
    cost in view), no chart toolbar, titles in two lines at most."""
    base, _ = server
    tab = Tab(browser)
    try:
        tab.page.set_viewport_size({"width": width, "height": height})
        for name, path in LOOK_PAGES.items():
            tab.goto(f"{base}/{path}")
            if name in ("overview", "usage"):
                tab.page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
            facts = page_facts(tab)
            # The app scrolls inside its main pane, so a "full page" shot is one screen: make the
            # window as tall as the page for the picture, then give it its height back.
            tall = int(tab.page.evaluate("document.querySelector('[data-testid=stMain]').scrollHeight"))
            tab.page.set_viewport_size({"width": width, "height": min(max(tall, height), 8000)})
            tab.page.wait_for_timeout(500)
            tab.page.screenshot(path=str(artifacts / f"{name}-{width}px.png"), full_page=True)
            tab.page.set_viewport_size({"width": width, "height": height})
            where = f"{name} at {width} px"
            tab.assert_no_error(where)
            assert facts["title"], where
            assert int(facts["sideways"]) <= 1, f"{where}: the page scrolls sideways by {facts['sideways']} px"
            assert facts["toolbars"] == 0, f"{where}: a chart shows its toolbar"
            assert 1 <= int(facts["titleLines"]) <= 2, f"{where}: the title takes {facts['titleLines']} lines"
            assert int(facts["linkLines"]) <= 2, f"{where}: a thread link takes {facts['linkLines']} lines"
            if name == "overview":
                assert int(facts["metrics"]) >= 4 and int(facts["charts"]) >= 1, where
            elif name == "threads":
                assert int(facts["costs"]) >= 10, f"{where}: {facts}"
                assert facts["costsCut"] == 0 and facts["costsHidden"] == 0, f"{where}: a cost is off-screen: {facts}"
            elif name == "thread":
                assert int(facts["messages"]) >= 10, where
            elif name == "usage":
                assert int(facts["charts"]) >= 2, where
    finally:
        tab.close()


# -- state that survives, and the cost rule, in a real browser (issue 14) -----------------------


def test_search_then_a_hit_then_back_returns_the_filled_search(
    server: tuple[str, str], tab: Tab, artifacts: Path
) -> None:
    """Back from a hit lands on the search as it was: the query in the box and in the address,
    the same hits drawn (a thread link is a plain link: one history entry)."""
    from playwright.sync_api import expect

    base, _ = server
    tab.goto(f"{base}/search?period=all")
    box = tab.page.get_by_label("Search messages", exact=True).and_(tab.page.locator("input"))
    box.fill("zebracorn")
    box.press("Enter")
    hit = tab.page.locator("a.tl-hit", has_text="#2")
    hit.wait_for(timeout=30_000)
    tab.page.wait_for_function("() => location.search.includes('q=zebracorn')", timeout=30_000)
    hit.click()
    tab.page.wait_for_url("**/thread?*", timeout=30_000)
    tab.settle()
    assert f"thread={XSS_THREAD}" in tab.page.url
    tab.page.go_back()
    tab.page.wait_for_url("**/search?*", timeout=30_000)
    tab.settle()
    assert "q=zebracorn" in tab.page.url and "period=all" in tab.page.url, tab.page.url
    box = tab.page.get_by_label("Search messages", exact=True).and_(tab.page.locator("input"))
    expect(box).to_have_value("zebracorn", timeout=30_000)
    expect(tab.page.locator("a.tl-hit", has_text="#2")).to_have_count(1, timeout=30_000)
    tab.page.screenshot(path=str(artifacts / "search-after-back.png"), full_page=True)
    tab.assert_no_error("search after Back")


@pytest.fixture(scope="module")
def costs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `streamlit run app.py` on the cost store (tests/app_costs_seed.py): its costliest thread
    is its oldest, off the first page by recency; one thread has no priced message."""
    from app_costs_seed import build

    folder = tmp_path_factory.mktemp("browser-costs")
    url = f"sqlite:///{folder / 'history.db'}"
    store = persistence.open_store(url)
    try:
        build(store)
    finally:
        store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PERSISTENCE_", "SUPABASE_"))}
    env.update(PERSISTENCE_URL=url, PERSISTENCE_HOME=str(folder / "home"))
    args = ("--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false")
    with streamlit_running(env, folder / "streamlit.log", cwd=ROOT, args=args, app="app.py") as port:
        yield f"http://127.0.0.1:{port}"


def test_sort_by_cost_shows_the_costliest_thread_first_and_unpriced_is_never_zero(
    costs_server: str, browser: object, artifacts: Path
) -> None:
    import re

    from app_costs_seed import COSTLY, UNPRICED_ONLY
    from playwright.sync_api import expect

    bare_zero = re.compile(r"\$0(\.0+)?(?![\d.])")
    for width, height in ((1440, 1000), (390, 844)):
        tab = Tab(browser)
        try:
            tab.page.set_viewport_size({"width": width, "height": height})
            tab.goto(f"{costs_server}/threads?period=all")
            first = tab.page.locator("a.tl-row").first
            assert COSTLY not in (first.get_attribute("href") or "")  # by recency it is far down
            unpriced_row = tab.page.locator(f'a.tl-row[href="thread?thread={UNPRICED_ONLY}"]')
            assert unpriced_row.locator(".tl-cost").inner_text() == "unpriced"
            for text in tab.page.locator("a.tl-row .tl-cost").all_inner_texts():
                assert not bare_zero.search(text), text
            tab.page.get_by_role("radio", name="Cost").click()
            tab.page.wait_for_url("**sort=cost*", timeout=30_000)
            expect(tab.page.locator("a.tl-row").first).to_have_attribute(
                "href", f"thread?thread={COSTLY}", timeout=30_000
            )
            tab.settle()
            row = tab.page.locator("a.tl-row").first
            cost = row.locator(".tl-cost")
            assert cost.is_visible() and cost.inner_text().startswith("$")
            box, page_width = cost.bounding_box(), tab.page.evaluate("document.documentElement.clientWidth")
            assert box is not None and box["x"] + box["width"] <= page_width, "the cost is off-screen"
            assert "sorted by cost" in tab.page.locator("[data-testid=stMain]").inner_text()
            tab.page.screenshot(path=str(artifacts / f"threads-by-cost-{width}.png"), full_page=False)
            tab.assert_no_error(f"threads by cost at {width} px")
        finally:
            tab.close()

    tab = Tab(browser)
    try:
        tab.goto(f"{costs_server}/thread?thread={UNPRICED_ONLY}")
        metric = tab.page.locator("[data-testid=stMetric]", has_text="Cost").first
        assert "unpriced" in metric.inner_text() and not bare_zero.search(metric.inner_text())
        chat = " ".join(tab.page.locator("[data-testid=stChatMessage]").all_inner_texts())
        assert "unpriced" in chat and not bare_zero.search(chat)
        tab.assert_no_error("unpriced thread")
    finally:
        tab.close()
