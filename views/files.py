"""Files: every upload, filtered on the server; download one and see which threads used it."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from persistence import Page, StoredFile
from persistence.formatting import size
from persistence.uploads import download_type
from ui import data, fmt, layout, lists, queries, urlstate, widgets
from ui.safe import escape_markdown, inline_code

PAGE_SIZE = 50
ORDERS = {"recent": "Newest", "size": "Largest"}

url = data.store_url()
store = data.get_store()


def file_bytes(file_id: str) -> Callable[[], bytes]:
    """A stored file's bytes, read only when its download is asked for."""
    return lambda: store.open_file(file_id).read()


period = widgets.page_header("Files").period

types = queries.mime_types(url)
prefixes = sorted({t.split("/", 1)[0] + "/" for t in types})
# Every filter, the order and the page live in the URL (a reload or a shared link shows the same
# uploads): the filters are bound to it by Streamlit, the order and page by ui.urlstate.
c = layout.filter_panel("files").columns([2, 2, 2, 1, 1], vertical_alignment="bottom")
mime = c[0].selectbox(
    "Type",
    [None, *prefixes, *types],
    format_func=lambda v: "Any" if v is None else (f"{v}*" if v.endswith("/") else v),
    key="files_type",
    bind="query-params",
)
thread_id = (c[1].text_input("Thread (continuation id)", key="files_thread", bind="query-params") or "").strip()
session_id = (c[2].text_input("Session", key="files_session", bind="query-params") or "").strip()
unused = c[3].toggle("Unused only", key="files_unused", help="Files no thread uses", bind="query-params")
urlstate.choice("files_order", list(ORDERS), "recent")
chosen = c[4].segmented_control(
    "Order",
    list(ORDERS),
    format_func=ORDERS.__getitem__,
    required=True,
    key="files_order",
    on_change=urlstate.keep_choice,
    args=("files_order", "recent"),
)
order = chosen if chosen in ORDERS else "recent"

filters = {
    "since": period.since,
    "until": period.until,
    "mime_type": mime,
    "continuation_id": thread_id or None,
    "session_id": session_id or None,
    "unused": unused,
}


def fetch(cursor: str | None, limit: int) -> Page[StoredFile]:
    return queries.list_files(url, order=order, cursor=cursor, limit=limit, **filters)


try:
    place = urlstate.keyset_page("files", (order, *sorted((k, str(v)) for k, v in filters.items())), fetch, PAGE_SIZE)
except Exception as exc:  # e.g. a malformed id typed into a filter: say what is wrong
    st.warning(escape_markdown(data.scrub(str(exc), url)), icon=":material/error:")
    st.stop()
page = place.page

if not page.items:
    st.info("No upload matches these filters in this period.", icon=":material/filter_alt_off:")
    st.stop()

first = (place.number - 1) * PAGE_SIZE + 1
st.caption(
    f"Uploads {first:,}–{first + len(page.items) - 1:,}{' of more' if page.next_cursor else ''}, "
    f"{ORDERS[order].lower()} first · select a row for details and download"
)
table = pd.DataFrame(
    {
        "File": [f.filename for f in page.items],
        "Type": [f.mime_type for f in page.items],
        "Size": [f.size for f in page.items],
        "Uploaded": [f.created_at for f in page.items],
        "Dedup": [f.deduplicated for f in page.items],
        "Thread": [f.continuation_id for f in page.items],
        "Session": [f.session_id for f in page.items],
        "sha256": [f.file_hash[:12] for f in page.items],
    }
)
event = st.dataframe(
    table,
    hide_index=True,
    on_select="rerun",
    selection_mode="single-row",
    key=f"files_table_{place.number}",
    height=min(36 * (len(table) + 1) + 3, 700),
    column_config={
        "File": st.column_config.TextColumn(width="medium"),
        "Size": st.column_config.NumberColumn(format="bytes"),
        "Uploaded": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm", timezone="UTC"),
        "Dedup": st.column_config.CheckboxColumn(help="The bytes were already stored: this upload cost nothing"),
    },
)


urlstate.page_buttons("files", place, fetch, PAGE_SIZE)

rows = event.selection.rows
if rows:
    f = page.items[rows[0]]
    with st.container(border=True):
        st.subheader(escape_markdown(f.filename))
        st.caption(
            " · ".join(
                [
                    escape_markdown(f.mime_type),
                    f"{size(f.size)} ({f.size:,} bytes)",
                    f"uploaded {escape_markdown(fmt.when(f.created_at))}",
                    "deduplicated: no new bytes stored" if f.deduplicated else "stored new bytes",
                ]
            )
        )
        st.caption(f"sha256 {inline_code(f.file_hash)} · file {inline_code(f.id)}")
        if f.tags:
            st.caption("tags: " + ", ".join(escape_markdown(tag) for tag in f.tags))
        if f.description:
            st.caption(escape_markdown(f.description))
        st.download_button(
            "Download",
            data=file_bytes(f.id),
            file_name=f.filename,
            mime=download_type(f.mime_type),  # HTML/SVG: octet-stream, never rendered
            icon=":material/download:",
            on_click="ignore",
            key=f"files_download_{f.upload_id or f.id}",
        )
        users = queries.file_conversations(url, f.id)
        st.markdown(f"**Used by {len(users)} thread{'s' if len(users) != 1 else ''}**")
        if users:  # each with its cost, by the app's one rule (never a bare $0 when unpriced)
            lists.thread_rows(
                users,
                title=widgets.thread_title,
                meta=lists.brief,
            )
        if not users:
            st.caption("No thread uses this file.")
