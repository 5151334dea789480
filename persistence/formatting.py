"""How numbers read: sizes, money, token counts and shares. One rule each, used by the CLI,
the report and the app. Pure functions, no dependencies.

* Sizes are 1024-based and say so: ``512 B``, ``1.5 KiB``, ``3.2 MiB``, ``1.0 GiB``.
* Money is US dollars: ``$12,345`` / ``$12.35`` / ``$0.44`` / ``$0.0042`` (cents down to
  10 cents, then two significant digits). An amount with no price (None or NaN) is never
  shown as ``$0``: it reads ``unpriced`` (or what the caller passes as ``unpriced=``).
"""

from __future__ import annotations

import math

__all__ = ["money", "percent", "size", "thread_cost", "tokens"]

MISSING = "–"
"""What a missing number (None/NaN) reads as, where it is not an unpriced amount."""


def size(n_bytes: float | None) -> str:
    """A byte count in 1024-based units: ``999 B``, ``1.5 KiB``, ``12.0 MiB``, ``2.1 GiB``."""
    if n_bytes is None or math.isnan(n_bytes):
        return MISSING
    n = float(n_bytes)
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:,.0f} B"


def money(usd: float | None, *, unpriced: str = "unpriced") -> str:
    """US dollars as people read them: ``$12,345`` / ``$12.35`` / ``$0.44`` / ``$0.0042``.

    None or NaN is an amount with no price, shown as ``unpriced`` (never as ``$0``)."""
    if usd is None or math.isnan(usd):
        return unpriced
    x = float(usd)
    a = abs(x)
    if a >= 1000:
        return f"${x:,.0f}"
    if a >= 0.1 or a == 0:
        return f"${x:,.2f}"
    digits = min(10, 1 - math.floor(math.log10(a)))  # two significant digits, fixed point
    return f"${x:.{digits}f}"


def thread_cost(usd: float, unpriced_messages: int) -> str:
    """A thread's cost, honest about messages without a price: ``$0.12 + 3 unpriced``."""
    if unpriced_messages and not usd:
        return "unpriced"
    return money(usd) + (f" + {unpriced_messages} unpriced" if unpriced_messages else "")


def tokens(n: float | None) -> str:
    """Compact token counts: ``950``, ``12.3k``, ``4.6M``, ``1.2B``."""
    if n is None or math.isnan(n):
        return MISSING
    x = float(n)
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.1f}{suffix}"
    return f"{x:,.0f}"


def percent(share: float | None) -> str:
    """A share (0.25) as a percentage: ``25%``, and ``0.4%`` below one percent."""
    if share is None or math.isnan(share):
        return MISSING
    x = float(share)
    return f"{x:.0%}" if abs(x) >= 0.01 or x == 0 else f"{x:.1%}"
