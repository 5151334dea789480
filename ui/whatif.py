"""What-if pricing in the app: this thread, or the Usage page's period, on another model.

Beside the real cost, never instead of it: :mod:`persistence.whatif` reprices the stored
tokens with the chosen model's price in force on each day and writes nothing. Results are
cached like every other read (:mod:`ui.queries`), keyed by the store URL and plain arguments.
"""

from __future__ import annotations

from datetime import datetime

import streamlit as st

from persistence import Conversation
from persistence.errors import PersistenceError
from persistence.formatting import money, thread_cost
from persistence.whatif import WhatIf, whatif_period, whatif_thread

from .data import TTL, open_store, scrub
from .safe import escape_markdown

__all__ = ["draw_period", "draw_thread", "target_models"]


@st.cache_data(ttl=TTL, show_spinner=False)
def target_models(url: str) -> list[str]:
    """Every model the store has a price for: what a what-if can price with."""
    return sorted({p.model for p in open_store(url).prices.prices})


@st.cache_data(ttl=TTL, show_spinner=False)
def thread_whatif(url: str, continuation_id: str, model: str, updated_at: datetime) -> WhatIf:
    """``updated_at`` is the thread's last activity: a new turn makes a new cache entry."""
    return whatif_thread(open_store(url), continuation_id, model)


@st.cache_data(ttl=TTL, show_spinner=False)
def period_whatif(
    url: str,
    model: str,
    since: datetime | None,
    until: datetime | None,
    source_model: str | None,
    provider: str | None,
    tool_name: str | None,
) -> WhatIf:
    return whatif_period(
        open_store(url),
        model,
        since=since,
        until=until,
        source_model=source_model,
        provider=provider,
        tool_name=tool_name,
    )


def _pick(url: str, used: str | None, key: str) -> str | None:
    models = target_models(url)
    if not models:
        st.caption("The store has no prices to compare with.")
        return None
    # A model other than the one used, so the first answer already says something.
    default = next((m for m in models if m != used), models[0])
    choice: str | None = st.selectbox("Priced as", models, index=models.index(default), key=key)
    return choice


def _show(result: WhatIf, key: str) -> None:
    cost = result.whatif_cost_usd
    cols = st.columns(3)
    cols[0].metric(
        "Actual cost",
        thread_cost(result.actual_cost_usd, result.unpriced_messages),
        help=f"${result.actual_cost_usd:.6f} USD, as stored"
        + (f"; {result.unpriced_messages} messages had no price" if result.unpriced_messages else ""),
        border=True,
    )
    cols[1].metric(
        f"On {result.model}",
        money(cost, unpriced="no price"),
        delta=None if result.difference_usd is None else money(result.difference_usd),
        delta_color="inverse",  # cheaper is the good news
        help="The same tokens at this model's price in force on each day; nothing is written",
        border=True,
    )
    ratio = cost / result.actual_cost_usd if cost is not None and result.actual_cost_usd else None
    cols[2].metric("Ratio", "–" if ratio is None else f"{ratio:.2f}x", help="What-if cost / actual cost", border=True)
    for note in result.notes:
        st.caption(f":material/info: {escape_markdown(note)}")
    frame = result.to_frame()
    if len(frame) > 1:
        st.dataframe(
            frame[["day", "messages", "actual_cost_usd", "whatif_cost_usd", "price_id"]],
            hide_index=True,
            key=f"{key}_days",
            placeholder="no price",
            column_config={
                "day": st.column_config.DateColumn("Day", format="YYYY-MM-DD"),
                "messages": st.column_config.NumberColumn("Messages", format="localized"),
                "actual_cost_usd": st.column_config.NumberColumn("Actual", format="$%.4f"),
                "whatif_cost_usd": st.column_config.NumberColumn(f"On {result.model}", format="$%.4f"),
                "price_id": st.column_config.TextColumn("Price used"),
            },
        )


def draw_thread(url: str, conv: Conversation) -> None:
    """The Thread page's what-if: this thread's messages priced on a chosen model."""
    with st.expander("What if: this thread on another model", icon=":material/compare_arrows:"):
        model = _pick(url, conv.model, "whatif_thread_model")
        if model is None:
            return
        try:
            result = thread_whatif(url, conv.continuation_id, model, conv.updated_at)
        except PersistenceError as exc:
            st.caption(escape_markdown(scrub(str(exc), url)))
            return
        _show(result, "whatif_thread")


def draw_period(
    url: str,
    *,
    since: datetime | None,
    until: datetime | None,
    model: str | None = None,
    provider: str | None = None,
    tool_name: str | None = None,
) -> None:
    """The Usage page's what-if: the period, with the page's filters, priced on a chosen model
    (from the daily rollup)."""
    st.subheader("What if: this period on another model")
    picked = _pick(url, model, "whatif_period_model")
    if picked is None:
        return
    try:
        result = period_whatif(url, picked, since, until, model, provider, tool_name)
    except PersistenceError as exc:
        st.caption(escape_markdown(scrub(str(exc), url)))
        return
    _show(result, "whatif_period")
    st.caption(
        "Every token of the period with these filters, priced day by day; "
        f"`python -m persistence whatif --model {escape_markdown(picked)}` gives the same figures."
    )
