"""Search: full-text over every message, ranked, grouped by thread, the matched words highlighted.

The query, every filter and the order live in the URL (``?q=pool&model=glm-4.6&role=assistant&
order=recent&hits=50``), so a reload, a shared link and the browser's Back button from a hit all
come back to the filled search. Hits are grouped by thread: one card per thread with its hit
count, model and cost (never a bare $0 for unpriced messages), then each matching message as a
link to that message.
"""

from __future__ import annotations

from collections import OrderedDict

import streamlit as st

from persistence import SearchHit
from persistence.errors import ValidationError
from persistence.formatting import plain_title
from persistence.search_query import MAX_QUERY_CHARS, SEARCH_COUNT_CAP
from ui import data, fmt, layout, lists, queries, urlstate, widgets
from ui.safe import escape_markdown, highlight_html

ROLES = {"any": "Any", "user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool"}
ORDERS = {"rank": "Best match", "recent": "Newest"}
HITS = [10, 20, 50, 100]
SYNTAX = (
    'Words match by stem ("running" finds "run"); Chinese, Japanese, Korean and Thai by substring; '
    "Hindi, Arabic, Hebrew and other scripts as whole words, marks included; accents on Latin letters "
    "and case are ignored (cafe = café); emoji (🚀, 👩‍💻) and identifiers (`get_conversation`, "
    "`file.py`, `--flag`) are words too. "
    '`"exact phrase"`, `pool OR cache`, `-exclude` (up to 8), `prefix*` (4 characters or more, up to 4 in a search).'
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
# On a phone the filters fold behind one switch (ui.layout) that says how many are on.
panel = layout.filter_panel(
    "search", active=sum(1 for k in ("model", "role", "order", "hits") if st.query_params.get(k))
)
c = panel.columns(4)
model = c[0].selectbox(
    "Model",
    [None, *facets.get("models", [])],
    format_func=lambda v: "Any" if v is None else v,
    key="model",
    bind="query-params",
)
urlstate.choice("role", list(ROLES), "any")
role = c[1].selectbox(
    "Role", list(ROLES), format_func=ROLES.__getitem__, key="role", on_change=urlstate.keep_choice, args=("role", "any")
)
urlstate.choice("order", list(ORDERS), "rank")
order = c[2].segmented_control(
    "Order",
    list(ORDERS),
    format_func=ORDERS.__getitem__,
    required=True,
    key="order",
    on_change=urlstate.keep_choice,
    args=("order", "rank"),
)
order = order if order in ORDERS else "rank"
limit = int(c[3].select_slider("Hits", options=HITS, value=20, key="hits", bind="query-params"))

if not (query or "").strip():
    st.caption(SYNTAX)
    st.stop()

try:
    # One more than shown: whether there are more is then known, not guessed from a full page.
    found = queries.search(
        url,
        query or "",
        since=period.since,
        until=period.until,
        model=model,
        role=None if role == "any" else role,
        order=order,
        limit=limit + 1,
    )
except ValidationError as exc:  # over a search limit (words): say which, no error page
    st.warning(escape_markdown(exc.message), icon=":material/warning:")
    st.stop()

if not found:
    st.info(
        f"No message matches in {escape_markdown(period.describe())}. Try fewer words, "
        "or `word*` for words that start with it.",
        icon=":material/search_off:",
    )
    if period.since is not None:

        def all_time() -> None:
            st.query_params["period"] = "all"  # the period picker reads it on the rerun

        st.button("Search all time", key="search_all_time", icon=":material/history:", on_click=all_time)
    st.stop()

more = len(found) > limit
hits = found[:limit]
groups: OrderedDict[str, list[SearchHit]] = OrderedDict()
for hit in hits:
    groups.setdefault(hit.continuation_id, []).append(hit)
threads = queries.threads_by_id(url, tuple(groups))
order_label = ORDERS[order].lower()


def total_caption(total: int | None) -> str:
    """The line above the hits; ``total`` None: not (yet) counted, "more than" the page."""
    if total is None:
        count = f"More than {len(hits):,}"
    elif total > SEARCH_COUNT_CAP:
        count = f"More than {SEARCH_COUNT_CAP:,}"
    else:
        count = f"{total:,}"
    in_threads = f"{len(groups):,} thread{'s' if len(groups) != 1 else ''}"
    return (
        f"{count} matching message{'s' if total != 1 else ''}"
        + ("" if more else f" in {in_threads}")
        + f" · {escape_markdown(period.describe())} · {order_label} first"
        # The threads of the page only: counting every match's thread would read every match's row.
        + (f" · showing the first {limit:,}, in {in_threads}" if more else "")
        + (" (raise Hits for more)" if more and limit < HITS[-1] else "")
    )


# Past one page the total is counted after the hits are drawn (at a million messages a common
# word takes Postgres a second or more to count), within the search's own time limit; a count
# stopped at it (ui.queries.count_search: None) leaves the honest "more than" the page.
total_line = st.empty()
total_line.caption(total_caption(None if more else len(hits)))


def hit_meta(hit: SearchHit) -> str:
    m = hit.message
    parts = [f"#{m.seq}", m.role, m.model or "", fmt.when(m.created_at), fmt.message_cost(m) or ""]
    if order == "rank":  # a score means nothing when the order is by time
        parts.append(f"score {hit.score:.2f}")
    return " · ".join(p for p in parts if p)


cards = []
for cid, thread_hits in groups.items():
    conv = threads.get(cid)
    first = thread_hits[0]
    title = plain_title(first.conversation_title or "") or (
        widgets.thread_title(conv) if conv else widgets.thread_title(None, cid)
    )
    n = len(thread_hits)
    meta = [f"{n} hit{'s' if n != 1 else ''}"]
    if conv is not None:
        meta += [
            conv.model or "no model",
            f"{conv.message_count:,} messages",
            f"last activity {fmt.ago(conv.updated_at)}",
        ]
    head = lists.Row(
        href=lists.thread_href(cid, first.message.seq),
        title=" ".join(title.split()),
        cost=fmt.cost(conv) if conv is not None else "",
        meta=" · ".join(meta),
    )
    rows = [
        lists.Hit(lists.thread_href(cid, h.message.seq), hit_meta(h), highlight_html(h.fragments)) for h in thread_hits
    ]
    cards.append(lists.card_html(head, rows))
st.html(lists.CSS + '<div class="tl-list search-hits">' + "".join(cards) + "</div>")
if more:
    total_line.caption(
        total_caption(
            queries.count_search(
                url,
                query or "",
                since=period.since,
                until=period.until,
                model=model,
                role=None if role == "any" else role,
            )
        )
    )
