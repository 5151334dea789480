"""What would this have cost on another model? Stored tokens repriced, never stored.

Three scopes, one answer (:class:`WhatIf`): a thread (:func:`whatif_thread`, from its
messages), and a period, optionally one tool, model or provider (:func:`whatif_period`, from
the daily rollup, never a scan of messages). Each day's tokens — the five buckets: input,
cached input, cache writes, output, reasoning — are priced with the price of the target model
in force on that day, by the package's own rules (:func:`persistence.pricing.price_message`
with :meth:`~persistence.pricing.PriceTable.lookup`): a missing cached-input price bills cache
reads at the input price, a missing cache-write price bills no writes, reasoning is billed
at the output price. Where those rules stand in for a price the target lacks, the result says
so (:attr:`WhatIf.notes`). Nothing is written: the stored costs stay those of the model used.

What a period what-if cannot know: long-context tiers are decided per request, and the rollup
holds daily sums, so a period is priced at the target's base rates (said in the notes when the
target has tiers); a thread what-if prices each message and applies them. Days before the
target's first price have no price in force: they are left out and named.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Any, cast

import pandas as pd

from . import validation as v
from .errors import NotFoundError, ValidationError
from .models import Message, Usage
from .pricing import UNREAD_USAGE, Price, is_unpriced, price_message

if TYPE_CHECKING:
    from .store import Store

__all__ = ["WhatIf", "WhatIfDay", "whatif", "whatif_period", "whatif_thread"]


@dataclass(frozen=True, slots=True)
class WhatIfDay:
    """One UTC day: its stored usage and cost, and the same tokens on the target model."""

    day: date
    messages: int
    usage: Usage
    actual_cost_usd: float
    # Messages stored without a price (their tokens count here, not in actual_cost_usd).
    unpriced_messages: int
    # None: the target had no price in force that day (or nothing on it could be priced).
    whatif_cost_usd: float | None
    # Messages of the day the target's price could not price (no price in force, unread usage).
    whatif_unpriced_messages: int = 0
    price_id: str | None = None


@dataclass(frozen=True, slots=True)
class WhatIf:
    """The stored cost of a scope beside its cost on ``model`` (see the module docstring)."""

    model: str
    scope: str
    days: tuple[WhatIfDay, ...]
    notes: tuple[str, ...] = ()
    per_message: bool = False  # True: priced message by message (a thread), tiers applied
    price_ids: tuple[str, ...] = field(default=())

    @property
    def messages(self) -> int:
        return sum(d.messages for d in self.days)

    @property
    def usage(self) -> Usage:
        total = Usage()
        for d in self.days:
            total = total + d.usage
        return total

    @property
    def actual_cost_usd(self) -> float:
        return round(sum(d.actual_cost_usd for d in self.days), 10)

    @property
    def whatif_cost_usd(self) -> float | None:
        """The priced days' what-if cost; None when no day could be priced."""
        priced = [d.whatif_cost_usd for d in self.days if d.whatif_cost_usd is not None]
        return round(sum(priced), 10) if priced else None

    @property
    def unpriced_messages(self) -> int:
        return sum(d.unpriced_messages for d in self.days)

    @property
    def whatif_unpriced_messages(self) -> int:
        return sum(d.whatif_unpriced_messages for d in self.days)

    @property
    def days_without_price(self) -> tuple[date, ...]:
        """Days with tokens on which the target had no price in force."""
        return tuple(d.day for d in self.days if d.whatif_cost_usd is None and d.usage.total > 0)

    @property
    def difference_usd(self) -> float | None:
        """What-if minus actual (negative: the target would have been cheaper)."""
        cost = self.whatif_cost_usd
        return None if cost is None else round(cost - self.actual_cost_usd, 10)

    def to_frame(self) -> pd.DataFrame:
        """One row per day: usage buckets, ``actual_cost_usd``, ``whatif_cost_usd`` (NaN: no price)."""
        rows = [
            {
                "day": pd.Timestamp(d.day),
                "messages": d.messages,
                **d.usage.to_dict(),
                "actual_cost_usd": d.actual_cost_usd,
                "unpriced_messages": d.unpriced_messages,
                "whatif_cost_usd": d.whatif_cost_usd,
                "whatif_unpriced_messages": d.whatif_unpriced_messages,
                "price_id": d.price_id,
            }
            for d in self.days
        ]
        frame = pd.DataFrame(
            rows,
            columns=[
                "day",
                "messages",
                *Usage.__dataclass_fields__,
                "actual_cost_usd",
                "unpriced_messages",
                "whatif_cost_usd",
                "whatif_unpriced_messages",
                "price_id",
            ],
        )
        frame["whatif_cost_usd"] = frame["whatif_cost_usd"].astype("float64")
        return frame

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the totals, the notes and the days."""
        return {
            "model": self.model,
            "scope": self.scope,
            "per_message": self.per_message,
            "messages": self.messages,
            "usage": self.usage.to_dict(),
            "actual_cost_usd": self.actual_cost_usd,
            "unpriced_messages": self.unpriced_messages,
            "whatif_cost_usd": self.whatif_cost_usd,
            "whatif_unpriced_messages": self.whatif_unpriced_messages,
            "difference_usd": self.difference_usd,
            "days_without_price": [d.isoformat() for d in self.days_without_price],
            "price_ids": list(self.price_ids),
            "notes": list(self.notes),
            "days": [
                {**dataclasses.asdict(d), "day": d.day.isoformat(), "usage": d.usage.to_dict()} for d in self.days
            ],
        }


def _target(store: Store, model: object) -> str:
    name = v.optional_text(model, "model", max_length=200)
    if not name or not name.strip():
        raise ValidationError("model", "is required: the model to price the tokens with")
    name = name.strip()
    if store.prices.provider_of(name) is None:
        raise ValidationError(
            "model",
            f"no price row matches {name!r}: add one (`python -m persistence reprice --prices FILE.toml`, "
            "or Store.add_prices)",
        )
    return name


def _fixed(price: Price) -> Callable[[str | None, datetime], Price | None]:
    """A lookup that answers ``price`` (already looked up for the day)."""
    return lambda _model, _at: price


def _untiered(price: Price) -> Price:
    """The price at its base rates: daily sums are not requests, so no tier can be decided."""
    return dataclasses.replace(price, tier_above_tokens=None, tier2_above_tokens=None)


def _notes(
    model: str, prices: dict[str, Price], buckets: dict[str, Usage], days_without: Iterable[date], per_message: bool
) -> tuple[str, ...]:
    """What the pricing rules stood in for, in words (the prices used, with the tokens each priced)."""
    notes: list[str] = []
    for pid in sorted(prices):
        price, used = prices[pid], buckets[pid]
        if price.cached_input is None and used.cached_input_tokens:
            notes.append(
                f"{model} has no cached-input price ({pid}): {used.cached_input_tokens:,} cache-read tokens "
                "are billed at its input price"
            )
        if price.cache_write is None and used.cache_write_tokens:
            notes.append(
                f"{model} has no cache-write price ({pid}): {used.cache_write_tokens:,} cache-write tokens "
                "are not billed"
            )
        if not per_message and price.tier_above_tokens is not None:
            notes.append(
                f"{pid} has long-context tier rates, decided per request: a period is priced at its base "
                "rates (the rollup holds daily sums); a thread's what-if applies the tiers"
            )
    missing = sorted(set(days_without))
    if missing:
        shown = ", ".join(d.isoformat() for d in missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        notes.append(f"no {model} price was in force on {shown}: left out of the what-if cost")
    return tuple(notes)


def whatif_thread(store: Store, continuation_id: str, model: str) -> WhatIf:
    """A thread's messages priced on ``model``, message by message (tiers applied)."""
    target = _target(store, model)
    cid = v.check_id(continuation_id, "continuation_id")
    conv = store.get_conversation(cid)
    if conv is None:
        raise NotFoundError(f"no conversation with continuation_id {cid!r}")

    def lookup(_model: str | None, at: datetime) -> Price | None:
        return store.prices.lookup(target, at)

    by_day: dict[date, list[Message]] = {}
    for m in conv.messages:
        by_day.setdefault(m.created_at.astimezone(UTC).date(), []).append(m)
    used: dict[str, Price] = {}
    buckets: dict[str, Usage] = {}
    days: list[WhatIfDay] = []
    for day in sorted(by_day):
        messages = by_day[day]
        cost = 0.0
        priced_any = False
        missing = 0
        price_id = None
        for m in messages:
            unread = UNREAD_USAGE in m.metadata
            if m.usage.total == 0 and not unread:
                continue  # nothing to price, on any model
            priced = price_message(lookup, target, m.created_at, m.usage, usage_unread=unread)
            if priced.cost is None:
                missing += 1
                continue
            priced_any = True
            cost += priced.cost
            price_id = priced.price_id
            price = store.prices.get(price_id) if price_id else None
            if price is not None and price_id is not None:
                used[price_id] = price
                buckets[price_id] = buckets.get(price_id, Usage()) + m.usage
        usage = Usage()
        for m in messages:
            usage = usage + m.usage
        days.append(
            WhatIfDay(
                day=day,
                messages=len(messages),
                usage=usage,
                actual_cost_usd=round(sum(m.cost_usd or 0.0 for m in messages), 10),
                unpriced_messages=sum(
                    is_unpriced(m.cost_usd, m.usage.total, UNREAD_USAGE in m.metadata) for m in messages
                ),
                whatif_cost_usd=round(cost, 10) if priced_any or missing == 0 else None,
                whatif_unpriced_messages=missing,
                price_id=price_id,
            )
        )
    without = [d.day for d in days if d.whatif_cost_usd is None and d.usage.total > 0]
    return WhatIf(
        model=target,
        scope=f"thread {cid}",
        days=tuple(days),
        notes=_notes(target, used, buckets, without, per_message=True),
        per_message=True,
        price_ids=tuple(sorted(used)),
    )


def whatif_period(
    store: Store,
    model: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    tool_name: str | None = None,
    source_model: str | None = None,
    provider: str | None = None,
) -> WhatIf:
    """The daily rollup of [since, until) (whole UTC days, as :meth:`Store.usage`), optionally of
    one tool, one model used or one provider, priced day by day on ``model``."""
    target = _target(store, model)
    frame = store.usage(("day",), since=since, until=until, tool_name=tool_name, model=source_model, provider=provider)
    used: dict[str, Price] = {}
    buckets: dict[str, Usage] = {}
    days: list[WhatIfDay] = []
    rows = cast(list[dict[str, Any]], frame.to_dict("records"))
    for row in rows:
        day: date = row["day"].date()
        usage = Usage(
            int(row["input_tokens"]),
            int(row["cached_input_tokens"]),
            int(row["cache_write_tokens"]),
            int(row["output_tokens"]),
            int(row["reasoning_tokens"]),
        )
        price = store.prices.lookup(target, day)
        whatif_cost = None
        if price is not None:
            whatif_cost = price_message(
                _fixed(_untiered(price)), target, datetime.combine(day, time(), UTC), usage
            ).cost
            used[price.id] = price
            buckets[price.id] = buckets.get(price.id, Usage()) + usage
        days.append(
            WhatIfDay(
                day=day,
                messages=int(row["messages"]),
                usage=usage,
                actual_cost_usd=round(float(row["cost_usd"]), 10),
                unpriced_messages=int(row["unpriced_messages"]),
                whatif_cost_usd=whatif_cost,
                whatif_unpriced_messages=int(row["messages"]) if price is None and usage.total > 0 else 0,
                price_id=price.id if price is not None else None,
            )
        )
    without = [d.day for d in days if d.whatif_cost_usd is None and d.usage.total > 0]
    notes = list(_notes(target, used, buckets, without, per_message=False))
    unpriced = sum(d.unpriced_messages for d in days)
    if unpriced:
        notes.append(
            f"{unpriced:,} messages had no price when stored: their tokens are in the what-if cost but not in "
            "the actual cost"
        )
    parts = [f"{since:%Y-%m-%d}" if since else "the beginning", f"{until:%Y-%m-%d}" if until else "now"]
    scope = " to ".join(parts)
    for label, value in (("tool", tool_name), ("model", source_model), ("provider", provider)):
        if value:
            scope += f", {label} {value}"
    return WhatIf(
        model=target,
        scope=scope,
        days=tuple(days),
        notes=tuple(notes),
        per_message=False,
        price_ids=tuple(sorted(used)),
    )


def whatif(
    store: Store,
    model: str,
    *,
    continuation_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    tool_name: str | None = None,
    source_model: str | None = None,
    provider: str | None = None,
) -> WhatIf:
    """A thread (``continuation_id``) or a period (the other filters) priced on ``model``."""
    if continuation_id is not None:
        others = [
            n
            for n, x in (
                ("since", since),
                ("until", until),
                ("tool_name", tool_name),
                ("source_model", source_model),
                ("provider", provider),
            )
            if x is not None
        ]
        if others:
            raise ValidationError(others[0], "a thread's what-if takes no period filters")
        return whatif_thread(store, continuation_id, model)
    return whatif_period(
        store, model, since=since, until=until, tool_name=tool_name, source_model=source_model, provider=provider
    )
