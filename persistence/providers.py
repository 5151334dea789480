"""One provider vocabulary: the names the EX-AI MCP server gives its providers.

The server names a turn's provider by its ``ProviderType`` value (``kimi``, ``glm``,
``openai``, ``google``, ``xai``, ``openrouter``, ``custom`` …), and so do the zen adapter
(``model_provider``) and the demo; the price table (``data/model_prices.toml``) uses the same
names, adding ``anthropic`` and ``deepseek``. A vendor's or a gateway's own name for one of
these providers (``moonshot`` for Kimi, ``zhipu`` or ``z.ai`` for GLM, ``gemini`` for Google
…) is an alias: every write maps it to the canonical name (:func:`canonical_provider`), so
"by provider" shows one row per vendor. Rows stored before this vocabulary were renamed by the
SQLite migration ``0004_dedup_and_providers`` and the Postgres migration
``20261130110000_persistence_dedup_providers`` (each carries its own copy of the aliases it
renamed: a released migration never changes).
"""

from __future__ import annotations

__all__ = ["PROVIDER_ALIASES", "canonical_price_id", "canonical_provider"]

# alias -> canonical name; aliases are lower case (a provider name is compared lower-cased).
PROVIDER_ALIASES: dict[str, str] = {
    "moonshot": "kimi",
    "moonshotai": "kimi",
    "moonshot-ai": "kimi",
    "moonshot_ai": "kimi",
    "zhipu": "glm",
    "zhipuai": "glm",
    "zhipu-ai": "glm",
    "zhipu_ai": "glm",
    "bigmodel": "glm",
    "zai": "glm",
    "z.ai": "glm",
    "z-ai": "glm",
    "gemini": "google",
    "x.ai": "xai",
    "x-ai": "xai",
}


def canonical_provider(name: str | None) -> str | None:
    """The canonical name of a provider (lower case, aliases mapped); None stays None."""
    if name is None:
        return None
    key = name.strip().lower()
    return PROVIDER_ALIASES.get(key, key)


def canonical_price_id(price_id: str | None) -> str | None:
    """A price id (``provider/model@effective_from``) with its provider's alias mapped, as the
    price table names the row now; other ids are returned unchanged."""
    if price_id is None or "/" not in price_id:
        return price_id
    provider, rest = price_id.split("/", 1)
    canonical = PROVIDER_ALIASES.get(provider.lower())
    return price_id if canonical is None else f"{canonical}/{rest}"
