"""Threads: filtered and sorted on the server, one keyset page at a time.

Every filter, the sort and the page live in the URL (``?model=glm-4.6&sort=cost&page=2&after=…``),
so a reload, a shared link and the browser's Back button show the same list. The list is drawn
as rows of links (:mod:`ui.lists`), not as a data grid: a grid would let a click on a column
header sort the 50 rows on screen and call that the order, while the real order is the store's
(one sort control, the only one). A row opens its thread with a click (or Tab and Enter), and
its cost sits right after the title, at any width.
"""

from __future__ import annotations

import math

import streamlit as st

from persistence import Conversation, Page
from persistence.formatting import tokens
from ui import data, export, fmt, layout, lists, queries, urlstate, widgets
from ui.safe import inline_code

PAGE_SIZE = 50
CSV_ROWS = 1000  # the store's page limit: one read
TITLE_CHARS = 120  # longer titles are cut: a row stays within two lines
# The store's orders: each is an index, so sorting a million threads by cost costs one page.
SORTS = {"recent": "Last activity", "cost": "Cost", "created": "Created"}
SORT_CAPTIONS = {
    "recent": "last activity, newest first",
    "cost": "cost, highest first",
    "created": "creation, newest first",
}

url = data.store_url()

period = widgets.page_header("Threads").period

facets = queries.facets(url)


def any_of(label: str, options: list[str], key: str) -> str | None:
    return st.selectbox(
        label, [None, *options], format_func=lambda v: "Any" if v is None else v, key=key, bind="query-params"
    )


FILTER_KEYS = ("model", "provider", "tool", "tag", "min_cost", "title")
# On a phone the filters fold behind one switch (ui.layout), which says how many are on; the sort
# stays in view.
panel = layout.filter_panel("threads", active=sum(1 for k in FILTER_KEYS if st.query_params.get(k)))
c = panel.columns([2, 2, 2, 2, 1])
with c[0]:
    model = any_of("Model", facets.get("models", []), "model")
with c[1]:
    provider = any_of("Provider", facets.get("providers", []), "provider")
with c[2]:
    tool = any_of("Tool", facets.get("tools", []), "tool")
with c[3]:
    tag = any_of("Tag", facets.get("tags", []), "tag")
with c[4]:
    min_cost = st.number_input(
        "Min cost ($)",
        min_value=0.0,
        value=0.0,
        step=0.01,
        format="%.2f",
        key="min_cost",
        bind="query-params",
    )
c = st.columns([3, 2], vertical_alignment="bottom")
with c[0]:
    text = panel.text_input("Title contains", key="title", placeholder="words in the thread title", bind="query-params")
with c[1]:
    urlstate.choice("sort", list(SORTS), "recent")
    sort = st.segmented_control(
        "Sort by",
        list(SORTS),
        format_func=SORTS.__getitem__,
        required=True,
        key="sort",
        on_change=urlstate.keep_choice,
        args=("sort", "recent"),
    )
order = sort if sort in SORTS else "recent"
# A session has no list to pick from: it arrives in the URL from Usage's spend by session.
session = (st.query_params.get("session") or "").strip() or None
if session:
    with st.container(horizontal=True, vertical_alignment="center"):
        st.caption(f"Only session {inline_code(session)}")
        if st.button("Every session", icon=":material/close:", key="clear_session"):
            del st.query_params["session"]
            st.rerun()

filters = {
    "since": period.since,
    "until": period.until,
    "model": model,
    "provider": provider,
    "tool_name": tool,
    "tag": tag,
    "session_id": session,
    "min_cost": min_cost or None,
    "text": (text or "").strip() or None,
}


def fetch(cursor: str | None, limit: int) -> Page[Conversation]:
    return queries.list_threads(url, order=order, cursor=cursor, limit=limit, **filters)


place = urlstate.keyset_page("threads", (order, *sorted((k, str(v)) for k, v in filters.items())), fetch, PAGE_SIZE)
items: tuple[Conversation, ...] = place.page.items
summary = st.empty()  # filled in after the rows: the count may take longer than the page
if place.refused:
    st.caption("The page in the link does not belong to this list: showing its first page.")


def row_meta(t: Conversation) -> str:
    when = f"created {fmt.when(t.created_at)}" if order == "created" else f"last activity {fmt.ago(t.updated_at)}"
    parts = [
        f"{t.message_count:,} messages",
        f"{tokens(t.total_tokens)} tokens",
        t.model or "no model",
        t.tool_name or "no tool",
        when,
    ]
    if t.tags:
        parts.append(", ".join(t.tags))
    return " · ".join(parts)


def short(title: str) -> str:
    title = " ".join(title.split())
    return title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1] + "…"


if not items:
    summary.empty()
    st.info("No thread matches these filters in this period.", icon=":material/filter_alt_off:")
else:
    lists.thread_rows(
        items,
        title=lambda t: short(widgets.thread_title(t)),
        meta=row_meta,
        head=("Thread (click to open)", "Cost"),
    )

    urlstate.page_buttons("threads", place, fetch, PAGE_SIZE)

    total = queries.count_threads(url, **filters)
    first = (place.number - 1) * PAGE_SIZE + 1
    summary.caption(
        f"**{total:,}** threads · page {place.number:,} of {max(1, math.ceil(total / PAGE_SIZE)):,} · "
        f"showing {first:,}–{first + len(items) - 1:,} · sorted by {SORT_CAPTIONS[order]}"
    )
    st.download_button(
        "Download CSV",
        data=lambda: export.threads_csv(fetch(None, CSV_ROWS).items),
        file_name=f"threads-{order}.csv",
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
        key="threads_csv",
        help=f"The first {CSV_ROWS:,} threads of this list, in this order; cost in exact decimal USD",
    )
