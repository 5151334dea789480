"""Reading the app's HTML lists (ui.lists) in AppTest: thread rows and search hit cards."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from streamlit.testing.v1 import AppTest

__all__ = ["ShownRow", "hit_links", "search_results", "shown_rows"]

_ROW = re.compile(
    r'<a class="tl-row" href="(?P<href>[^"]*)"><span class="tl-title">(?P<title>.*?)</span>'
    r'<span class="tl-cost[^"]*">(?P<cost>.*?)</span>'
)


@dataclass(frozen=True)
class ShownRow:
    href: str
    title: str
    cost: str


def shown_rows(at: AppTest) -> list[ShownRow]:
    """The thread rows of the first list drawn, in order."""
    for block in at.html:
        if 'class="tl-list"' in block.value:
            return [
                ShownRow(html.unescape(m["href"]), html.unescape(m["title"]), html.unescape(m["cost"]))
                for m in _ROW.finditer(block.value)
            ]
    return []


def search_results(at: AppTest) -> str:
    """The search page's block of hit cards ('' when none is drawn)."""
    return next((h.value for h in at.html if "search-hits" in h.value), "")


def hit_links(at: AppTest) -> list[str]:
    """The query string of each matching message's link, in order."""
    return [html.unescape(m) for m in re.findall(r'<a class="tl-hit" href="thread\?([^"]*)"', search_results(at))]
