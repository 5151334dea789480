"""The store over the SQL API: what the Postgres and Supabase backends share.

Every primitive of :class:`~persistence.store.Store` is one call of a SQL function from
``persistence/sql/migrations`` (``_call(fn, args)``); a backend only says how to make that call
(``SELECT fn(...)`` through psycopg, or ``client.rpc(fn, ...)`` through the Supabase client) and
where file bytes live. The functions return jsonb, so both backends parse the same documents
here. Arguments go as plain Python values; :class:`J` marks the ones sent as jsonb.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any, BinaryIO, Protocol

from ...errors import (
    ConflictError,
    NotFoundError,
    PersistenceError,
    StorageFullError,
    StoreOpenError,
    ValidationError,
)
from ...filestore import HeldBlob, StoredBlob, file_id_for, hold
from ...insights import Budget
from ...models import (
    Conversation,
    ImportResult,
    Message,
    ProviderFile,
    PruneResult,
    RedactResult,
    RepriceResult,
    SearchHit,
    StoredFile,
    Usage,
)
from ...prepared import ConversationFilters, ParsedRecord, PreparedConversation, PreparedMessage
from ...pricing import Price, is_unpriced, package_prices, price_message
from ...search_query import (
    MARK_OPEN,
    SEARCH_RANK_WINDOW,
    SEARCH_STOPPED,
    Clause,
    marked_fragments,
    python_fragments,
    to_tsquery,
)
from ...store import DoctorProgress, Store
from ...transfer import redactions_of, with_upload_redactions
from .schema import version_time

__all__ = ["BlobStore", "FunctionStore", "J", "sql_error"]

REPRICE_PAGE = 5000


class J:
    """An argument sent as jsonb."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class BlobStore(Protocol):
    """Where file bytes live: a local folder (LocalFileStore) or a Supabase Storage bucket.

    Both also have ``place(spooled, storage_path)`` (store an already spooled file, keeping it)
    and LocalFileStore ``spool_dir`` (spool there, so placing is a link); a store without
    them gets ``put`` of the spooled copy instead."""

    def put(self, stream: BinaryIO, owner: str | None) -> StoredBlob: ...
    def open(self, storage_path: str) -> BinaryIO: ...
    def exists(self, storage_path: str) -> bool: ...
    def delete(self, storage_path: str) -> bool: ...
    def describe(self) -> str: ...


def sql_error(code: str | None, message: str, fn: str, where: str = "the database") -> PersistenceError:
    """The package's error for a SQLSTATE raised by SQL function ``fn`` (``where``: the
    database, named for a full disk)."""
    code = code or ""
    if code == "53100":  # disk_full: the server rolled the call back, so nothing was written
        return StorageFullError(where, f"{fn}: {message}")
    if code == "PT404":
        return NotFoundError(message)
    if code in ("PT409", "23505", "23503"):
        return ConflictError(message)
    if code in ("PT400", "22P02", "22007", "22008", "22023"):
        return ValidationError(fn, message)
    if code in ("42883", "42P01", "PGRST202"):
        return StoreOpenError(
            f"{fn}: {message}. The database lacks the persistence schema: run "
            "`python -m persistence migrate --url postgresql://…` or `supabase db push`"
        )
    if code == "57014":  # statement_timeout (or a cancel): the call was stopped and rolled back
        if fn in ("search_messages", "count_search_messages"):  # too broad to finish: the query's fault
            return ValidationError("query", f"{SEARCH_STOPPED} ({message})")
        return PersistenceError(f"{fn}: stopped at its time limit ({message}); nothing was changed")
    if code == "42501":
        return PersistenceError(f"{fn}: permission denied: {message}")
    return PersistenceError(f"{fn}: {message}" + (f" (SQLSTATE {code})" if code else ""))


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def _opt_dt(value: str | None) -> datetime | None:
    return None if value is None else _dt(value)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="microseconds")


def _headline_fragments(headline: str, content: str) -> tuple[tuple[str, bool], ...]:
    merged = list(marked_fragments(headline))
    plain = "".join(text for text, _ in merged)
    if plain and not content.startswith(plain):
        merged.insert(0, ("…", False))
    if plain and not content.endswith(plain):
        merged.append(("…", False))
    return tuple(merged)


class FunctionStore(Store):
    """A store whose every primitive is one call of a SQL function (see module docstring)."""

    files: BlobStore
    bucket_name: str = "local"

    # -- what a backend provides -------------------------------------------------------

    def _call(self, fn: str, args: dict[str, Any]) -> Any:
        """Call SQL function ``public.fn`` with named arguments; its decoded jsonb result."""
        raise NotImplementedError

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        """Calls made inside run in one transaction where the backend can (psycopg); through
        the Supabase gateway each call is its own transaction."""
        yield

    # -- row conversion ----------------------------------------------------------------

    @staticmethod
    def _message(d: dict[str, Any]) -> Message:
        return Message(
            id=d["id"],
            conversation_id=d["conversation_id"],
            continuation_id=d["continuation_id"],
            seq=d["seq"],
            role=d["role"],
            content=d["content"],
            created_at=_dt(d["created_at"]),
            tool_name=d["tool_name"],
            provider=d["provider"],
            model=d["model_used"],
            usage=Usage(
                d["input_tokens"],
                d["cached_input_tokens"],
                d["cache_write_tokens"],
                d["output_tokens"],
                d["reasoning_tokens"],
            ),
            cost_usd=None if d["cost"] is None else float(d["cost"]),
            price_id=d["price_id"],
            duration_ms=d["duration_ms"],
            files=tuple(d["files"] or ()),
            images=tuple(d["images"] or ()),
            metadata=d["metadata"] or {},
            user_id=d["user_id"],
            redacted_at=_opt_dt(d.get("redacted_at")),
        )

    @classmethod
    def _conversation(cls, d: dict[str, Any]) -> Conversation:
        return Conversation(
            id=d["id"],
            continuation_id=d["continuation_id"],
            created_at=_dt(d["created_at"]),
            updated_at=_dt(d["updated_at"]),
            parent_id=d["parent_id"],
            session_id=d["session_id"],
            user_id=d["user_id"],
            title=d["title"],
            summary=d["summary"],
            tool_name=d["tool_name"],
            model=d["model_used"],
            status=d["status"],
            tags=tuple(d["tags"] or ()),
            initial_context=d["initial_context"],
            metadata=d["metadata"] or {},
            expires_at=_opt_dt(d["expires_at"]),
            message_count=d["message_count"],
            usage=Usage(
                d["input_tokens"],
                d["cached_input_tokens"],
                d["cache_write_tokens"],
                d["output_tokens"],
                d["reasoning_tokens"],
            ),
            cost_usd=float(d["total_cost"]),
            unpriced_messages=d["unpriced_messages"],
            messages=tuple(cls._message(m) for m in d.get("messages") or ()),
            files=tuple(cls._file(f) for f in d.get("files") or ()),
            redacted_at=_opt_dt(d.get("redacted_at")),
        )

    @staticmethod
    def _file(d: dict[str, Any]) -> StoredFile:
        return StoredFile(
            id=d["id"],
            file_hash=d["file_hash"] or "",  # files of the plan's schema may have none
            size=d["file_size"],
            mime_type=d["mime_type"],
            filename=d["filename"],
            storage_path=d["storage_path"],
            bucket_name=d["bucket_name"],
            created_at=_dt(d["created_at"]),
            upload_id=d["upload_id"],
            deduplicated=bool(d.get("deduplicated", False)),
            user_id=d["user_id"],
            session_id=d["session_id"],
            continuation_id=d["continuation_id"],
            tags=tuple(d["tags"] or ()),
            description=d["description"],
            metadata=d["metadata"] or {},
        )

    @staticmethod
    def _provider_file(d: dict[str, Any]) -> ProviderFile:
        return ProviderFile(
            id=d["id"],
            file_id=d["file_id"],
            file_hash=d["file_hash"],
            provider=d["provider"],
            provider_file_id=d["provider_file_id"],
            purpose=d["purpose"] or None,
            created_at=_dt(d["created_at"]),
            expires_at=_opt_dt(d["expires_at"]),
        )

    # -- migrations and prices ---------------------------------------------------------

    def migrations(self) -> list[tuple[str, datetime]]:
        """Applied migrations, oldest first. The time is the one in the version (the Supabase
        CLI's history table records no time of application)."""
        return [(f"{v}_{n}", version_time(v)) for v, n in self._call("applied_migrations", {})]

    def _sync_package_prices(self) -> None:
        """Copy the package's price table in, once per version of it (one round trip when synced)."""
        prices, digest = package_prices()
        if not self._call("sync_package_prices", {"p_digest": digest}):
            self._call("sync_package_prices", {"p_digest": digest, "p_prices": J([p.to_row() for p in prices])})
            self._prices = None

    def _load_prices(self) -> list[Price]:
        return [Price.from_mapping(row, f"model_prices[{row['id']}]") for row in self._call("list_model_prices", {})]

    def _save_prices(self, prices: list[Price], origin: str) -> None:
        self._call("upsert_model_prices", {"p_prices": J([p.to_row() for p in prices]), "p_origin": origin})

    # -- threads and messages ----------------------------------------------------------

    def _start_conversation(self, conv: PreparedConversation) -> Conversation:
        return self._conversation(
            self._call(
                "start_conversation",
                {
                    "p_continuation_id": conv.continuation_id,
                    "p_id": conv.id,
                    "p_created_at": conv.created_at,
                    "p_tool_name": conv.tool_name,
                    "p_title": conv.title,
                    "p_session_id": conv.session_id,
                    "p_user_id": conv.user_id,
                    "p_parent_id": conv.parent_id,
                    "p_tags": list(conv.tags),
                    "p_metadata": J(conv.metadata),
                    "p_initial_context": None if conv.initial_context is None else J(conv.initial_context),
                    "p_expires_at": conv.expires_at,
                },
            )
        )

    def _update_conversation(self, continuation_id: str, changes: dict[str, Any]) -> Conversation:
        payload = {k: (list(v) if k == "tags" else _iso(v) if k == "expires_at" else v) for k, v in changes.items()}
        return self._conversation(
            self._call("update_conversation", {"p_continuation_id": continuation_id, "p_changes": J(payload)})
        )

    @staticmethod
    def _message_args(continuation_id: str, msg: PreparedMessage) -> dict[str, Any]:
        """record_message's arguments (without the p_ prefix), as record_messages takes them."""
        u = msg.usage
        return {
            "continuation_id": continuation_id,
            "id": msg.id,
            "role": msg.role,
            "content": msg.content,
            "created_at": msg.created_at,
            "model": msg.model,
            "provider": msg.provider,
            "tool_name": msg.tool_name,
            "input_tokens": u.input_tokens,
            "cached_input_tokens": u.cached_input_tokens,
            "cache_write_tokens": u.cache_write_tokens,
            "output_tokens": u.output_tokens,
            "reasoning_tokens": u.reasoning_tokens,
            "cost": msg.cost,
            "price_id": msg.price_id,
            "unpriced": msg.unpriced,
            "duration_ms": msg.duration_ms,
            "files": list(msg.files),
            "images": list(msg.images),
            "metadata": msg.metadata,
            "search_extra": msg.search_extra,
            "title": msg.title_hint,
        }

    def _record_message(self, continuation_id: str, msg: PreparedMessage) -> Message:
        args = self._message_args(continuation_id, msg)
        args["metadata"] = J(msg.metadata)
        return self._message(self._call("record_message", {f"p_{k}": val for k, val in args.items()}))

    def _record_messages(self, items: list[tuple[str, PreparedMessage]]) -> list[Message]:
        batch = [self._message_args(cid, msg) for cid, msg in items]
        for item in batch:
            item["created_at"] = item["created_at"].isoformat()
        return [self._message(m) for m in self._call("record_messages", {"p_items": J(batch)})]

    def _get_conversation(self, continuation_id: str, last: int | None) -> Conversation | None:
        d = self._call("get_conversation", {"p_continuation_id": continuation_id, "p_last": last})
        return None if d is None else self._conversation(d)

    def _get_messages(self, continuation_id: str, before_seq: int | None, limit: int) -> list[Message]:
        rows = self._call(
            "get_messages", {"p_continuation_id": continuation_id, "p_before_seq": before_seq, "p_limit": limit}
        )
        return [self._message(m) for m in rows]

    def _get_message(self, message_id: str) -> Message | None:
        d = self._call("get_message", {"p_id": message_id})
        return None if d is None else self._message(d)

    @staticmethod
    def _filters_json(filters: ConversationFilters) -> J:
        """The filters as list_conversations' and count_conversations' one p_filters jsonb."""
        return J({name: _iso(value) if isinstance(value, datetime) else value for name, value in filters.items()})

    @staticmethod
    def _after(after: list[Any] | None, numeric: bool) -> tuple[str | None, str | None]:
        """A cursor's (key, id), checked here so a tampered cursor is a ValidationError."""
        if after is None:
            return None, None
        key, last_id = after
        try:
            if numeric:
                if isinstance(key, bool) or not isinstance(key, int | float):
                    raise ValueError
                key = repr(key)
            else:
                key = _iso(datetime.fromisoformat(str(key)))
            last_id = str(uuid.UUID(str(last_id)))
        except (ValueError, TypeError):
            raise ValidationError(
                "cursor", "not a cursor from this listing (pass next_cursor back unchanged)"
            ) from None
        return key, last_id

    def _list_conversations(
        self, filters: ConversationFilters, order: str, limit: int, after: list[Any] | None
    ) -> list[Conversation]:
        key, last_id = self._after(after, numeric=order == "cost")
        rows = self._call(
            "list_conversations",
            {
                "p_filters": self._filters_json(filters),
                "p_order": order,
                "p_limit": limit,
                "p_after_key": key,
                "p_after_id": last_id,
            },
        )
        return [self._conversation(r) for r in rows]

    def _count_conversations(self, filters: ConversationFilters) -> int:
        return int(self._call("count_conversations", {"p_filters": self._filters_json(filters)}))

    # -- search ------------------------------------------------------------------------

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
    ) -> list[SearchHit]:
        query = to_tsquery(clauses)
        if query is None:
            return []
        rows = self._call(
            "search_messages",
            {
                "p_tsquery": query,
                "p_limit": limit,
                "p_since": since,
                "p_until": until,
                "p_model": model,
                "p_role": role,
                "p_continuation_id": continuation_id,
                "p_order": order,
                "p_window": max(SEARCH_RANK_WINDOW, limit),  # a full page: as on SQLite
            },
        )
        hits = []
        for row in rows:
            message = self._message(row["message"])
            # CJK: the index text is character pairs, so cut the snippet from the original.
            # search_messages cuts ts_headline from a message's first 3,000 characters (a
            # bounded cost); a match further on is found here, in the caller's process.
            if row["cjk"] or row["headline"] is None or MARK_OPEN not in row["headline"]:
                fragments = python_fragments(message.content, clauses)
            else:
                fragments = _headline_fragments(row["headline"], message.content)
            hits.append(
                SearchHit(
                    message=message, conversation_title=row["title"], score=float(row["score"]), fragments=fragments
                )
            )
        return hits

    def _count_search(
        self,
        clauses: list[Clause],
        *,
        since: datetime | None,
        until: datetime | None,
        model: str | None,
        role: str | None,
        continuation_id: str | None,
    ) -> int:
        query = to_tsquery(clauses)
        if query is None:
            return 0
        return int(
            self._call(
                "count_search_messages",
                {
                    "p_tsquery": query,
                    "p_since": since,
                    "p_until": until,
                    "p_model": model,
                    "p_role": role,
                    "p_continuation_id": continuation_id,
                },
            )
        )

    # -- files -------------------------------------------------------------------------

    def _put_bytes(self, stream: BinaryIO, owner: str | None) -> HeldBlob:
        # The stream enforces the upload rules (size, sniffed type) as it is read. The spooled
        # copy is held until the row is recorded (_record_upload may have to place it again).
        spool_dir = getattr(self.files, "spool_dir", None)
        # A local store links the spooled file into place: synced first, as a rename would be.
        held = hold(stream, owner, spool_dir, fsync=spool_dir is not None)
        try:
            self._place(held)
        except BaseException:
            held.release()
            raise
        return held

    def _place(self, held: HeldBlob) -> None:
        place = getattr(self.files, "place", None)
        if place is not None:
            place(held.spooled, held.storage_path)
        else:  # a BlobStore of the caller's own: put the spooled copy again (it dedups)
            with open(held.spooled.path, "rb") as fh:
                self.files.put(fh, held.owner)

    # How long an upload waits for a prune that is deleting the bytes it just recorded: past
    # this, put_file fails rather than report an upload whose bytes may go.
    SWEEP_WAIT_SECONDS = 1200.0

    def _settle(self, held: HeldBlob, recorded: dict[str, Any]) -> None:
        """After an upload's row is committed: make sure its bytes are at its storage path.

        Our bytes were in place before the row was recorded, but a prune may have deleted the
        object meanwhile. The prune's decision and our row are serialised by an advisory lock
        (shared by uploads, exclusive for prune: see put_file_metadata and prune in
        20261130060000_persistence_blob_sweeps.sql), so a prune that decided before our row
        existed may still be deleting, and one that finished may have deleted already.
        ``sweep_until`` says a prune holds a claim on the path: wait until it lets go (its
        deletes are done by then, or its lease ran out). Then check, and place the bytes again
        if they are gone. While our row exists no prune claims this path, so once the check
        passes the bytes stay. This holds across processes and machines: the lock and the
        claims live in the database, and the check looks at the shared store itself."""
        path = recorded["storage_path"]
        until = recorded.get("sweep_until")
        deadline = time.monotonic() + self.SWEEP_WAIT_SECONDS
        delay = 0.02
        while until is not None:
            if time.monotonic() > deadline:
                raise PersistenceError(
                    f"a prune has been deleting {path} for over {self.SWEEP_WAIT_SECONDS:.0f} s; "
                    "the upload is recorded, but its bytes may be gone: upload it again"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
            until = self._call("blob_sweep_until", {"p_storage_path": path})
        if path == held.storage_path and not self.files.exists(path):
            self._place(held)

    def _record_upload(self, **f: Any) -> StoredFile:
        held = f.get("blob")
        recorded = self._call(
            "put_file_metadata",
            {
                "p_file_id": file_id_for(f["storage_path"]),
                "p_upload_id": f.get("upload_id") or str(uuid.uuid4()),
                "p_file_hash": f["blob_sha256"],
                "p_file_size": f["size"],
                "p_storage_path": f["storage_path"],
                "p_bucket_name": self.bucket_name,
                "p_mime_type": f["mime_type"],
                "p_filename": f["filename"],
                "p_continuation_id": f["continuation_id"],
                "p_session_id": f["session_id"],
                "p_user_id": f["user_id"],
                "p_tags": list(f["tags"]),
                "p_description": f["description"],
                "p_metadata": J(f["metadata"]),
                "p_created_at": f["created_at"],
            },
        )
        if isinstance(held, HeldBlob):
            self._settle(held, recorded)
        return self._file(recorded)

    def _open_file(self, file_id: str) -> BinaryIO:
        d = self._call("get_file", {"p_id": file_id})
        if d is None:
            raise NotFoundError(f"no file with id {file_id}")
        return self.files.open(d["storage_path"])

    def _get_file(self, file_id: str) -> StoredFile | None:
        d = self._call("get_file", {"p_id": file_id})
        return None if d is None else self._file(d)

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
    ) -> list[StoredFile]:
        key, last_id = self._after(after, numeric=order == "size")
        rows = self._call(
            "list_files",
            {
                "p_since": since,
                "p_until": until,
                "p_mime_type": mime_type,
                "p_continuation_id": continuation_id,
                "p_session_id": session_id,
                "p_unused": unused,
                "p_order": order,
                "p_limit": limit,
                "p_after_key": key,
                "p_after_id": last_id,
            },
        )
        return [self._file(r) for r in rows]

    def _file_conversations(self, file_id: str) -> list[Conversation]:
        return [self._conversation(r) for r in self._call("file_conversations", {"p_file_id": file_id})]

    def signed_url(self, file_id: str, expires_in: int = 3600) -> str:
        """A time-limited download link for a file's bytes (Supabase Storage only: a local
        folder has no URL to sign)."""
        signer = getattr(self.files, "signed_url", None)
        if signer is None:
            raise PersistenceError(f"signed URLs need Supabase Storage; file bytes are in {self.files.describe()}")
        stored = self.get_file(file_id)
        if stored is None:
            raise NotFoundError(f"no file with id {file_id}")
        if isinstance(expires_in, bool) or not isinstance(expires_in, int) or not 1 <= expires_in <= 7 * 86400:
            raise ValidationError("expires_in", f"expected seconds from 1 to 604800, got {expires_in!r}")
        url: str = signer(stored.storage_path, expires_in)
        return url

    def _record_provider_file(
        self,
        *,
        file_id: str,
        provider: str,
        provider_file_id: str,
        purpose: str | None,
        expires_at: datetime | None,
        created_at: datetime,
    ) -> ProviderFile:
        return self._provider_file(
            self._call(
                "record_provider_file",
                {
                    "p_id": str(uuid.uuid4()),
                    "p_file_id": file_id,
                    "p_provider": provider,
                    "p_provider_file_id": provider_file_id,
                    "p_purpose": purpose,
                    "p_expires_at": expires_at,
                    "p_created_at": created_at,
                },
            )
        )

    def _list_provider_files(self) -> list[ProviderFile]:
        return [self._provider_file(d) for d in self._call("list_provider_files", {})]

    def _find_provider_file(
        self, file_hash: str, provider: str, *, purpose: str | None, user_id: str | None, at: datetime
    ) -> ProviderFile | None:
        d = self._call(
            "find_provider_file",
            {"p_file_hash": file_hash, "p_provider": provider, "p_purpose": purpose, "p_user_id": user_id, "p_at": at},
        )
        return None if d is None else self._provider_file(d)

    def _upload_activity(self, session_id: str, since: datetime) -> tuple[int, int]:
        uploads, size = self._call("upload_activity", {"p_session_id": session_id, "p_since": since})
        return int(uploads), int(size)

    # -- usage -------------------------------------------------------------------------

    _USAGE_KEY_COLUMNS = ("period", "model", "provider", "tool_name", "user_id")
    _STORAGE_KEY_COLUMNS = ("period", "mime_type", "user_id")

    @staticmethod
    def _keyed(
        rows: list[list[Any]], keys: list[str], key_columns: tuple[str, ...], n_values: int, zero: bool
    ) -> list[Sequence[Any]]:
        """Rows of (keys..., values...) in the order SQLite gives them (by the keys, None first)."""
        positions = [key_columns.index("period" if k in ("day", "week", "month") else k) for k in keys]
        out: list[Sequence[Any]] = [tuple(row[p] for p in positions) + tuple(row[len(key_columns) :]) for row in rows]
        out.sort(key=lambda r: tuple((r[i] is not None, r[i]) for i in range(len(keys))))
        if not out and not keys and zero:
            out = [tuple(0 for _ in range(n_values))]
        return out

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
        rows = self._call(
            "usage_report",
            {
                "p_group_by": keys,
                "p_first_day": first_day,
                "p_last_day": last_day,
                "p_model": model,
                "p_provider": provider,
                "p_tool_name": tool_name,
            },
        )
        return self._keyed(rows, keys, self._USAGE_KEY_COLUMNS, 9, zero=True)

    def _storage_rows(self, keys: list[str], *, first_day: str | None, last_day: str | None) -> list[Sequence[Any]]:
        rows = self._call(
            "storage_usage_report", {"p_group_by": keys, "p_first_day": first_day, "p_last_day": last_day}
        )
        return self._keyed(rows, keys, self._STORAGE_KEY_COLUMNS, 4, zero=True)

    def _facets(self) -> dict[str, list[str]]:
        facets: dict[str, list[str]] = self._call("facets", {})
        return facets

    # -- budgets and anomalies (persistence/insights.py) -------------------------------

    @staticmethod
    def _budget(d: dict[str, Any]) -> Budget:
        return Budget(
            str(d["id"]),
            d["scope"],
            d.get("key") or None,
            d["period"],
            float(d["limit_usd"]),
            _dt(d["created_at"]),
            _dt(d["updated_at"]),
        )

    def _save_budget(self, budget: Budget) -> Budget:
        return self._budget(
            self._call(
                "set_budget",
                {
                    "p_id": budget.id,
                    "p_scope": budget.scope,
                    "p_period": budget.period,
                    "p_limit_usd": budget.limit_usd,
                    "p_key": budget.key,
                    "p_at": _iso(budget.updated_at),
                },
            )
        )

    def _list_budgets(self) -> list[Budget]:
        return [self._budget(d) for d in self._call("list_budgets", {})]

    def _delete_budget(self, budget_id: str) -> bool:
        return bool(self._call("delete_budget", {"p_id": budget_id}))

    def _tag_costs(self, tags: list[str], *, first_day: str, last_day: str) -> dict[str, float]:
        costs = self._call("tag_costs", {"p_tags": tags, "p_first_day": first_day, "p_last_day": last_day})
        return {str(k): float(v) for k, v in (costs or {}).items()}

    def _thread_costs(self, first_day: str, last_day: str) -> list[Sequence[Any]]:
        rows = self._call("thread_costs", {"p_first_day": first_day, "p_last_day": last_day})
        return [(r[0], r[1], r[2], str(r[3])[:10], float(r[4] or 0), int(r[5] or 0)) for r in rows]

    def _top_threads(self, day: str, dimension: str, key: str, limit: int) -> list[Sequence[Any]]:
        rows = self._call("top_threads", {"p_day": day, "p_dimension": dimension, "p_key": key, "p_limit": limit})
        return [(r[0], r[1], r[2], float(r[3] or 0), int(r[4] or 0)) for r in rows]

    # -- maintenance -------------------------------------------------------------------

    def _reprice(self, *, since: datetime | None, until: datetime | None, model: str | None) -> RepriceResult:
        self._prices = None  # read the table afresh
        prices = self.prices
        checked = changed = unpriced_before = unpriced_after = 0
        cost_before = cost_after = 0.0
        after: tuple[str | None, str | None] = (None, None)
        # Page by page: each page's new costs and the corrections to totals and rollup commit
        # together (on psycopg the whole run is one transaction).
        with self._atomic():
            while True:
                rows = self._call(
                    "reprice_scan",
                    {
                        "p_since": since,
                        "p_until": until,
                        "p_model": model,
                        "p_after_created_at": after[0],
                        "p_after_id": after[1],
                        "p_limit": REPRICE_PAGE,
                    },
                )
                updates = []
                for mid, model_used, created, i, ci, cw, o, r, cost, price_id, raw_unknown in rows:
                    checked += 1
                    usage = Usage(i, ci, cw, o, r)
                    priced = price_message(prices.lookup, model_used, _dt(created), usage, usage_unread=raw_unknown)
                    old_cost = None if cost is None else float(cost)
                    cost_before += old_cost or 0.0
                    cost_after += priced.cost or 0.0
                    unpriced_before += is_unpriced(old_cost, usage.total, raw_unknown)
                    unpriced_after += priced.unpriced
                    if priced.cost != old_cost or priced.price_id != price_id:
                        changed += 1
                        updates.append({"id": mid, "cost": priced.cost, "price_id": priced.price_id})
                if updates:
                    self._call("reprice_apply", {"p_updates": J(updates)})
                if len(rows) < REPRICE_PAGE:
                    break
                after = (rows[-1][2], rows[-1][0])
        return RepriceResult(
            messages_checked=checked,
            messages_changed=changed,
            cost_before=round(cost_before, 10),
            cost_after=round(cost_after, 10),
            unpriced_before=unpriced_before,
            unpriced_after=unpriced_after,
        )

    EXPORT_CHUNK = 500  # threads whose redacted uploads one call reads

    def _iter_conversations(self, since: datetime | None, until: datetime | None) -> Iterator[Conversation]:
        ids = self._call("conversation_ids", {"p_since": since, "p_until": until})
        for start in range(0, len(ids), self.EXPORT_CHUNK):
            chunk = ids[start : start + self.EXPORT_CHUNK]
            # The chunk's redacted uploads (StoredFile has no redacted_at), for the export records.
            redacted = self._call("upload_redactions", {"p_continuation_ids": chunk})
            for cid in chunk:
                conv = self._get_conversation(cid, None)
                if conv is not None:
                    uploads = redacted.get(cid) or {}
                    yield with_upload_redactions(conv, {k: _dt(at) for k, at in uploads.items()})

    @staticmethod
    def _record_json(rec: ParsedRecord) -> dict[str, Any]:
        c = rec.conversation
        redacted_at, message_redactions, upload_redactions = redactions_of(rec)
        return {
            "conversation": {
                "id": c.id,
                "continuation_id": c.continuation_id,
                "parent_id": c.parent_id,
                "session_id": c.session_id,
                "user_id": c.user_id,
                "title": c.title,
                "summary": c.summary,
                "tool_name": c.tool_name,
                "status": c.status,
                "tags": list(c.tags),
                "initial_context": c.initial_context,
                "metadata": c.metadata,
                "created_at": _iso(c.created_at),
                "expires_at": _iso(c.expires_at),
                "redacted_at": _iso(redacted_at),
            },
            "model": rec.model,
            "updated_at": _iso(rec.updated_at),
            "messages": [
                {
                    "id": m.id,
                    "seq": seq,
                    "role": m.role,
                    "content": m.content,
                    "created_at": _iso(m.created_at),
                    "model": m.model,
                    "provider": m.provider,
                    "tool_name": m.tool_name,
                    "input_tokens": m.usage.input_tokens,
                    "cached_input_tokens": m.usage.cached_input_tokens,
                    "cache_write_tokens": m.usage.cache_write_tokens,
                    "output_tokens": m.usage.output_tokens,
                    "reasoning_tokens": m.usage.reasoning_tokens,
                    "cost": m.cost,
                    "price_id": m.price_id,
                    "duration_ms": m.duration_ms,
                    "files": list(m.files),
                    "images": list(m.images),
                    "metadata": m.metadata,
                    "search_extra": m.search_extra,
                    "redacted_at": _iso(message_redactions.get(m.id)),
                }
                for seq, m in rec.messages
            ],
            "files": [
                {
                    "id": f.id,
                    "upload_id": f.upload_id,
                    "file_hash": f.file_hash,
                    "size": f.size,
                    "mime_type": f.mime_type,
                    "filename": f.filename,
                    "storage_path": f.storage_path,
                    "bucket_name": f.bucket_name,
                    "created_at": _iso(f.created_at),
                    "user_id": f.user_id,
                    "session_id": f.session_id,
                    "tags": list(f.tags),
                    "description": f.description,
                    "metadata": f.metadata,
                    "deduplicated": f.deduplicated,
                    "redacted_at": _iso(upload_redactions.get(f.upload_id or "")),
                }
                for f in rec.files
            ],
        }

    def _import_batch(self, batch: list[ParsedRecord]) -> ImportResult:
        # import_records: import_batch, keeping the uploads' deduplicated flags.
        d = self._call("import_records", {"p_records": J([self._record_json(r) for r in batch])})
        return ImportResult(
            d["conversations"], d["conversations_skipped"], d["messages"], d["messages_skipped"], d["files"]
        )

    def _prune(self, cutoff: datetime, *, dry_run: bool) -> PruneResult:
        d = self._call("prune", {"p_cutoff": cutoff, "p_dry_run": dry_run})
        # Bytes go after the rows are gone: a crash in between leaves unreferenced bytes
        # (harmless, and re-used by the next upload of the same content), never a row without bytes.
        if d["deleted"]:
            self._sweep_bytes(d["sweep_id"], [path for _bucket, path in d["deleted"]])
        return PruneResult(
            cutoff=cutoff,
            dry_run=dry_run,
            conversations=d["conversations"],
            messages=d["messages"],
            uploads=d["uploads"],
            files=d["files"],
            bytes=d["bytes"],
        )

    def _redact(
        self, *, continuation_ids: list[str] | None, user_id: str | None, cutoff: datetime | None, dry_run: bool
    ) -> RedactResult:
        d = self._call(
            "redact",
            {
                "p_continuation_ids": continuation_ids,
                "p_user_id": user_id,
                "p_cutoff": cutoff,
                "p_dry_run": dry_run,
            },
        )
        # As after prune: the rows are erased and committed; the bytes go under redact's claims.
        if d["deleted"]:
            self._sweep_bytes(d["sweep_id"], [path for _bucket, path in d["deleted"]])
        return RedactResult(
            conversations=d["conversations"],
            messages=d["messages"],
            uploads=d["uploads"],
            files=d["files"],
            bytes=d["bytes"],
            dry_run=dry_run,
        )

    SWEEP_BATCH = 50  # objects deleted per renewal of the claims: well within their 10-minute lease

    def _sweep_bytes(self, sweep_id: str, paths: list[str]) -> None:
        """Delete the bytes of the objects prune deleted, under its claims on their paths.

        An upload that records one of these objects again after prune committed sees the
        claim and, once it is released, checks its bytes and places them again (_settle).
        Before each batch the claims are renewed, and a path whose claim ran out (this
        process stalled past the lease, and an uploader may have gone on) is left alone."""
        released = 0
        try:
            for start in range(0, len(paths), self.SWEEP_BATCH):
                batch = paths[start : start + self.SWEEP_BATCH]
                held = set(self._call("renew_blob_sweep", {"p_sweep_id": sweep_id, "p_paths": batch}))
                try:
                    for path in batch:
                        if path in held:
                            self.files.delete(path)
                finally:
                    self._call("release_blob_sweep", {"p_sweep_id": sweep_id, "p_paths": batch})
                    released = start + len(batch)
        finally:
            if released < len(paths):
                # An error stopped the sweep: let the uploaders waiting on the rest go on now,
                # rather than when the lease runs out (best effort: the error above is the news).
                with contextlib.suppress(PersistenceError):
                    self._call("release_blob_sweep", {"p_sweep_id": sweep_id, "p_paths": paths[released:]})

    MISSING_BYTES_CHECK_LIMIT: int | None = None  # remote storage: check only the oldest N

    def _doctor(self, progress: DoctorProgress | None = None) -> dict[str, Any]:
        tick = progress or (lambda step, done, total: None)
        tick("counts", 0, 2)
        d = self._call("store_doctor", {})
        paths = self._call("file_paths", {"p_limit": self.MISSING_BYTES_CHECK_LIMIT})
        total = 2 + len(paths)  # in checks: the counts, the file list, then one per stored file
        tick("file bytes", 2, total)
        missing = []
        for done, (_bucket, path) in enumerate(paths, start=3):
            if not self.files.exists(path):
                missing.append(path)
            if done % 50 == 0:
                tick("file bytes", done, total)
        tick("file bytes", total, total)
        return {
            "backend": self.backend,
            "url": self.url,
            "server_version": d["server_version"],
            "migrations": [name for name, _ in self.migrations()],
            "database_bytes": d["database_bytes"],
            "files_store": self.files.describe(),
            "conversations": d["conversations"],
            "messages": d["messages"],
            "files": d["files"],
            "uploads": d["uploads"],
            "prices": d["prices"],
            "last_message_at": d["last_message_at"],
            "unpriced_models": d["unpriced_models"],
            "files_checked": len(paths),
            "files_missing_bytes": missing[:20],
            "files_missing_bytes_count": len(missing),
        }

    def _doctor_quick(self) -> dict[str, Any]:
        d = self._call("store_doctor_quick", {})
        return {"backend": self.backend, "url": self.url, "check": "quick", **d}

    def _record_full_check(self, findings: dict[str, Any]) -> bool:
        return bool(self._call("record_doctor_check", {"p_findings": J(findings)}))


def jsonable(value: Any) -> Any:
    """An argument as JSON for the RPC path (PostgREST turns it into the parameter's type)."""
    if isinstance(value, J):
        return value.value
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date):
        return value.isoformat()
    return value
