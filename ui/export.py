"""What the app lets you download: a thread as JSON (the ``python -m persistence export``
record, importable) or Markdown, and a list of threads as CSV.

Money in CSV is an exact decimal (``0.06742799``), never a float's noise
(``0.06742799000000001``): :func:`decimal_text`."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from decimal import Decimal

from persistence import Conversation
from persistence.formatting import size, thread_cost
from persistence.transfer import conversation_record

from . import fmt

__all__ = ["MONEY_DECIMALS", "decimal_text", "thread_json", "thread_markdown", "threads_csv"]

MONEY_DECIMALS = 10
"""Digits after the point kept for USD in exports: far below any price step (a token costs
1e-7 USD and more), far above a float sum's noise (~1e-17)."""


def decimal_text(usd: float | None) -> str:
    """An amount of USD as exact decimal text for CSV: ``0.06742799``, ``12``, ``0.00001``;
    empty for no amount (None or NaN), never ``0``."""
    if usd is None or math.isnan(usd):
        return ""
    # repr of the rounded float is its shortest exact decimal; normalize drops trailing zeros,
    # and format "f" keeps it out of exponent notation (1E-5, 1E+2).
    return format(Decimal(repr(round(float(usd), MONEY_DECIMALS))).normalize() + 0, "f")


def threads_csv(threads: Iterable[Conversation]) -> str:
    """Threads as CSV, one row each. ``cost_usd`` is the priced part (empty when no message has
    a price) and ``unpriced_messages`` says how many messages it leaves out; ``cost`` is the
    amount as the app shows it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "continuation_id",
            "title",
            "created_at",
            "updated_at",
            "tool_name",
            "model",
            "messages",
            "total_tokens",
            "cost_usd",
            "unpriced_messages",
            "cost",
            "tags",
        ]
    )
    for t in threads:
        priced_nothing = t.unpriced_messages > 0 and not t.cost_usd
        writer.writerow(
            [
                t.continuation_id,
                t.title or "",
                t.created_at.isoformat(),
                t.updated_at.isoformat(),
                t.tool_name or "",
                t.model or "",
                t.message_count,
                t.total_tokens,
                "" if priced_nothing else decimal_text(t.cost_usd),
                t.unpriced_messages,
                fmt.cost(t),
                ";".join(t.tags),
            ]
        )
    return out.getvalue()


def thread_json(conv: Conversation) -> str:
    """One export record, as ``python -m persistence import`` reads it."""
    return json.dumps(conversation_record(conv), ensure_ascii=False, indent=2, default=str) + "\n"


def thread_markdown(conv: Conversation) -> str:
    """The thread for reading or pasting: a header with its figures, then each turn."""
    title = " ".join((conv.title or f"Thread {conv.continuation_id}").split())
    lines = [
        f"# {title}",
        "",
        f"- Thread: `{conv.continuation_id}`",
        f"- Tool: {conv.tool_name or '–'} · model: {conv.model or '–'}",
        f"- Created: {fmt.when(conv.created_at)} · last activity: {fmt.when(conv.updated_at)}",
        f"- Messages: {conv.message_count:,} · tokens: {conv.total_tokens:,} · cost: "
        f"{thread_cost(conv.cost_usd, conv.unpriced_messages)}",
    ]
    if conv.parent_id:
        lines.append(f"- Continues: `{conv.parent_id}`")
    if conv.tags:
        lines.append(f"- Tags: {', '.join(conv.tags)}")
    if conv.files:
        lines.append(f"- Files: {', '.join(f'{f.filename} ({size(f.size)})' for f in conv.files)}")
    for m in conv.messages:
        head = f"## {m.seq}. {m.role}"
        if m.model:
            head += f" · {m.model}"
        head += f" · {fmt.when(m.created_at, seconds=True)}"
        lines += ["", head, ""]
        details = []
        if m.usage.total:
            details.append(f"{m.usage.total:,} tokens")
        if (cost := fmt.message_cost(m)) is not None:
            details.append(cost)
        if m.duration_ms is not None:
            details.append(fmt.duration(m.duration_ms))
        if details:
            lines += [f"_{' · '.join(details)}_", ""]
        lines.append(m.content)
    return "\n".join(lines) + "\n"
