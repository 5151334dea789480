"""A thread as a file: JSON (the ``python -m persistence export`` record, importable) or Markdown."""

from __future__ import annotations

import json

from persistence import Conversation
from persistence.formatting import money, size, thread_cost
from persistence.transfer import conversation_record

from . import fmt

__all__ = ["thread_json", "thread_markdown"]


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
        if m.cost_usd is not None:
            details.append(money(m.cost_usd))
        if m.duration_ms is not None:
            details.append(fmt.duration(m.duration_ms))
        if details:
            lines += [f"_{' · '.join(details)}_", ""]
        lines.append(m.content)
    return "\n".join(lines) + "\n"
