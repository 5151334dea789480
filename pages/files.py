"""Files: every upload, filtered on the server; download one and see which threads used it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from persistence.uploads import download_type
from ui import data, fmt, nav, widgets
from ui.safe import escape_markdown, inline_code

PAGE_SIZE = 50
ORDERS = {"recent": "Newest", "size": "Largest"}

nav.require_app()
url = data.store_url()
store = data.get_store()

head, pick = st.columns([3, 1], vertical_alignment="bottom")
with pick:
    period = widgets.period_picker()
with head:
    st.title("Files")

types = data.mime_types(url)
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
signature = (order, tuple(sorted((k, str(v)) for k, v in filters.items())))
if st.session_state.get("files_signature") != signature:
    st.session_state["files_signature"] = signature
    st.session_state["files_cursors"] = [None]
cursors: list[str | None] = st.session_state["files_cursors"]

try:
    page = data.list_files(url, order=order, cursor=cursors[-1], limit=PAGE_SIZE, **filters)
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


def newer() -> None:
    cursors.pop()


def older() -> None:
    cursors.append(page.next_cursor)


nav = st.columns([1, 1, 6])
nav[0].button("← Previous", on_click=newer, disabled=len(cursors) == 1, key="files_prev", width="stretch")
nav[1].button("Next →", on_click=older, disabled=page.next_cursor is None, key="files_next", width="stretch")

rows = event.selection.rows
if rows:
    f = page.items[rows[0]]
    with st.container(border=True):
        st.subheader(escape_markdown(f.filename))
        st.caption(
            " · ".join(
                [
                    escape_markdown(f.mime_type),
                    f"{fmt.bytes_(f.size)} ({f.size:,} bytes)",
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
            data=lambda fid=f.id: store.open_file(fid).read(),
            file_name=f.filename,
            mime=download_type(f.mime_type),  # HTML/SVG: octet-stream, never rendered
            icon=":material/download:",
            on_click="ignore",
            key=f"files_download_{f.upload_id or f.id}",
        )
        users = data.file_conversations(url, f.id)
        st.markdown(f"**Used by {len(users)} thread{'s' if len(users) != 1 else ''}**")
        for conv in users:
            widgets.thread_link(conv)
        if not users:
            st.caption("No thread uses this file.")
