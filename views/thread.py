"""Thread: the conversation as a chat, newest turns first loaded, with its files, relatives and exports.

Deep links: ``?thread=<continuation_id>`` opens a thread, ``&seq=<n>`` marks that message (and
loads back far enough to show it).
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from persistence import Conversation, Message
from persistence.formatting import size, thread_cost, tokens
from persistence.uploads import download_type
from ui import data, export, fmt, lists, queries, whatif, widgets
from ui.nav import PAGES
from ui.queries import THREAD_PAGE
from ui.safe import escape_markdown, inline_code

RECENT = 20  # threads listed when no thread is named


url = data.store_url()
store = data.get_store()


def file_bytes(file_id: str) -> Callable[[], bytes]:
    """A stored file's bytes, read only when its download is asked for."""
    return lambda: store.open_file(file_id).read()


cid = (st.query_params.get("thread") or "").strip()
try:
    target = int(st.query_params.get("seq", "")) if st.query_params.get("seq") else None
except ValueError:
    target = None

if not cid:
    # No thread named: the most recent ones to open (with their cost), not a dead end.
    st.title("Thread")
    st.write("Open one of the most recent threads, paste a continuation id, or find one in **Threads** or **Search**.")
    entered = st.text_input("Continuation id", key="thread_id_input", placeholder="e.g. 3f0c…")
    if entered.strip():
        st.query_params["thread"] = entered.strip()
        st.rerun()
    recent = queries.list_threads(url, limit=RECENT)
    if recent.items:
        st.subheader("Recent threads")
        lists.thread_rows(
            recent.items,
            title=widgets.thread_title,
            meta=lists.brief,
            head=("Thread (click to open)", "Cost"),
        )
        st.page_link(PAGES["threads"].path, label="All threads", icon=":material/forum:")
    st.stop()

try:
    conv = queries.thread(url, cid)
except Exception as exc:  # e.g. an id the store refuses: say so instead of a traceback
    conv = None
    st.caption(escape_markdown(data.scrub(str(exc), url)))
if conv is None:
    st.title("Thread not found")
    st.warning(f"No thread has the continuation id {inline_code(cid)}.", icon=":material/search_off:")
    st.page_link(PAGES["threads"].path, label="All threads", icon=":material/arrow_back:")
    st.stop()
shown: Conversation = conv


def whole_thread_as(render: Callable[[Conversation], str]) -> Callable[[], str]:
    """The whole thread (the page holds only its newest messages), read and rendered only when
    its download is asked for; what the page shows if it was deleted in the meantime."""
    return lambda: render(store.get_conversation(cid) or shown)


# -- header ------------------------------------------------------------------------------

st.title(escape_markdown(widgets.thread_title(conv)))
meta = [
    inline_code(conv.continuation_id),
    escape_markdown(conv.tool_name or "no tool"),
    escape_markdown(conv.model or "no model"),
    f"started {escape_markdown(fmt.when(conv.created_at))}",
    f"last activity {escape_markdown(fmt.when(conv.updated_at))} ({escape_markdown(fmt.ago(conv.updated_at))})",
]
if conv.status != "active":
    meta.append(escape_markdown(conv.status))
if conv.session_id:
    meta.append(f"session {inline_code(conv.session_id)}")
st.caption(" · ".join(meta))
if conv.redacted_at is not None:
    st.info(
        f"Content redacted {escape_markdown(fmt.when(conv.redacted_at))}: its text and files were erased; "
        "tokens, costs, models and times are kept.",
        icon=":material/visibility_off:",
    )
if conv.tags:
    with st.container(horizontal=True, gap="small"):
        for tag in conv.tags:
            st.badge(escape_markdown(tag), icon=":material/sell:", color="gray")

# Newer / older thread (by last activity, as Threads lists them) and the id to copy: the
# continuation id is what an MCP client passes to go on with this thread.
newer, older = queries.neighbours(url, cid)
nav = st.columns([2, 2, 3], vertical_alignment="center")
with nav[0]:
    if newer is not None:
        st.html(lists.nav_link_html(lists.thread_href(newer.continuation_id), "← Newer", widgets.thread_title(newer)))
with nav[1]:
    if older is not None:
        st.html(lists.nav_link_html(lists.thread_href(older.continuation_id), "Older →", widgets.thread_title(older)))
with nav[2]:
    st.code(conv.continuation_id, language=None)  # Streamlit's copy button comes with it

u = conv.usage
cols = st.columns([1, 1, 1, 2], vertical_alignment="center")
cols[0].metric("Messages", f"{conv.message_count:,}", border=True)
cols[1].metric(
    "Tokens",
    tokens(conv.total_tokens),
    help=(
        f"input {u.input_tokens:,} · cached input {u.cached_input_tokens:,} · cache write "
        f"{u.cache_write_tokens:,} · output {u.output_tokens:,} · reasoning {u.reasoning_tokens:,}"
    ),
    border=True,
)
cols[2].metric(
    "Cost",
    fmt.cost(conv),
    help=f"${conv.cost_usd:.6f} USD"
    + (f"; {conv.unpriced_messages} messages have no price" if conv.unpriced_messages else ""),
    border=True,
)
with cols[3]:
    st.caption("Export the whole thread")
    with st.container(horizontal=True, gap="small"):
        st.download_button(
            "JSON",
            data=whole_thread_as(export.thread_json),
            file_name=f"thread-{cid}.json",
            mime="application/json",
            icon=":material/data_object:",
            on_click="ignore",
            help="The record `python -m persistence import` reads",
        )
        st.download_button(
            "Markdown",
            data=whole_thread_as(export.thread_markdown),
            file_name=f"thread-{cid}.md",
            mime="text/markdown",
            icon=":material/description:",
            on_click="ignore",
        )

whatif.draw_thread(url, conv)

# -- related threads and files -------------------------------------------------------------

parent, children, more_children = queries.related_threads(url, cid, conv.parent_id)
if conv.parent_id or children:
    with st.container(border=True):
        if conv.parent_id:
            if parent is not None:
                st.caption("Continues")
                widgets.thread_link(parent)
            else:
                st.caption(f"Continues {inline_code(conv.parent_id)}, which is not in this store.")
        if children:
            st.caption(f"Continued in {len(children)}{'+' if more_children else ''} thread(s)")
            for child in children:
                widgets.thread_link(child)

if conv.files:
    with st.expander(f"Files ({len(conv.files)})", icon=":material/attach_file:"):
        for f in conv.files:
            row = st.columns([4, 2, 2, 2], vertical_alignment="center")
            row[0].markdown(f":material/description: {escape_markdown(f.filename)}")
            row[1].caption(escape_markdown(f.mime_type))
            row[2].caption(f"{size(f.size)} · {escape_markdown(fmt.when(f.created_at))}")
            with row[3]:
                st.download_button(
                    "Download",
                    data=file_bytes(f.id),
                    file_name=f.filename,
                    mime=download_type(f.mime_type),  # HTML/SVG: octet-stream, never rendered
                    key=f"thread_file_{f.upload_id or f.id}",
                    icon=":material/download:",
                    on_click="ignore",
                )

# -- messages ----------------------------------------------------------------------------


def turn_strip(loaded: list[Message]) -> None:
    """Per turn: cost (the one rule: never a bare $0 for no price), latency, cache hit and the
    running cost. The loaded messages are the thread's newest, so the running cost at a turn is
    the thread's total less the turns after it: exact even when older turns are not loaded."""
    after_usd = 0.0
    after_unpriced = 0
    running: list[str] = []
    for m in reversed(loaded):
        usd, unpriced = shown.cost_usd - after_usd, shown.unpriced_messages - after_unpriced
        # Nothing spent yet (turns before the first priced or unpriced one): a dash, so a thread
        # whose cost is unpriced never shows a $0 anywhere.
        running.append(thread_cost(usd, unpriced) if usd > 1e-12 or unpriced else "–")
        after_usd += m.cost_usd or 0.0
        after_unpriced += fmt.message_cost(m) == "unpriced"
    running.reverse()
    table = pd.DataFrame(
        {
            "Turn": [m.seq for m in loaded],
            "Role": [m.role for m in loaded],
            "Model": [m.model or "" for m in loaded],
            "Tokens": [m.usage.total for m in loaded],
            "Cache hit": [cache_hit(m) for m in loaded],
            "Latency": [fmt.duration(m.duration_ms) if m.duration_ms is not None else "" for m in loaded],
            "Cost": [fmt.message_cost(m) or "" for m in loaded],
            "Running cost": running,
        }
    )
    with st.expander("Per turn: cost, latency, cache hit, running cost", icon=":material/timeline:", expanded=True):
        st.dataframe(
            table,
            hide_index=True,
            key="thread_turns",
            height=min(36 * (len(table) + 1) + 3, 400),
            column_config={
                "Tokens": st.column_config.NumberColumn(format="localized"),
                "Cache hit": st.column_config.ProgressColumn(
                    format="percent", min_value=0.0, max_value=1.0, help="Cached input tokens / all input tokens"
                ),
            },
        )


def cache_hit(m: Message) -> float | None:
    """The share of a turn's input that was read from the provider's cache (None: no input)."""
    read = m.usage.input_tokens + m.usage.cached_input_tokens
    return m.usage.cached_input_tokens / read if read else None


older_key = f"thread_older_pages::{cid}"
pages_wanted = int(st.session_state.get(older_key, 0))
messages = list(conv.messages)
pages_loaded = 0
# Older pages: those asked for with "Load older", and as many as a deep link to a message needs.
while (
    messages
    and len(messages) < conv.message_count
    and (pages_loaded < pages_wanted or (target is not None and messages[0].seq > target))
):
    batch = queries.older_messages(url, cid, messages[0].seq, THREAD_PAGE)
    if not batch:
        break
    messages = batch + messages
    pages_loaded += 1

if target is not None and not any(m.seq == target for m in messages):
    st.warning(f"Message #{target} is not in this thread.", icon=":material/search_off:")

if not messages:
    st.info("This thread has no messages yet.", icon=":material/chat_bubble_outline:")
else:
    remaining = conv.message_count - len(messages)
    if remaining > 0:

        def load_older() -> None:
            st.session_state[older_key] = pages_loaded + 1

        st.button(
            f"Load older ({remaining:,} more)",
            icon=":material/expand_less:",
            on_click=load_older,
            key="thread_load_older",
        )
    st.caption(f"Messages #{messages[0].seq}–#{messages[-1].seq} of {conv.message_count:,}, oldest first")
    turn_strip(messages)
    for m in messages:
        widgets.message(m, target=m.seq == target)
    if target is not None and any(m.seq == target for m in messages):
        # Our own constant script (the seq is an int): scroll the linked message into view.
        st.html(
            f"<script>setTimeout(() => document.querySelector('.st-key-msg-{int(target)}')"
            "?.scrollIntoView({block: 'center'}), 300)</script>",
            unsafe_allow_javascript=True,
        )
