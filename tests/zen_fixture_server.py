"""A stand-in for zen-mcp-server's conversation memory, as a real stdio MCP server (tests only).

zen-mcp-server itself is not installable here, so this server does with its storage backend
what zen does (``utils/conversation_memory.py``, ``server.py``'s
``reconstruct_thread_context`` and a SimpleTool such as ``chat``): ``create_thread`` writes an
empty ThreadContext, every ``add_turn`` reads the whole context with ``get``, appends a turn and
writes it all back with ``set_with_ttl`` and a fresh TTL. A continued question is recorded
twice, as zen does: the raw prompt, then the prompt sent to the model (rebuilt history, the
question, the follow-up instructions). No model is called; the reply is made up.

The storage is ``ThreadStorage`` on the Postgres URL in ``ZEN_FIXTURE_URL``, so it writes
through the durable outbox (the default on a remote backend), built at import on the main
thread as zen's ``get_storage()`` singleton would be. The server is the SDK's ``MCPServer``
(mcp 2.x's name for FastMCP) on stdio: it returns when the client closes stdin, and the
interpreter exits.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any

from mcp.server.mcpserver import MCPServer

from persistence.integrations.zen import RAW_PROMPT_MARKER, ThreadStorage

TTL = 3 * 3600  # CONVERSATION_TIMEOUT_HOURS
MAX_TURNS = 50  # MAX_CONVERSATION_TURNS

storage = ThreadStorage(url=os.environ["ZEN_FIXTURE_URL"])
server = MCPServer("zen-fixture")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def create_thread(tool_name: str, initial_request: dict[str, Any]) -> str:
    tid = str(uuid.uuid4())
    ctx: dict[str, Any] = {
        "thread_id": tid,
        "parent_thread_id": None,
        "created_at": _now(),
        "last_updated_at": _now(),
        "tool_name": tool_name,
        "turns": [],
        "initial_context": {
            k: v
            for k, v in initial_request.items()
            if k not in ("temperature", "thinking_mode", "model", "continuation_id")
        },
    }
    storage.set_with_ttl(f"thread:{tid}", TTL, json.dumps(ctx))
    return tid


def get_thread(tid: str) -> dict[str, Any] | None:
    value = storage.get(f"thread:{tid}")
    return json.loads(value) if value else None


def add_turn(tid: str, role: str, content: str, **fields: Any) -> bool:
    ctx = get_thread(tid)
    if ctx is None or len(ctx["turns"]) >= MAX_TURNS:
        return False
    ctx["turns"].append(
        {
            "role": role,
            "content": content,
            "timestamp": _now(),
            "files": fields.get("files"),
            "images": fields.get("images"),
            "tool_name": fields.get("tool_name"),
            "model_provider": fields.get("model_provider"),
            "model_name": fields.get("model_name"),
            "model_metadata": fields.get("model_metadata"),
        }
    )
    ctx["last_updated_at"] = _now()
    storage.set_with_ttl(f"thread:{tid}", TTL, json.dumps(ctx))
    return True


def follow_up_instructions(turns: int) -> str:
    return (
        f"\n\nCONVERSATION CONTINUATION: You can continue this discussion with Claude! "
        f"({MAX_TURNS - turns - 1} exchanges remaining)\n\n"
        "Feel free to ask clarifying questions or suggest areas for deeper exploration naturally within your response."
    )


@server.tool()
def chat(prompt: str, continuation_id: str | None = None) -> dict[str, Any]:
    """Chat with a model; pass continuation_id to continue a thread."""
    if continuation_id:
        # server.py: the raw prompt is recorded, then the history rebuilt around it.
        if not add_turn(continuation_id, "user", prompt, tool_name="chat"):
            raise ValueError(f"thread {continuation_id} not found")
        ctx = get_thread(continuation_id)
        assert ctx is not None
        history = "=== CONVERSATION HISTORY ===\n" + "\n".join(
            f"Turn {i + 1} ({t['role']}): {t['content']}" for i, t in enumerate(ctx["turns"])
        )
        sent = f"{history}\n\n{RAW_PROMPT_MARKER}\n{prompt}{follow_up_instructions(len(ctx['turns']))}"
        tid = continuation_id
        add_turn(tid, "user", sent, tool_name="chat")  # the tool records the prompt it sent
    else:
        tid = create_thread("chat", {"prompt": prompt, "model": "kimi-k2-0905-preview"})
        add_turn(tid, "user", prompt, tool_name="chat")
        sent = prompt
    reply = f"An answer to {prompt!r}."
    add_turn(
        tid,
        "assistant",
        reply,
        tool_name="chat",
        model_provider="kimi",
        model_name="kimi-k2-0905-preview",
        model_metadata={"usage": {"input_tokens": len(sent) // 4, "output_tokens": 12}, "metadata": {}},
    )
    return {"content": reply, "continuation_id": tid}


if __name__ == "__main__":
    server.run("stdio")
