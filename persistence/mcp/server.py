"""The history MCP server's tools. Every tool only reads."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

from ..errors import PersistenceError
from ..models import Conversation
from ..store import Store
from ..when import parse_when

__all__ = ["build_server"]

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
GroupKey = Literal["day", "week", "month", "model", "provider", "tool_name"]
ALERTS_SHOWN = 20  # anomalies listed in usage_summary (the worst first); the rest are counted
# From the rollup only, so usage_summary stays fast on a large store; a flagged model or tool names
# the thread behind it. Threads against threads: `python -m persistence alerts`.
ALERT_DIMENSIONS = ("model", "provider", "tool_name")


def _when(value: str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return parse_when(value)
    except Exception:
        raise ToolError(
            f"{name}: {value!r} is not a date (use 2026-10-01, an ISO time, or 7d / 12h / 2w ago)"
        ) from None


def _thread(conv: Conversation) -> dict[str, Any]:
    return {
        "continuation_id": conv.continuation_id,
        "title": conv.title,
        "tool_name": conv.tool_name,
        "model": conv.model,
        "tags": list(conv.tags),
        "parent_id": conv.parent_id,
        "created_at": conv.created_at.isoformat(),
        "last_activity_at": conv.updated_at.isoformat(),
        "messages": conv.message_count,
        "total_tokens": conv.total_tokens,
        "cost_usd": round(conv.cost_usd, 6),
        "unpriced_messages": conv.unpriced_messages,
    }


def build_server(store: Store) -> MCPServer:
    server: MCPServer = MCPServer(
        "conversation-history",
        instructions=(
            "Read-only access to this MCP server's past conversations: search them, read a thread, "
            "list threads, and see token usage and cost. Costs are USD; null cost means no known price."
        ),
    )

    async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except PersistenceError as exc:
            raise ToolError(str(exc)) from None  # bad input: the agent sees why

    @server.tool(annotations=READ_ONLY)
    async def search_history(
        query: str,
        limit: int = 10,
        since: str | None = None,
        until: str | None = None,
        model: str | None = None,
        role: Literal["user", "assistant"] | None = None,
    ) -> dict[str, Any]:
        """Full-text search over past messages, best matches first.

        Syntax: words (English matched by stem), "exact phrase", a OR b, -excluded, prefix*.
        Chinese and Japanese match by substring. since/until: 2026-10-01, an ISO time, or 7d/12h/2w ago.
        Each hit has the thread's continuation_id and the message's seq, for get_thread.
        """
        hits = await call(
            store.search,
            query,
            limit=max(1, min(limit, 50)),
            since=_when(since, "since"),
            until=_when(until, "until"),
            model=model,
            role=role,
        )
        return {
            "hits": [
                {
                    "continuation_id": h.message.continuation_id,
                    "seq": h.message.seq,
                    "role": h.message.role,
                    "model": h.message.model,
                    "created_at": h.message.created_at.isoformat(),
                    "thread_title": h.conversation_title,
                    "snippet": h.snippet,
                    "score": round(h.score, 4),
                }
                for h in hits
            ]
        }

    @server.tool(annotations=READ_ONLY)
    async def get_thread(continuation_id: str, last: int = 20, max_chars: int = 4000) -> dict[str, Any]:
        """One conversation thread: its details and its newest `last` messages, oldest first.

        Each message's content is cut to `max_chars` characters (the rest is marked as cut).
        """
        conv = await call(store.get_conversation, continuation_id, last=max(1, min(last, 200)))
        if conv is None:
            raise ToolError(f"no thread with continuation_id {continuation_id!r}")
        cap = max(100, max_chars)
        return {
            **_thread(conv),
            "messages_shown": len(conv.messages),
            "messages": [
                {
                    "seq": m.seq,
                    "role": m.role,
                    "created_at": m.created_at.isoformat(),
                    "model": m.model,
                    "tool_name": m.tool_name,
                    "tokens": m.tokens,
                    "cost_usd": m.cost_usd,
                    "content": m.content
                    if len(m.content) <= cap
                    else m.content[:cap] + f"… [cut: {len(m.content):,} chars]",
                }
                for m in conv.messages
            ],
            "files": [
                {"filename": f.filename, "size": f.size, "mime_type": f.mime_type, "sha256": f.file_hash}
                for f in conv.files
            ],
        }

    @server.tool(annotations=READ_ONLY)
    async def list_threads(
        since: str | None = None,
        until: str | None = None,
        model: str | None = None,
        tool_name: str | None = None,
        tag: str | None = None,
        text: str | None = None,
        order: Literal["recent", "cost"] = "recent",
        limit: int = 20,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Conversation threads active in a period, newest activity (or highest cost) first.

        Filters: model or tool used in the thread, tag, text in the title. Pass next_cursor back
        as cursor for the next page.
        """
        page = await call(
            store.list_conversations,
            since=_when(since, "since"),
            until=_when(until, "until"),
            model=model,
            tool_name=tool_name,
            tag=tag,
            text=text,
            order=order,
            limit=max(1, min(limit, 100)),
            cursor=cursor,
        )
        return {"threads": [_thread(c) for c in page], "next_cursor": page.next_cursor}

    @server.tool(annotations=READ_ONLY)
    async def usage_summary(
        group_by: list[GroupKey] | None = None,
        since: str | None = None,
        until: str | None = None,
        alerts: bool = True,
    ) -> dict[str, Any]:
        """Token usage and cost (USD), grouped (default: by model), with totals.

        Tokens are split into input, cached input, cache write, output and reasoning. Messages
        from models with no known price are counted in unpriced_messages, not as $0.
        With alerts (default): "anomalies", the days in the period (default the last 7 days)
        on which a model, provider or tool cost far more or less than its usual, each with its
        reason and the thread behind a spike; and "budgets", where every budget stands (state ok,
        warning or over).
        """
        extra: dict[str, Any] = {}
        if alerts:
            found = await call(
                store.anomalies, since=_when(since, "since"), until=_when(until, "until"), dimensions=ALERT_DIMENSIONS
            )
            states = await call(store.budget_status)
            extra = {
                "anomalies": [a.as_dict() for a in found[:ALERTS_SHOWN]],
                "anomalies_not_shown": max(0, len(found) - ALERTS_SHOWN),
                "budgets": [s.as_dict() for s in states],
            }
        keys = list(group_by or ["model"])
        frame = await call(store.usage, keys, since=_when(since, "since"), until=_when(until, "until"))
        totals = await call(store.usage, (), since=_when(since, "since"), until=_when(until, "until"))
        rows = []
        for record in frame.to_dict("records"):
            for k in ("day", "week", "month"):
                if k in record:
                    record[k] = record[k].date().isoformat()
            record["cost_usd"] = round(float(record["cost_usd"]), 6)
            rows.append(record)
        total = {k: (round(float(v), 6) if k == "cost_usd" else int(v)) for k, v in totals.iloc[0].items()}
        return {"group_by": keys, "rows": rows, "totals": total, **extra}

    @server.tool(annotations=READ_ONLY)
    async def budget_status(
        model: str | None = None,
        provider: str | None = None,
        tool_name: str | None = None,
        tags: list[str] | None = None,
    ) -> dict[str, Any]:
        """Am I over budget? The budgets a call with this model / provider / tool / thread tags
        would count against (all budgets when none is given): spent and projected USD for the
        current day, week or month, and state ok, warning (80 % spent or on pace to pass the
        limit) or over. "over" is true when any of them is over: refuse or ask before the call.
        """
        states = await call(store.budget_status, model=model, provider=provider, tool_name=tool_name, tags=tags or ())
        return {
            "over": any(s.state == "over" for s in states),
            "warning": any(s.state == "warning" for s in states),
            "budgets": [s.as_dict() for s in states],
        }

    return server
