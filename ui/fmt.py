"""What only the app formats: counts, durations, timestamps, "3 h ago" and the change against the
previous period. Pure functions.

Sizes, money and token counts read the same in the app, the CLI and the report:
:mod:`persistence.formatting` (``size``, ``money``, ``thread_cost``, ``tokens``).

Cost, everywhere the app shows one, follows one rule: an amount with messages that have no
price never reads as a bare ``$0.0000``. A thread reads ``$0.41``, ``$0.41 + 10 unpriced`` or
``unpriced`` (:func:`cost`); a message ``$0.0042`` or ``unpriced``, and nothing when it had
nothing to price, such as a user's turn (:func:`message_cost`)."""

from __future__ import annotations

from datetime import UTC, datetime

from persistence import Conversation, Message
from persistence.formatting import money, thread_cost
from persistence.pricing import UNREAD_USAGE, is_unpriced

__all__ = ["ago", "change", "cost", "duration", "message_cost", "number", "when"]


def cost(thread: Conversation) -> str:
    """A thread's cost: ``$0.41``, ``$0.41 + 10 unpriced``, or ``unpriced`` when no message of
    it has a price."""
    return thread_cost(thread.cost_usd, thread.unpriced_messages)


def message_cost(m: Message) -> str | None:
    """A message's cost: ``$0.0042``, ``unpriced`` (tokens, or a usage report, but no price),
    or None when there was nothing to price (a user's turn, a reply without usage)."""
    if m.cost_usd is not None:
        return money(m.cost_usd)
    if is_unpriced(m.cost_usd, m.usage.total, UNREAD_USAGE in m.metadata):
        return "unpriced"
    return None


def number(n: float | int | None) -> str:
    if n is None:
        return "–"
    return f"{int(n):,}"


def duration(ms: int | float | None) -> str:
    if ms is None:
        return "–"
    if ms < 1000:
        return f"{int(ms)} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def when(ts: datetime | None, *, seconds: bool = False) -> str:
    """A UTC timestamp as ``2025-10-01 14:03 UTC``."""
    if ts is None:
        return "–"
    ts = ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def ago(ts: datetime | None, now: datetime | None = None) -> str:
    if ts is None:
        return "never"
    delta = ((now or datetime.now(UTC)) - ts).total_seconds()
    if delta < 0:
        return "just now"
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if delta >= size:
            value = int(delta // size)
            if unit == "day":
                return f"{value} day{'s' if value != 1 else ''} ago"
            return f"{value} {unit} ago"
    return "just now"


def change(current: float, previous: float | None) -> str | None:
    """The change against the previous period for ``st.metric``'s delta, or None when there is
    nothing honest to compare with (no previous period, or it was zero)."""
    if previous is None:
        return None
    if previous == 0:
        return None if current == 0 else "new"
    pct = (current - previous) / previous * 100
    if abs(pct) < 0.5:
        return "±0%"
    return f"{pct:+.0f}%"
