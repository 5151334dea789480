"""Files: every upload, filtered on the server; download one and see which threads used it."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from persistence.formatting import size
from persistence.uploads import download_type
from ui import data, fmt, queries, widgets
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
c = st.columns([2, 2, 2, 1, 1], vertical_alignment="bottom")
mime = c[0].selectbox(
    "Type",
    [None, *prefixes, *types],
    format_func=lambda v: "Any" if v is None else (f"{v}*" if v.endswith("/") else v),
    key="files_type",
)
thread_id = c[1].text_input("Thread (continuation id)", key="files_thread").strip()
session_id = c[2].text_input("Session", key="files_session").strip()
unused = c[3].toggle("Unused only", key="files_unused", help="Files no thread uses")
order = c[4].segmented_control(
    "Order", list(ORDERS), format_func=ORDERS.__getitem__, default="recent", required=True, key="files_order"
)
order = order or "recent"

filters = {
    "since": period.since,
    "until": period.until,
    "mime_type": mime,
    "continuation_id": thread_id or None,
    "session_id": session_id or None,
    "unused": unused,
}
cursors = widgets.page_cursors("files", order, filters)

try:
    page = queries.list_files(url, order=order, cursor=cursors[-1], limit=PAGE_SIZE, **filters)
except Exception as exc:  # e.g. a malformed id typed into a filter: say what is wrong
    st.warning(escape_markdown(data.scrub(str(exc), url)), icon=":material/error:")
    st.stop()

if not page.items:
    st.info("No upload matches these filters in this period.", icon=":material/filter_alt_off:")
    st.stop()

first = (len(cursors) - 1) * PAGE_SIZE + 1
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
    key=f"files_table_{len(cursors)}",
    height=min(36 * (len(table) + 1) + 3, 700),
    column_config={
        "File": st.column_config.TextColumn(width="medium"),
        "Size": st.column_config.NumberColumn(format="bytes"),
        "Uploaded": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm", timezone="UTC"),
        "Dedup": st.column_config.CheckboxColumn(help="The bytes were already stored: this upload cost nothing"),
    },
)


widgets.page_buttons("files", cursors, page.next_cursor)

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
        for conv in users:
            widgets.thread_link(conv)
        if not users:
            st.caption("No thread uses this file.")
