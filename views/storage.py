"""Storage: bytes stored against bytes uploaded (what dedup saves), by day and by type."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from persistence import StoredFile, palette
from persistence.formatting import size
from ui import data, queries, widgets
from ui import stored as stored_text
from ui.nav import PAGES, link
from ui.safe import escape_markdown

url = data.store_url()

header = widgets.page_header("Storage")
period = header.period
header.caption(
    "Files are stored once per content hash: a second upload of the same bytes costs nothing. "
    f"Figures for {escape_markdown(period.describe())}."
)

d = queries.storage(url, period.since, period.until)
t = d.totals.iloc[0] if len(d.totals) else pd.Series({"files": 0, "bytes": 0, "uploads": 0, "logical_bytes": 0})
stored, uploaded = int(t["bytes"]), int(t["logical_bytes"])
saved = max(uploaded - stored, 0)

duplicates = stored_text.all_duplicates(files=int(t["files"]), uploads=int(t["uploads"]))
m = st.columns(4)
m[0].metric(
    "Stored",
    stored_text.stored_value(stored, files=int(t["files"]), uploads=int(t["uploads"])),
    duplicates,  # 0 B stored is dedup at work, not a failure: say so under the figure
    delta_color="off",
    delta_arrow="off",
    help=f"{stored:,} bytes in {int(t['files']):,} new stored files",
    border=True,
)
m[1].metric("Uploaded", size(uploaded), help=f"{uploaded:,} bytes in {int(t['uploads']):,} uploads", border=True)
m[2].metric(
    "Saved by dedup",
    size(saved),
    f"{saved / uploaded:.0%} of uploads" if uploaded else None,
    delta_color="off",
    delta_arrow="off",
    border=True,
)
m[3].metric("Uploads / files", f"{int(t['uploads']):,} / {int(t['files']):,}", border=True)

if int(t["uploads"]) == 0 and int(t["files"]) == 0:
    st.info("No file was uploaded in this period.", icon=":material/cloud_off:")
else:
    left, right = st.columns([3, 2])
    with left:
        by_day = d.by_day
        # Every day of the period (all time: of the uploads), so a quiet day shows as one.
        days = pd.date_range(
            pd.Timestamp(period.first_day) if period.first_day else by_day["day"].min(),
            pd.Timestamp(period.last_day) if period.last_day else by_day["day"].max(),
            freq="D",
        )
        series = by_day.set_index("day").reindex(days, fill_value=0)
        fig = go.Figure()
        fig.add_bar(x=series.index, y=series["logical_bytes"], name="Uploaded", marker_color=palette.UPLOADED)
        fig.add_bar(x=series.index, y=series["bytes"], name="Stored", marker_color=palette.STORED)
        fig.update_layout(barmode="group")
        fig.update_yaxes(ticksuffix="B")
        widgets.plot(fig, key="storage_by_day", title="Bytes per day")
    with right:
        by_type = d.by_type.head(12).iloc[::-1]
        fig = go.Figure()
        fig.add_bar(
            y=by_type["mime_type"].fillna("(unknown)"),
            x=by_type["logical_bytes"],
            name="Uploaded",
            orientation="h",
            marker_color=palette.UPLOADED,
        )
        fig.add_bar(
            y=by_type["mime_type"].fillna("(unknown)"),
            x=by_type["bytes"],
            name="Stored",
            orientation="h",
            marker_color=palette.STORED,
        )
        fig.update_layout(barmode="group")
        fig.update_xaxes(ticksuffix="B")
        widgets.plot(fig, key="storage_by_type", title="Bytes by type", hovermode="y unified")


def files_table(files: tuple[StoredFile, ...], key: str) -> None:
    table = pd.DataFrame(
        {
            "File": [f.filename for f in files],
            "Type": [f.mime_type for f in files],
            "Size": [f.size for f in files],
            "Uploaded": [f.created_at for f in files],
            "Thread": [link("thread", thread=f.continuation_id) if f.continuation_id else None for f in files],
            "sha256": [f.file_hash[:12] for f in files],
        }
    )
    st.dataframe(
        table,
        hide_index=True,
        key=key,
        column_config={
            "File": st.column_config.TextColumn(width="medium"),
            "Size": st.column_config.NumberColumn(format="bytes"),
            "Uploaded": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm", timezone="UTC"),
            "Thread": st.column_config.LinkColumn(display_text="Open ↗"),
        },
    )


left, right = st.columns(2)
with left:
    st.subheader("Largest files")
    if d.largest:
        files_table(d.largest, "storage_largest")
        st.caption(
            f"Uploaded in {escape_markdown(period.describe())}; each stored file once, however many times it was uploaded."
        )
    else:
        st.caption("No file in this period.")
with right:
    st.subheader("Files no thread uses")
    # Not limited to the period: an unused file costs storage whenever it was uploaded.
    if d.unused:
        files_table(d.unused, "storage_unused")
        st.caption(
            "All time, whatever the period. "
            + ("The newest 25 of them. " if d.more_unused else "")
            + "`python -m persistence prune` removes files no remaining thread uses."
        )
    else:
        st.caption("All time: every stored file is used by a thread.")
st.page_link(PAGES["files"].path, label="Browse all files", icon=":material/arrow_forward:")
