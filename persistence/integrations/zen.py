"""A drop-in storage backend for zen-mcp-server's conversation memory (and the EX-AI fork).

The server keeps threads through ``utils.storage_backend.get_storage()``: an object with
``set_with_ttl(key, ttl, value)``, ``setex``, ``get(key)`` and ``shutdown()``, where keys are
``thread:{uuid}`` and values are ``ThreadContext.model_dump_json()``. Plug this in there::

    from persistence.integrations.zen import ThreadStorage
    _storage = ThreadStorage()        # the store from PERSISTENCE_URL / Supabase / embedded SQLite

Each ThreadContext is stored as a conversation and its messages (not as a JSON blob), so the
app can browse, search and cost what the server wrote:

* Every turn becomes a message whose id is derived from the thread, the turn's timestamp,
  role and content as stored: the server rewrites the whole context on every ``add_turn``,
  and the turns already stored are recognised and skipped. Two processes appending to one
  thread both keep their turn (in memory the last writer would win).
* ``model_name``/``model_provider``/``tool_name``/``files``/``images`` fill the message's
  columns and ``model_metadata["usage"]`` its token buckets, so cost works; the turn's own
  fields are also kept verbatim, so ``get`` returns JSON that parses into the same
  ThreadContext, ``model_metadata`` (workflow state) included, newest turns kept.
* A user turn holding history rebuilt by the server (the text before
  ``=== NEW USER INPUT ===``) is stored as the raw prompt after the marker, and comes back
  that way, so history is never nested inside history.
* zen records a continued question twice: the raw prompt, then the prompt it sent to the
  model (history, the question again, its "CONVERSATION CONTINUATION: ..." instructions).
  That echo is not a message (the app, search and counts see the question once); it is kept
  in the thread's ``metadata["zen_echoes"]`` (what zen appended, and where) and ``get``
  puts it back in its place.
* The TTL decides what ``get`` returns (expired: None); the data stays for the app.

Every turn new to this process is checked with the store's own ``prepare_message`` before
``set_with_ttl`` returns, so a turn the store would refuse raises the same
``ValidationError`` on every backend, outbox or not.

On a remote backend (Postgres, Supabase) ``set_with_ttl`` appends to a durable local outbox
and returns; ``get`` answers what the store will hold once the outbox is delivered: the
stored turns merged with every queued snapshot of the thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .. import validation as v
from ..config import open_store
from ..env import load_env
from ..env import outbox_dir as default_outbox_dir
from ..errors import ConflictError, ValidationError
from ..outbox import Outbox, outbox_path_for, register_operation
from ..store import Store

log = logging.getLogger("persistence.zen")

__all__ = ["RAW_PROMPT_MARKER", "ThreadStorage", "apply_snapshot", "thread_context_json"]

RAW_PROMPT_MARKER = "=== NEW USER INPUT ==="
# How zen's get_follow_up_instructions() text begins: what it appends after the question in
# the prompt it sends to the model, and so in the echo turn.
FOLLOW_UP_STARTS = ("CONVERSATION CONTINUATION:", "IMPORTANT: This is approaching the final exchange")
ECHOES = "zen_echoes"  # the thread metadata key that keeps zen's echo turns
_MAX_ECHO_TAIL = 16_000  # zen's instructions are ~1 KB; anything longer is a question of its own
_KEY = re.compile(r"^thread:([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$")
_TURN_NAMESPACE = uuid.UUID("a3d0c7e2-5f1b-4c8e-9d2a-7b6e1f0c4d93")
# ThreadContext fields kept in the conversation's columns and messages; the others (created_at,
# last_updated_at, the EX-AI fields) are kept verbatim in its metadata["zen"].
_CONTEXT_COLUMNS = ("thread_id", "parent_thread_id", "tool_name", "turns", "initial_context")
_TURN_COLUMNS = ("role", "content")
_MAX_TTL = 100 * 365 * 24 * 3600  # beyond this a TTL is a mistake (and overflows a timestamp)
_CHECK_ID = "00000000-0000-4000-8000-000000000000"
_CHECKED_KEYS = 4096  # threads whose last snapshot this process remembers as already checked


def raw_prompt(content: str) -> str:
    """The user's own words from a prompt the server rebuilt with history in front."""
    if RAW_PROMPT_MARKER in content:
        return content.rsplit(RAW_PROMPT_MARKER, 1)[1].lstrip("\n").strip()
    return content


def turn_id(thread_id: str, turn: dict[str, Any], content: str) -> str:
    # From exactly the text the store keeps (NUL and lone surrogates become U+FFFD): the turn
    # read back and written again must be recognised. Clean text hashes as it always did.
    return _turn_id(thread_id, turn, v.clean_text(content))


def _turn_id(thread_id: str, turn: dict[str, Any], clean: str) -> str:
    digest = hashlib.sha256(clean.encode("utf-8")).hexdigest()
    return str(uuid.uuid5(_TURN_NAMESPACE, f"{thread_id}\n{turn.get('timestamp')}\n{turn.get('role')}\n{digest}"))


def _parse_time(value: object, field: str) -> datetime:
    if not isinstance(value, str):
        raise ValidationError(field, f"expected an ISO-8601 string, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(field, f"{value!r} is not an ISO-8601 timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)  # zen writes UTC


def parse_thread_context(value: str | bytes, *, times: bool = True) -> dict[str, Any]:
    """Check the ThreadContext JSON the server sends, naming what is wrong. ``times=False``
    leaves the turns' timestamps to the caller (which checks only the turns it has not seen)."""
    try:
        ctx = json.loads(value)
    except (TypeError, ValueError, RecursionError) as exc:
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
        if times:
            _parse_time(turn.get("timestamp"), f"value.turns[{i}].timestamp")
    _parse_time(ctx["created_at"], "value.created_at")
    return ctx


@dataclass(slots=True)
class SnapshotTurn:
    """One turn of a ThreadContext as the store keeps it."""

    id: str
    index: int  # its place in the snapshot (errors name ``value.turns[index]``)
    raw: dict[str, Any]  # the turn as the server sent it
    content: str  # its content as stored
    echo_of: str | None = None  # zen's echo of this user turn: kept out of the messages
    after: str | None = None  # the turn before the echo, where ``get`` puts it back
    tail: str = ""  # what zen appended to the question in the echo

    @property
    def turn(self) -> dict[str, Any]:
        """The turn as ``get`` gives it back: content as stored."""
        return {**self.raw, "content": self.content}


def _stored_content(turn: dict[str, Any]) -> str:
    content = turn["content"]
    return v.clean_text(raw_prompt(content) if turn["role"] == "user" else content)


def echo_tail(original: str, content: str, question: str) -> str | None:
    """What zen appended to ``question`` if this user turn (``original``, stored as
    ``content``) is zen's echo of it, else None.

    The echo is the question with zen's follow-up instructions after it (and the rebuilt
    history, which is already cut, in front). The same words asked again without any of
    zen's text are a question of their own.
    """
    q = question.strip()
    if not q or not content.startswith(q):
        return None
    tail = content[len(q) :]
    rest = tail.strip()
    if rest:
        if len(tail) > _MAX_ECHO_TAIL or not rest.startswith(FOLLOW_UP_STARTS):
            return None
    elif RAW_PROMPT_MARKER not in original:
        return None
    return tail


def snapshot_turns(cid: str, turns: list[dict[str, Any]]) -> list[SnapshotTurn]:
    """The turns of a (parsed) ThreadContext with their ids, echoes marked."""
    out: list[SnapshotTurn] = []
    last_user: SnapshotTurn | None = None
    for i, turn in enumerate(turns):
        content = _stored_content(turn)
        item = SnapshotTurn(_turn_id(cid, turn, content), i, turn, content)
        if turn["role"] == "user":
            tail = echo_tail(turn["content"], content, last_user.content) if last_user else None
            if tail is not None and last_user is not None:
                item.echo_of, item.after, item.tail = last_user.id, out[-1].id, tail
            last_user = item
        out.append(item)
    return out


def _message_args(cid: str, t: SnapshotTurn) -> dict[str, Any]:
    turn = t.raw
    model_metadata = turn.get("model_metadata")
    return {
        "continuation_id": cid,
        "role": turn["role"],
        "content": t.content,
        "usage": model_metadata.get("usage") if isinstance(model_metadata, dict) else None,
        "model": turn.get("model_name"),
        "provider": turn.get("model_provider"),
        "tool_name": turn.get("tool_name"),
        "files": turn.get("files") or (),
        "images": turn.get("images") or (),
        "metadata": {"zen": {k: v for k, v in turn.items() if k not in _TURN_COLUMNS}},
        "message_id": t.id,
        "created_at": _parse_time(turn["timestamp"], f"value.turns[{t.index}].timestamp"),
    }


def _echo_record(t: SnapshotTurn) -> dict[str, Any]:
    # The question itself is the message ``of``: only what zen added is kept.
    return {
        "id": t.id,
        "of": t.echo_of,
        "after": t.after,
        "tail": t.tail,
        "turn": {k: v for k, v in t.raw.items() if k not in _TURN_COLUMNS},
    }


def _stored_echoes(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    echoes = metadata.get(ECHOES)
    return [e for e in echoes if isinstance(e, dict) and "id" in e] if isinstance(echoes, list) else []


SetAside = Callable[[SnapshotTurn, Exception], None]


def apply_snapshot(
    store: Store,
    payload: dict[str, Any],
    *,
    skip: Collection[str] = (),
    set_aside: SetAside | None = None,
) -> int:
    """Write one ``set_with_ttl`` into the store: thread fields, new turns, expiry. Returns
    how many turns were new.

    Idempotent: applying the same snapshot again (an outbox redelivery) changes nothing.
    ``skip``: ids of turns set aside before (never written again). ``set_aside``: called
    with a turn the store refuses, which is then left out and the rest written (the outbox
    passes it); without it the refusal is raised.
    """
    ctx = parse_thread_context(payload["value"])
    cid = str(ctx["thread_id"])
    written_at = datetime.fromisoformat(payload["at"])
    expires_at = written_at + timedelta(seconds=int(payload["ttl"]))
    initial = ctx.get("initial_context")
    if isinstance(initial, dict) and isinstance(initial.get("prompt"), str):
        initial = {**initial, "prompt": raw_prompt(initial["prompt"])}
    zen_fields = {k: v for k, v in ctx.items() if k not in _CONTEXT_COLUMNS}
    conv = store.start_conversation(
        cid,
        tool_name=ctx.get("tool_name"),
        parent_id=ctx.get("parent_thread_id"),
        initial_context=initial if isinstance(initial, dict) else None,
        metadata={"zen": zen_fields},
        created_at=_parse_time(ctx["created_at"], "value.created_at"),
        expires_at=expires_at,
    )
    turns = snapshot_turns(cid, ctx["turns"])
    echoes = _stored_echoes(conv.metadata)
    echo_ids = {e["id"] for e in echoes}
    new_echoes = [t for t in turns if t.echo_of and t.id not in echo_ids and t.id not in skip]
    if conv.expires_at is None or conv.expires_at < expires_at or conv.metadata.get("zen") != zen_fields or new_echoes:
        metadata = {**conv.metadata, "zen": zen_fields}
        if new_echoes:
            metadata[ECHOES] = echoes + [_echo_record(t) for t in new_echoes]
        try:
            store.update_conversation(cid, expires_at=expires_at, metadata=metadata)
        except ValidationError as exc:
            if not new_echoes or set_aside is None:
                raise
            # The echoes made the thread's metadata too big: they go, the thread stays.
            for t in new_echoes:
                set_aside(t, exc)
            metadata[ECHOES] = echoes
            store.update_conversation(cid, expires_at=expires_at, metadata=metadata)
    stored = store.get_conversation(cid)
    # An echo read back comes without the history that marked it (get returns the question
    # and zen's instructions): its id says it is the echo kept already.
    have = ({m.id for m in stored.messages} if stored else set()) | set(skip) | echo_ids
    new_turns: list[tuple[SnapshotTurn, dict[str, Any]]] = []
    for t in turns:
        if t.echo_of or t.id in have:
            continue
        have.add(t.id)
        new_turns.append((t, _message_args(cid, t)))
    return _record_turns(store, cid, new_turns, set_aside)


# Outboxes deliver the snapshots ThreadStorage queues, turn by turn: a turn the store refuses
# is set aside alone.
register_operation("zen_snapshot", apply_snapshot, in_parts=True)


_BATCH_FIELD = re.compile(r"^messages\[(\d+)\]\.?(.*)$")
_REFUSED = (ValidationError, ConflictError)


def _record_turns(
    store: Store, cid: str, items: list[tuple[SnapshotTurn, dict[str, Any]]], set_aside: SetAside | None
) -> int:
    """The new turns in one batch (one round trip on a remote store). A malformed usage report
    must not cost the turn: it is kept unrecognised (the turn is then unpriced) and the batch
    sent again. With ``set_aside``, a turn the store refuses is handed to it and the others
    are written."""
    pending = list(items)
    unusual: set[int] = set()  # ids of items whose usage was already replaced
    written = 0
    while pending:
        try:
            store.record_messages([args for _, args in pending])
            return written + len(pending)
        except _REFUSED as exc:
            m = _BATCH_FIELD.match(getattr(exc, "field", "") or "")
            if m is not None and int(m.group(1)) < len(pending):
                t, args = pending[int(m.group(1))]
                if m.group(2).startswith("usage") and id(args) not in unusual:
                    log.warning("thread %s: usage refused (%s); stored without token counts", cid, exc)
                    args["usage"] = {"unrecognised": args["usage"]}
                    unusual.add(id(args))
                    continue
                if set_aside is None:
                    raise
                set_aside(t, exc)
                del pending[int(m.group(1))]
                continue
            if set_aside is None:
                raise
            if len(pending) == 1:
                set_aside(pending.pop()[0], exc)
                continue
            # The refusal does not say which turn: each alone finds it.
            for item in pending:
                written += _record_turns(store, cid, [item], set_aside)
            return written
    return written


def import_thread_context(store: Store, context: str | dict[str, Any]) -> int:
    """Store a ThreadContext the server saved (its JSON, e.g. a Redis value), as it was, and
    already expired for ``get``: it is history for the app, not a live thread. Returns how
    many turns were new (0 when it was imported before)."""
    value = context if isinstance(context, str) else json.dumps(context)
    return apply_snapshot(store, {"value": value, "ttl": 0, "at": datetime.now(UTC).isoformat()})


def _message_turn(m: Any) -> dict[str, Any]:
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
    return {"role": m.role, "content": m.content, **fields}


def stored_turns(conv: Any, max_turns: int, store: Store | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The newest ``max_turns`` turns of a stored thread as (id, turn), zen's echoes back in
    their places. ``conv`` holds the newest ``max_turns`` messages or more."""
    messages = list(conv.messages)[-max_turns:]
    turns = [(m.id, _message_turn(m)) for m in messages]
    echoes = _stored_echoes(conv.metadata)
    if not echoes:
        return turns
    whole = conv.message_count <= len(messages)  # every message is here, none older
    text = {m.id: m.content for m in messages}
    for e in echoes:
        ids = [i for i, _ in turns]
        if e.get("after") in ids:
            at = ids.index(e["after"]) + 1
        elif whole:  # its neighbour was never stored: by time
            try:
                when = _parse_time((e.get("turn") or {}).get("timestamp"), "timestamp")
            except ValidationError:
                continue
            at = next((k for k, m in enumerate(messages) if m.created_at > when), len(turns))
            at = min(at, len(turns))
        else:
            continue  # older than the turns asked for
        question = text.get(e.get("of", ""))
        if question is None and store is not None and isinstance(e.get("of"), str):
            found = store.get_message(e["of"])
            question = found.content if found is not None else None
        if question is None:
            continue
        turn = {"role": "user", "content": question.strip() + str(e.get("tail") or ""), **(e.get("turn") or {})}
        turns.insert(at, (str(e["id"]), turn))
    return turns[-max_turns:]


def _context_fields(conv: Any) -> dict[str, Any]:
    zen = dict(conv.metadata.get("zen") or {})
    ctx: dict[str, Any] = {
        "thread_id": conv.continuation_id,
        "parent_thread_id": conv.parent_id,
        "created_at": zen.pop("created_at", conv.created_at.isoformat()),
        "last_updated_at": zen.pop("last_updated_at", conv.updated_at.isoformat()),
        "tool_name": conv.tool_name,
        "turns": [],
        "initial_context": conv.initial_context or {},
    }
    ctx.update(zen)  # the EX-AI fields (session_fingerprint, client_friendly_name) and any others
    return ctx


def thread_context_json(conv: Any, max_turns: int, store: Store | None = None) -> str:
    """The ThreadContext JSON for a stored conversation: newest ``max_turns`` turns."""
    ctx = _context_fields(conv)
    ctx["turns"] = [t for _, t in stored_turns(conv, max_turns, store)]
    return json.dumps(ctx, ensure_ascii=False)


class ThreadStorage:
    """zen's storage backend interface, persisted. Thread-safe.

    ``store``: an open store, or None to open one from the environment. ``outbox``: queue
    writes in a durable local file and deliver them in the background (default: on for
    remote backends, off for the embedded SQLite file, which is local already).
    ``max_turns``: how many of the newest turns ``get`` returns (default
    ``MAX_CONVERSATION_TURNS`` from the environment, else 50). ``flusher``: where the outbox
    delivers from, ``"thread"`` or ``"process"`` (default ``PERSISTENCE_OUTBOX_FLUSHER``, else
    ``"process"`` when the store is opened here, ``"thread"`` for a store handed in; see
    :class:`persistence.outbox.Outbox`).
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        url: str | None = None,
        outbox: bool | None = None,
        outbox_dir: str | Path | None = None,
        max_turns: int | None = None,
        flusher: str | None = None,
    ) -> None:
        env = load_env()
        self.store = store if store is not None else open_store(url)
        self.max_turns = max_turns or int(env.get("MAX_CONVERSATION_TURNS") or 50)
        remote = self.store.backend != "sqlite"
        self.outbox: Outbox | None = None
        if outbox if outbox is not None else remote:
            folder = Path(outbox_dir) if outbox_dir else default_outbox_dir(env)
            self.outbox = Outbox(
                self.store,
                outbox_path_for(self.store.url, folder),
                # A flusher process reopens the store from its URL: the default when the
                # store is ours (opened here from the environment); one handed in may be a
                # wrapper only this process has, so it is delivered from a thread unless told.
                flusher=flusher or env.get("PERSISTENCE_OUTBOX_FLUSHER") or ("process" if store is None else "thread"),
            )
            try:
                # Checking a turn looks up its model's provider in the price table: load it
                # now, while the store is known to answer, so a check never waits on it.
                _ = self.store.prices
            except Exception as exc:  # checked turns then go without the provider lookup
                log.warning("ThreadStorage: could not load prices now (%s); loaded on first use", exc)
        self._other: dict[str, tuple[str, datetime]] = {}
        # Per key, what the last accepted snapshot held (turn fingerprints, thread fields):
        # only what is new is checked again, so the check costs one turn per add_turn.
        self._checked: OrderedDict[str, tuple[set[tuple[Any, ...]], Any]] = OrderedDict()
        self._checked_lock = threading.Lock()

    # -- zen's interface -----------------------------------------------------------------

    def set_with_ttl(self, key: str, ttl_seconds: int, value: str) -> None:
        if not isinstance(key, str):
            raise ValidationError("key", f"expected a string, got {type(key).__name__}")
        m = _KEY.match(key)
        ttl = _check_ttl(ttl_seconds)
        if m is None:
            # zen only stores threads here; anything else is kept in memory as zen's own
            # InMemoryStorage would, and said so.
            log.warning("ThreadStorage: key %r is not thread:{uuid}; kept in memory only", key)
            self._other[key] = (value, datetime.now(UTC) + timedelta(seconds=ttl))
            return
        ctx = parse_thread_context(value, times=False)  # _check parses those of new turns
        if str(ctx["thread_id"]).lower() != m.group(1).lower():
            raise ValidationError("value.thread_id", f"{_shown(ctx['thread_id'])} does not match the key {_shown(key)}")
        payload = {"value": value, "ttl": ttl, "at": datetime.now(UTC).isoformat()}
        # What delivery would refuse is refused here, to the caller, with the same error
        # whether an outbox delivers it later or the store now.
        seen = self._check(key, ctx)
        if self.outbox is not None:
            self.outbox.submit("zen_snapshot", payload, key=key)
        else:
            apply_snapshot(self.store, payload)
        with self._checked_lock:
            self._checked[key] = seen
            self._checked.move_to_end(key)
            while len(self._checked) > _CHECKED_KEYS:
                self._checked.popitem(last=False)

    setex = set_with_ttl

    def _check(self, key: str, ctx: dict[str, Any]) -> tuple[set[tuple[Any, ...]], Any]:
        """Check what this snapshot adds with the store's own rules (``prepare_message``).
        Returns what to remember as checked for ``key``."""
        with self._checked_lock:
            seen, thread_seen = self._checked.get(key, (set(), None))
        cid = str(ctx["thread_id"])
        # The thread's own fields; last_updated_at changes every time but is a string
        # (nothing to refuse), so it alone does not call for a check.
        thread = (
            ctx.get("tool_name"),
            ctx.get("parent_thread_id"),
            ctx.get("initial_context"),
            {k: value for k, value in ctx.items() if k not in _CONTEXT_COLUMNS and k != "last_updated_at"},
        )
        if thread != thread_seen:
            _check_thread(ctx)
        fingerprints: set[tuple[Any, ...]] = set()
        last_user: dict[str, Any] | None = None
        for i, turn in enumerate(ctx["turns"]):
            if not isinstance(turn.get("timestamp"), str):  # refused, before it is hashed
                _parse_time(turn.get("timestamp"), f"value.turns[{i}].timestamp")
            fp = (turn.get("timestamp"), turn.get("role"), hash(turn["content"]), len(turn["content"]))
            fingerprints.add(fp)
            if fp not in seen:
                _parse_time(turn.get("timestamp"), f"value.turns[{i}].timestamp")
                self._check_turn(cid, i, turn, last_user)
            if turn["role"] == "user":
                last_user = turn
        return fingerprints, thread

    def _check_turn(self, cid: str, i: int, turn: dict[str, Any], last_user: dict[str, Any] | None) -> None:
        content = _stored_content(turn)
        t = SnapshotTurn("", i, turn, content)
        if last_user is not None:
            tail = echo_tail(turn["content"], content, _stored_content(last_user))
            if tail is not None:  # an echo: kept in the thread's metadata...
                t.tail = tail
                v.check_json({"echo": _echo_record(t)}, f"value.turns[{i}]")
                # ...and held to a turn's rules all the same: read back by ``get`` and sent
                # again it may no longer look like an echo, and must then be accepted.
        args = _message_args(cid, t)
        del args["continuation_id"]
        args["message_id"] = _CHECK_ID  # its real id is not needed to check it (and costs a hash)
        # The usage report is left out: one the store refuses is kept unrecognised, never
        # refused (see _record_turns), and it sits in model_metadata, which is checked.
        args["usage"] = None
        try:
            self.store.prepare_message(**args, search_index=False)
        except ValidationError as exc:
            raise ValidationError(f"value.turns[{i}].{_turn_field(exc.field)}", exc.message) from None

    def get(self, key: str) -> str | None:
        if not isinstance(key, str):
            return None  # never set: set_with_ttl refuses keys that are not strings
        m = _KEY.match(key)
        if m is None:
            value, until = self._other.get(key, (None, datetime.min.replace(tzinfo=UTC)))
            return value if until > datetime.now(UTC) else None
        now = datetime.now(UTC)
        tid = m.group(1)
        # The queue first, then the store: a snapshot delivered in between is then seen in
        # both (and merged), never in neither.
        queued = [p for op, p in self.outbox.pending(key) if op == "zen_snapshot"] if self.outbox is not None else []
        if queued:
            newest = queued[-1]
            if datetime.fromisoformat(newest["at"]) + timedelta(seconds=newest["ttl"]) <= now:
                return None
            return self._merged(key, tid, queued)
        conv = self.store.get_conversation(tid, last=self.max_turns)
        if conv is None or (conv.expires_at is not None and conv.expires_at <= now):
            return None
        return thread_context_json(conv, self.max_turns, self.store)

    def _merged(self, key: str, tid: str, queued: list[dict[str, Any]]) -> str:
        """What the store will hold once ``queued`` is delivered: the stored turns, then each
        queued snapshot's turns not stored yet, in delivery order; newest ``max_turns``."""
        assert self.outbox is not None
        conv = None
        if not self.outbox.backend_failing():
            try:
                conv = self.store.get_conversation(tid, last=self.max_turns)
            except Exception as exc:  # the backend went away: the queue alone answers
                log.info("ThreadStorage: %s answered from the outbox only (%s: %s)", key, type(exc).__name__, exc)
        skip = self.outbox.set_aside(key)
        turns = stored_turns(conv, self.max_turns, self.store) if conv is not None else []
        seen = {i for i, _ in turns} | skip
        # With older messages than those loaded, a queued turn older than all of them was read
        # from the store before (zen writes back what it read): it is not new.
        oldest = conv.messages[0].created_at if conv is not None and conv.message_count > len(conv.messages) else None
        contexts = [parse_thread_context(p["value"]) for p in queued]
        for ctx in contexts:
            for t in snapshot_turns(tid, ctx["turns"]):
                if t.id in seen:
                    continue
                seen.add(t.id)
                if oldest is not None and _parse_time(t.raw["timestamp"], "timestamp") < oldest:
                    continue
                turns.append((t.id, t.turn))
        out = dict(contexts[-1])
        if conv is not None:
            stored = _context_fields(conv)
            for name in ("parent_thread_id", "tool_name", "initial_context"):
                out[name] = stored[name]
        else:
            initial = contexts[0].get("initial_context")
            if isinstance(initial, dict) and isinstance(initial.get("prompt"), str):
                initial = {**initial, "prompt": raw_prompt(initial["prompt"])}
            out["initial_context"] = initial
        out["turns"] = [t for _, t in turns[-self.max_turns :]]
        return json.dumps(out, ensure_ascii=False)

    def shutdown(self) -> None:
        """Deliver queued writes (bounded wait; the rest stays for the next start) and close."""
        if self.outbox is not None:
            self.outbox.close()
        self.store.close()


def _check_ttl(ttl_seconds: object) -> int:
    try:
        ttl = int(ttl_seconds)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        raise ValidationError("ttl_seconds", f"expected a number of seconds, got {_shown(ttl_seconds)}") from None
    if abs(ttl) > _MAX_TTL:
        # Not the number itself: one of thousands of digits cannot even be formatted.
        raise ValidationError("ttl_seconds", "more than 100 years")
    return ttl


def _shown(value: object) -> str:
    """A value for an error message: short, and never an error of its own (a repr of
    something nested thousands deep raises RecursionError)."""
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, bool | float | type(None)) or (isinstance(value, int) and abs(value) < 10**30):
        return repr(value)
    return f"a {type(value).__name__}"


def _check_thread(ctx: dict[str, Any]) -> None:
    """The thread's own fields, as ``start_conversation`` checks them."""
    v.optional_text(ctx.get("tool_name"), "value.tool_name", max_length=200)
    v.optional_id(ctx.get("parent_thread_id"), "value.parent_thread_id")
    v.optional_timestamp(_parse_time(ctx["created_at"], "value.created_at"), "value.created_at")
    initial = ctx.get("initial_context")
    if isinstance(initial, dict):
        v.check_json(initial, "value.initial_context")
    v.check_json({"zen": {k: value for k, value in ctx.items() if k not in _CONTEXT_COLUMNS}}, "value")


def _turn_field(field: str) -> str:
    """The ThreadContext turn's name for a message field the store named."""
    for column, name in (
        ("model", "model_name"),
        ("provider", "model_provider"),
        ("metadata.zen.", ""),
        ("metadata", "model_metadata"),
        ("created_at", "timestamp"),
    ):
        if field == column or (column.endswith(".") and field.startswith(column)):
            return field[len(column) :] if column.endswith(".") else name
    return field
