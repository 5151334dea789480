"""The store interface every backend implements, and the logic they share.

Public methods validate input and normalise it here, once, so every backend refuses bad
input the same way and prices a message the same way; backends implement the ``_``-prefixed
storage primitives. Public reads take keyword-only filters.
"""

from __future__ import annotations

import abc
import base64
import dataclasses
import json
import logging
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any, BinaryIO, Unpack, cast

import pandas as pd

from . import validation as v
from .errors import PersistenceError, ValidationError
from .filestore import open_source, sniff_mime
from .insights import (
    ANOMALY_DIMENSIONS,
    BUDGET_PERIODS,
    Anomaly,
    Budget,
    BudgetStatus,
    budget_applies,
    find_anomalies,
    period_bounds,
    rollup_spend,
    status_of,
)
from .models import (
    Conversation,
    ImportResult,
    Message,
    Page,
    ProviderFile,
    PruneResult,
    RedactResult,
    RepriceResult,
    SearchHit,
    StoredFile,
    Usage,
)
from .prepared import FILTER_NAMES, ConversationFilters, PreparedConversation, PreparedMessage, title_from
from .pricing import UNREAD_USAGE, Price, PriceTable, price_message
from .providers import canonical_provider
from .search_query import Clause, index_text, parse_query
from .transfer import conversation_record, parse_record
from .uploads import GuardedReader, UploadRefusedError, UploadRules, settle_type
from .usage import normalise_usage

log = logging.getLogger("persistence")

__all__ = ["STORAGE_COLUMNS", "USAGE_COLUMNS", "Store"]

USAGE_COLUMNS = (
    "messages",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost_usd",
    "unpriced_messages",
)
USAGE_KEYS = ("day", "week", "month", "model", "provider", "tool_name", "user_id")
STORAGE_COLUMNS = ("files", "bytes", "uploads", "logical_bytes")
STORAGE_KEYS = ("day", "week", "month", "mime_type", "user_id")
PERIOD_KEYS = ("day", "week", "month")
KEY_ALIASES = {"tool": "tool_name", "user": "user_id", "type": "mime_type"}
ORDERS = ("recent", "created", "cost")
SEARCH_ORDERS = ("rank", "recent")


def now() -> datetime:
    return datetime.now(UTC)


def new_id(at: datetime | None = None, *, rng: random.Random | None = None) -> str:
    """A new thread or message id: a UUIDv7 (RFC 9562), which starts with the time, so new
    rows share the right-hand pages of the indexes that hold the id instead of each landing
    on a random one (Postgres, a million messages: 54% less WAL per record_message;
    migration 20261130210000 makes the database's defaults the same). ``at``: the time it
    starts with (default now); ``rng``: where its random bits come from, for ids that are the
    same on every run (the demo)."""
    ms = time.time_ns() // 1_000_000 if at is None else int(at.timestamp() * 1000)
    # 74 of these bits are used; 128 drawn from an rng, as a random UUIDv4 would.
    rand = int.from_bytes(os.urandom(10), "big") if rng is None else rng.getrandbits(128)
    return str(
        uuid.UUID(
            int=(ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64 | 0b10 << 62 | rand & (2**62 - 1)
        )
    )


# doctor's progress callback: (what it is checking, units done, units in all).
DoctorProgress = Callable[[str, int, int], object]
# What a full doctor check finds that the quick one cannot see, kept for it (store_meta).
FULL_CHECK_FINDINGS = ("quick_check", "files_missing_bytes_count", "files_checked")


def encode_cursor(values: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, order: str) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(values, list) or len(values) != 3 or values[0] != order:
            raise ValueError
        return values[1:]
    except (ValueError, TypeError, UnicodeDecodeError):
        raise ValidationError("cursor", "not a cursor from this listing (pass next_cursor back unchanged)") from None


_EARLIEST = datetime.min.replace(tzinfo=UTC)


def period_days(since: datetime | None, until: datetime | None) -> tuple[str | None, str | None]:
    """Whole UTC days overlapping [since, until), as 'YYYY-MM-DD' bounds (inclusive)."""
    first = since.date().isoformat() if since else None
    last = None
    if until:
        # Step back to the last instant before ``until`` (datetime.min has none before it).
        end = until - timedelta(microseconds=1) if until > _EARLIEST else until
        last = end.date().isoformat()
    return first, last


def cutoff_of(older_than: timedelta | datetime, field: str) -> datetime:
    """The instant ``older_than`` names: ``now - older_than`` for a duration, or the datetime."""
    if isinstance(older_than, timedelta):
        if older_than <= timedelta(0):
            raise ValidationError(field, "must be a positive duration")
        # Longer than datetime reaches back: the cutoff is the first instant there is.
        return now() - older_than if older_than < now() - _EARLIEST else _EARLIEST
    return v.to_utc(older_than, field)


class Store(abc.ABC):
    """Conversation history, files and usage on one backend. Open with :func:`persistence.open_store`.

    Thread-safe: one store can be shared by the threads of a process (and with
    :class:`persistence.AsyncStore`, by an event loop).
    """

    backend: str = "?"
    url: str = ""  # with any password or key removed, safe to show
    # What open_store opened it from (the URL as given, secrets included; files_dir; the
    # environment it read), so another process can open the same store: an outbox's
    # flusher process. Never shown.
    opened_from: tuple[str, str | None, dict[str, str]] | None = None

    def __init__(self) -> None:
        self.upload_rules = UploadRules()
        self.max_content_bytes: int = v.MAX_CONTENT_BYTES
        self._prices: PriceTable | None = None
        # budget_status's summary (see _budget_summary), shared by the threads of a process.
        self._budget_cache: _BudgetSummary | None = None
        self._budget_lock = threading.Lock()
        self._budget_refreshing = False
        self._budget_writes = 0  # this process's message writes, so a refresh can tell it raced one
        self._budget_worker: ThreadPoolExecutor | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Release connections. The store cannot be used afterwards."""

    def _stop_background(self) -> None:
        """Let a background budget refresh finish and end its thread: backends call it before
        closing their connections, which that thread reads through (a SQLite connection closed
        under a running query brings the process down)."""
        worker, self._budget_worker = getattr(self, "_budget_worker", None), None
        if worker is not None:
            worker.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    # -- prices ------------------------------------------------------------------------

    @property
    def prices(self) -> PriceTable:
        if self._prices is None:
            self._prices = PriceTable(self._load_prices())
        return self._prices

    def _lookup_price(self, model: str | None, at: datetime) -> Price | None:
        """The price in force (the table is read on the first message that has usage to price)."""
        return self.prices.lookup(model, at)

    def add_prices(self, prices: Iterable[Price]) -> int:
        """Add (or replace, by id) price rows. Call :meth:`reprice` to apply them to past messages."""
        rows = list(prices)
        self._save_prices(rows, origin="user")
        self._prices = None
        return len(rows)

    # -- writes ------------------------------------------------------------------------

    def start_conversation(
        self,
        continuation_id: str | None = None,
        *,
        tool_name: str | None = None,
        title: str | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        parent_id: str | None = None,
        tags: Iterable[str] = (),
        metadata: dict[str, Any] | None = None,
        initial_context: dict[str, Any] | None = None,
        expires_at: datetime | None = None,
        created_at: datetime | None = None,
    ) -> Conversation:
        """Create a thread, or return the existing one with this ``continuation_id`` unchanged.

        ``parent_id`` is the parent thread's continuation id (as the MCP server links
        threads); the parent need not be stored. A new id is generated when
        ``continuation_id`` is None.
        """
        prepared = PreparedConversation(
            id=new_id(),
            continuation_id=v.check_id(continuation_id, "continuation_id")
            if continuation_id is not None
            else str(uuid.uuid4()),
            created_at=v.optional_timestamp(created_at, "created_at") or now(),
            tool_name=v.optional_text(tool_name, "tool_name", max_length=200),
            title=v.optional_text(title, "title", max_length=500),
            session_id=v.optional_id(session_id, "session_id"),
            user_id=v.optional_uuid(user_id, "user_id"),
            parent_id=v.optional_id(parent_id, "parent_id"),
            tags=v.check_tags(tags),
            metadata=v.check_json(metadata, "metadata"),
            initial_context=v.optional_json(initial_context, "initial_context"),
            expires_at=v.optional_timestamp(expires_at, "expires_at"),
        )
        return self._start_conversation(prepared)

    _UNSET: Any = object()

    def update_conversation(
        self,
        continuation_id: str,
        *,
        title: Any = _UNSET,
        summary: Any = _UNSET,
        status: Any = _UNSET,
        tags: Any = _UNSET,
        metadata: Any = _UNSET,
        initial_context: Any = _UNSET,
        expires_at: Any = _UNSET,
    ) -> Conversation:
        """Change the given fields of a thread (``None`` clears a field). Raises NotFoundError."""
        cid = v.check_id(continuation_id, "continuation_id")
        changes: dict[str, Any] = {}
        if title is not self._UNSET:
            changes["title"] = v.optional_text(title, "title", max_length=500)
        if summary is not self._UNSET:
            changes["summary"] = v.optional_text(summary, "summary", max_length=100_000)
        if status is not self._UNSET:
            if status not in ("active", "archived", "deleted"):
                raise ValidationError("status", f"must be active, archived or deleted; got {v.shown(status)}")
            changes["status"] = status
        if tags is not self._UNSET:
            changes["tags"] = v.check_tags(tags)
        if metadata is not self._UNSET:
            changes["metadata"] = v.check_json(metadata, "metadata")
        if initial_context is not self._UNSET:
            changes["initial_context"] = v.optional_json(initial_context, "initial_context")
        if expires_at is not self._UNSET:
            changes["expires_at"] = v.optional_timestamp(expires_at, "expires_at")
        return self._update_conversation(cid, changes)

    def prepare_message(
        self,
        role: str,
        content: str,
        *,
        model: str | None = None,
        provider: str | None = None,
        usage: Any = None,
        duration_ms: int | None = None,
        tool_name: str | None = None,
        files: Iterable[str] = (),
        images: Iterable[str] = (),
        metadata: dict[str, Any] | None = None,
        message_id: str | None = None,
        created_at: datetime | None = None,
        search_index: bool = True,
    ) -> PreparedMessage:
        """Validate, normalise and price a message without writing it.

        ``search_index=False`` leaves out the search index text (``search_extra``), which
        nothing can refuse: for a check whose result is not written (zen's ``set_with_ttl``
        checks each new turn on the caller's time, and the index text was a fifth of it)."""
        role = v.check_role(role)
        content = v.check_content(content, self.max_content_bytes)
        model = v.optional_text(model, "model", max_length=200)
        provider = v.optional_provider(provider)
        meta = v.check_json(metadata, "metadata")
        buckets, recognised = normalise_usage(usage)
        if not recognised:
            # One level under metadata, and the two together within the JSON size limit, so
            # what is stored passes check_json again (an export imported back).
            meta[UNREAD_USAGE] = v.check_json(usage, "usage", max_depth=v.MAX_JSON_DEPTH - 1)
            v.check_json_size(meta, "usage", at_least=v.MAX_JSON_BYTES)
            log.warning(
                "usage of unknown shape kept in metadata.%s, message unpriced: %.300s",
                UNREAD_USAGE,
                v.dumps(meta[UNREAD_USAGE]),
            )
        created = v.optional_timestamp(created_at, "created_at") or now()
        priced = price_message(self._lookup_price, model, created, buckets, usage_unread=UNREAD_USAGE in meta)
        cost = priced.cost
        if cost is not None and not 0 <= cost <= v.MAX_COST_USD:  # also NaN, from a bad price row
            raise ValidationError(
                "usage",
                f"prices at ${cost:,.2f} with {priced.price_id}; the limit is ${v.MAX_COST_USD:,} a message",
            )
        if provider is None and model:
            provider = self.prices.provider_of(model)
        return PreparedMessage(
            id=v.check_uuid(message_id, "message_id") if message_id is not None else new_id(),
            role=role,
            content=content,
            created_at=created,
            model=model,
            provider=canonical_provider(provider),  # an inferred one too: one vocabulary
            usage=buckets or Usage(),
            cost=cost,
            price_id=priced.price_id,
            unpriced=priced.unpriced,
            duration_ms=v.optional_nonneg_int(duration_ms, "duration_ms", v.MAX_DURATION_MS),
            tool_name=v.optional_text(tool_name, "tool_name", max_length=200),
            files=v.check_str_list(files, "files"),
            images=v.check_str_list(images, "images"),
            metadata=meta,
            search_extra=index_text(content) if search_index else None,
            title_hint=title_from(content) if role == "user" else None,
        )

    def record_message(
        self,
        continuation_id: str,
        role: str,
        content: str,
        *,
        model: str | None = None,
        provider: str | None = None,
        usage: Any = None,
        duration_ms: int | None = None,
        tool_name: str | None = None,
        files: Iterable[str] = (),
        images: Iterable[str] = (),
        metadata: dict[str, Any] | None = None,
        message_id: str | None = None,
        created_at: datetime | None = None,
    ) -> Message:
        """Append a turn to a thread in one transaction: the message, its ``seq``, the
        thread's totals and the daily rollup. The thread is created if it does not exist.

        ``usage`` is the provider's usage report in any known shape (see
        :mod:`persistence.usage`). Idempotent on ``message_id``: a retry with the same id
        returns the stored message and writes nothing. Pass one when the call may be
        retried; a fresh id is generated otherwise.
        """
        cid = v.check_id(continuation_id, "continuation_id")
        prepared = self.prepare_message(
            role,
            content,
            model=model,
            provider=provider,
            usage=usage,
            duration_ms=duration_ms,
            tool_name=tool_name,
            files=files,
            images=images,
            metadata=metadata,
            message_id=message_id,
            created_at=created_at,
        )
        message = self._record_message(cid, prepared)
        self._count_for_budgets((message,))
        return message

    def record_messages(self, messages: Iterable[dict[str, Any]]) -> list[Message]:
        """Append many turns in one transaction (and one round trip on Postgres and Supabase).

        Each item is a dict of :meth:`record_message`'s arguments, ``continuation_id``,
        ``role`` and ``content`` included. All or nothing: every item is validated first (an
        error names ``messages[i].field``) and a failure rolls the whole batch back. Items
        already stored (same ``message_id``) are returned as stored, as a retry would be.
        """
        if isinstance(messages, str | bytes | dict) or not isinstance(messages, Iterable):
            raise ValidationError("messages", f"expected a list of dicts, got {type(messages).__name__}")
        items: list[tuple[str, PreparedMessage]] = []
        for i, raw in enumerate(messages):
            if not isinstance(raw, dict):
                raise ValidationError(f"messages[{i}]", f"expected a dict, got {type(raw).__name__}")
            args = dict(raw)
            try:
                for required in ("continuation_id", "role", "content"):
                    if required not in args:
                        raise ValidationError(required, "is required")
                cid = v.check_id(args.pop("continuation_id"), "continuation_id")
                items.append((cid, self.prepare_message(args.pop("role"), args.pop("content"), **args)))
            except ValidationError as exc:
                raise ValidationError(f"messages[{i}].{exc.field}", exc.message) from None
            except TypeError as exc:
                raise ValidationError(f"messages[{i}]", str(exc)) from None
            # Preparing a batch is Python work (checks, prices, index text) that holds the GIL
            # for as long as the interpreter lets it: the outbox's flusher does it while the MCP
            # server's callers append turns, which then waited for the forced switch. Yielding
            # between items lets them in (bench/bench_outbox.py, "up, delivering").
            time.sleep(0)
        stored = self._record_messages(items) if items else []
        self._count_for_budgets(stored)
        return stored

    def put_file(
        self,
        source: Any,
        *,
        filename: str | None = None,
        mime_type: str | None = None,
        continuation_id: str | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        tags: Iterable[str] = (),
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        created_at: datetime | None = None,
        upload_id: str | None = None,
    ) -> StoredFile:
        """Store a file (a path, bytes or binary stream), streamed and hashed.

        Bytes are stored once per owner and sha256: a second upload of the same bytes
        stores nothing new and comes back with ``deduplicated=True``. Every upload is
        still recorded with its own filename, session and conversation. The MIME type is
        sniffed from the bytes; a given ``mime_type`` only refines it (``text/plain`` ->
        ``text/markdown``) and is otherwise ignored. The upload rules (:mod:`persistence.uploads`:
        size, allowed types sniffed from the bytes, per-session rate) refuse with
        :class:`~persistence.uploads.UploadRefusedError` and store nothing.

        ``upload_id`` is an idempotency key, as ``message_id`` is for messages: an upload
        with this id already stored is returned as it is, and nothing is read or written.
        """
        if isinstance(source, str) or hasattr(source, "__fspath__"):
            v.check_path(source, "source")  # before its name is taken as the filename
        if filename is None:
            name = getattr(source, "name", None) if not isinstance(source, bytes | bytearray) else None
            if isinstance(source, str) or hasattr(source, "__fspath__"):
                name = str(source)
            filename = name if isinstance(name, str) else "upload.bin"
        clean_name = v.check_filename(filename)
        cid = v.optional_id(continuation_id, "continuation_id")
        sid = v.optional_id(session_id, "session_id")
        uid = v.optional_uuid(user_id, "user_id")
        tag_list = v.check_tags(tags)
        desc = v.optional_text(description, "description", max_length=10_000)
        meta = v.check_json(metadata, "metadata")
        created = v.optional_timestamp(created_at, "created_at") or now()
        if upload_id is not None:
            upload_id = v.check_uuid(upload_id, "upload_id")
            existing = self._get_file(upload_id)
            if existing is not None and existing.upload_id == upload_id:
                return dataclasses.replace(existing, deduplicated=True)
        if mime_type is not None:
            mime_type = v.check_mime_type(mime_type, "mime_type")
        rules = self.upload_rules
        limit, limit_rule = rules.max_bytes, "max_bytes"
        if sid and (rules.uploads_per_minute or rules.bytes_per_minute):
            count, used = self._upload_activity(sid, now() - timedelta(minutes=1))
            if rules.uploads_per_minute and count >= rules.uploads_per_minute:
                raise UploadRefusedError(
                    "uploads_per_minute",
                    f"session {sid!r} uploaded {count} files in the last minute; the limit is "
                    f"{rules.uploads_per_minute} (PERSISTENCE_UPLOADS_PER_MINUTE)",
                )
            if rules.bytes_per_minute:
                left = rules.bytes_per_minute - used
                if left <= 0:
                    raise UploadRefusedError(
                        "bytes_per_minute",
                        f"session {sid!r} uploaded {used:,} bytes in the last minute; the limit is "
                        f"{rules.bytes_per_minute:,} (PERSISTENCE_UPLOAD_BYTES_PER_MINUTE)",
                    )
                if limit is None or left < limit:
                    limit, limit_rule = left, "bytes_per_minute"
        with open_source(source) as stream:
            guarded = GuardedReader(stream, rules, clean_name, limit, limit_rule)
            blob = self._put_bytes(guarded, uid)  # type: ignore[arg-type]
        # The blob may hold a temporary copy of the bytes until the row is recorded (a prune
        # racing this upload may delete the stored object meanwhile): released either way.
        try:
            # The type comes from the bytes; a caller's type may only refine it (settle_type).
            mime = settle_type(guarded.mime or sniff_mime(blob.head, clean_name), mime_type)
            return self._record_upload(
                blob_sha256=blob.sha256,
                size=blob.size,
                storage_path=blob.storage_path,
                mime_type=mime,
                filename=clean_name,
                continuation_id=cid,
                session_id=sid,
                user_id=uid,
                tags=tag_list,
                description=desc,
                metadata=meta,
                created_at=created,
                upload_id=upload_id,
                blob=blob,
            )
        finally:
            release = getattr(blob, "release", None)
            if release is not None:
                release()

    # -- reads -------------------------------------------------------------------------

    def get_conversation(self, continuation_id: str, *, last: int | None = None) -> Conversation | None:
        """The thread with its messages oldest -> newest (only the newest ``last`` when
        given) and the files it used; None when there is no such thread."""
        cid = v.check_id(continuation_id, "continuation_id")
        if last is not None:
            last = v.check_nonneg_int(last, "last")
        return self._get_conversation(cid, last)

    def get_messages(self, continuation_id: str, *, before_seq: int | None = None, limit: int = 50) -> list[Message]:
        """The newest ``limit`` messages before ``before_seq`` (all when None), oldest first:
        the "load older" page of a thread."""
        cid = v.check_id(continuation_id, "continuation_id")
        if before_seq is not None:
            before_seq = v.check_nonneg_int(before_seq, "before_seq")
        return self._get_messages(cid, before_seq, _limit(limit))

    def get_message(self, message_id: str) -> Message | None:
        return self._get_message(v.check_uuid(message_id, "message_id"))

    def list_conversations(
        self,
        *,
        order: str = "recent",
        limit: int = 50,
        cursor: str | None = None,
        **filters: Unpack[ConversationFilters],
    ) -> Page[Conversation]:
        """Threads active in [since, until), newest activity first (``order="recent"``),
        or by ``"created"`` or ``"cost"``; keyset-paginated with ``cursor``.

        The filters are :class:`~persistence.prepared.ConversationFilters`: ``model`` /
        ``provider`` / ``tool_name`` match a thread where any message used them; ``text`` is
        a case-insensitive substring of the title.
        """
        checked = self._filters("list_conversations", filters)
        if order not in ORDERS:
            raise ValidationError("order", f"must be one of {', '.join(ORDERS)}; got {order!r}")
        after = decode_cursor(cursor, order) if cursor else None
        n = _limit(limit)
        rows = self._list_conversations(checked, order, n + 1, after)
        items = tuple(rows[:n])
        next_cursor = None
        if len(rows) > n:
            last_item = items[-1]
            key = {
                "recent": last_item.updated_at.isoformat(timespec="microseconds"),
                "created": last_item.created_at.isoformat(timespec="microseconds"),
                "cost": last_item.cost_usd,
            }[order]
            next_cursor = encode_cursor([order, key, last_item.id])
        return Page(items=items, next_cursor=next_cursor)

    def count_conversations(self, **filters: Unpack[ConversationFilters]) -> int:
        """How many threads :meth:`list_conversations` would list with these filters."""
        return self._count_conversations(self._filters("count_conversations", filters))

    @staticmethod
    def _filters(method: str, kw: ConversationFilters) -> ConversationFilters:
        """The filters validated, the unset ones (None or "") left out."""
        unknown = sorted(kw.keys() - FILTER_NAMES)
        if unknown:  # what Python says of a keyword argument a signature lacks
            raise TypeError(f"{method}() got an unexpected keyword argument {unknown[0]!r}")
        min_cost = kw.get("min_cost")
        if min_cost is not None and (
            isinstance(min_cost, bool)
            or not isinstance(min_cost, int | float)
            or not 0 <= min_cost <= 1e18  # NaN, inf and ints no float holds
        ):
            raise ValidationError("min_cost", f"expected a non-negative number, got {v.shown(min_cost)}")
        checked: ConversationFilters = {
            "since": v.optional_utc(kw.get("since"), "since"),
            "until": v.optional_utc(kw.get("until"), "until"),
            "model": v.optional_text(kw.get("model"), "model", max_length=200),
            "provider": v.optional_provider(kw.get("provider")),
            "tool_name": v.optional_text(kw.get("tool_name"), "tool_name", max_length=200),
            "tag": v.optional_text(kw.get("tag"), "tag", max_length=100),
            "session_id": v.optional_id(kw.get("session_id"), "session_id"),
            "user_id": v.optional_uuid(kw.get("user_id"), "user_id"),
            "parent_id": v.optional_id(kw.get("parent_id"), "parent_id"),
            "status": v.optional_text(kw.get("status"), "status", max_length=20),
            "min_cost": float(min_cost) if min_cost is not None else None,
            "text": v.optional_text(kw.get("text"), "text", max_length=500) or None,
        }
        # An empty text is no filter, as None is (the app's "any").
        return cast(ConversationFilters, {k: x for k, x in checked.items() if x is not None and x != ""})

    def search(
        self,
        query: str,
        *,
        limit: int = 20,
        since: datetime | None = None,
        until: datetime | None = None,
        model: str | None = None,
        role: str | None = None,
        continuation_id: str | None = None,
        order: str = "rank",
    ) -> list[SearchHit]:
        """Messages matching ``query``, best first (``order="recent"``: newest first).

        Syntax: words, ``"exact phrase"``, ``a OR b``, ``-word``, ``word*``. English is
        matched by stem, Chinese/Japanese/Korean/Thai by substring; emoji, words with
        combining marks and identifiers are words too, and text and query are normalised
        alike (see persistence.search_query). Text that is not syntax is searched
        as words, and a query with nothing to search for returns ``[]``. A query over the
        limits (``MAX_QUERY_CHARS`` = 1,000 characters, ``MAX_QUERY_WORDS`` = 64 words, a
        prefix of at least ``MIN_PREFIX_CHARS`` = 4 characters, at most ``MAX_QUERY_PREFIXES``
        = 4 prefixes, in persistence.search_query) raises ValidationError("query", …) naming the limit; it is
        never cut. ``limit`` is 1 to 500.
        """
        if not isinstance(query, str):
            raise ValidationError("query", f"expected a string, got {type(query).__name__}")
        if order not in SEARCH_ORDERS:
            raise ValidationError("order", f"must be one of {', '.join(SEARCH_ORDERS)}; got {order!r}")
        clauses = parse_query(v.clean_text(query))
        if not clauses:
            return []
        return self._search(
            clauses,
            limit=_limit(limit, maximum=500),
            since=v.optional_utc(since, "since"),
            until=v.optional_utc(until, "until"),
            model=v.optional_text(model, "model", max_length=200),
            role=v.check_role(role) if role is not None else None,
            continuation_id=v.optional_id(continuation_id, "continuation_id"),
            order=order,
        )

    def count_search(
        self,
        query: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        model: str | None = None,
        role: str | None = None,
        continuation_id: str | None = None,
    ) -> int:
        """How many messages match ``query`` with these filters: what :meth:`search` would
        return with no limit (its ranking window bounds which hits are ranked, not this count),
        counted up to ``SEARCH_COUNT_CAP`` (10,000); ``SEARCH_COUNT_CAP + 1`` means more than that.

        The query and filters are checked as :meth:`search` checks them, and the count is held
        to the same time limit (``SEARCH_TIME_LIMIT_S``): a query matching too much to count
        in time raises ValidationError("query", SEARCH_STOPPED), so a caller can fall back to
        "more than" a page. A query with nothing to search for counts 0.
        """
        if not isinstance(query, str):
            raise ValidationError("query", f"expected a string, got {type(query).__name__}")
        clauses = parse_query(v.clean_text(query))
        if not clauses:
            return 0
        return self._count_search(
            clauses,
            since=v.optional_utc(since, "since"),
            until=v.optional_utc(until, "until"),
            model=v.optional_text(model, "model", max_length=200),
            role=v.check_role(role) if role is not None else None,
            continuation_id=v.optional_id(continuation_id, "continuation_id"),
        )

    def open_file(self, file_id: str) -> BinaryIO:
        """The stored bytes of a file (by file id or upload id), as a binary stream."""
        return self._open_file(v.check_uuid(file_id, "file_id"))

    def get_file(self, file_id: str) -> StoredFile | None:
        return self._get_file(v.check_uuid(file_id, "file_id"))

    def list_files(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        mime_type: str | None = None,
        continuation_id: str | None = None,
        session_id: str | None = None,
        unused: bool = False,
        order: str = "recent",
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[StoredFile]:
        """Uploads, newest first (``order="size"``: largest first). ``unused=True``: only
        files no conversation uses. ``mime_type`` may be a prefix such as ``"image/"``."""
        if order not in ("recent", "size"):
            raise ValidationError("order", f"must be recent or size; got {order!r}")
        after = decode_cursor(cursor, order) if cursor else None
        n = _limit(limit)
        rows = self._list_files(
            since=v.optional_utc(since, "since"),
            until=v.optional_utc(until, "until"),
            mime_type=v.optional_text(mime_type, "mime_type", max_length=200),
            continuation_id=v.optional_id(continuation_id, "continuation_id"),
            session_id=v.optional_id(session_id, "session_id"),
            unused=bool(unused),
            order=order,
            limit=n + 1,
            after=after,
        )
        items = tuple(rows[:n])
        next_cursor = None
        if len(rows) > n:
            last = items[-1]
            key = last.created_at.isoformat(timespec="microseconds") if order == "recent" else last.size
            next_cursor = encode_cursor([order, key, last.upload_id])
        return Page(items=items, next_cursor=next_cursor)

    def file_conversations(self, file_id: str) -> list[Conversation]:
        """The threads that used a file (without their messages)."""
        return self._file_conversations(v.check_uuid(file_id, "file_id"))

    def usage(
        self,
        group_by: Sequence[str] = ("day", "model"),
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        model: str | None = None,
        provider: str | None = None,
        tool_name: str | None = None,
    ) -> pd.DataFrame:
        """Token and cost totals from the daily rollup (never a scan of messages).

        ``group_by``: any of day, week, month, model, provider, tool_name, user_id. Columns:
        the keys, then ``messages, input_tokens, cached_input_tokens, cache_write_tokens,
        output_tokens, reasoning_tokens, total_tokens, cost_usd, unpriced_messages``. The
        rollup is daily: a UTC day counts when it overlaps [since, until).
        """
        keys = _group_keys(group_by, USAGE_KEYS)
        first, last = period_days(v.optional_utc(since, "since"), v.optional_utc(until, "until"))
        rows = self._usage_rows(
            keys,
            first_day=first,
            last_day=last,
            model=v.optional_text(model, "model", max_length=200),
            provider=v.optional_provider(provider),
            tool_name=v.optional_text(tool_name, "tool_name", max_length=200),
        )
        return _frame(keys, USAGE_COLUMNS, rows, float_columns=("cost_usd",))

    def storage_usage(
        self,
        group_by: Sequence[str] = ("day", "mime_type"),
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> pd.DataFrame:
        """Stored bytes against uploaded bytes. Columns: the keys, then ``files`` and
        ``bytes`` (stored objects, counted when first stored), ``uploads`` and
        ``logical_bytes`` (every upload, before dedup). ``group_by``: any of day, week,
        month, mime_type, user_id."""
        keys = _group_keys(group_by, STORAGE_KEYS)
        first, last = period_days(v.optional_utc(since, "since"), v.optional_utc(until, "until"))
        rows = self._storage_rows(keys, first_day=first, last_day=last)
        return _frame(keys, STORAGE_COLUMNS, rows, float_columns=())

    def facets(self) -> dict[str, list[str]]:
        """Distinct models, providers, tools and tags in use, for filter choices."""
        return self._facets()

    # -- anomalies and budgets (persistence/insights.py) ---------------------------------

    MAX_ANOMALY_DAYS = 366  # days one anomalies() call looks at: a bounded cost

    def anomalies(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        dimensions: Sequence[str] = ANOMALY_DIMENSIONS,
        min_cost_usd: float = 1.0,
        min_tokens: int = 100_000,
    ) -> list[Anomaly]:
        """Days in [since, until) (default: the last 7 days) on which a model, provider, tool
        or thread cost or used far more or far less than its rolling baseline, or appeared for
        the first time; newest day first, each with its reason in words.

        Read from the daily rollup and the threads' totals (see :mod:`persistence.insights`
        for the baseline and the thresholds). ``dimensions``: any of model, provider,
        tool_name (or tool), thread. ``min_cost_usd`` / ``min_tokens``: smaller changes are
        never flagged."""
        end = v.optional_utc(until, "until") or now()
        start = v.optional_utc(since, "since") or end - timedelta(days=7)
        if start >= end:
            raise ValidationError("since", f"must be before until ({end.isoformat()})")
        first, last = period_days(start, end)
        assert first is not None and last is not None
        first_day, last_day = date.fromisoformat(first), date.fromisoformat(last)
        if (last_day - first_day).days >= self.MAX_ANOMALY_DAYS:
            raise ValidationError("since", f"looks at most {self.MAX_ANOMALY_DAYS} days at once")
        if isinstance(dimensions, str):
            dimensions = (dimensions,)
        names: list[str] = []
        for name in dimensions:
            name = KEY_ALIASES.get(name, name) if isinstance(name, str) else name
            if name not in ANOMALY_DIMENSIONS:
                raise ValidationError("dimensions", f"{v.shown(name)} is not one of {', '.join(ANOMALY_DIMENSIONS)}")
            if name not in names:
                names.append(name)
        return find_anomalies(
            self,
            first_day=first_day,
            last_day=last_day,
            dimensions=names,
            min_cost_usd=_amount(min_cost_usd, "min_cost_usd", allow_zero=True),
            min_tokens=int(_amount(min_tokens, "min_tokens", allow_zero=True, whole=True)),
            today=now().date(),
        )

    def set_budget(
        self,
        limit_usd: float,
        *,
        period: str = "month",
        model: str | None = None,
        provider: str | None = None,
        tool_name: str | None = None,
        tag: str | None = None,
    ) -> Budget:
        """Keep a spending limit (USD) per ``period`` (day, week: Monday to Sunday UTC, or
        month) on the whole store, or on one model, provider, tool_name or tag (give at most
        one). Setting it again for the same scope and period changes the limit."""
        limit = _amount(limit_usd, "limit_usd", maximum=1e9)
        if period not in BUDGET_PERIODS:
            raise ValidationError("period", f"must be one of {', '.join(BUDGET_PERIODS)}; got {v.shown(period)}")
        given = [
            (name, value)
            for name, value in (("model", model), ("provider", provider), ("tool_name", tool_name), ("tag", tag))
            if value is not None
        ]
        if len(given) > 1:
            raise ValidationError(
                given[1][0], f"a budget is on one of model, provider, tool_name or tag; {given[0][0]} is given too"
            )
        scope, key = ("store", None) if not given else given[0]
        if scope == "provider":
            key = v.optional_provider(key)
        elif scope == "tag":
            if not isinstance(key, str):
                raise ValidationError("tag", f"expected a string, got {type(key).__name__}")
            key = v.check_tags([key], "tag")[0]
        elif scope != "store":
            key = v.optional_text(key, scope, max_length=200)
        if scope != "store" and not key:
            raise ValidationError(scope, "must not be empty (leave it out for a budget on the whole store)")
        at = now()
        stored = self._save_budget(Budget(str(uuid.uuid4()), scope, key, period, limit, at, at))
        self._budget_cache = None
        return stored

    def list_budgets(self) -> list[Budget]:
        """Every budget kept in the store, by scope, key and period."""
        return self._list_budgets()

    def delete_budget(self, budget_id: str) -> bool:
        """Remove a budget; False when there was none with this id."""
        deleted = self._delete_budget(v.check_uuid(budget_id, "budget_id"))
        self._budget_cache = None
        return deleted

    # budget_status reads a summary of every budget's spend: re-read in the background when older
    # than BUDGET_REFRESH_S (today's rollup rows and today's threads; the period's earlier days
    # when they are older than BUDGET_PAST_S), in the caller's thread when older than
    # BUDGET_STALE_S (or on a new day, or after set_budget/delete_budget). This process's own
    # messages are added to it at once.
    BUDGET_REFRESH_S = 5.0
    BUDGET_PAST_S = 60.0
    BUDGET_STALE_S = 60.0

    def budget_status(
        self,
        *,
        model: str | None = None,
        provider: str | None = None,
        tool_name: str | None = None,
        tags: Iterable[str] = (),
        at: datetime | None = None,
    ) -> list[BudgetStatus]:
        """Where each budget stands in its current period: spent, projected, ``state`` (ok,
        warning, over) and the reason in words; over first.

        With no filter every budget; with the keys of a call about to be made (its model, and
        provider, tool and thread tags when known), the budgets that call would count against:
        the store's, and those on that model, provider (inferred from the model when not
        given), tool or tag. Fast enough to call before every request: it reads a small
        summary that this process's own messages are added to as they are recorded; other
        processes' writes, a reprice or a prune (and, for a tag budget, counted by thread,
        this process's messages too) show within ``BUDGET_REFRESH_S`` seconds, when the summary
        is read again in the background. ``at``: the status at another time, computed in full."""
        model = v.optional_text(model, "model", max_length=200) or None
        provider = v.optional_provider(provider) or None
        tool_name = v.optional_text(tool_name, "tool_name", max_length=200) or None
        tag_list = list(v.check_tags(tags, "tags"))
        when = v.optional_utc(at, "at")
        call: dict[str, Any] | None = None
        if model or provider or tool_name or tag_list:
            if provider is None and model:
                provider = canonical_provider(self.prices.provider_of(model))
            call = {"model": model, "provider": provider, "tool_name": tool_name, "tags": tag_list}
        moment = when or now()
        day = moment.date()
        summary = self._load_budget_summary(day) if when is not None else self._budget_summary(day)
        states = [status_of(b, summary.spent[b.id], moment) for b in summary.budgets if budget_applies(b, call)]
        order = {"over": 0, "warning": 1, "ok": 2}
        return sorted(states, key=lambda s: (order[s.state], -s.fraction))

    def _budget_summary(self, today: date) -> _BudgetSummary:
        with self._budget_lock:
            summary = self._budget_cache
            age = time.monotonic() - summary.loaded if summary is not None else math.inf
            if summary is not None and summary.today == today and age <= self.BUDGET_STALE_S:
                if age > self.BUDGET_REFRESH_S and not self._budget_refreshing:
                    self._budget_refreshing = True
                    if self._budget_worker is None:
                        # One long-lived thread (so one database connection), not one per refresh.
                        self._budget_worker = ThreadPoolExecutor(1, thread_name_prefix="budget-summary")
                    self._budget_worker.submit(self._refresh_budget_summary, today)
                return summary
            writes = self._budget_writes
        # None yet, a new day, or too old (is the background refresh failing?): read it here,
        # so an error reaches the caller.
        summary = self._load_budget_summary(today)
        self._install_budget_summary(summary, writes)
        return summary

    def _refresh_budget_summary(self, today: date) -> None:
        with self._budget_lock:
            writes = self._budget_writes
            previous = self._budget_cache
        try:
            summary = self._load_budget_summary(today, previous=previous)
        except Exception:
            # Kept, and logged: the first call past BUDGET_STALE_S reads it itself and gets the error.
            log.warning("reading the budget summary failed; the previous one is kept", exc_info=True)
            with self._budget_lock:
                self._budget_refreshing = False
            return
        self._install_budget_summary(summary, writes)

    def _install_budget_summary(self, summary: _BudgetSummary, writes: int) -> None:
        with self._budget_lock:
            self._budget_refreshing = False
            if self._budget_writes != writes:
                # This process wrote while the summary was read (maybe after it read the rollup):
                # take it, but read it again on the next call.
                summary.loaded -= self.BUDGET_REFRESH_S
            self._budget_cache = summary

    def _count_for_budgets(self, messages: Iterable[Message]) -> None:
        """Add this process's new messages to the budget summary (tag budgets, counted by thread,
        wait for its next reading). A retried message already counted is not added twice."""
        with self._budget_lock:
            self._budget_writes += 1
            summary = self._budget_cache
            if summary is None:
                return
            for m in messages:
                day = m.created_at.date()
                if m.cost_usd is None or m.id in summary.counted or day > summary.today:
                    continue
                summary.counted.add(m.id)
                row = [(day.isoformat(), m.model, m.provider, m.tool_name, m.cost_usd)]
                for b in summary.budgets:
                    if b.scope != "tag":
                        summary.spent[b.id] += rollup_spend(b, row, summary.starts[b.id].isoformat())

    def _load_budget_summary(self, today: date, previous: _BudgetSummary | None = None) -> _BudgetSummary:
        """The budgets and each one's spend in its current period, today included. The days
        before today are taken from ``previous`` when it is of the same day and budgets and
        they were read less than ``BUDGET_PAST_S`` ago (so a refresh reads today only)."""
        budgets = self._list_budgets()
        starts = {b.id: period_bounds(b.period, today)[0] for b in budgets}
        loaded = time.monotonic()
        if (
            previous is not None
            and previous.today == today
            and previous.starts == starts
            and loaded - previous.past_loaded <= self.BUDGET_PAST_S
        ):
            past, past_loaded = previous.past, previous.past_loaded
        else:
            yesterday = today - timedelta(days=1)
            past, past_loaded = self._budget_spend(budgets, starts, last_day=yesterday, tags_until=yesterday), loaded
        # Today: the rollup's rows of today, and the threads started today (a tag budget's).
        now_spent = self._budget_spend(budgets, dict.fromkeys(starts, today), last_day=today, tags_until=today)
        spent = {b.id: past[b.id] + now_spent[b.id] for b in budgets}
        return _BudgetSummary(today, loaded, budgets, starts, spent, past, past_loaded)

    def _budget_spend(
        self, budgets: list[Budget], starts: dict[str, date], *, last_day: date, tags_until: date
    ) -> dict[str, float]:
        """Each budget's spend from its start day to ``last_day`` (none when it starts after)."""
        spent = dict.fromkeys(starts, 0.0)
        rollup = [b for b in budgets if b.scope != "tag" and starts[b.id] <= last_day]
        if rollup:
            rows = self._usage_rows(
                ["day", "model", "provider", "tool_name"],
                first_day=min(starts[b.id] for b in rollup).isoformat(),
                last_day=last_day.isoformat(),
                model=None,
                provider=None,
                tool_name=None,
            )
            cost_at = 4 + USAGE_COLUMNS.index("cost_usd")
            day_rows = [(str(r[0])[:10], r[1], r[2], r[3], r[cost_at]) for r in rows]
            for b in rollup:
                spent[b.id] = rollup_spend(b, day_rows, starts[b.id].isoformat())
        by_start: dict[date, list[Budget]] = {}
        for b in budgets:
            if b.scope == "tag" and b.key and starts[b.id] <= tags_until:
                by_start.setdefault(starts[b.id], []).append(b)
        for start, group in by_start.items():
            keys = sorted({b.key or "" for b in group})
            costs = self._tag_costs(keys, first_day=start.isoformat(), last_day=tags_until.isoformat())
            for b in group:
                spent[b.id] = costs.get(b.key or "", 0.0)
        return spent

    # -- maintenance -------------------------------------------------------------------

    def reprice(
        self, *, since: datetime | None = None, until: datetime | None = None, model: str | None = None
    ) -> RepriceResult:
        """Recompute the cost of stored messages from the current price table and correct
        the thread totals and daily rollup to match."""
        return self._reprice(
            since=v.optional_utc(since, "since"),
            until=v.optional_utc(until, "until"),
            model=v.optional_text(model, "model", max_length=200),
        )

    def export_records(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[dict[str, Any]]:
        """One JSON-ready record per thread (created in [since, until)): the thread, every
        message with its stored cost and price id, and every upload it made (file metadata)."""
        for conv in self._iter_conversations(v.optional_utc(since, "since"), v.optional_utc(until, "until")):
            yield conversation_record(conv, self._thread_uploads(conv) if conv.files else None)

    def _thread_uploads(self, conv: Conversation) -> list[StoredFile]:
        """Every upload the thread made, oldest first (``conv.files`` lists each file once,
        so a thread that uploaded the same bytes twice would export one upload)."""
        uploads: list[StoredFile] = []
        cursor = None
        while True:
            page = self.list_files(continuation_id=conv.continuation_id, limit=1000, cursor=cursor)
            uploads.extend(f for f in page if f.continuation_id == conv.continuation_id)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        seen = {f.id for f in uploads}
        uploads.extend(f for f in conv.files if f.id not in seen)  # used, but uploaded elsewhere
        return sorted(uploads, key=lambda f: (f.created_at, f.id, f.upload_id or ""))

    def import_records(self, records: Iterable[dict[str, Any]], *, batch_size: int = 200) -> ImportResult:
        """Write exported records back, ids, seq and costs unchanged. Idempotent: threads and
        messages already present (by continuation id / message id) are skipped, not doubled."""
        totals = ImportResult()
        batch: list[Any] = []
        for i, record in enumerate(records):
            batch.append(parse_record(record, where=f"record {i + 1}"))
            if len(batch) >= batch_size:
                totals = _add_results(totals, self._import_batch(batch))
                batch = []
        if batch:
            totals = _add_results(totals, self._import_batch(batch))
        return totals

    def prune(self, *, older_than: timedelta | datetime, dry_run: bool = False) -> PruneResult:
        """Delete threads whose last activity is before the cutoff (``now - older_than``, or
        a datetime) with their messages; then the files that no remaining thread uses and
        that nobody uploaded since the cutoff, with their bytes. Rollups and totals are
        corrected in the same transaction. ``dry_run``: count, change nothing."""
        result = self._prune(cutoff_of(older_than, "older_than"), dry_run=bool(dry_run))
        return result

    REDACT_SEARCH_PAGE = 500  # hits read per round of redact(query=...): search's own maximum

    def redact(
        self,
        *,
        continuation_id: str | None = None,
        user_id: str | None = None,
        older_than: timedelta | datetime | None = None,
        query: str | None = None,
        dry_run: bool = False,
    ) -> RedactResult:
        """Erase the text of threads and uploads, keep their numbers (persistence/redaction.py).

        Exactly one selector: one thread (``continuation_id``), every thread and upload of a
        user (``user_id``), threads inactive since a cutoff and uploads made before it, with
        no thread (``older_than``: a duration or a datetime, as for :meth:`prune`), or every thread
        with a message that matches a search ``query`` (search syntax). Message content,
        snippets (the full-text index), titles, summaries, metadata and file names/descriptions
        are erased and the bytes of stored objects no unredacted upload refers to are
        deleted, while tokens, costs, models, tools, tags and timestamps stay: totals,
        the daily rollup and every report are unchanged. ``dry_run``: count, change nothing
        (with ``query``, it counts the threads of the first ``REDACT_SEARCH_PAGE`` hits)."""
        given = [
            name
            for name, value in (
                ("continuation_id", continuation_id),
                ("user_id", user_id),
                ("older_than", older_than),
                ("query", query),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ValidationError(
                "redact",
                "give exactly one of continuation_id, user_id, older_than, query"
                + (f" (got {', '.join(given)})" if given else ""),
            )
        if continuation_id is not None:
            return self._redact(
                continuation_ids=[v.check_id(continuation_id, "continuation_id")],
                user_id=None,
                cutoff=None,
                dry_run=bool(dry_run),
            )
        if user_id is not None:
            uid = v.optional_uuid(user_id, "user_id")
            return self._redact(continuation_ids=None, user_id=uid, cutoff=None, dry_run=bool(dry_run))
        if older_than is not None:
            return self._redact(
                continuation_ids=None, user_id=None, cutoff=cutoff_of(older_than, "older_than"), dry_run=bool(dry_run)
            )
        if not isinstance(query, str):
            raise ValidationError("query", f"expected a string, got {type(query).__name__}")
        clauses = parse_query(v.clean_text(query))
        if not clauses:
            raise ValidationError("query", "has nothing to search for: it would select no thread")
        total = RedactResult(dry_run=bool(dry_run))
        seen: set[str] = set()
        # Each round redacts the threads of one page of hits, whose messages then leave the
        # index, so the next round finds the rest: every match, at search's bounded cost a round.
        while True:
            hits = self._search(
                clauses,
                limit=self.REDACT_SEARCH_PAGE,
                since=None,
                until=None,
                model=None,
                role=None,
                continuation_id=None,
                order="recent",
            )
            ids = sorted({h.continuation_id for h in hits})
            if not ids:
                return total
            if not dry_run and seen.issuperset(ids):
                # Redacted threads that still match: the index kept their text. Never loop on it.
                raise PersistenceError(f"redact: threads {', '.join(ids[:3])} still match {query!r} after redaction")
            seen.update(ids)
            done = self._redact(continuation_ids=ids, user_id=None, cutoff=None, dry_run=bool(dry_run))
            total = RedactResult(
                conversations=total.conversations + done.conversations,
                messages=total.messages + done.messages,
                uploads=total.uploads + done.uploads,
                files=total.files + done.files,
                bytes=total.bytes + done.bytes,
                dry_run=bool(dry_run),
            )
            if dry_run or done.messages == 0:
                return total

    def record_provider_file(
        self,
        file_id: str,
        provider: str,
        provider_file_id: str,
        *,
        purpose: str | None = None,
        expires_at: datetime | None = None,
    ) -> ProviderFile:
        """Remember that a stored file was uploaded to ``provider`` as ``provider_file_id``
        (one record per file, provider and purpose; a new upload replaces the old one)."""
        name = v.optional_provider(provider)
        if not name:
            raise ValidationError("provider", "is required (e.g. 'kimi', 'glm')")
        pid = v.optional_text(provider_file_id, "provider_file_id", max_length=500)
        if not pid:
            raise ValidationError("provider_file_id", "is required")
        return self._record_provider_file(
            file_id=v.check_uuid(file_id, "file_id"),
            provider=name,
            provider_file_id=pid,
            purpose=v.optional_text(purpose, "purpose", max_length=100) or None,
            expires_at=v.optional_timestamp(expires_at, "expires_at"),
            created_at=now(),
        )

    def find_provider_file(
        self, file_hash: str, provider: str, *, purpose: str | None = None, user_id: str | None = None
    ) -> ProviderFile | None:
        """The unexpired provider upload of the bytes with this sha256, or None: upload only
        on a miss."""
        sha = str(file_hash).lower()
        if len(sha) != 64 or any(ch not in "0123456789abcdef" for ch in sha):
            raise ValidationError("file_hash", f"{file_hash!r} is not a sha256 hex digest")
        name = v.optional_provider(provider)
        if not name:
            raise ValidationError("provider", "is required (e.g. 'kimi', 'glm')")
        return self._find_provider_file(
            sha,
            name,
            purpose=v.optional_text(purpose, "purpose", max_length=100) or None,
            user_id=v.optional_uuid(user_id, "user_id"),
            at=now(),
        )

    def list_provider_files(self) -> list[ProviderFile]:
        """Every provider upload on record (expired ones included), oldest first."""
        return self._list_provider_files()

    def doctor(self, *, quick: bool = False, progress: DoctorProgress | None = None) -> dict[str, Any]:
        """Health and size figures of the store. ``python -m persistence doctor`` and the app
        add the figures of its write outbox (:func:`persistence.outbox.doctor`).

        The full check (the CLI's) reads every page of the database (SQLite's integrity check)
        and checks every stored file's bytes, so it takes seconds on a large store; it calls
        ``progress(step, done, total)`` as it goes and records its findings in the store.
        ``quick=True`` (the app's, well under 100 ms at a million messages) reads only the
        counts, what is known of damage without a page-by-page read, and the last full
        check's findings with ``last_full_check_at`` and ``last_full_check_age_s`` (None
        when no full check was ever recorded).
        """
        if quick:
            report = self._doctor_quick()
            last = report.pop("last_full_check", None) or {}
            for key in FULL_CHECK_FINDINGS:  # what the quick check found itself (damage) comes first
                if report.get(key) is None:
                    report[key] = last.get(key)
            at = last.get("at")
            report["last_full_check_at"] = at
            report["last_full_check_age_s"] = (
                round((now() - datetime.fromisoformat(at)).total_seconds(), 1) if at else None
            )
            report["last_full_check_seconds"] = last.get("seconds")
            return report
        started = time.perf_counter()
        report = self._doctor(progress)
        record = {key: report[key] for key in FULL_CHECK_FINDINGS if key in report}
        record.update(at=now().isoformat(timespec="seconds"), seconds=round(time.perf_counter() - started, 3))
        try:
            report["full_check_recorded"] = self._record_full_check(record)
        except PersistenceError as exc:
            # A doctor that cannot write (a full disk, a dropped connection) still reports what
            # it found; the quick check then shows the previous full check, with its age.
            report["full_check_recorded"] = False
            report["full_check_not_recorded"] = str(exc)
        return report

    # -- backend primitives ------------------------------------------------------------

    @abc.abstractmethod
    def migrations(self) -> list[tuple[str, datetime]]:
        """Applied schema migrations, oldest first: (name, applied at)."""

    @abc.abstractmethod
    def _load_prices(self) -> list[Price]: ...

    @abc.abstractmethod
    def _save_prices(self, prices: list[Price], origin: str) -> None: ...

    @abc.abstractmethod
    def _start_conversation(self, conv: PreparedConversation) -> Conversation: ...

    @abc.abstractmethod
    def _update_conversation(self, continuation_id: str, changes: dict[str, Any]) -> Conversation: ...

    @abc.abstractmethod
    def _record_message(self, continuation_id: str, msg: PreparedMessage) -> Message: ...

    @abc.abstractmethod
    def _record_messages(self, items: list[tuple[str, PreparedMessage]]) -> list[Message]: ...

    @abc.abstractmethod
    def _put_bytes(self, stream: BinaryIO, owner: str | None) -> Any: ...

    @abc.abstractmethod
    def _record_upload(self, **fields: Any) -> StoredFile: ...

    @abc.abstractmethod
    def _get_conversation(self, continuation_id: str, last: int | None) -> Conversation | None: ...

    @abc.abstractmethod
    def _get_messages(self, continuation_id: str, before_seq: int | None, limit: int) -> list[Message]: ...

    @abc.abstractmethod
    def _get_message(self, message_id: str) -> Message | None: ...

    @abc.abstractmethod
    def _list_conversations(
        self, filters: ConversationFilters, order: str, limit: int, after: list[Any] | None
    ) -> list[Conversation]: ...

    @abc.abstractmethod
    def _count_conversations(self, filters: ConversationFilters) -> int: ...

    @abc.abstractmethod
    def _search(
        self,
        clauses: list[Clause],
        *,
        limit: int,
        since: datetime | None,
        until: datetime | None,
        model: str | None,
        role: str | None,
        continuation_id: str | None,
        order: str,
    ) -> list[SearchHit]: ...

    @abc.abstractmethod
    def _count_search(
        self,
        clauses: list[Clause],
        *,
        since: datetime | None,
        until: datetime | None,
        model: str | None,
        role: str | None,
        continuation_id: str | None,
    ) -> int: ...

    @abc.abstractmethod
    def _open_file(self, file_id: str) -> BinaryIO: ...

    @abc.abstractmethod
    def _get_file(self, file_id: str) -> StoredFile | None: ...

    @abc.abstractmethod
    def _list_files(
        self,
        *,
        since: datetime | None,
        until: datetime | None,
        mime_type: str | None,
        continuation_id: str | None,
        session_id: str | None,
        unused: bool,
        order: str,
        limit: int,
        after: list[Any] | None,
    ) -> list[StoredFile]: ...

    @abc.abstractmethod
    def _file_conversations(self, file_id: str) -> list[Conversation]: ...

    @abc.abstractmethod
    def _usage_rows(
        self,
        keys: list[str],
        *,
        first_day: str | None,
        last_day: str | None,
        model: str | None,
        provider: str | None,
        tool_name: str | None,
    ) -> list[Sequence[Any]]:
        """Rows of (keys..., USAGE_COLUMNS...) from the daily rollup; days are inclusive bounds."""

    @abc.abstractmethod
    def _storage_rows(self, keys: list[str], *, first_day: str | None, last_day: str | None) -> list[Sequence[Any]]:
        """Rows of (keys..., STORAGE_COLUMNS...)."""

    @abc.abstractmethod
    def _facets(self) -> dict[str, list[str]]: ...

    @abc.abstractmethod
    def _save_budget(self, budget: Budget) -> Budget:
        """Insert the budget, or change the limit of the one with its scope, key and period
        (keeping its id and created_at); the stored budget."""

    @abc.abstractmethod
    def _list_budgets(self) -> list[Budget]: ...

    @abc.abstractmethod
    def _delete_budget(self, budget_id: str) -> bool: ...

    @abc.abstractmethod
    def _tag_costs(self, tags: list[str], *, first_day: str, last_day: str) -> dict[str, float]:
        """For each tag, the summed cost of the threads carrying it that started on a UTC day
        in [first_day, last_day] (a tag budget's spend; the rollup has no tags)."""

    @abc.abstractmethod
    def _thread_costs(self, first_day: str, last_day: str) -> list[Sequence[Any]]:
        """Rows of (continuation_id, title, tool_name, start day 'YYYY-MM-DD', cost_usd,
        total_tokens) of the threads started on a UTC day in [first_day, last_day]."""

    @abc.abstractmethod
    def _top_threads(self, day: str, dimension: str, key: str, limit: int) -> list[Sequence[Any]]:
        """Rows of (continuation_id, title, tool_name, cost_usd, total_tokens) of that UTC day's
        messages whose ``dimension`` (model, provider, tool_name) is ``key``, summed by thread,
        costliest first: who is behind a flagged day (one day of one key: bounded)."""

    @abc.abstractmethod
    def _reprice(self, *, since: datetime | None, until: datetime | None, model: str | None) -> RepriceResult: ...

    @abc.abstractmethod
    def _iter_conversations(self, since: datetime | None, until: datetime | None) -> Iterator[Conversation]: ...

    @abc.abstractmethod
    def _import_batch(self, batch: list[Any]) -> ImportResult: ...

    @abc.abstractmethod
    def _doctor(self, progress: DoctorProgress | None) -> dict[str, Any]:
        """The full check's report (see :meth:`doctor`)."""

    @abc.abstractmethod
    def _doctor_quick(self) -> dict[str, Any]:
        """The quick check's report, with the recorded full check (or None) as ``last_full_check``."""

    @abc.abstractmethod
    def _record_full_check(self, findings: dict[str, Any]) -> bool:
        """Keep a full check's findings for the quick check; False when the store cannot be
        written (read-only, or known to be damaged)."""

    @abc.abstractmethod
    def _prune(self, cutoff: datetime, *, dry_run: bool) -> PruneResult: ...

    @abc.abstractmethod
    def _redact(
        self, *, continuation_ids: list[str] | None, user_id: str | None, cutoff: datetime | None, dry_run: bool
    ) -> RedactResult:
        """Redact the selected threads (and uploads); exactly one selector is given."""

    @abc.abstractmethod
    def _record_provider_file(
        self,
        *,
        file_id: str,
        provider: str,
        provider_file_id: str,
        purpose: str | None,
        expires_at: datetime | None,
        created_at: datetime,
    ) -> ProviderFile: ...

    @abc.abstractmethod
    def _find_provider_file(
        self, file_hash: str, provider: str, *, purpose: str | None, user_id: str | None, at: datetime
    ) -> ProviderFile | None: ...

    @abc.abstractmethod
    def _list_provider_files(self) -> list[ProviderFile]: ...

    @abc.abstractmethod
    def _upload_activity(self, session_id: str, since: datetime) -> tuple[int, int]:
        """(uploads, bytes) a session made since ``since``: what upload rate limits read."""


def _limit(limit: object, maximum: int = 1000) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= maximum:
        raise ValidationError("limit", f"expected an integer from 1 to {maximum}, got {v.shown(limit)}")
    return limit


def _group_keys(group_by: Sequence[str] | str, allowed: tuple[str, ...]) -> list[str]:
    if isinstance(group_by, str):
        group_by = (group_by,)
    keys: list[str] = []
    for key in group_by:
        if not isinstance(key, str):
            raise ValidationError("group_by", f"expected names, got {type(key).__name__}")
        key = KEY_ALIASES.get(key, key)
        if key not in allowed:
            raise ValidationError("group_by", f"{v.shown(key)} is not one of {', '.join(allowed)}")
        if key not in keys:
            keys.append(key)
    if sum(k in PERIOD_KEYS for k in keys) > 1:
        raise ValidationError("group_by", "use at most one of day, week, month")
    return keys


def _frame(
    keys: list[str], columns: tuple[str, ...], rows: list[Sequence[Any]], float_columns: tuple[str, ...]
) -> pd.DataFrame:
    df = pd.DataFrame([tuple(r) for r in rows], columns=[*keys, *columns])
    for key in keys:
        if key in PERIOD_KEYS:
            df[key] = pd.to_datetime(df[key], format="%Y-%m-%d")
        else:
            df[key] = df[key].astype(object).where(df[key].notna() & (df[key] != ""), None)
    for col in columns:
        df[col] = df[col].astype("float64" if col in float_columns else "int64")
    return df.reset_index(drop=True)


def _add_results(a: ImportResult, b: ImportResult) -> ImportResult:
    return ImportResult(*(x + y for x, y in zip(dataclasses.astuple(a), dataclasses.astuple(b), strict=True)))


def day_of(ts: datetime | date) -> str:
    return (ts.date() if isinstance(ts, datetime) else ts).isoformat()


@dataclasses.dataclass(slots=True)
class _BudgetSummary:
    """What budget_status reads: every budget and its spend in the period containing ``today``."""

    today: date
    loaded: float  # time.monotonic() when read
    budgets: list[Budget]
    starts: dict[str, date]  # budget id -> first day of its current period
    spent: dict[str, float]  # budget id -> spend in it so far
    past: dict[str, float]  # ... of which on the days before today
    past_loaded: float  # time.monotonic() when those were read
    counted: set[str] = dataclasses.field(default_factory=set)  # ids of messages added since read


def _amount(
    value: object, field: str, *, maximum: float = math.inf, allow_zero: bool = False, whole: bool = False
) -> float:
    """A finite number > 0 (>= 0 with allow_zero) and <= maximum, or a ValidationError naming the field."""
    if isinstance(value, bool) or not isinstance(value, int | float) or (whole and not isinstance(value, int)):
        raise ValidationError(field, f"expected {'an integer' if whole else 'a number'}, got {v.shown(value)}")
    x = float(value)
    if not math.isfinite(x) or x < 0 or (x == 0 and not allow_zero) or x > maximum:
        bound = "0 or more" if allow_zero else "more than 0"
        raise ValidationError(
            field,
            f"must be {bound}{'' if maximum == math.inf else f' and at most {maximum:,.0f}'}; got {v.shown(value)}",
        )
    return x
