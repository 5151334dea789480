"""Threads: filtered on the server, one keyset page at a time, newest activity or cost first."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from ui import data, queries, widgets
from ui.nav import PAGES, link

PAGE_SIZE = 50
ORDERS = {"recent": "Last activity", "cost": "Cost", "created": "Created"}

url = data.store_url()

period = widgets.page_header("Threads").period

facets = queries.facets(url)


def any_of(label: str, options: list[str], key: str) -> str | None:
    return st.selectbox(label, [None, *options], format_func=lambda v: "Any" if v is None else v, key=key)


c = st.columns([2, 2, 2, 2, 1])
with c[0]:
    model = any_of("Model", facets.get("models", []), "threads_model")
with c[1]:
    provider = any_of("Provider", facets.get("providers", []), "threads_provider")
with c[2]:
    tool = any_of("Tool", facets.get("tools", []), "threads_tool")
with c[3]:
    tag = any_of("Tag", facets.get("tags", []), "threads_tag")
with c[4]:
    min_cost = st.number_input(
        "Min cost ($)", min_value=0.0, value=0.0, step=0.01, format="%.2f", key="threads_min_cost"
    )
c = st.columns([3, 2], vertical_alignment="bottom")
with c[0]:
    text = st.text_input("Title contains", key="threads_text", placeholder="words in the thread title")
with c[1]:
    order = st.segmented_control(
        "Sort by", list(ORDERS), format_func=ORDERS.__getitem__, default="recent", required=True, key="threads_order"
    )
order = order or "recent"

filters = {
    "since": period.since,
    "until": period.until,
    "model": model,
    "provider": provider,
    "tool_name": tool,
    "tag": tag,
    "min_cost": min_cost or None,
    "text": text.strip() or None,
}

cursors = widgets.page_cursors("threads", order, filters)

page = queries.list_threads(url, order=order, cursor=cursors[-1], limit=PAGE_SIZE, **filters)
summary = st.empty()  # filled in after the table: the count may take longer than the page

if not page.items:
    summary.empty()
    st.info("No thread matches these filters in this period.", icon=":material/filter_alt_off:")
else:
    table = pd.DataFrame(
        {
            "Title": [widgets.thread_title(t) for t in page.items],
            "Last activity": [t.updated_at for t in page.items],
            "Tool": [t.tool_name for t in page.items],
            "Model": [t.model for t in page.items],
            "Messages": [t.message_count for t in page.items],
            "Tokens": [t.total_tokens for t in page.items],
            "Cost": [t.cost_usd for t in page.items],
            "Unpriced": [t.unpriced_messages for t in page.items],
            "Tags": [list(t.tags) for t in page.items],
            "Open": [link("thread", thread=t.continuation_id) for t in page.items],
        }
    )
    event = st.dataframe(
        table,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key=f"threads_table_{len(cursors)}",
        height=min(36 * (len(table) + 1) + 3, 1200),
        column_config={
            "Title": st.column_config.TextColumn(width="large"),
            "Last activity": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm", timezone="UTC"),
            "Tokens": st.column_config.NumberColumn(format="localized"),
            "Cost": st.column_config.NumberColumn(format="$%.4f", help="USD; unpriced messages are not included"),
            "Unpriced": st.column_config.NumberColumn(help="Messages from models without a price"),
            "Tags": st.column_config.ListColumn(),
            "Open": st.column_config.LinkColumn(display_text="Open ↗", help="Open in a new tab"),
        },
    )
    st.caption("Select a row to open the thread.")
    if event.selection.rows:
        chosen = page.items[event.selection.rows[0]]
        st.switch_page(PAGES["thread"].path, query_params={"thread": chosen.continuation_id})

    widgets.page_buttons("threads", cursors, page.next_cursor)

    total = queries.count_threads(url, **filters)
    first = (len(cursors) - 1) * PAGE_SIZE + 1
    summary.caption(
        f"**{total:,}** threads · page {len(cursors)} of {max(1, math.ceil(total / PAGE_SIZE)):,} · "
        f"showing {first:,}–{first + len(page.items) - 1:,} · sorted by {ORDERS[order].lower()}"
    )
