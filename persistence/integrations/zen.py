"""A drop-in storage backend for zen-mcp-server's conversation memory (and the EX-AI fork).

The server keeps threads through ``utils.storage_backend.get_storage()``: an object with
``set_with_ttl(key, ttl, value)``, ``setex``, ``get(key)`` and ``shutdown()``, where keys are
``thread:{uuid}`` and values are ``ThreadContext.model_dump_json()``. Plug this in there::

    from persistence.integrations.zen import ThreadStorage
    _storage = ThreadStorage()        # the store from PERSISTENCE_URL / Supabase / embedded SQLite

Each ThreadContext is stored as a conversation and its messages (not as a JSON blob), so the
app can browse, search and cost what the server wrote:

* Every turn becomes a message whose id is derived from the thread, the turn's timestamp,
  role and content: the server rewrites the whole context on every ``add_turn``, and the
  turns already stored are recognised and skipped. Two processes appending to one thread
  both keep their turn (in memory the last writer would win).
* ``model_name``/``model_provider``/``tool_name``/``files``/``images`` fill the message's
  columns and ``model_metadata["usage"]`` its token buckets, so cost works; the turn's own
  fields are also kept verbatim, so ``get`` returns JSON that parses into the same
  ThreadContext, ``model_metadata`` (workflow state) included, newest turns kept.
* The one deliberate change: a user turn holding history rebuilt by the server (the text
  before ``=== NEW USER INPUT ===``) is stored as the raw prompt after the marker, and comes
  back that way, so history is never nested inside history.
* The TTL decides what ``get`` returns (expired: None); the data stays for the app.

On a remote backend (Postgres, Supabase) ``set_with_ttl`` appends to a durable local outbox
and returns; ``get`` sees this process's queued writes first (read-your-writes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..config import load_env, open_store
from ..config import outbox_dir as default_outbox_dir
from ..errors import ValidationError
from ..outbox import Outbox, outbox_path_for
from ..store import Store

log = logging.getLogger("persistence.zen")

__all__ = ["RAW_PROMPT_MARKER", "ThreadStorage", "apply_snapshot", "thread_context_json"]

RAW_PROMPT_MARKER = "=== NEW USER INPUT ==="
_KEY = re.compile(r"^thread:([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$")
_TURN_NAMESPACE = uuid.UUID("a3d0c7e2-5f1b-4c8e-9d2a-7b6e1f0c4d93")
_THREAD_FIELDS = (
    "thread_id",
    "parent_thread_id",
    "created_at",
    "last_updated_at",
    "tool_name",
    "turns",
    "initial_context",
)
_TURN_COLUMNS = ("role", "content")


def raw_prompt(content: str) -> str:
    """The user's own words from a prompt the server rebuilt with history in front."""
    if RAW_PROMPT_MARKER in content:
        return content.rsplit(RAW_PROMPT_MARKER, 1)[1].lstrip("\n").strip()
    return content


def turn_id(thread_id: str, turn: dict[str, Any], content: str) -> str:
    digest = hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()
    return str(uuid.uuid5(_TURN_NAMESPACE, f"{thread_id}\n{turn.get('timestamp')}\n{turn.get('role')}\n{digest}"))


def _parse_time(value: object, field: str) -> datetime:
    if not isinstance(value, str):
        raise ValidationError(field, f"expected an ISO-8601 string, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(field, f"{value!r} is not an ISO-8601 timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)  # zen writes UTC


def parse_thread_context(value: str | bytes) -> dict[str, Any]:
    """Check the ThreadContext JSON the server sends, naming what is wrong."""
    try:
        ctx = json.loads(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError("value", f"not ThreadContext JSON: {exc}") from None
    if not isinstance(ctx, dict):
        raise ValidationError("value", "ThreadContext JSON must be an object")
    for name in ("thread_id", "created_at", "tool_name", "turns"):
        if name not in ctx:
            raise ValidationError(f"value.{name}", "is missing")
    if not isinstance(ctx["turns"], list):
        raise ValidationError("value.turns", "must be a list")
    for i, turn in enumerate(ctx["turns"]):
        if (
            not isinstance(turn, dict)
            or not isinstance(turn.get("content"), str)
            or turn.get("role") not in ("user", "assistant")
        ):
            raise ValidationError(f"value.turns[{i}]", "must have role user|assistant and string content")
        _parse_time(turn.get("timestamp"), f"value.turns[{i}].timestamp")
    _parse_time(ctx["created_at"], "value.created_at")
    return ctx


def apply_snapshot(store: Store, payload: dict[str, Any]) -> int:
    """Write one ``set_with_ttl`` into the store: thread fields, new turns, expiry. Returns
    how many turns were new.

    Idempotent: applying the same snapshot again (an outbox redelivery) changes nothing.
    """
    ctx = parse_thread_context(payload["value"])
    cid = str(ctx["thread_id"])
    written_at = datetime.fromisoformat(payload["at"])
    expires_at = written_at + timedelta(seconds=int(payload["ttl"]))
    initial = ctx.get("initial_context")
    if isinstance(initial, dict) and isinstance(initial.get("prompt"), str):
        initial = {**initial, "prompt": raw_prompt(initial["prompt"])}
    zen_fields = {
        k: v
        for k, v in ctx.items()
        if k not in ("thread_id", "parent_thread_id", "tool_name", "turns", "initial_context")
    }
    conv = store.start_conversation(
        cid,
        tool_name=ctx.get("tool_name"),
        parent_id=ctx.get("parent_thread_id"),
        initial_context=initial if isinstance(initial, dict) else None,
        metadata={"zen": zen_fields},
        created_at=_parse_time(ctx["created_at"], "value.created_at"),
        expires_at=expires_at,
    )
    if conv.expires_at is None or conv.expires_at < expires_at or conv.metadata.get("zen") != zen_fields:
        store.update_conversation(cid, expires_at=expires_at, metadata={**conv.metadata, "zen": zen_fields})
    stored = store.get_conversation(cid)
    have = {m.id for m in stored.messages} if stored else set()
    new_turns: list[dict[str, Any]] = []
    for i, turn in enumerate(ctx["turns"]):
        content = raw_prompt(turn["content"]) if turn["role"] == "user" else turn["content"]
        mid = turn_id(cid, turn, content)
        if mid in have:
            continue
        have.add(mid)
        model_metadata = turn.get("model_metadata")
        new_turns.append(
            {
                "continuation_id": cid,
                "role": turn["role"],
                "content": content,
                "usage": model_metadata.get("usage") if isinstance(model_metadata, dict) else None,
                "model": turn.get("model_name"),
                "provider": turn.get("model_provider"),
                "tool_name": turn.get("tool_name"),
                "files": turn.get("files") or (),
                "images": turn.get("images") or (),
                "metadata": {"zen": {k: v for k, v in turn.items() if k not in _TURN_COLUMNS}},
                "message_id": mid,
                "created_at": _parse_time(turn["timestamp"], f"value.turns[{i}].timestamp"),
            }
        )
    # The new turns in one batch (one round trip on a remote store). A malformed usage report
    # must not cost the turn: it is kept unrecognised (the turn is then unpriced) and the
    # batch is sent again.
    for _ in range(len(new_turns) + 1):
        try:
            store.record_messages(new_turns)
            return len(new_turns)
        except ValidationError as exc:
            m = _BATCH_USAGE_FIELD.match(exc.field)
            if m is None:
                raise
            item = new_turns[int(m.group(1))]
            log.warning("thread %s: usage refused (%s); stored without token counts", cid, exc)
            item["usage"] = {"unrecognised": item["usage"]}
    raise ValidationError("value.turns", "could not be stored")  # pragma: no cover - one retry per turn suffices


def import_thread_context(store: Store, context: str | dict[str, Any]) -> int:
    """Store a ThreadContext the server saved (its JSON, e.g. a Redis value), as it was, and
    already expired for ``get``: it is history for the app, not a live thread. Returns how
    many turns were new (0 when it was imported before)."""
    value = context if isinstance(context, str) else json.dumps(context)
    return apply_snapshot(store, {"value": value, "ttl": 0, "at": datetime.now(UTC).isoformat()})


_BATCH_USAGE_FIELD = re.compile(r"^messages\[(\d+)\]\.usage")


def thread_context_json(conv: Any, max_turns: int) -> str:
    """The ThreadContext JSON for a stored conversation: newest ``max_turns`` turns."""
    zen = dict(conv.metadata.get("zen") or {})
    turns = []
    for m in list(conv.messages)[-max_turns:]:
        fields = dict(m.metadata.get("zen") or {})
        if not fields:  # written by other code than this adapter: build the turn from columns
            fields = {
                "timestamp": m.created_at.isoformat(),
                "files": list(m.files) or None,
                "images": list(m.images) or None,
                "tool_name": m.tool_name,
                "model_provider": m.provider,
                "model_name": m.model,
                "model_metadata": None,
            }
        turns.append({"role": m.role, "content": m.content, **fields})
    ctx: dict[str, Any] = {
        "thread_id": conv.continuation_id,
        "parent_thread_id": conv.parent_id,
        "created_at": zen.pop("created_at", conv.created_at.isoformat()),
        "last_updated_at": zen.pop("last_updated_at", conv.updated_at.isoformat()),
        "tool_name": conv.tool_name,
        "turns": turns,
        "initial_context": conv.initial_context or {},
    }
    ctx.update(zen)  # the EX-AI fields (session_fingerprint, client_friendly_name) and any others
    return json.dumps(ctx, ensure_ascii=False)


class ThreadStorage:
    """zen's storage backend interface, persisted. Thread-safe.

    ``store``: an open store, or None to open one from the environment. ``outbox``: queue
    writes in a durable local file and deliver them in the background (default: on for
    remote backends, off for the embedded SQLite file, which is local already).
    ``max_turns``: how many of the newest turns ``get`` returns (default
    ``MAX_CONVERSATION_TURNS`` from the environment, else 50).
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        url: str | None = None,
        outbox: bool | None = None,
        outbox_dir: str | Path | None = None,
        max_turns: int | None = None,
    ) -> None:
        env = load_env()
        self.store = store if store is not None else open_store(url)
        self.max_turns = max_turns or int(env.get("MAX_CONVERSATION_TURNS") or 50)
        remote = self.store.backend != "sqlite"
        self.outbox: Outbox | None = None
        if outbox if outbox is not None else remote:
            folder = Path(outbox_dir) if outbox_dir else default_outbox_dir(env)
            self.outbox = Outbox(self.store, outbox_path_for(self.store.url, folder))
        self._other: dict[str, tuple[str, datetime]] = {}

    # -- zen's interface -----------------------------------------------------------------

    def set_with_ttl(self, key: str, ttl_seconds: int, value: str) -> None:
        m = _KEY.match(key) if isinstance(key, str) else None
        if m is None:
            # zen only stores threads here; anything else is kept in memory as zen's own
            # InMemoryStorage would, and said so.
            log.warning("ThreadStorage: key %r is not thread:{uuid}; kept in memory only", key)
            self._other[key] = (value, datetime.now(UTC) + timedelta(seconds=int(ttl_seconds)))
            return
        ctx = parse_thread_context(value)
        if str(ctx["thread_id"]).lower() != m.group(1).lower():
            raise ValidationError("value.thread_id", f"{ctx['thread_id']!r} does not match the key {key!r}")
        payload = {"value": value, "ttl": int(ttl_seconds), "at": datetime.now(UTC).isoformat()}
        if self.outbox is not None:
            self.outbox.submit("zen_snapshot", payload, key=key)
        else:
            apply_snapshot(self.store, payload)

    setex = set_with_ttl

    def get(self, key: str) -> str | None:
        m = _KEY.match(key) if isinstance(key, str) else None
        if m is None:
            value, until = self._other.get(key, (None, datetime.min.replace(tzinfo=UTC)))
            return value if until > datetime.now(UTC) else None
        now = datetime.now(UTC)
        if self.outbox is not None:
            queued = self.outbox.pending(key)
            if queued:  # this process wrote it and it is not delivered yet: read our write
                payload = queued[-1][1]
                if datetime.fromisoformat(payload["at"]) + timedelta(seconds=payload["ttl"]) <= now:
                    return None
                return str(payload["value"])
        conv = self.store.get_conversation(m.group(1), last=self.max_turns)
        if conv is None or (conv.expires_at is not None and conv.expires_at <= now):
            return None
        return thread_context_json(conv, self.max_turns)

    def shutdown(self) -> None:
        """Deliver queued writes (bounded wait; the rest stays for the next start) and close."""
        if self.outbox is not None:
            self.outbox.close()
        self.store.close()
