"""Search: full-text over every message, ranked, with the matched words highlighted."""

from __future__ import annotations

import streamlit as st

from persistence.errors import ValidationError
from persistence.search_query import MAX_QUERY_CHARS
from ui import data, fmt, queries, widgets
from ui.safe import escape_markdown, highlight_html

ROLES = {None: "Any", "user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool"}
ORDERS = {"rank": "Best match", "recent": "Newest"}
SYNTAX = (
    'Words match by stem ("running" finds "run"); Chinese, Japanese, Korean and Thai by substring; '
    "Hindi, Arabic, Hebrew and other scripts as whole words, marks included; accents on Latin letters "
    "and case are ignored (cafe = café); emoji (🚀, 👩‍💻) and identifiers (`get_conversation`, "
    "`file.py`, `--flag`) are words too. "
    '`"exact phrase"`, `pool OR cache`, `-exclude`, `prefix*`.'
)

url = data.store_url()

period = widgets.page_header("Search").period

query = st.text_input(
    "Search messages",
    key="q",
    bind="query-params",
    placeholder='connection pool   "exact phrase"   cache OR queue   -retry   数据库',
    help=SYNTAX,
    max_chars=MAX_QUERY_CHARS,
)
facets = queries.choices(url)
c = st.columns(4)
model = c[0].selectbox(
    "Model", [None, *facets.get("models", [])], format_func=lambda v: "Any" if v is None else v, key="search_model"
)
role = c[1].selectbox("Role", list(ROLES), format_func=ROLES.__getitem__, key="search_role")
order = c[2].segmented_control(
    "Order", list(ORDERS), format_func=ORDERS.__getitem__, default="rank", required=True, key="search_order"
)
limit = c[3].select_slider("Hits", options=[10, 20, 50, 100], value=20, key="search_limit")

if not query.strip():
    st.caption(SYNTAX)
    st.stop()

try:
    hits = queries.search(
        url,
        query,
        since=period.since,
        until=period.until,
        model=model,
        role=role,
        order=order or "rank",
        limit=int(limit),
    )
except ValidationError as exc:  # over a search limit (words): say which, no error page
    st.warning(escape_markdown(exc.message), icon=":material/warning:")
    st.stop()
if not hits:
    st.info(
        f"No message matches in {escape_markdown(period.describe())}. Try fewer words, a longer period, "
        "or `word*` for words that start with it.",
        icon=":material/search_off:",
    )
    st.stop()

st.caption(
    f"{len(hits)}{'+' if len(hits) == limit else ''} matching messages in {escape_markdown(period.describe())}, "
    f"{ORDERS[order or 'rank'].lower()} first"
)
for i, hit in enumerate(hits):
    m = hit.message
    with st.container(border=True, key=f"hit-{i}"):
        top = st.columns([5, 2], vertical_alignment="center")
        with top[0]:
            title = hit.conversation_title or widgets.thread_title(None, m.continuation_id)
            widgets.thread_link(m.continuation_id, label=f"{title} · #{m.seq}", seq=m.seq)
        top[1].caption(
            escape_markdown(
                " · ".join(p for p in (m.role, m.model or "", fmt.when(m.created_at), f"score {hit.score:.2f}") if p)
            )
        )
        st.html(f'<div class="search-snippet">{highlight_html(hit.fragments)}</div>')
