"""The figure and the note of a Cost card. Pure.

A card is too narrow for ``$1.83 + 3 unpriced`` (:func:`persistence.formatting.thread_cost`, the
rule everywhere else), so the card splits it: the priced amount is the figure, and the messages
with no price are the note under it. Never a bare ``$0`` for usage that has no price."""

from __future__ import annotations

from persistence.formatting import money

__all__ = ["cost_value", "unpriced_note"]


def cost_value(usd: float, unpriced_messages: int) -> str:
    """``$1.83``, or ``unpriced`` when nothing in the figure had a price."""
    return "unpriced" if unpriced_messages and not usd else money(usd)


def unpriced_note(unpriced_messages: int) -> str | None:
    """``+ 3 unpriced`` under the figure, or None when every message had a price."""
    return f"+ {unpriced_messages:,} unpriced" if unpriced_messages else None
