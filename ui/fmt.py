"""Number, size, time and cost formatting for the app. Pure functions."""

from __future__ import annotations

import math
from datetime import UTC, datetime

__all__ = ["ago", "bytes_", "change", "cost", "duration", "number", "thread_cost", "tokens", "when"]


def cost(usd: float | None, *, unpriced: str = "unpriced") -> str:
    """``$1,234``, ``$12.34``, ``$0.0031``: cents for sums, significant digits for tiny costs."""
    if usd is None or (isinstance(usd, float) and math.isnan(usd)):
        return unpriced
    if usd == 0:
        return "$0.00"
    if abs(usd) >= 1000:
        return f"${usd:,.0f}"
    if abs(usd) >= 0.995:
        return f"${usd:,.2f}"
    if abs(usd) >= 0.01:
        return f"${usd:.3f}"
    digits = min(10, 1 - math.floor(math.log10(abs(usd))))  # two significant digits, fixed point
    return f"${usd:.{digits}f}".rstrip("0").rstrip(".")


def thread_cost(usd: float, unpriced_messages: int) -> str:
    """A thread's cost, honest about messages without a price."""
    if unpriced_messages and not usd:
        return "unpriced"
    return cost(usd) + (f" + {unpriced_messages} unpriced" if unpriced_messages else "")


def number(n: float | int | None) -> str:
    if n is None:
        return "–"
    return f"{int(n):,}"


def tokens(n: float | int | None) -> str:
    """Compact token counts: 950, 12.3k, 4.56M, 1.2B."""
    if n is None:
        return "–"
    n = float(n)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            value = n / size
            digits = 2 if value < 10 else 1 if value < 100 else 0
            return f"{value:.{digits}f}{unit}"
    return f"{int(n):,}"


def bytes_(n: float | int | None) -> str:
    if n is None:
        return "–"
    n = float(n)
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    return f"{int(n):,} B"


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
