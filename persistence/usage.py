"""Turn a provider's usage report into the five buckets of :class:`~persistence.models.Usage`.

Providers disagree on names and on what includes what (see ``data/USAGE_FIELDS.md``):

* OpenAI Chat, GLM/Z.ai, xAI, Kimi, DeepSeek: ``prompt_tokens`` *includes* cached tokens
  (``prompt_tokens_details.cached_tokens``, Kimi's top-level ``cached_tokens``, DeepSeek's
  ``prompt_cache_hit_tokens``); ``completion_tokens`` *includes*
  ``completion_tokens_details.reasoning_tokens``.
* OpenAI Responses: ``input_tokens`` / ``output_tokens`` with ``input_tokens_details.cached_tokens``
  and ``output_tokens_details.reasoning_tokens``, included the same way.
* Anthropic: ``input_tokens`` *excludes* ``cache_read_input_tokens`` and
  ``cache_creation_input_tokens``; thinking is inside ``output_tokens``.
* Gemini: ``promptTokenCount`` includes ``cachedContentTokenCount``; ``thoughtsTokenCount`` and
  ``toolUsePromptTokenCount`` come on top (camelCase or snake_case).
* zen-mcp-server's own ``{"input_tokens", "output_tokens", "total_tokens"}``.
* Our canonical names (``cached_input_tokens``, ``cache_write_tokens``, ``reasoning_tokens``).

A dict that wraps one of these under ``usage`` / ``usageMetadata`` / ``usage_metadata`` is
unwrapped. A dict with none of the known keys is *not* an error (the server must not lose the
turn): :func:`normalise_usage` reports it as unrecognised, the store keeps the raw dict in the
message metadata and counts the message as unpriced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ValidationError
from .models import Usage
from .validation import MAX_TOKENS, check_nonneg_int, shown

__all__ = ["normalise_usage"]

_WRAPPERS = ("usage", "usageMetadata", "usage_metadata")
_BUCKETS = tuple(Usage.__dataclass_fields__)


def normalise_usage(raw: object) -> tuple[Usage | None, bool]:
    """Return ``(usage, recognised)``.

    ``(None, True)`` for no usage at all; ``(Usage(), False)`` for a dict of unknown shape.
    Raises :class:`ValidationError` naming the field for negative, non-numeric,
    inconsistent (cached tokens exceeding the prompt they are part of, …) or over-limit
    counts (more than ``MAX_TOKENS`` in a bucket: see :mod:`persistence.validation`).
    """
    if raw is None:
        return None, True
    if isinstance(raw, Usage):
        return _bounded(raw, "usage"), True
    if not isinstance(raw, Mapping):
        raise ValidationError("usage", f"expected a dict or Usage, got {type(raw).__name__}")
    found = _parse(raw, "usage")
    if found is None:
        for key in _WRAPPERS:
            inner = raw.get(key)
            if isinstance(inner, Mapping):
                found = _parse(inner, f"usage.{key}")
                if found is not None:
                    break
    if found is None:
        return Usage(), False
    return _bounded(found, "usage"), True


def _bounded(usage: Usage, path: str) -> Usage:
    """Every bucket a count within ``MAX_TOKENS``: a report's counts are checked as read, but
    a bucket can be a sum of two of them (Gemini's prompt and tool-use prompt), and a
    :class:`Usage` built by the caller is not checked at all until here."""
    # getattr, not to_dict(): asdict deep-copies, and a caller's odd value could be anything
    return Usage(**{name: check_nonneg_int(getattr(usage, name), f"{path}.{name}", MAX_TOKENS) for name in _BUCKETS})


class _Reader:
    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        self.data = data
        self.path = path

    def has(self, *keys: str) -> bool:
        return any(self.data.get(k) is not None for k in keys)

    def int(self, key: str, *nested: str) -> int:
        value: Any = self.data.get(key)
        path = f"{self.path}.{key}"
        for part in nested:
            if value is None:
                return 0
            if not isinstance(value, Mapping):
                raise ValidationError(path, f"expected an object, got {shown(value)}")
            value = value.get(part)
            path = f"{path}.{part}"
        return 0 if value is None else check_nonneg_int(value, path, MAX_TOKENS)


def _part(total: int, part: int, total_field: str, part_field: str) -> int:
    """``total - part`` where ``part`` is included in ``total``; refuse impossible reports."""
    if part > total:
        raise ValidationError(part_field, f"{part} exceeds {total_field} ({total}) that includes it")
    return total - part


def _parse(d: Mapping[str, Any], path: str) -> Usage | None:
    r = _Reader(d, path)
    # Canonical buckets (this package's own names): already non-overlapping.
    if r.has("cached_input_tokens", "cache_write_tokens", "reasoning_tokens"):
        return Usage(
            input_tokens=r.int("input_tokens"),
            cached_input_tokens=r.int("cached_input_tokens"),
            cache_write_tokens=r.int("cache_write_tokens"),
            output_tokens=r.int("output_tokens"),
            reasoning_tokens=r.int("reasoning_tokens"),
        )
    # Gemini, camelCase (REST) or snake_case (google-genai SDK).
    if r.has("promptTokenCount", "candidatesTokenCount"):
        prompt = r.int("promptTokenCount") + r.int("toolUsePromptTokenCount")
        cached = r.int("cachedContentTokenCount")
        return Usage(
            input_tokens=_part(prompt, cached, f"{path}.promptTokenCount", f"{path}.cachedContentTokenCount"),
            cached_input_tokens=cached,
            output_tokens=r.int("candidatesTokenCount"),
            reasoning_tokens=r.int("thoughtsTokenCount"),
        )
    if r.has("prompt_token_count", "candidates_token_count"):
        prompt = r.int("prompt_token_count") + r.int("tool_use_prompt_token_count")
        cached = r.int("cached_content_token_count")
        return Usage(
            input_tokens=_part(prompt, cached, f"{path}.prompt_token_count", f"{path}.cached_content_token_count"),
            cached_input_tokens=cached,
            output_tokens=r.int("candidates_token_count"),
            reasoning_tokens=r.int("thoughts_token_count"),
        )
    # Anthropic: cache traffic is reported beside input_tokens, not inside it.
    if r.has("cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation"):
        write = r.int("cache_creation_input_tokens")
        if not write and isinstance(d.get("cache_creation"), Mapping):
            write = r.int("cache_creation", "ephemeral_5m_input_tokens") + r.int(
                "cache_creation", "ephemeral_1h_input_tokens"
            )
        return Usage(
            input_tokens=r.int("input_tokens"),
            cached_input_tokens=r.int("cache_read_input_tokens"),
            cache_write_tokens=write,
            output_tokens=r.int("output_tokens"),
        )
    # OpenAI Chat Completions and the OpenAI-compatible APIs (GLM, Kimi, DeepSeek, xAI).
    if r.has("prompt_tokens", "completion_tokens"):
        prompt = r.int("prompt_tokens")
        if r.has("prompt_cache_hit_tokens"):  # DeepSeek
            cached, cached_field = r.int("prompt_cache_hit_tokens"), "prompt_cache_hit_tokens"
        elif r.has("cached_tokens"):  # Kimi: top-level
            cached, cached_field = r.int("cached_tokens"), "cached_tokens"
        else:
            cached = r.int("prompt_tokens_details", "cached_tokens")
            cached_field = "prompt_tokens_details.cached_tokens"
        completion = r.int("completion_tokens")
        reasoning = r.int("completion_tokens_details", "reasoning_tokens")
        return Usage(
            input_tokens=_part(prompt, cached, f"{path}.prompt_tokens", f"{path}.{cached_field}"),
            cached_input_tokens=cached,
            output_tokens=_part(
                completion,
                reasoning,
                f"{path}.completion_tokens",
                f"{path}.completion_tokens_details.reasoning_tokens",
            ),
            reasoning_tokens=reasoning,
        )
    # OpenAI Responses API, and zen's {input_tokens, output_tokens, total_tokens}.
    if r.has("input_tokens", "output_tokens"):
        prompt = r.int("input_tokens")
        cached = r.int("input_tokens_details", "cached_tokens")
        output = r.int("output_tokens")
        reasoning = r.int("output_tokens_details", "reasoning_tokens")
        return Usage(
            input_tokens=_part(prompt, cached, f"{path}.input_tokens", f"{path}.input_tokens_details.cached_tokens"),
            cached_input_tokens=cached,
            output_tokens=_part(
                output,
                reasoning,
                f"{path}.output_tokens",
                f"{path}.output_tokens_details.reasoning_tokens",
            ),
            reasoning_tokens=reasoning,
        )
    return None
