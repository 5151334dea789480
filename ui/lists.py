"""Lists of threads (and search hits) drawn as plain HTML links, one row per thread.

Why not ``st.dataframe``: its column headers sort the rows on screen, so a click on "Cost"
would order one page of 50 and look like the costliest threads; the order here is always the
store's. Why not ``st.page_link``: Streamlit records an in-app jump as two history entries, the
first being the list's own page with the thread's query string, so the browser's Back button
landed on an empty list. A real link is one entry: Back returns to the list exactly as it was
(its filters, sort, page and search query are in its URL). A row is one link, so it opens with
a click anywhere on it, or with Tab and Enter.

Every piece of text is HTML-escaped here; snippets come from :func:`ui.safe.highlight_html`.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import streamlit as st

from persistence import Conversation

from . import fmt
from .nav import link

__all__ = ["CSS", "Hit", "Row", "brief", "card_html", "nav_link_html", "rows_html", "thread_href", "thread_rows"]

CSS = """<style>
.tl-list { display: flex; flex-direction: column; gap: 2px; }
.tl-row { display: grid; grid-template-columns: minmax(0, 1fr) auto; column-gap: 1rem; row-gap: 0.1rem;
  padding: 0.45rem 0.6rem; border-radius: 0.5rem; color: inherit; text-decoration: none;
  border: 1px solid rgba(128, 128, 128, 0.18); }
.tl-row:hover, .tl-row:focus-visible { background: rgba(128, 128, 128, 0.10); color: inherit; text-decoration: none; }
.tl-row:focus-visible { outline: 2px solid rgba(255, 75, 75, 0.8); outline-offset: 1px; }
.tl-title { font-weight: 600; overflow-wrap: anywhere; display: -webkit-box; -webkit-box-orient: vertical;
  -webkit-line-clamp: 2; line-clamp: 2; overflow: hidden; }
.tl-cost { font-weight: 600; white-space: nowrap; text-align: right; font-variant-numeric: tabular-nums; }
.tl-cost.tl-unpriced { color: #b35c00; }
.tl-meta { grid-column: 1 / -1; font-size: 0.85rem; opacity: 0.72; overflow-wrap: anywhere; }
.tl-snippet { grid-column: 1 / -1; font-size: 0.9rem; overflow-wrap: anywhere; }
.tl-snippet + .tl-snippet { border-top: 1px dashed rgba(128, 128, 128, 0.25); padding-top: 0.2rem; }
.tl-head { display: grid; grid-template-columns: minmax(0, 1fr) auto; column-gap: 1rem; padding: 0 0.6rem;
  font-size: 0.8rem; opacity: 0.65; }
.tl-head span:last-child { text-align: right; }
.tl-card { border: 1px solid rgba(128, 128, 128, 0.25); border-radius: 0.5rem; padding: 0.2rem; margin-bottom: 0.5rem; }
.tl-card > .tl-row { border: none; }
.tl-hit { display: block; margin: 0.15rem 0.4rem 0.3rem 1.2rem; padding: 0.3rem 0.5rem; border-radius: 0.4rem;
  color: inherit; text-decoration: none; border-left: 3px solid rgba(128, 128, 128, 0.3); }
.tl-hit:hover, .tl-hit:focus-visible { background: rgba(128, 128, 128, 0.10); color: inherit; text-decoration: none; }
.tl-nav { grid-template-columns: minmax(0, 1fr); padding: 0.3rem 0.6rem; }
.tl-nav-title { font-weight: 400; opacity: 0.8; }
.tl-hit-meta { display: block; font-size: 0.8rem; opacity: 0.72; }
.tl-hit-text { display: block; font-size: 0.92rem; overflow-wrap: anywhere; }
</style>"""


@dataclass(frozen=True, slots=True)
class Row:
    """One row: a link (``href``) with a title, a cost beside it, details below, and snippets
    (already-safe HTML) under those."""

    href: str
    title: str
    cost: str
    meta: str = ""
    snippets: tuple[str, ...] = ()

    def html(self) -> str:
        unpriced = " tl-unpriced" if "unpriced" in self.cost else ""
        parts = [
            f'<a class="tl-row" href="{html.escape(self.href, quote=True)}">',
            f'<span class="tl-title">{html.escape(self.title)}</span>',
            f'<span class="tl-cost{unpriced}">{html.escape(self.cost)}</span>',
        ]
        if self.meta:
            parts.append(f'<span class="tl-meta">{html.escape(self.meta)}</span>')
        parts += [f'<span class="tl-snippet">{s}</span>' for s in self.snippets]
        parts.append("</a>")
        return "".join(parts)


@dataclass(frozen=True, slots=True)
class Hit:
    """One matching message inside a thread's card: a link to it, a line about it, and its
    snippet (already-safe HTML from :func:`ui.safe.highlight_html`)."""

    href: str
    meta: str
    snippet_html: str

    def html(self) -> str:
        return (
            f'<a class="tl-hit" href="{html.escape(self.href, quote=True)}">'
            f'<span class="tl-hit-meta">{html.escape(self.meta)}</span>'
            f'<span class="tl-hit-text">{self.snippet_html}</span></a>'
        )


def card_html(head: Row, hits: Iterable[Hit]) -> str:
    """A thread's card: its row (a link to the thread), then a link to each matching message."""
    return f'<div class="tl-card">{head.html()}{"".join(h.html() for h in hits)}</div>'


def rows_html(rows: Iterable[Row], *, head: tuple[str, str] | None = None) -> str:
    """The rows as one block of HTML (with its stylesheet), optionally under a header line."""
    out = [CSS, '<div class="tl-list">']
    if head:
        out.append(f'<div class="tl-head"><span>{html.escape(head[0])}</span><span>{html.escape(head[1])}</span></div>')
    out += [r.html() for r in rows]
    out.append("</div>")
    return "".join(out)


def nav_link_html(href: str, label: str, title: str) -> str:
    """A small link to a neighbouring thread: ``label`` in bold, its title after it."""
    return (
        f'{CSS}<a class="tl-row tl-nav" href="{html.escape(href, quote=True)}">'
        f'<span class="tl-title">{html.escape(label)} <span class="tl-nav-title">{html.escape(title)}</span></span></a>'
    )


def brief(t: Conversation) -> str:
    """A thread's details in one line, for short lists: messages, model, last activity."""
    return f"{t.message_count:,} messages · {t.model or 'no model'} · last activity {fmt.ago(t.updated_at)}"


def thread_href(continuation_id: str, seq: int | None = None) -> str:
    """The Thread page's address for a thread (and one of its messages), relative to the app."""
    return link("thread", thread=continuation_id, **({"seq": str(seq)} if seq is not None else {}))


def thread_rows(
    threads: Iterable[Conversation],
    *,
    title: Callable[[Conversation], str],
    meta: Callable[[Conversation], str],
    head: tuple[str, str] | None = None,
) -> None:
    """Threads as rows that open on a click: the title, its cost (:func:`ui.fmt.cost`: never a
    bare $0 for unpriced messages) right after it, and ``meta`` below."""
    rows = [Row(thread_href(t.continuation_id), title(t), fmt.cost(t), meta(t)) for t in threads]
    st.html(rows_html(rows, head=head))
