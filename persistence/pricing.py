"""Model prices and the cost of one message.

Prices are USD per 1M tokens per bucket, versioned by ``effective_from``: a message is priced
with the row of the latest ``effective_from`` on or before the message's day. The table ships
with the package (``data/model_prices.toml``, every row with its sources) and is copied into
each store's ``model_prices`` table, where custom rows can be added; ``reprice`` recomputes
stored costs after a change.

Rules where the table is silent: a missing ``cached_input`` price bills cache reads at the
input price (no discount was published); a missing ``cache_write`` price means writes are not
billed; reasoning tokens are billed at the output price. Long-context tiers bill the whole
request at the tier rates when its prompt (input + cache reads + cache writes) exceeds the
threshold. A model no row matches has no price: its cost is ``None``, never 0.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ValidationError
from .models import Usage
from .providers import PROVIDER_ALIASES

__all__ = [
    "UNREAD_USAGE",
    "Price",
    "PriceTable",
    "Priced",
    "is_unpriced",
    "load_price_file",
    "package_prices",
    "price_message",
]

_RATE_FIELDS = ("input", "cached_input", "cache_write", "output")
_TIER_FIELDS = (
    "tier_above_tokens",
    "tier_input",
    "tier_cached_input",
    "tier_cache_write",
    "tier_output",
    "tier2_above_tokens",
    "tier2_input",
    "tier2_cached_input",
    "tier2_output",
)


@dataclass(frozen=True, slots=True)
class Price:
    provider: str
    model: str
    match: str
    effective_from: date
    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    tier_above_tokens: int | None = None
    tier_input: float | None = None
    tier_cached_input: float | None = None
    tier_cache_write: float | None = None
    tier_output: float | None = None
    tier2_above_tokens: int | None = None
    tier2_input: float | None = None
    tier2_cached_input: float | None = None
    tier2_output: float | None = None
    source: str = ""
    as_of: str | None = None

    @property
    def id(self) -> str:
        """Stable across stores and backends, so exports and reprices can name it."""
        return f"{self.provider}/{self.model}@{self.effective_from.isoformat()}"

    def rates_for(self, prompt_tokens: int) -> tuple[float, float, float, float]:
        """(input, cached_input, cache_write, output) USD/1M for a request of this prompt size."""
        inp, cached, write, out = self.input, self.cached_input, self.cache_write, self.output
        if self.tier2_above_tokens is not None and prompt_tokens > self.tier2_above_tokens:
            inp = _first(self.tier2_input, inp)
            cached = _first(self.tier2_cached_input, cached)
            out = _first(self.tier2_output, out)
        elif self.tier_above_tokens is not None and prompt_tokens > self.tier_above_tokens:
            inp = _first(self.tier_input, inp)
            cached = _first(self.tier_cached_input, cached)
            write = _first(self.tier_cache_write, write)
            out = _first(self.tier_output, out)
        return inp, _first(cached, inp), _first(write, 0.0), out

    def cost(self, usage: Usage) -> float:
        inp, cached, write, out = self.rates_for(usage.prompt_tokens)
        total = (
            usage.input_tokens * inp
            + usage.cached_input_tokens * cached
            + usage.cache_write_tokens * write
            + (usage.output_tokens + usage.reasoning_tokens) * out
        ) / 1_000_000
        # 10 decimals: a message can cost $0.00003 and sums must match across backends.
        return round(total, 10)

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["id"] = self.id
        row["effective_from"] = self.effective_from.isoformat()
        return row

    @classmethod
    def from_mapping(cls, data: dict[str, Any], where: str = "price") -> Price:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("provider", "model", "match", "effective_from", "input", "output"):
            if kwargs.get(key) is None:
                raise ValidationError(f"{where}.{key}", "is required")
        eff = kwargs["effective_from"]
        if isinstance(eff, datetime):
            eff = eff.date()
        elif isinstance(eff, str):
            try:
                eff = date.fromisoformat(eff[:10])
            except ValueError:
                raise ValidationError(f"{where}.effective_from", f"{eff!r} is not a date") from None
        kwargs["effective_from"] = eff
        provider = kwargs["provider"]
        if isinstance(provider, str) and provider.strip().lower() in PROVIDER_ALIASES:
            kwargs["provider"] = PROVIDER_ALIASES[provider.strip().lower()]  # the id names the canonical provider
        for key in _RATE_FIELDS + _TIER_FIELDS:
            value = kwargs.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
                raise ValidationError(f"{where}.{key}", f"expected a non-negative number, got {value!r}")
        try:
            re.compile(kwargs["match"], re.IGNORECASE)
        except re.error as exc:
            raise ValidationError(f"{where}.match", f"invalid regex: {exc}") from None
        return cls(**kwargs)


def _first(*values: float | None) -> float:
    for v in values:
        if v is not None:
            return float(v)
    return 0.0


class PriceTable:
    """The prices of one store, with lookups cached per model name."""

    def __init__(self, prices: list[Price]) -> None:
        self.prices = sorted(prices, key=lambda p: (p.provider, p.model, p.effective_from))
        self._compiled = [(re.compile(p.match, re.IGNORECASE), p) for p in self.prices]
        self._by_id = {p.id: p for p in self.prices}
        self._candidates = lru_cache(maxsize=4096)(self._find_candidates)

    def __len__(self) -> int:
        return len(self.prices)

    def get(self, price_id: str) -> Price | None:
        return self._by_id.get(price_id)

    def _find_candidates(self, model: str) -> tuple[Price, ...]:
        found = [p for rx, p in self._compiled if rx.match(model)]
        return tuple(sorted(found, key=lambda p: p.effective_from, reverse=True))

    def lookup(self, model: str | None, at: datetime | date) -> Price | None:
        """The price in force for ``model`` on ``at``'s (UTC) day, or None."""
        if not model:
            return None
        day = at.date() if isinstance(at, datetime) else at
        candidates = self._candidates(model.strip())
        for price in candidates:
            if price.effective_from <= day:
                return price
        # Before the first recorded price the price in force is unknown (DeepSeek, for one,
        # had a different list price then): unpriced rather than a guess.
        return None

    def provider_of(self, model: str | None) -> str | None:
        if not model:
            return None
        candidates = self._candidates(model.strip())
        return candidates[0].provider if candidates else None


UNREAD_USAGE = "usage_raw"
"""The metadata key under which a message keeps a usage report the package could not read
(:func:`persistence.usage.normalise_usage`): such a message is never priced."""


def is_unpriced(cost: float | None, tokens: int, usage_unread: bool) -> bool:
    """The unpriced rule: no cost, but tokens to price or a usage report nobody could read.

    What ``messages.unpriced`` stores and ``unpriced_messages`` counts. The package's only
    copy; Postgres has its own (``public.message_unpriced``, the generated column), held to the
    same answers by the conformance suite (the ``store`` fixture of tests/conftest.py)."""
    return cost is None and (tokens > 0 or usage_unread)


@dataclass(frozen=True, slots=True)
class Priced:
    """What :func:`price_message` makes of a message."""

    cost: float | None
    price_id: str | None
    unpriced: bool


def price_message(
    lookup: Callable[[str | None, datetime], Price | None],
    model: str | None,
    at: datetime,
    usage: Usage | None,
    *,
    usage_unread: bool = False,
) -> Priced:
    """Price one message: its cost from the price in force for ``model`` on ``at``'s day
    (``lookup``: :meth:`PriceTable.lookup`, called only when there is usage to price), the
    price's id, and whether it counts as unpriced (:func:`is_unpriced`).

    ``usage`` None is a message without usage (no cost, not unpriced); ``usage_unread``: its
    usage report could not be read (kept in metadata under :data:`UNREAD_USAGE`), so it gets
    no price. Recording a message and both backends' reprice call this, so a message costs
    the same whichever path priced it."""
    price = lookup(model, at) if usage is not None and not usage_unread else None
    cost = price.cost(usage) if price is not None and usage is not None else None
    return Priced(
        cost=cost,
        price_id=price.id if price is not None and cost is not None else None,
        unpriced=is_unpriced(cost, usage.total if usage is not None else 0, usage_unread),
    )


def load_price_file(path: str | Path | None = None) -> list[Price]:
    """Prices from a TOML file in the format of ``data/model_prices.toml``."""
    if path is None:
        data = _package_toml()
        where = "model_prices.toml"
    else:
        where = str(path)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ValidationError("prices", f"cannot read {path}: {exc}") from None
    try:
        parsed = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError("prices", f"{where} is not valid TOML: {exc}") from None
    rows = parsed.get("model")
    if not isinstance(rows, list):
        raise ValidationError("prices", f"{where} has no [[model]] entries")
    return [Price.from_mapping(row, f"{where}[{i}]") for i, row in enumerate(rows)]


def _package_toml() -> bytes:
    return resources.files("persistence").joinpath("data/model_prices.toml").read_bytes()


def package_prices() -> tuple[list[Price], str]:
    """The shipped price table and its sha256 (to notice when a new release changes it)."""
    raw = _package_toml()
    return load_price_file(None), hashlib.sha256(raw).hexdigest()
