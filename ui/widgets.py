"""Shared widgets: the page header with its period picker, thread links, safe message rendering,
charts, empty states."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import plotly.graph_objects as go
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

import persistence
from persistence import Conversation, Message, palette
from persistence.demo import generate
from persistence.formatting import plain_title, size, size_ticks

from . import data, fmt
from . import period as periods
from .layout import filter_panel
from .nav import PAGES
from .safe import escape_markdown, inline_code, safe_markdown

__all__ = [
    "MAX_MARKDOWN_CHARS",
    "PageHeader",
    "byte_axes",
    "color_map",
    "filter_panel",
    "message",
    "message_meta",
    "page_header",
    "period_picker",
    "plot",
    "thread_link",
    "thread_title",
    "welcome",
]

MAX_MARKDOWN_CHARS = 60_000  # longer messages are shown as plain text: Markdown that size freezes a browser

NONE_LABEL = "(none)"


def period_picker(*, label: str = "Period") -> periods.Period:
    """The reporting period. One choice for the whole session (it follows you from page to page)
    and in the URL (``?period=7d``, ``?period=custom&from=2026-01-01&to=2026-01-31``), so a
    page can be shared as it is seen."""
    options = list(periods.CHOICES)
    today = data.today()
    url_choice = st.query_params.get("period")
    if url_choice in periods.CHOICES:
        st.session_state["_period"] = url_choice
    if url_choice == "custom":
        try:
            first = date.fromisoformat(st.query_params.get("from", ""))
            last = date.fromisoformat(st.query_params.get("to", ""))
            st.session_state["_period_range"] = (min(first, last), max(first, last))
        except ValueError:
            pass
    current = st.session_state.get("_period", periods.DEFAULT)
    st.session_state["period"] = current

    def chosen() -> None:
        st.session_state["_period"] = st.query_params["period"] = st.session_state["period"]

    choice = st.selectbox(
        label,
        options,
        format_func=periods.CHOICES.__getitem__,
        key="period",
        on_change=chosen,
        help="Whole UTC days, as usage is rolled up. Changes are compared with the period of the same length before.",
    )
    custom: tuple[date, date] | None = None
    if choice == "custom":
        st.session_state["period_range"] = st.session_state.get("_period_range", (today - timedelta(days=29), today))

        def ranged() -> None:
            picked = st.session_state["period_range"]
            if isinstance(picked, Sequence) and len(picked) == 2:
                st.session_state["_period_range"] = (picked[0], picked[1])
                st.query_params["from"], st.query_params["to"] = picked[0].isoformat(), picked[1].isoformat()

        st.date_input("Dates (UTC)", max_value=today, key="period_range", on_change=ranged)
        custom = st.session_state.get("_period_range")
    result = periods.resolve(choice or periods.DEFAULT, today, custom)
    # Keep the URL in step, so the address bar always reproduces this view.
    if result.key == periods.DEFAULT:
        for name in ("period", "from", "to"):
            st.query_params.pop(name, None)
    else:
        st.query_params["period"] = result.key
        if result.key == "custom" and result.first_day and result.last_day:
            st.query_params["from"] = result.first_day.isoformat()
            st.query_params["to"] = result.last_day.isoformat()
        else:
            st.query_params.pop("from", None)
            st.query_params.pop("to", None)
    return result


@dataclass(frozen=True, slots=True)
class PageHeader:
    """The top of a page drawn by :func:`page_header`: the period picked, and the place under
    the title for a caption (which may need the period's figures, so it can come later)."""

    period: periods.Period
    head: DeltaGenerator

    def caption(self, text: str) -> None:
        """A line of Markdown under the title; escape what comes from the store."""
        self.head.caption(text)


def page_header(title: str) -> PageHeader:
    """The title of a page about a period, with the period picker beside it (every page but
    the single thread). The picker comes first: what the page reads depends on it."""
    head, pick = st.columns([3, 1], vertical_alignment="bottom")
    with pick:
        period = period_picker()
    head.title(title)
    return PageHeader(period, head)


def thread_title(conv: Conversation | None, continuation_id: str | None = None) -> str:
    """A thread's title for display, Markdown syntax removed (a title is the first words of a
    message, which may open with a code fence or a heading); untitled threads by their id."""
    title = plain_title(conv.title) if conv is not None else None
    if title:
        return title
    cid = conv.continuation_id if conv is not None else continuation_id or "?"
    return f"Untitled thread {cid[:8]}"


def thread_link(target: Conversation | str, *, label: str | None = None, seq: int | None = None) -> None:
    """A link to a thread (a conversation, or its continuation id), optionally to one message."""
    cid = target if isinstance(target, str) else target.continuation_id
    params: dict[str, Any] = {"thread": cid}
    if seq is not None:
        params["seq"] = str(seq)
    text = label or (thread_title(target) if not isinstance(target, str) else thread_title(None, cid))
    st.page_link(PAGES["thread"].path, label=escape_markdown(text), icon=":material/chat:", query_params=params)


def message_meta(m: Message) -> str:
    """The line above a message: turn, time, model, tokens by bucket, cost and duration."""
    parts = [f"#{m.seq}", m.role, fmt.when(m.created_at, seconds=True)]
    if m.model:
        parts.append(f"{m.model} ({m.provider})" if m.provider else m.model)
    u = m.usage
    if u.total:
        buckets = [
            ("in", u.input_tokens),
            ("cached", u.cached_input_tokens),
            ("cache write", u.cache_write_tokens),
            ("out", u.output_tokens),
            ("reasoning", u.reasoning_tokens),
        ]
        parts.append(" / ".join(f"{name} {n:,}" for name, n in buckets if n or name in ("in", "out")) + " tokens")
    if (cost := fmt.message_cost(m)) is not None:  # the app's one cost rule: never a bare $0
        parts.append(cost)
    if m.duration_ms is not None:
        parts.append(fmt.duration(m.duration_ms))
    if m.tool_name:
        parts.append(f"tool {m.tool_name}")
    return " · ".join(escape_markdown(p) for p in parts)


_AVATARS = {"system": ":material/settings:", "tool": ":material/build:"}


LONG_MESSAGE_CHARS = 4000  # longer messages are folded behind "Show all" in a thread
_PREVIEW_CHARS = 400


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _PREVIEW_CHARS else flat[: _PREVIEW_CHARS - 1] + "…"


def message(m: Message, *, target: bool = False) -> None:
    """One turn as a chat message. The content is Markdown with HTML off and every link and
    image target made inert (:func:`ui.safe.safe_markdown`); very long content is plain text."""
    bubble = st.chat_message(m.role, avatar=_AVATARS.get(m.role))
    with bubble, st.container(border=target, key=f"msg-{m.seq}"):
        if target:
            st.badge("Linked message", icon=":material/my_location:", color="orange")
        st.caption(message_meta(m))
        if len(m.content) > MAX_MARKDOWN_CHARS:
            st.caption(f"{len(m.content):,} characters: shown as plain text.")
            st.code(m.content, language=None, wrap_lines=True, height=400)
        elif len(m.content) > LONG_MESSAGE_CHARS:
            # A long reply is folded: its first lines as text, the whole of it one click away
            # (open at once when it is the message a link points at).
            st.caption(escape_markdown(_preview(m.content)))
            with st.expander(f"Show all ({len(m.content):,} characters)", expanded=target):
                st.markdown(safe_markdown(m.content))
        elif m.content.strip():
            st.markdown(safe_markdown(m.content))
        else:
            st.caption("(empty message)")
        if m.files or m.images:
            names = ", ".join(p.replace("\\", "/").rsplit("/", 1)[-1] for p in (*m.files, *m.images))
            st.caption(f":material/attach_file: {escape_markdown(names)}")


def color_map(values: Iterable[str | None], *, kind: str = "model") -> dict[str, str]:
    """A colour per category, the same in every chart of the app and in the report
    (:mod:`persistence.palette`): a model in a shade of its provider's hue, a provider in that
    hue, ``(no model)`` grey; ``kind`` other than ``"model"``/``"provider"`` (a tool, a tag …)
    gets the palette's category colours."""
    names = list(values)
    if kind in ("model", "provider"):
        out = palette.colors(names)
        out[NONE_LABEL] = palette.NO_MODEL
        return out
    return palette.category_colors(names, none_label=NONE_LABEL)


def plot(
    fig: go.Figure, *, key: str, height: int = 360, title: str | None = None, hovermode: str = "x unified"
) -> None:
    """A plotly chart in the app's style: title above it, legend above the plot (below it, the
    legend sat on the dates of the x axis), no toolbar (on a phone it covered the legend).
    An axis whose tick suffix is ``"B"`` counts bytes: its ticks read ``256 KiB``, ``1 MiB``,
    as sizes do everywhere else, and so does the hover."""
    if title:
        st.markdown(f"**{escape_markdown(title)}**")
    fig.update_layout(
        height=height,
        margin={"l": 8, "r": 8, "t": 8, "b": 8},
        legend={
            "orientation": "h",
            "yanchor": "bottom",
            "y": 1.02,
            "xanchor": "left",
            "x": 0,
            "title": None,
            "traceorder": "normal",
        },
        hovermode=hovermode,
        colorway=list(palette.NEUTRALS),  # a series given no colour must not look like a model
    )
    byte_axes(fig)
    st.plotly_chart(fig, key=key, config={"displayModeBar": False, "displaylogo": False, "responsive": True})


def byte_axes(fig: go.Figure) -> None:
    """Rewrite every axis with the tick suffix ``"B"`` (a count of bytes) in 1024-based units."""
    for axis_name, letter in (("xaxis", "x"), ("yaxis", "y")):
        axis = fig.layout[axis_name]
        if axis.ticksuffix != "B":
            continue
        traces = [t for t in fig.data if t.type == "bar" and _bar_axis(t) == letter]
        values = [[float(v or 0) for v in (t[letter] if t[letter] is not None else ())] for t in traces]
        if fig.layout.barmode == "stack":
            top = max((sum(col) for col in zip(*values, strict=False)), default=0.0)
        else:
            top = max((max(v, default=0.0) for v in values), default=0.0)
        tickvals, ticktext = size_ticks(top)
        axis.update(ticksuffix="", tickmode="array", tickvals=tickvals, ticktext=ticktext, rangemode="tozero")
        for trace, vals in zip(traces, values, strict=True):
            if trace.hovertemplate is None:
                trace.update(
                    customdata=[size(v) for v in vals],
                    hovertemplate=f"%{{customdata}}<extra>{_hover_text(trace.name)}</extra>",
                )


def _bar_axis(trace: Any) -> str:
    """The letter of the axis a bar trace's lengths are on."""
    return "x" if trace.orientation == "h" else "y"


def _hover_text(text: object) -> str:
    # Plotly hover templates read %{…} and a few HTML tags: keep a name literal.
    return html.escape(str(text or "")).replace("%", "%%").replace("{", "(").replace("}", ")")


def store_caption(store: persistence.Store) -> str:
    return f"{store.backend} · {inline_code(store.url)}"


def welcome(store: persistence.Store) -> None:
    """The empty store: what this app is, and demo data for the embedded store."""
    st.title("No conversations yet")
    st.write(
        "This store has no threads, messages or files. Point your MCP server at it and every turn it records "
        "shows up here: threads, search, tokens and cost, storage."
    )
    st.code(
        'import persistence\n\nstore = persistence.open_store()  # the same URL as this app\nstore.record_message(thread_id, "assistant", text, model=model, usage=response.usage)',
        language="python",
    )
    if store.backend == "sqlite":
        read_only = bool(getattr(store, "read_only", False))
        st.write("Or look around first with synthetic data: 300 threads over eight weeks, Kimi and GLM and others.")
        if st.button(
            "Load demo data",
            key="load_demo",
            type="primary",
            icon=":material/science:",
            disabled=read_only,
            help="The store is read-only" if read_only else None,
        ):
            with st.spinner("Writing demo threads…"):
                summary = generate(store, 300, seed=42, end=data.today())
            data.refresh()
            st.toast(f"Loaded {summary.conversations} threads and {summary.messages:,} messages.")
            st.rerun()
        st.caption(f"Writes into {inline_code(store.url)}. Delete that file to start over.")
    else:
        st.info(
            f"This is a shared {store.backend} database, so the app does not offer demo data here. "
            "Run `python -m persistence demo --url …` against a scratch database to try it."
        )
