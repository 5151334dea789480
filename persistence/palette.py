"""Colours with one meaning each, the same in the app and the report.

* A **model** is drawn in a shade of its provider's hue: Kimi violet, GLM blue, OpenAI teal,
  Anthropic terracotta, Google amber, DeepSeek magenta, xAI brown; any other model in olive.
  A model's shade depends on its name only (never on which other models are on the chart),
  so a model keeps its colour from page to page and from the app to the report.
* A **provider** is drawn in its hue's first shade.
* **Quantities** that are not a model (token kinds, cost, uploaded and stored bytes) are
  neutral greys, which no model uses; **saved** money is green, which no model uses either.
  Nothing is drawn in red: red reads as a loss.
* **No model** (``None``, or the ``(no model)`` label) is a light grey.

Pure data and functions, no plotting import: ``color(name)`` for one name, ``colors(names)`` for
a legend, ``TOKEN_KIND_COLORS`` and the constants below for the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from .providers import canonical_provider

__all__ = [
    "COST",
    "FAMILIES",
    "NEUTRALS",
    "NO_MODEL",
    "SAVED",
    "STORED",
    "TOKEN_KIND_COLORS",
    "UPLOADED",
    "category_colors",
    "color",
    "colors",
    "family_of",
    "model_color",
    "provider_color",
]

# Each family: its shades in the order they are handed out (middle, light, dark, then between),
# so the first models of a family differ most. Its first shade is also the provider's colour.
FAMILIES: dict[str, tuple[str, ...]] = {
    "kimi": ("#7E57C2", "#B39DDB", "#4527A0", "#9575CD", "#5E35B1"),
    "glm": ("#1E88E5", "#90CAF9", "#0D47A1", "#64B5F6", "#1565C0"),
    "openai": ("#00897B", "#80CBC4", "#004D40", "#4DB6AC", "#00695C"),
    "anthropic": ("#E64A19", "#FFAB91", "#BF360C", "#FF8A65", "#D84315"),
    "google": ("#F9A825", "#FFE082", "#A67C00", "#FFCA28", "#D49B00"),
    "deepseek": ("#D81B60", "#F48FB1", "#880E4F", "#F06292", "#AD1457"),
    "xai": ("#8B5A2B", "#D2A679", "#4E342E", "#B07D4F", "#6F4A2F"),
    "other": ("#9E9D24", "#D4E157", "#5F5E0F", "#C0CA33", "#827717"),
}

# How a model's name tells its family when the provider is not given (checked in order).
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("kimi", "kimi"),
    ("moonshot", "kimi"),
    ("glm", "glm"),
    ("chatglm", "glm"),
    ("zhipu", "glm"),
    ("gpt", "openai"),
    ("chatgpt", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("codex", "openai"),
    ("claude", "anthropic"),
    ("gemini", "google"),
    ("gemma", "google"),
    ("deepseek", "deepseek"),
    ("grok", "xai"),
)

# Models often on one chart together get different shades of their family; any other model's
# shade comes from a hash of its name. Append here, never reorder: a colour must not move.
_PINNED: dict[str, int] = {
    "kimi-k2-0905-preview": 0,
    "kimi-k2-turbo-preview": 1,
    "kimi-k2-thinking": 2,
    "kimi-k2-thinking-turbo": 3,
    "kimi-latest": 4,
    "kimi-k2.5": 3,
    "kimi-k3": 4,
    "glm-4.6": 0,
    "glm-4.5-air": 1,
    "glm-4.5-flash": 2,
    "glm-4.5": 3,
    "glm-4.7": 4,
    "glm-5": 2,
    "gpt-5": 0,
    "gpt-4.1-mini": 1,
    "gpt-5-mini": 3,
    "gpt-4o": 2,
    "gpt-4.1": 4,
    "claude-sonnet-4-5-20250929": 0,
    "claude-haiku-4-5-20251001": 1,
    "claude-opus-4-1-20250805": 2,
    "claude-sonnet-4-6": 3,
    "claude-opus-4-6": 4,
    "gemini-2.5-pro": 0,
    "gemini-2.5-flash": 1,
    "gemini-2.5-flash-lite": 3,
    "deepseek-chat": 0,
    "deepseek-reasoner": 1,
}

NO_MODEL = "#B0B0B0"
"""No model named (a turn with no model, the ``(no model)`` row)."""
COST = "#455A64"
"""Cost drawn without a split by model (one line, one bar per tool …)."""
SAVED = "#43A047"
"""Money saved (by prompt caching)."""
UPLOADED = "#C8C2BA"
"""Bytes uploaded, before deduplication."""
STORED = "#5E5850"
"""Bytes actually stored, after deduplication."""
TOKEN_KIND_COLORS: dict[str, str] = {
    "input_tokens": "#4D4D4D",
    "cached_input_tokens": "#A6A6A6",
    "cache_write_tokens": "#7A7A7A",
    "output_tokens": "#1F1F1F",
    "reasoning_tokens": "#CFCFCF",
}
"""The five token buckets, by column name: greys from dark to light."""

NEUTRALS = ("#455A64", "#8C9BA3", "#2B2B2B", "#B5B5B5", "#6B6B6B")
"""A chart's default colours (plotly's colorway) where a series was given none: greys, so an
uncoloured series never borrows a model's hue."""

_NO_NAMES = frozenset({"", "(no model)", "(none)", "(no provider)", "(no tool)", "none", "null"})

# Other categories (tools, tags, users …: neither a model nor a provider): a qualitative set,
# fixed per name. A dozen tools need more hues than the families leave over, so this is the one
# place a hue can repeat a family's; only charts stacked by such a category use it, and their
# legend names what the colours are.
_CATEGORY_COLORS = (
    "#3366CC",
    "#DC7633",
    "#17A589",
    "#AF7AC5",
    "#D4AC0D",
    "#5D6D7E",
    "#CA6F1E",
    "#2E86C1",
    "#229954",
    "#884EA0",
    "#B7950B",
    "#839192",
)


def _index(name: str, n: int) -> int:
    """A stable index from a name (not Python's ``hash``, which changes between runs)."""
    return int.from_bytes(hashlib.sha1(name.encode("utf-8")).digest()[:4], "big") % n


def family_of(model: str | None, provider: str | None = None) -> str | None:
    """The family a model is drawn in: its provider's when that is one of :data:`FAMILIES`,
    else the one its name starts with, else ``"other"``; None for no model."""
    if model is None or model.strip().lower() in _NO_NAMES:
        return None
    canonical = canonical_provider(provider)
    if canonical in FAMILIES and canonical != "other":
        return canonical
    name = model.strip().lower()
    # Gateways prefix the vendor: ``openrouter/moonshotai/kimi-k2``, ``anthropic/claude-…``.
    base = name.rsplit("/", 1)[-1]
    for prefix, family in _PREFIXES:
        if base.startswith(prefix):
            return family
    if "/" in name:
        vendor = canonical_provider(name.split("/", 1)[0])
        if vendor in FAMILIES:
            return vendor
    return "other"


def model_color(model: str | None, provider: str | None = None) -> str:
    """A model's colour: a shade of its family (see :func:`family_of`), fixed by its name."""
    family = family_of(model, provider)
    if family is None or model is None:
        return NO_MODEL
    shades = FAMILIES[family]
    name = model.strip().lower()
    index = _PINNED.get(name)
    return shades[index if index is not None else _index(name, len(shades))]


def provider_color(provider: str | None) -> str:
    """A provider's colour: its family's first shade (an unknown provider: one of ``other``'s)."""
    if provider is None or provider.strip().lower() in _NO_NAMES:
        return NO_MODEL
    canonical = canonical_provider(provider) or ""
    if canonical in FAMILIES and canonical != "other":
        return FAMILIES[canonical][0]
    return FAMILIES["other"][_index(canonical, len(FAMILIES["other"]))]


def color(name: str | None) -> str:
    """The colour of a legend entry that is a provider name (``kimi``, ``moonshot``) or a model."""
    if canonical_provider(name) in FAMILIES.keys() - {"other"}:
        return provider_color(name)
    return model_color(name)


def colors(names: Iterable[str | None]) -> dict[str, str]:
    """:func:`color` for each name, keyed by the name (None as ``(no model)``)."""
    return {(n if n is not None else "(no model)"): color(n) for n in names}


def category_colors(names: Iterable[str | None], *, none_label: str = "(none)") -> dict[str, str]:
    """Colours for another category's values (tool names, tags …), fixed per value; none is grey."""
    out = {}
    for n in names:
        missing = n is None or n.strip().lower() in _NO_NAMES
        key = n if n is not None else none_label
        out[key] = NO_MODEL if missing else _CATEGORY_COLORS[_index(str(n), len(_CATEGORY_COLORS))]
    return out
