"""The embedded default: one SQLite file (WAL, FTS5) and a content-addressed file folder.

Every write is one ``BEGIN IMMEDIATE`` transaction, so the message, its ``seq``, the thread's
totals and the daily rollup are committed together or not at all, and concurrent writers (in
threads or processes) queue on the write lock instead of interleaving. Each thread gets its
own connection; WAL lets readers run beside the writer.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import os
import sqlite3
import struct
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, TypeVar
from urllib.parse import quote

from ... import validation as v
from ...errors import (
    ConflictError,
    NotFoundError,
    PersistenceError,
    ReadOnlyStoreError,
    SchemaVersionError,
    StorageFullError,
    StoreDamagedError,
    StoreOpenError,
    ValidationError,
)
from ...filestore import HeldBlob, LocalFileStore, file_id_for, hold
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
from ...pricing import UNREAD_USAGE, Price, package_prices, price_message
from ...search_query import (
    MARK_CLOSE,
    MARK_OPEN,
    SEARCH_COUNT_CAP,
    SEARCH_RANK_WINDOW,
    SEARCH_STOPPED,
    SEARCH_TIME_LIMIT_S,
    Clause,
    marked_fragments,
    python_fragments,
    to_fts5,
)
from ...store import DoctorProgress, Store, day_of, new_id, now
from ...transfer import redactions_of, with_upload_redactions
from .redact import redact
from .schema import FACETS_OF_MESSAGES, MIGRATIONS

__all__ = ["SQLiteStore"]

log = logging.getLogger("persistence")

SQLITE_HEADER = b"SQLite format 3\x00"
# Opening a store runs ``pragma quick_check`` on files up to this size (about 1 ms per MB
# when cached), so a damaged file is refused for writes before the first write, not after.
# Larger files get the header check only; ``doctor`` always runs the full quick_check.
OPEN_CHECK_MAX_BYTES = 64 * 1024 * 1024
_BUCKETS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")

_MESSAGE_COLUMNS = (
    "m.id, m.conversation_id, c.continuation_id, m.seq, m.role, m.content, m.created_at, m.tool_name, "
    "m.provider, m.model_used, m.input_tokens, m.cached_input_tokens, m.cache_write_tokens, "
    "m.output_tokens, m.reasoning_tokens, m.cost, m.price_id, m.duration_ms, m.files, m.images, "
    "m.metadata, m.user_id, m.redacted_at"
)
_ROLLUP_COLUMNS = """usage_daily (day, user_id, model, provider, tool_name, messages, input_tokens,
    cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_usd,
    unpriced_messages, duration_ms)"""
# A rollup row that exists already gets the new row's sums added (one message live, a batch's
# sums on import).
_ROLLUP_MERGE = """
on conflict (day, user_id, model, provider, tool_name) do update set
    messages = messages + excluded.messages,
    input_tokens = input_tokens + excluded.input_tokens,
    cached_input_tokens = cached_input_tokens + excluded.cached_input_tokens,
    cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,
    output_tokens = output_tokens + excluded.output_tokens,
    reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
    cost_usd = cost_usd + excluded.cost_usd,
    unpriced_messages = unpriced_messages + excluded.unpriced_messages,
    duration_ms = duration_ms + excluded.duration_ms
"""
_ROLLUP_UPSERT = f"insert into {_ROLLUP_COLUMNS} values (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?)" + _ROLLUP_MERGE
# The rollup rows of the messages a WHERE fragment selects, and each thread's totals over them.
_ROLLUP_SELECT = """
select substr(created_at, 1, 10), coalesce(user_id, ''), coalesce(model_used, ''),
    coalesce(provider, ''), coalesce(tool_name, ''), count(*), sum(input_tokens),
    sum(cached_input_tokens), sum(cache_write_tokens), sum(output_tokens), sum(reasoning_tokens),
    coalesce(sum(cost), 0), sum(unpriced), coalesce(sum(duration_ms), 0)
from messages
where {where}
group by 1, 2, 3, 4, 5
"""
_TOTALS_SELECT = """
select conversation_id, count(*) as n, coalesce(sum(tokens), 0) as tokens, coalesce(sum(input_tokens), 0) as i,
    coalesce(sum(cached_input_tokens), 0) as ci, coalesce(sum(cache_write_tokens), 0) as cw,
    coalesce(sum(output_tokens), 0) as o, coalesce(sum(reasoning_tokens), 0) as r,
    coalesce(sum(cost), 0) as cost, coalesce(sum(unpriced), 0) as unpriced, max(created_at) as newest
from messages where {where}
"""
# Rebuilds the rollup of whole days from messages (reprice, prune, recover).
_ROLLUP_REBUILD = f"insert into {_ROLLUP_COLUMNS}" + _ROLLUP_SELECT.format(
    where="created_at >= :day and created_at < date(:day, '+1 day')"
)
# A thread's totals from all its messages (zero when it has none left).
_TOTALS_REBUILD = """
update conversations set
    message_count = t.n, total_tokens = t.tokens, input_tokens = t.i, cached_input_tokens = t.ci,
    cache_write_tokens = t.cw, output_tokens = t.o, reasoning_tokens = t.r, total_cost = t.cost,
    unpriced_messages = t.unpriced
from ({select}) as t
where conversations.id = :id
""".format(select=_TOTALS_SELECT.format(where="conversation_id = :id"))
# Adds the messages written after rowid :after to the rollup and the thread totals (import,
# demo, copy): a batch costs what it holds, however large the store (rebuilding each touched
# day from all its messages made bulk writes quadratic, issue 16). Rowids only grow inside
# the write transaction that holds the batch, so "rowid > the largest before it" is the batch.
_ROLLUP_ADD = f"insert into {_ROLLUP_COLUMNS}" + _ROLLUP_SELECT.format(where="rowid > :after") + _ROLLUP_MERGE
_TOTALS_ADD = """
update conversations set
    message_count = message_count + t.n, total_tokens = total_tokens + t.tokens,
    input_tokens = input_tokens + t.i, cached_input_tokens = cached_input_tokens + t.ci,
    cache_write_tokens = cache_write_tokens + t.cw, output_tokens = output_tokens + t.o,
    reasoning_tokens = reasoning_tokens + t.r, total_cost = total_cost + t.cost,
    unpriced_messages = unpriced_messages + t.unpriced,
    -- As _append: the newest turn's model; older turns only fill a thread without one.
    model_used = case when mm.model_at > updated_at then mm.model else coalesce(model_used, mm.model) end,
    updated_at = max(updated_at, t.newest)
from ({select}) as t
left join (
    -- SQLite takes the bare column from the row of max(): the newest message that has a model.
    select conversation_id, max(created_at) as model_at, model_used as model
    from messages where rowid > :after and model_used is not null group by +conversation_id
) as mm on mm.conversation_id = t.conversation_id
where conversations.id = t.conversation_id
""".format(
    # +conversation_id: grouped by the index on (conversation_id, seq), SQLite walked all of it
    # (every message of the store) to find the batch's rows; the rowid range and a sort of the
    # batch's rows cost what the batch holds (0.62 s -> 0.03 s per batch at a million).
    select=_TOTALS_SELECT.format(where="rowid > :after group by +conversation_id")
)
# A thread's facets (schema.THREAD_FACETS_TABLE): one row, or the batch's rows (import).
_FACET_ADD = "insert or ignore into thread_facets (kind, value, conversation_id) values (?, ?, ?)"
# The batch's facets in one statement: UNION sorts them, so they go into the table in key order.
_FACETS_ADD = (
    "insert or ignore into thread_facets (kind, value, conversation_id) "
    + FACETS_OF_MESSAGES.format(where="rowid > :after")
    + " union select 'tool', tool_name, id from conversations where rowid > :threads_after and tool_name is not null"
)
# A message an import brings for a thread: (record index in the batch, seq as exported, position
# in its record, the message, when it was redacted).
_Incoming = tuple[int, int, int, PreparedMessage, datetime | None]

# Search ranks with bm25 up to this many words in the query (exclusions and the words of
# phrases included): its cost is a pass over every match of each phrase in the whole table,
# affordable for the few words people type. More are ranked by SQLiteStore._dense_ranked,
# which reads the window only.
_BM25_MAX_WORDS = 4
# Order "recent" looks for the newest matches among the newest this many by rowid (the order
# rows were written), then sorts those by created_at. Rows written out of time order (an
# import, the demo) can leave a newer match outside; 1,000 was what this has always read,
# and the rank window's 250 was too few for the conformance data (tests/test_postgres_conformance.py):
# exact would need the matches ordered by created_at, a pass over all of them.
_RECENT_WINDOW = 1000

# The model, provider and tool filters read thread_facets (what the messages used, and the
# thread's own tool), not every thread's messages (0.5-7 s at a million, issue 16). As written
# in _CONVERSATION_FILTERS (+c.id: the unary plus keeps SQLite from looking threads up by id)
# the facet rows become an in-memory set that each thread is tested against, while the query
# walks the index of its order or period: a page of the listing stops after `limit` threads,
# and a count over a period reads only that period's index range. A count with no period reads
# every thread, so it is driven by the facet rows instead (_FACET_DRIVEN: one id lookup each),
# 3x faster for the all-time count of a common provider (70 ms against 207 at a million).
_FACET_FILTER = "{id} in (select f.conversation_id from thread_facets f where f.kind = '{kind}' and f.value = :{name})"
_FACET_DRIVEN = {
    name: _FACET_FILTER.format(id="c.id", kind=kind, name=name)
    for name, kind in (("model", "model"), ("provider", "provider"), ("tool_name", "tool"))
}
# Filters an index of conversations serves: with one of them a count walks that index.
_INDEXED_FILTERS = frozenset({"since", "until", "session_id", "parent_id"})

# The WHERE clause of each thread filter (persistence.prepared.ConversationFilters), with its
# value as the parameter of its name. Postgres has its own (public.conversations_where); the
# conformance suite (see the package's __init__) holds the two to the same threads.
_CONVERSATION_FILTERS = {
    "since": "c.updated_at >= :since",
    "until": "c.created_at < :until",
    "model": _FACET_FILTER.format(id="+c.id", kind="model", name="model"),
    "provider": _FACET_FILTER.format(id="+c.id", kind="provider", name="provider"),
    "tool_name": _FACET_FILTER.format(id="+c.id", kind="tool", name="tool_name"),
    "tag": "exists (select 1 from json_each(c.tags) where value = :tag)",
    "session_id": "c.session_id = :session_id",
    "user_id": "c.user_id = :user_id",
    "parent_id": "c.parent_id = :parent_id",
    "status": "c.status = :status",
    "min_cost": "c.total_cost >= :min_cost",
    "text": "c.title like :text escape '\\'",  # a case-insensitive substring of the title
}


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _opt_dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _json(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


# The stored objects whose bytes should exist: those redact did not empty (persistence/redaction.py:
# an object whose uploads are all redacted has none).
_FILES_WITH_BYTES = """select f.storage_path from files f
    where exists (select 1 from file_uploads u where u.file_id = f.id and u.redacted_at is null)
        or not exists (select 1 from file_uploads u where u.file_id = f.id)"""


class SQLiteStore(Store):
    backend = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        files_dir: str | Path | None = None,
        read_only: bool = False,
        bucket_name: str = "local",
    ) -> None:
        super().__init__()
        self.path = Path(path).expanduser()
        self.url = f"sqlite:///{self.path}"
        self.bucket_name = bucket_name
        self.read_only = read_only
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        # Why the file is known to be damaged (None: not known to be). Set by doctor, by any
        # statement that meets a corrupt page, or by the checks at open; from then on writes
        # are refused, since writing into a damaged b-tree can spread the damage.
        self.damage: str | None = None
        self._check_file()
        self.files = LocalFileStore(
            Path(files_dir).expanduser() if files_dir else self.path.with_name(self.path.stem + "-files")
        )
        self._check_integrity_at_open()
        self._migrate()

    # -- connections -------------------------------------------------------------------

    def _check_file(self) -> None:
        if self.path.is_dir():
            raise StoreOpenError(f"{self.path} is a directory, not a SQLite database file")
        if self.path.exists():
            try:
                with open(self.path, "rb") as fh:
                    header = fh.read(len(SQLITE_HEADER))
            except OSError as exc:
                raise StoreOpenError(f"cannot read {self.path}: {exc.strerror}") from None
            if header and header != SQLITE_HEADER:
                raise StoreOpenError(f"{self.path} is not a SQLite database (left untouched)")
            if not header:
                # SQLite treats an empty file as a new database; an empty file where a store
                # was expected is more often a truncated copy than a deliberate choice.
                log.warning(
                    "%s is an empty file: initialising a new, empty store in it. If a store was expected "
                    "here, this file is probably a truncated copy; restore it from the original.",
                    self.path,
                )
            else:
                self._check_header()
            if not self.read_only and not os.access(self.path, os.W_OK):
                self.read_only = True  # readable, so browse it; writes raise ReadOnlyStoreError
        elif self.read_only:
            raise StoreOpenError(f"{self.path} does not exist")
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreOpenError(f"cannot create {self.path.parent}: {exc.strerror}") from None

    def _check_header(self) -> None:
        """Cheap check of a file that claims to be SQLite: is it as long as its header says?
        A copy cut short (a full disk, an interrupted transfer) is the common damage."""
        wal = self.path.with_name(self.path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            return  # pages may still live in the WAL (a crash mid-checkpoint): no verdict
        with open(self.path, "rb") as fh:
            header = fh.read(100)
        size = self.path.stat().st_size
        if len(header) < 100:
            self.damage = f"the file is {size} bytes, shorter than a SQLite header"
            return
        page_size = struct.unpack(">H", header[16:18])[0]
        page_size = 65536 if page_size == 1 else page_size
        change_counter, pages = struct.unpack(">II", header[24:32])
        valid_for = struct.unpack(">I", header[92:96])[0]
        # The page count in the header is only meaningful when written by the same change.
        if pages and valid_for == change_counter and size < pages * page_size:
            self.damage = f"the file is {size:,} bytes but its header says {pages:,} pages of {page_size:,}: truncated"

    def _check_integrity_at_open(self) -> None:
        if self.damage is None and self.path.exists():
            size = self.path.stat().st_size
            if 0 < size <= OPEN_CHECK_MAX_BYTES:
                self._quick_check(self._conn())
        if self.damage is not None:
            log.error("%s", self._damaged_error(self.damage))

    def _quick_check(self, db: sqlite3.Connection) -> str:
        """``pragma quick_check`` as text ("ok" or its first findings); records damage."""
        try:
            rows = [str(r[0]) for r in db.execute("pragma quick_check(10)")]
        except sqlite3.DatabaseError as exc:  # the check itself can meet an unreadable page
            rows = [str(exc)]
        result = "\n".join(rows) or "ok"
        if result != "ok":
            self.damage = f"pragma quick_check: {rows[0]}" + (f" (+{len(rows) - 1} more)" if len(rows) > 1 else "")
        return result

    def recover_command(self) -> str:
        """The CLI command that copies what is readable into a new file."""
        output = self.path.with_name(f"{self.path.stem}-recovered{self.path.suffix or '.db'}")
        return f"python -m persistence recover --url {self.url} --output {output}"

    def _damaged_error(self, detail: str) -> StoreDamagedError:
        return StoreDamagedError(str(self.path), detail, self.recover_command())

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise PersistenceError("the store is closed")
        conn: sqlite3.Connection | None = None
        try:
            if self.read_only:
                uri = f"file:{quote(str(self.path))}?mode=ro"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30)
                try:
                    conn.execute("select count(*) from sqlite_master").fetchone()
                except sqlite3.OperationalError:
                    # A WAL database in a read-only folder cannot create its -shm file.
                    conn.close()
                    uri = f"file:{quote(str(self.path))}?mode=ro&immutable=1"
                    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            else:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
                conn.execute("pragma journal_mode = wal")
            conn.execute("pragma foreign_keys = on")
            # NORMAL in WAL mode survives application crashes; only an OS crash or power
            # loss can drop the last transactions (SQLite docs, "WAL mode").
            conn.execute("pragma synchronous = normal")
            conn.execute("pragma busy_timeout = 30000")
            conn.execute("pragma cache_size = -65536")
            conn.execute("pragma temp_store = memory")
            conn.execute("pragma mmap_size = 268435456")
            # Checkpoint every ~40 MB of WAL instead of ~4 MB: pages rewritten by every message
            # (the thread's row, the rollup, the newest index segments) are copied back less often.
            conn.execute("pragma wal_autocheckpoint = 10000")
            conn.execute("select count(*) from sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            error = self._translate(exc)
            if isinstance(error, StorageFullError | StoreDamagedError):
                raise error from None
            raise StoreOpenError(f"cannot open {self.path}: {exc}") from None
        conn.row_factory = sqlite3.Row
        with self._lock:
            self._connections.append(conn)
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            raise ReadOnlyStoreError(f"{self.path} is read-only; nothing was written")
        if self.damage is not None:
            raise self._damaged_error(self.damage)
        db = self._conn()
        try:
            db.execute("begin immediate")
        except sqlite3.Error as exc:
            raise self._translate(exc) from None
        try:
            yield db
            db.execute("commit")
        except BaseException as exc:
            # On a full disk or an I/O error SQLite may already have rolled the transaction
            # back itself; a second rollback would fail and hide the real error.
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("rollback")
            if isinstance(exc, sqlite3.Error):
                raise self._translate(exc) from None
            raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot across the statements of one read."""
        db = self._conn()
        try:
            db.execute("begin")
        except sqlite3.Error as exc:
            raise self._translate(exc) from None
        try:
            yield db
        finally:
            if db.in_transaction:
                db.execute("commit")

    def _translate(self, exc: sqlite3.Error) -> PersistenceError:
        """The package's error for a sqlite3 error; a corrupt page also marks the store damaged."""
        text = str(exc)
        extended = getattr(exc, "sqlite_errorcode", None) or 0
        code = extended & 0xFF  # the primary result code
        if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or "database disk image is malformed" in text:
            self.damage = self.damage or text  # the first finding says the most
            return self._damaged_error(self.damage)
        # SHMSIZE: the -shm file could not grow (SQLite writes each new page of it up front,
        # so a full disk shows as this error instead of a crash).
        if code == sqlite3.SQLITE_FULL or extended == sqlite3.SQLITE_IOERR_SHMSIZE or "disk is full" in text:
            return StorageFullError(str(self.path.parent), f"SQLite: {text} writing {self.path.name}")
        if isinstance(exc, sqlite3.IntegrityError):
            return ConflictError(f"{self.path}: {text}")
        if "readonly" in text:
            return ReadOnlyStoreError(f"{self.path} is read-only: {text}; nothing was written")
        if "locked" in text or "busy" in text:
            return PersistenceError(f"{self.path} stayed locked by another writer for 30 s: {text}")
        return PersistenceError(f"{self.path}: {text}")

    def close(self) -> None:
        self._stop_background()
        with self._lock:
            self._closed = True
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()

    # -- migrations --------------------------------------------------------------------

    def _migrate(self) -> None:
        db = self._conn()
        known = [name for name, _ in MIGRATIONS]
        applied = self._applied(db)
        unknown = [name for name in applied if name not in known]
        if unknown:
            raise SchemaVersionError(
                f"{self.path} was migrated by a newer version of persistence ({', '.join(unknown)}); upgrade the package"
            )
        pending = [(n, sql) for n, sql in MIGRATIONS if n not in applied]
        if pending and self.read_only:
            raise StoreOpenError(f"{self.path} needs migrating ({pending[0][0]}) but is read-only")
        if self.damage is not None:
            if pending:
                raise self._damaged_error(self.damage)
            return  # open for reading what is readable (and for doctor); nothing is written
        for name, sql in pending:
            with self._write() as tx:
                if name in self._applied(tx):  # another process got there first
                    continue
                if callable(sql):
                    sql(tx)
                else:  # executescript would commit our transaction; run statement by statement.
                    for statement in _split_sql(sql):
                        tx.execute(statement)
                tx.execute("insert into _migrations (name, applied_at) values (?, ?)", (name, _ts(now())))
        if not self.read_only:
            self._sync_package_prices()

    def _applied(self, db: sqlite3.Connection) -> list[str]:
        if not self.read_only:
            db.execute("create table if not exists _migrations (name text primary key, applied_at text not null)")
        try:
            return [r[0] for r in db.execute("select name from _migrations order by rowid")]
        except sqlite3.OperationalError:
            return []
        except sqlite3.DatabaseError as exc:
            raise StoreOpenError(f"{self.path} is not a usable SQLite database: {exc}") from None

    def migrations(self) -> list[tuple[str, datetime]]:
        return [
            (r[0], _dt(r[1])) for r in self._conn().execute("select name, applied_at from _migrations order by rowid")
        ]

    # -- prices ------------------------------------------------------------------------

    def _sync_package_prices(self) -> None:
        prices, digest = package_prices()
        row = self._conn().execute("select value from store_meta where key = 'package_prices_sha256'").fetchone()
        if row and row[0] == digest:
            return
        with self._write() as db:
            self._upsert_prices(db, prices, "package")
            db.execute(
                "insert into store_meta (key, value) values ('package_prices_sha256', ?) "
                "on conflict (key) do update set value = excluded.value",
                (digest,),
            )
        self._prices = None

    def _upsert_prices(self, db: sqlite3.Connection, prices: list[Price], origin: str) -> None:
        for p in prices:
            row = p.to_row()
            row["origin"] = origin
            cols = ", ".join(row)
            db.execute(
                f"insert into model_prices ({cols}) values ({', '.join(':' + c for c in row)}) "
                f"on conflict (id) do update set {', '.join(f'{c} = excluded.{c}' for c in row if c != 'id')}",
                row,
            )

    def _load_prices(self) -> list[Price]:
        rows = self._conn().execute("select * from model_prices").fetchall()
        return [Price.from_mapping(dict(zip(r.keys(), r, strict=True)), f"model_prices[{r['id']}]") for r in rows]

    def _save_prices(self, prices: list[Price], origin: str) -> None:
        with self._write() as db:
            self._upsert_prices(db, prices, origin)

    # -- row conversion ----------------------------------------------------------------

    @staticmethod
    def _message(r: sqlite3.Row | Sequence[Any]) -> Message:
        return Message(
            id=r[0],
            conversation_id=r[1],
            continuation_id=r[2],
            seq=r[3],
            role=r[4],
            content=r[5],
            created_at=_dt(r[6]),
            tool_name=r[7],
            provider=r[8],
            model=r[9],
            usage=Usage(r[10], r[11], r[12], r[13], r[14]),
            cost_usd=r[15],
            price_id=r[16],
            duration_ms=r[17],
            files=tuple(_json(r[18])),
            images=tuple(_json(r[19])),
            metadata=_json(r[20]),
            user_id=r[21],
            redacted_at=_opt_dt(r[22]),
        )

    @staticmethod
    def _conversation(
        r: sqlite3.Row, messages: tuple[Message, ...] = (), files: tuple[StoredFile, ...] = ()
    ) -> Conversation:
        return Conversation(
            id=r["id"],
            continuation_id=r["continuation_id"],
            created_at=_dt(r["created_at"]),
            updated_at=_dt(r["updated_at"]),
            parent_id=r["parent_id"],
            session_id=r["session_id"],
            user_id=r["user_id"],
            title=r["title"],
            summary=r["summary"],
            tool_name=r["tool_name"],
            model=r["model_used"],
            status=r["status"],
            tags=tuple(_json(r["tags"])),
            initial_context=_json(r["initial_context"]),
            metadata=_json(r["metadata"]),
            expires_at=_opt_dt(r["expires_at"]),
            message_count=r["message_count"],
            usage=Usage(*(r[b] for b in _BUCKETS)),
            cost_usd=r["total_cost"],
            unpriced_messages=r["unpriced_messages"],
            messages=messages,
            files=files,
            redacted_at=_opt_dt(r["redacted_at"]),
        )

    @staticmethod
    def _file(r: sqlite3.Row) -> StoredFile:
        keys = r.keys()
        # A stored object read without an upload (its first upload stored the bytes): not deduplicated.
        deduplicated = bool(r["deduplicated"]) if "deduplicated" in keys else False
        return StoredFile(
            id=r["id"],
            file_hash=r["file_hash"],
            size=r["file_size"],
            mime_type=r["mime_type"],
            filename=r["filename"],
            storage_path=r["storage_path"],
            bucket_name=r["bucket_name"],
            created_at=_dt(r["created_at"]),
            upload_id=r["upload_id"] if "upload_id" in keys else None,
            deduplicated=deduplicated,
            user_id=r["user_id"],
            session_id=r["session_id"],
            continuation_id=r["continuation_id"] if "continuation_id" in keys else None,
            tags=tuple(_json(r["tags"])),
            description=r["description"],
            metadata=_json(r["metadata"]),
        )

    # -- conversations -----------------------------------------------------------------

    def _insert_conversation(
        self,
        db: sqlite3.Connection,
        c: PreparedConversation,
        updated_at: datetime | None = None,
        model: str | None = None,
        *,
        facets: bool = True,
    ) -> None:
        """Insert a thread row; ``facets=False``: the caller adds its tool facet (import)."""
        try:
            db.execute(
                """insert into conversations (id, continuation_id, parent_id, session_id, user_id, title,
                       summary, tool_name, model_used, status, tags, initial_context, metadata, created_at,
                       updated_at, expires_at)
                   values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    c.id,
                    c.continuation_id,
                    c.parent_id,
                    c.session_id,
                    c.user_id,
                    c.title,
                    c.summary,
                    c.tool_name,
                    model,
                    c.status,
                    v.dumps(list(c.tags)),
                    None if c.initial_context is None else v.dumps(c.initial_context),
                    v.dumps(c.metadata),
                    _ts(c.created_at),
                    _ts(updated_at or c.created_at),
                    None if c.expires_at is None else _ts(c.expires_at),
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise ConflictError(f"conversation id {c.id} is already used by another thread: {exc}") from None
        if c.tool_name and facets:
            db.execute(_FACET_ADD, ("tool", c.tool_name, c.id))

    def _conversation_row(self, db: sqlite3.Connection, continuation_id: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = db.execute(
            "select * from conversations where continuation_id = ?", (continuation_id,)
        ).fetchone()
        return row

    def _ensure_conversation(
        self, db: sqlite3.Connection, continuation_id: str, created_at: datetime, tool_name: str | None
    ) -> sqlite3.Row:
        row = self._conversation_row(db, continuation_id)
        if row is None:
            self._insert_conversation(
                db,
                PreparedConversation(
                    id=new_id(), continuation_id=continuation_id, created_at=created_at, tool_name=tool_name
                ),
            )
            row = self._conversation_row(db, continuation_id)
        assert row is not None
        return row

    def _start_conversation(self, conv: PreparedConversation) -> Conversation:
        with self._write() as db:
            row = self._conversation_row(db, conv.continuation_id)
            if row is None:
                self._insert_conversation(db, conv)
                row = self._conversation_row(db, conv.continuation_id)
        assert row is not None
        return self._conversation(row)

    def _update_conversation(self, continuation_id: str, changes: dict[str, Any]) -> Conversation:
        columns = {
            "title": lambda x: x,
            "summary": lambda x: x,
            "status": lambda x: x,
            "tags": lambda x: v.dumps(list(x)),
            "metadata": v.dumps,
            "initial_context": lambda x: None if x is None else v.dumps(x),
            "expires_at": lambda x: None if x is None else _ts(x),
        }
        with self._write() as db:
            if changes:
                sets = ", ".join(f"{k} = :{k}" for k in changes)
                params = {k: columns[k](val) for k, val in changes.items()}
                params["cid"] = continuation_id
                db.execute(f"update conversations set {sets} where continuation_id = :cid", params)
            row = self._conversation_row(db, continuation_id)
        if row is None:
            raise NotFoundError(f"no conversation with continuation_id {continuation_id!r}")
        return self._conversation(row)

    def _get_conversation(self, continuation_id: str, last: int | None) -> Conversation | None:
        with self._read() as db:
            row = self._conversation_row(db, continuation_id)
            if row is None:
                return None
            messages = self._messages_of(db, row["id"], continuation_id, None, last)
            files = self._files_of(db, row["id"], continuation_id)
        return self._conversation(row, tuple(messages), tuple(files))

    def _messages_of(
        self,
        db: sqlite3.Connection,
        conversation_id: str,
        continuation_id: str,
        before_seq: int | None,
        last: int | None,
    ) -> list[Message]:
        sql = f"select {_MESSAGE_COLUMNS} from messages m join conversations c on c.id = m.conversation_id where m.conversation_id = ?"
        params: list[Any] = [conversation_id]
        if before_seq is not None:
            sql += " and m.seq < ?"
            params.append(before_seq)
        if last is not None:
            # Newest first with a limit, then reversed: the newest turns, oldest first.
            rows = db.execute(sql + " order by m.seq desc limit ?", (*params, last)).fetchall()
            rows.reverse()
        else:
            rows = db.execute(sql + " order by m.seq", params).fetchall()
        return [self._message(r) for r in rows]

    def _files_of(self, db: sqlite3.Connection, conversation_id: str, continuation_id: str) -> list[StoredFile]:
        rows = db.execute(
            """select f.id, f.file_hash, f.file_size, f.storage_path, f.bucket_name, f.user_id,
                      coalesce(u.mime_type, f.mime_type) as mime_type, coalesce(u.filename, f.filename) as filename,
                      coalesce(u.created_at, f.created_at) as created_at, u.id as upload_id,
                      coalesce(u.session_id, f.session_id) as session_id, coalesce(u.tags, f.tags) as tags,
                      coalesce(u.description, f.description) as description, coalesce(u.metadata, f.metadata) as metadata,
                      u.deduplicated, ? as continuation_id
               from conversation_files cf
               join files f on f.id = cf.file_id
               left join file_uploads u on u.id = (
                   select id from file_uploads where file_id = f.id and conversation_id = cf.conversation_id
                   order by created_at, id limit 1)
               where cf.conversation_id = ?
               order by cf.created_at, f.id""",
            (continuation_id, conversation_id),
        ).fetchall()
        return [self._file(r) for r in rows]

    def _get_messages(self, continuation_id: str, before_seq: int | None, limit: int) -> list[Message]:
        with self._read() as db:
            row = self._conversation_row(db, continuation_id)
            if row is None:
                raise NotFoundError(f"no conversation with continuation_id {continuation_id!r}")
            return self._messages_of(db, row["id"], continuation_id, before_seq, limit)

    def _get_message(self, message_id: str) -> Message | None:
        row = (
            self._conn()
            .execute(
                f"select {_MESSAGE_COLUMNS} from messages m join conversations c on c.id = m.conversation_id where m.id = ?",
                (message_id,),
            )
            .fetchone()
        )
        return None if row is None else self._message(row)

    # -- messages ----------------------------------------------------------------------

    def _record_message(self, continuation_id: str, msg: PreparedMessage) -> Message:
        try:
            with self._write() as db:
                return self._append(db, continuation_id, msg)
        except _AlreadyStored as stored:  # a retry: the transaction rolled back, nothing written
            return self._same_thread(stored.message, continuation_id)

    def _record_messages(self, items: list[tuple[str, PreparedMessage]]) -> list[Message]:
        out = []
        with self._write() as db:
            for continuation_id, msg in items:
                try:
                    out.append(self._append(db, continuation_id, msg))
                except _AlreadyStored as stored:  # only the failed insert was undone
                    out.append(self._same_thread(stored.message, continuation_id))
        return out

    @staticmethod
    def _same_thread(message: Message, continuation_id: str) -> Message:
        if message.continuation_id != continuation_id:
            raise ConflictError(
                f"message_id {message.id} already belongs to conversation {message.continuation_id!r}, "
                f"not {continuation_id!r}"
            )
        return message

    def _append(self, db: sqlite3.Connection, continuation_id: str, msg: PreparedMessage) -> Message:
        """Write one message inside the caller's transaction: the row, its seq, the thread's
        totals and the rollup. Raises _AlreadyStored when the id is taken (writing nothing)."""
        conv = self._ensure_conversation(db, continuation_id, msg.created_at, msg.tool_name)
        seq = db.execute(
            "select coalesce(max(seq), 0) + 1 from messages where conversation_id = ?", (conv["id"],)
        ).fetchone()[0]
        try:
            self._insert_messages(db, conv["id"], conv["user_id"], [(seq, msg)])
        except ConflictError:
            # The id is the idempotency key: insert first and look only when it collides,
            # so the common case costs no extra lookup.
            existing = db.execute(
                f"select {_MESSAGE_COLUMNS} from messages m join conversations c on c.id = m.conversation_id "
                "where m.id = ?",
                (msg.id,),
            ).fetchone()
            if existing is None:
                raise
            raise _AlreadyStored(self._message(existing)) from None
        u = msg.usage
        db.execute(
            """update conversations set
                   message_count = message_count + 1,
                   total_tokens = total_tokens + :total,
                   input_tokens = input_tokens + :i, cached_input_tokens = cached_input_tokens + :ci,
                   cache_write_tokens = cache_write_tokens + :cw, output_tokens = output_tokens + :o,
                   reasoning_tokens = reasoning_tokens + :r,
                   total_cost = total_cost + :cost,
                   unpriced_messages = unpriced_messages + :unpriced,
                   model_used = case when :model is not null and :at >= updated_at then :model
                                     else coalesce(model_used, :model) end,
                   title = coalesce(title, :title),
                   updated_at = max(updated_at, :at)
               where id = :id""",
            {
                "total": u.total,
                "i": u.input_tokens,
                "ci": u.cached_input_tokens,
                "cw": u.cache_write_tokens,
                "o": u.output_tokens,
                "r": u.reasoning_tokens,
                "cost": msg.cost or 0.0,
                "unpriced": int(msg.unpriced),
                "model": msg.model,
                "at": _ts(msg.created_at),
                "title": msg.title_hint,
                "id": conv["id"],
            },
        )
        db.execute(_ROLLUP_UPSERT, self._rollup_params(conv["user_id"], msg))
        db.executemany(
            _FACET_ADD,
            [
                (kind, value, conv["id"])
                for kind, value in (("model", msg.model), ("provider", msg.provider), ("tool", msg.tool_name))
                if value is not None
            ],
        )
        return Message(
            id=msg.id,
            conversation_id=conv["id"],
            continuation_id=continuation_id,
            seq=seq,
            role=msg.role,
            content=msg.content,
            created_at=msg.created_at,
            tool_name=msg.tool_name,
            provider=msg.provider,
            model=msg.model,
            usage=msg.usage,
            cost_usd=msg.cost,
            price_id=msg.price_id,
            duration_ms=msg.duration_ms,
            files=msg.files,
            images=msg.images,
            metadata=msg.metadata,
            user_id=conv["user_id"],
        )

    @staticmethod
    def _rollup_params(user_id: str | None, msg: PreparedMessage) -> tuple[Any, ...]:
        u = msg.usage
        return (
            day_of(msg.created_at),
            user_id or "",
            msg.model or "",
            msg.provider or "",
            msg.tool_name or "",
            u.input_tokens,
            u.cached_input_tokens,
            u.cache_write_tokens,
            u.output_tokens,
            u.reasoning_tokens,
            msg.cost or 0.0,
            int(msg.unpriced),
            msg.duration_ms or 0,
        )

    @staticmethod
    def _insert_messages(
        db: sqlite3.Connection, conversation_id: str, user_id: str | None, messages: list[tuple[int, PreparedMessage]]
    ) -> None:
        try:
            db.executemany(
                """insert into messages (id, conversation_id, seq, role, content, tool_name, provider, model_used,
                       tokens, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens,
                       reasoning_tokens, cost, price_id, unpriced, duration_ms, files, images, metadata,
                       user_id, created_at, search_extra)
                   values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [
                    (
                        m.id,
                        conversation_id,
                        seq,
                        m.role,
                        m.content,
                        m.tool_name,
                        m.provider,
                        m.model,
                        m.usage.total,
                        m.usage.input_tokens,
                        m.usage.cached_input_tokens,
                        m.usage.cache_write_tokens,
                        m.usage.output_tokens,
                        m.usage.reasoning_tokens,
                        m.cost,
                        m.price_id,
                        int(m.unpriced),
                        m.duration_ms,
                        v.dumps(list(m.files)),
                        v.dumps(list(m.images)),
                        v.dumps(m.metadata),
                        user_id,
                        _ts(m.created_at),
                        m.search_extra,
                    )
                    for seq, m in messages
                ],
            )
        except sqlite3.IntegrityError as exc:
            raise ConflictError(f"cannot store messages of conversation {conversation_id}: {exc}") from None

    # -- listing -----------------------------------------------------------------------

    @staticmethod
    def _conversation_where(filters: ConversationFilters) -> tuple[list[str], dict[str, Any]]:
        where = [_CONVERSATION_FILTERS[name] for name in filters]
        params: dict[str, Any] = {}
        for name, value in filters.items():
            params[name] = _ts(value) if isinstance(value, datetime) else _like(str(value)) if name == "text" else value
        return where, params

    def _list_conversations(
        self, filters: ConversationFilters, order: str, limit: int, after: list[Any] | None
    ) -> list[Conversation]:
        where, params = self._conversation_where(filters)
        column = {"recent": "c.updated_at", "created": "c.created_at", "cost": "c.total_cost"}[order]
        if after is not None:
            where.append(f"({column}, c.id) < (:after_key, :after_id)")
            params["after_key"], params["after_id"] = after
        params["limit"] = limit
        sql = "select c.* from conversations c"
        if where:
            sql += " where " + " and ".join(where)
        sql += f" order by {column} desc, c.id desc limit :limit"
        return [self._conversation(r) for r in self._conn().execute(sql, params)]

    def _count_conversations(self, filters: ConversationFilters) -> int:
        where, params = self._conversation_where(filters)
        if not _INDEXED_FILTERS & filters.keys():  # no index range to walk: start from the facets
            where = [_FACET_DRIVEN.get(name, clause) for name, clause in zip(filters, where, strict=True)]
        sql = "select count(*) from conversations c" + (" where " + " and ".join(where) if where else "")
        return int(self._conn().execute(sql, params).fetchone()[0])

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
        expr = to_fts5(clauses)
        if expr is None:
            return []
        where, params = self._search_where(expr, since, until, model, role, continuation_id)
        params["limit"] = limit
        # Join messages only when a filter reads it: probing 1M rows by rowid costs more than
        # the search itself.
        joined = "messages_fts join messages m on m.rowid = messages_fts.rowid"
        filtered = len(where) > 1
        db = self._conn()
        # Bounded like Postgres' statement_timeout: SQLite calls the handler every 10,000
        # instructions, and a true result stops the statement ("interrupted").
        deadline = time.monotonic() + SEARCH_TIME_LIMIT_S
        db.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
        try:
            return self._ranked_hits(db, clauses, expr, where, params, joined, filtered, order)
        except sqlite3.OperationalError as exc:
            if str(exc) != "interrupted":
                raise
            raise ValidationError("query", SEARCH_STOPPED) from None
        finally:
            db.set_progress_handler(None, 0)

    @staticmethod
    def _search_where(
        expr: str,
        since: datetime | None,
        until: datetime | None,
        model: str | None,
        role: str | None,
        continuation_id: str | None,
    ) -> tuple[list[str], dict[str, Any]]:
        """The match and the filters of a search (``m``: messages), with their parameters."""
        where = ["messages_fts match :q"]
        params: dict[str, Any] = {"q": expr}
        if since:
            where.append("m.created_at >= :since")
            params["since"] = _ts(since)
        if until:
            where.append("m.created_at < :until")
            params["until"] = _ts(until)
        if model:
            where.append("m.model_used = :model")
            params["model"] = model
        if role:
            where.append("m.role = :role")
            params["role"] = role
        if continuation_id:
            where.append("m.conversation_id = (select id from conversations where continuation_id = :cid)")
            params["cid"] = continuation_id
        return where, params

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
        expr = to_fts5(clauses)
        if expr is None:
            return 0
        where, params = self._search_where(expr, since, until, model, role, continuation_id)
        # As in _search: the index alone unless a filter reads the message row.
        source = "messages_fts join messages m on m.rowid = messages_fts.rowid" if len(where) > 1 else "messages_fts"
        db = self._conn()
        deadline = time.monotonic() + SEARCH_TIME_LIMIT_S  # the search's own bound (see _search)
        db.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
        try:
            with self._read():
                row = db.execute(
                    f"select count(*) from (select 1 from {source} where {' and '.join(where)} limit :count_cap)",
                    {**params, "count_cap": SEARCH_COUNT_CAP + 1},
                ).fetchone()
        except sqlite3.OperationalError as exc:
            if str(exc) != "interrupted":
                raise
            raise ValidationError("query", SEARCH_STOPPED) from None
        finally:
            db.set_progress_handler(None, 0)
        return int(row[0])

    def _ranked_hits(
        self,
        db: sqlite3.Connection,
        clauses: list[Clause],
        expr: str,
        where: list[str],
        params: dict[str, Any],
        joined: str,
        filtered: bool,
        order: str,
    ) -> list[SearchHit]:
        with self._read():
            cutoff = db.execute(
                f"select messages_fts.rowid from {joined if filtered else 'messages_fts'} "
                f"where {' and '.join(where)} order by messages_fts.rowid desc limit 1 offset :window",
                {
                    **params,
                    "window": max(SEARCH_RANK_WINDOW if order == "rank" else _RECENT_WINDOW, params["limit"]) - 1,
                },
            ).fetchone()
            if cutoff is not None:
                where.append("messages_fts.rowid >= :cutoff")
                params["cutoff"] = cutoff[0]
            if order == "recent":
                ranked = db.execute(
                    f"select messages_fts.rowid, 0.0 from {joined} where {' and '.join(where)} "
                    "order by m.created_at desc, m.rowid desc limit :limit",
                    params,
                ).fetchall()
            elif sum(len(t.split()) for t in expr.split('"')[1::2]) <= _BM25_MAX_WORDS:
                ranked = db.execute(
                    f"select messages_fts.rowid, bm25(messages_fts) as score from {joined if filtered else 'messages_fts'} "
                    f"where {' and '.join(where)} order by score, messages_fts.rowid desc limit :limit",
                    params,
                ).fetchall()
            else:
                ranked = self._dense_ranked(db, where, params, joined if filtered else "messages_fts")
            if not ranked:
                return []
            ids = [rowid for rowid, _ in ranked]
            # Every snippet from one FTS query over the hits' rowid range: a query per hit
            # repeats the whole match each time, which for a prefix (``migrat*``, a merge of
            # every matching term's list) cost 20 x 20 ms. The unary + keeps the IN list a
            # filter, not a lookup FTS5 would run once per id.
            snippets = dict(
                db.execute(
                    f"select messages_fts.rowid, snippet(messages_fts, 0, '{MARK_OPEN}', '{MARK_CLOSE}', '…', 24) "
                    "from messages_fts where messages_fts match :q and messages_fts.rowid between :lo and :hi "
                    "and +messages_fts.rowid in (select value from json_each(:ids))",
                    {"q": expr, "lo": min(ids), "hi": max(ids), "ids": json.dumps(ids)},
                ).fetchall()
            )
            rows = {
                r[0]: r[1:]
                for r in db.execute(
                    f"select m.rowid, {_MESSAGE_COLUMNS}, c.title, m.search_extra is not null "
                    "from messages m join conversations c on c.id = m.conversation_id "
                    "where m.rowid in (select value from json_each(:ids))",
                    {"ids": json.dumps(ids)},
                )
            }
            hits = []
            for rowid, score in ranked:
                row = rows[rowid]
                message = self._message(row)
                # CJK: the index text is character pairs, so cut the snippet from the original.
                fragments = python_fragments(message.content, clauses) if row[24] else marked_fragments(snippets[rowid])
                hits.append(
                    SearchHit(message=message, conversation_title=row[23], score=-float(score), fragments=fragments)
                )
        return hits

    @staticmethod
    def _dense_ranked(
        db: sqlite3.Connection, where: list[str], params: dict[str, Any], source: str
    ) -> list[tuple[int, float]]:
        """The window ranked by how densely it matches, for queries of many phrases.

        bm25 weighs each phrase by its rarity, which FTS5 finds by running every phrase of
        the query over the whole table (64 common words: 64 passes over a quarter of a
        million rows each, seconds at a million messages). This score reads only the rows
        of the window: bm25's saturation of the matches counted in the row (highlight()
        marks them from the positions the match already holds) over the row's length, with
        every phrase weighing the same. Scores are negative like bm25's (lower is better).
        """
        rows = db.execute(
            "select rowid, length(h) - length(replace(h, char(57344), '')), length(h) from ("
            f"select messages_fts.rowid, highlight(messages_fts, 0, char(57344), '') as h from {source} "
            f"where {' and '.join(where)})",
            params,
        ).fetchall()
        if not rows:
            return []
        average = sum(n for _, _, n in rows) / len(rows) or 1.0
        k1, b = 1.2, 0.75
        scored = [
            (rowid, -(tf * (k1 + 1) / (tf + k1 * (1 - b + b * n / average)) if tf else 0.0)) for rowid, tf, n in rows
        ]
        scored.sort(key=lambda r: (r[1], -r[0]))
        return scored[: params["limit"]]

    # -- files -------------------------------------------------------------------------

    def _put_bytes(self, stream: BinaryIO, owner: str | None) -> HeldBlob:
        # Only spooled and hashed here: the bytes are placed by _record_upload, in the same
        # write transaction as the row (see there).
        if self.read_only:
            raise ReadOnlyStoreError(f"{self.path} is read-only; nothing was written")
        return hold(stream, owner, self.files.spool_dir, fsync=True)

    def _record_upload(self, **f: Any) -> StoredFile:
        created = _ts(f["created_at"])
        held = f.get("blob")
        with self._write() as db:
            # The bytes are placed (or found) while this transaction holds SQLite's write lock,
            # which prune's byte sweep holds too while it checks that no row refers to an
            # object and deletes it (_sweep_bytes). The lock is the database file's, so this
            # holds across processes: either the sweep runs first and we place the bytes again
            # from the held copy, or our row is committed first and the sweep keeps them. The
            # row is committed only after its bytes are in place, so a crash leaves at worst
            # bytes without a row, never a row without bytes.
            if isinstance(held, HeldBlob):
                self.files.place(held.spooled, f["storage_path"])
            conv_id = None
            if f["continuation_id"]:
                conv_id = self._ensure_conversation(db, f["continuation_id"], f["created_at"], None)["id"]
            row = db.execute("select * from files where storage_path = ?", (f["storage_path"],)).fetchone()
            deduplicated = row is not None
            if row is None:
                file_id = file_id_for(f["storage_path"])
                db.execute(
                    """insert into files (id, file_hash, bucket_name, storage_path, filename, mime_type, file_size,
                           user_id, session_id, conversation_id, tags, description, metadata, created_at, updated_at)
                       values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    (
                        file_id,
                        f["blob_sha256"],
                        self.bucket_name,
                        f["storage_path"],
                        f["filename"],
                        f["mime_type"],
                        f["size"],
                        f["user_id"],
                        f["session_id"],
                        conv_id,
                        v.dumps(list(f["tags"])),
                        f["description"],
                        v.dumps(f["metadata"]),
                        created,
                        created,
                    ),
                )
            else:
                file_id = row["id"]
            upload_id = f.get("upload_id") or str(uuid.uuid4())
            db.execute(
                """insert into file_uploads (id, file_id, filename, mime_type, file_size, user_id, session_id,
                       conversation_id, tags, description, metadata, created_at, deduplicated)
                   values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    upload_id,
                    file_id,
                    f["filename"],
                    f["mime_type"],
                    f["size"],
                    f["user_id"],
                    f["session_id"],
                    conv_id,
                    v.dumps(list(f["tags"])),
                    f["description"],
                    v.dumps(f["metadata"]),
                    created,
                    int(deduplicated),
                ),
            )
            if conv_id:
                db.execute(
                    "insert or ignore into conversation_files (conversation_id, file_id, created_at) values (?, ?, ?)",
                    (conv_id, file_id, created),
                )
        return StoredFile(
            id=file_id,
            file_hash=f["blob_sha256"],
            size=f["size"],
            mime_type=f["mime_type"],
            filename=f["filename"],
            storage_path=f["storage_path"],
            bucket_name=self.bucket_name,
            created_at=f["created_at"],
            upload_id=upload_id,
            deduplicated=deduplicated,
            user_id=f["user_id"],
            session_id=f["session_id"],
            continuation_id=f["continuation_id"],
            tags=f["tags"],
            description=f["description"],
            metadata=f["metadata"],
        )

    _UPLOAD_SELECT = """select f.id, f.file_hash, u.file_size, f.storage_path, f.bucket_name, u.user_id, u.mime_type,
               u.filename, u.created_at, u.id as upload_id, u.session_id, u.tags, u.description, u.metadata,
               u.deduplicated, c.continuation_id
        from file_uploads u join files f on f.id = u.file_id
        left join conversations c on c.id = u.conversation_id"""

    def _storage_path_of(self, file_id: str) -> str | None:
        row = (
            self._conn()
            .execute(
                "select storage_path from files where id = ? "
                "union all select f.storage_path from file_uploads u join files f on f.id = u.file_id where u.id = ?",
                (file_id, file_id),
            )
            .fetchone()
        )
        return None if row is None else str(row[0])

    def _open_file(self, file_id: str) -> BinaryIO:
        path = self._storage_path_of(file_id)
        if path is None:
            raise NotFoundError(f"no file with id {file_id}")
        return self.files.open(path)

    def _get_file(self, file_id: str) -> StoredFile | None:
        db = self._conn()
        row = db.execute(self._UPLOAD_SELECT + " where u.id = ?", (file_id,)).fetchone()
        if row is None:
            row = db.execute("select f.*, null as upload_id from files f where f.id = ?", (file_id,)).fetchone()
        return None if row is None else self._file(row)

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
        where: list[str] = []
        params: dict[str, Any] = {"limit": limit}
        if since:
            where.append("u.created_at >= :since")
            params["since"] = _ts(since)
        if until:
            where.append("u.created_at < :until")
            params["until"] = _ts(until)
        if mime_type:
            where.append("u.mime_type like :mime escape '\\'")
            params["mime"] = _like(mime_type)[1:] if mime_type.endswith("/") else _like(mime_type)[1:-1]
        if continuation_id:
            where.append(
                "u.file_id in (select cf.file_id from conversation_files cf join conversations cc "
                "on cc.id = cf.conversation_id where cc.continuation_id = :cid)"
            )
            params["cid"] = continuation_id
        if session_id:
            where.append("u.session_id = :sid")
            params["sid"] = session_id
        if unused:
            where.append("not exists (select 1 from conversation_files cf where cf.file_id = u.file_id)")
        column = "u.created_at" if order == "recent" else "u.file_size"
        if after is not None:
            where.append(f"({column}, u.id) < (:after_key, :after_id)")
            params["after_key"], params["after_id"] = after
        sql = self._UPLOAD_SELECT + (" where " + " and ".join(where) if where else "")
        sql += f" order by {column} desc, u.id desc limit :limit"
        return [self._file(r) for r in self._conn().execute(sql, params)]

    def _file_conversations(self, file_id: str) -> list[Conversation]:
        rows = (
            self._conn()
            .execute(
                """select c.* from conversation_files cf join conversations c on c.id = cf.conversation_id
               where cf.file_id = ? or cf.file_id = (select file_id from file_uploads where id = ?)
               order by c.updated_at desc""",
                (file_id, file_id),
            )
            .fetchall()
        )
        return [self._conversation(r) for r in rows]

    # -- usage -------------------------------------------------------------------------

    _PERIOD_SQL: ClassVar[dict[str, str]] = {
        "day": "day",
        "week": "date(day, 'weekday 0', '-6 days')",
        "month": "substr(day, 1, 7) || '-01'",
    }

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
        select = [self._PERIOD_SQL.get(k, f"nullif({k}, '')") for k in keys]
        where, params = self._day_where(first_day, last_day)
        for key, value in (("model", model), ("provider", provider), ("tool_name", tool_name)):
            if value is not None:
                where.append(f"{key} = :{key}")
                params[key] = value
        sums = (
            "sum(messages), sum(input_tokens), sum(cached_input_tokens), sum(cache_write_tokens), "
            "sum(output_tokens), sum(reasoning_tokens), "
            "sum(input_tokens + cached_input_tokens + cache_write_tokens + output_tokens + reasoning_tokens), "
            "sum(cost_usd), sum(unpriced_messages)"
        )
        return self._grouped("usage_daily", select, sums, where, params)

    def _storage_rows(self, keys: list[str], *, first_day: str | None, last_day: str | None) -> list[Sequence[Any]]:
        select = [self._PERIOD_SQL.get(k, f"nullif({k}, '')") for k in keys]
        where, params = self._day_where(first_day, last_day)
        source = """(select substr(created_at, 1, 10) as day, mime_type, coalesce(user_id, '') as user_id,
                        1 as files, file_size as bytes, 0 as uploads, 0 as logical_bytes from files
                     union all
                     select substr(created_at, 1, 10), mime_type, coalesce(user_id, ''), 0, 0, 1, file_size
                     from file_uploads)"""
        return self._grouped(source, select, "sum(files), sum(bytes), sum(uploads), sum(logical_bytes)", where, params)

    @staticmethod
    def _day_where(first_day: str | None, last_day: str | None) -> tuple[list[str], dict[str, Any]]:
        where: list[str] = []
        params: dict[str, Any] = {}
        if first_day:
            where.append("day >= :first_day")
            params["first_day"] = first_day
        if last_day:
            where.append("day <= :last_day")
            params["last_day"] = last_day
        return where, params

    def _grouped(
        self, source: str, select: list[str], sums: str, where: list[str], params: dict[str, Any]
    ) -> list[Sequence[Any]]:
        sql = f"select {', '.join([*select, sums])} from {source}"
        if where:
            sql += " where " + " and ".join(where)
        if select:
            positions = ", ".join(str(i + 1) for i in range(len(select)))
            sql += f" group by {positions} order by {positions}"
            return self._conn().execute(sql, params).fetchall()
        row = self._conn().execute(sql, params).fetchone()
        return [tuple(x or 0 for x in row)]

    def _facets(self) -> dict[str, list[str]]:
        db = self._conn()

        def distinct(column: str) -> list[str]:
            return [
                r[0] for r in db.execute(f"select distinct {column} from usage_daily where {column} != '' order by 1")
            ]

        tags = [
            r[0]
            for r in db.execute(
                "select distinct j.value from conversations c, json_each(c.tags) j order by 1 limit 1000"
            )
        ]
        return {
            "models": distinct("model"),
            "providers": distinct("provider"),
            "tools": distinct("tool_name"),
            "tags": tags,
        }

    # -- budgets and anomalies (persistence/insights.py) -------------------------------

    @staticmethod
    def _budget(r: Sequence[Any]) -> Budget:
        return Budget(r[0], r[1], r[2] or None, r[3], float(r[4]), _dt(r[5]), _dt(r[6]))

    _BUDGET_SELECT = "select id, scope, key, period, limit_usd, created_at, updated_at from budgets"

    def _save_budget(self, budget: Budget) -> Budget:
        with self._write() as db:
            row = db.execute(
                "insert into budgets (id, scope, key, period, limit_usd, created_at, updated_at) "
                "values (:id, :scope, :key, :period, :limit_usd, :at, :at) "
                "on conflict (scope, key, period) do update set limit_usd = excluded.limit_usd, "
                "updated_at = excluded.updated_at "
                "returning id, scope, key, period, limit_usd, created_at, updated_at",
                {
                    "id": budget.id,
                    "scope": budget.scope,
                    "key": budget.key or "",
                    "period": budget.period,
                    "limit_usd": budget.limit_usd,
                    "at": _ts(budget.updated_at),
                },
            ).fetchone()
        return self._budget(row)

    def _list_budgets(self) -> list[Budget]:
        rows = self._conn().execute(self._BUDGET_SELECT + " order by scope, key, period, id").fetchall()
        return [self._budget(r) for r in rows]

    def _delete_budget(self, budget_id: str) -> bool:
        with self._write() as db:
            return db.execute("delete from budgets where id = ?", (budget_id,)).rowcount > 0

    @staticmethod
    def _day_after(day: str) -> str:
        return (date.fromisoformat(day) + timedelta(days=1)).isoformat()

    def _tag_costs(self, tags: list[str], *, first_day: str, last_day: str) -> dict[str, float]:
        # Timestamps are fixed-width ISO text starting with the day, so days bound them as text
        # (and the created_at index serves the range).
        db = self._conn()
        rows = db.execute(
            "select j.value, total(c.total_cost) from conversations c, json_each(c.tags) j "
            "where c.created_at >= :first and c.created_at < :after "
            "and j.value in (select value from json_each(:tags)) group by j.value",
            {"first": first_day, "after": self._day_after(last_day), "tags": json.dumps(tags)},
        ).fetchall()
        return {r[0]: float(r[1]) for r in rows}

    def _thread_costs(self, first_day: str, last_day: str) -> list[Sequence[Any]]:
        # Read in table order, not through the created_at index: the window (at least 29 days)
        # is a large share of most stores, and one pass over the table beats a lookup per row
        # (0.4 s against 2.8 s for 67,000 of 119,000 threads, on the million-message store).
        db = self._conn()
        return db.execute(
            "select continuation_id, title, tool_name, substr(created_at, 1, 10), total_cost, total_tokens "
            "from conversations not indexed where created_at >= :first and created_at < :after",
            {"first": first_day, "after": self._day_after(last_day)},
        ).fetchall()

    _TOP_THREAD_COLUMNS: ClassVar[dict[str, str]] = {
        "model": "m.model_used",
        "provider": "m.provider",
        "tool_name": "m.tool_name",
    }

    def _top_threads(self, day: str, dimension: str, key: str, limit: int) -> list[Sequence[Any]]:
        column = self._TOP_THREAD_COLUMNS[dimension]  # a fixed fragment, never the caller's text
        db = self._conn()
        return db.execute(
            "select c.continuation_id, c.title, c.tool_name, total(m.cost), sum(m.tokens) "
            "from messages m join conversations c on c.id = m.conversation_id "
            f"where m.created_at >= :first and m.created_at < :after and {column} = :key "
            "group by c.id order by 4 desc, 5 desc limit :limit",
            {"first": day, "after": self._day_after(day), "key": key, "limit": limit},
        ).fetchall()

    # -- maintenance -------------------------------------------------------------------

    def _rebuild(self, db: sqlite3.Connection, days: set[str], conversation_ids: set[str]) -> None:
        """Recompute the rollup of whole days and the totals of threads from messages."""
        for day in sorted(days):
            db.execute("delete from usage_daily where day = ?", (day,))
            db.execute(_ROLLUP_REBUILD, {"day": day})
        for cid in conversation_ids:
            db.execute(_TOTALS_REBUILD, {"id": cid})

    def _reprice(self, *, since: datetime | None, until: datetime | None, model: str | None) -> RepriceResult:
        self._prices = None  # read the table afresh
        prices = self.prices
        where = ["(tokens > 0 or cost is not null)"]
        params: dict[str, Any] = {}
        if since:
            where.append("created_at >= :since")
            params["since"] = _ts(since)
        if until:
            where.append("created_at < :until")
            params["until"] = _ts(until)
        if model:
            where.append("model_used = :model")
            params["model"] = model
        checked = changed = unpriced_before = unpriced_after = 0
        cost_before = cost_after = 0.0
        days: set[str] = set()
        conversations: set[str] = set()
        with self._write() as db:
            rows = db.execute(
                "select rowid, conversation_id, model_used, created_at, input_tokens, cached_input_tokens, "
                "cache_write_tokens, output_tokens, reasoning_tokens, cost, price_id, unpriced, "
                f"json_type(metadata, '$.{UNREAD_USAGE}') is not null from messages where " + " and ".join(where),
                params,
            ).fetchall()
            updates = []
            for r in rows:
                checked += 1
                priced = price_message(
                    prices.lookup, r[2], _dt(r[3]), Usage(r[4], r[5], r[6], r[7], r[8]), usage_unread=bool(r[12])
                )
                cost_before += r[9] or 0.0
                cost_after += priced.cost or 0.0
                unpriced_before += r[11]
                unpriced_after += priced.unpriced
                if priced.cost != r[9] or priced.price_id != r[10]:
                    changed += 1
                    updates.append((priced.cost, priced.price_id, int(priced.unpriced), r[0]))
                    days.add(r[3][:10])
                    conversations.add(r[1])
            db.executemany("update messages set cost = ?, price_id = ?, unpriced = ? where rowid = ?", updates)
            self._rebuild(db, days, conversations)
        return RepriceResult(
            messages_checked=checked,
            messages_changed=changed,
            cost_before=round(cost_before, 10),
            cost_after=round(cost_after, 10),
            unpriced_before=unpriced_before,
            unpriced_after=unpriced_after,
        )

    def _iter_conversations(self, since: datetime | None, until: datetime | None) -> Iterator[Conversation]:
        where, params = [], {}
        if since:
            where.append("created_at >= :since")
            params["since"] = _ts(since)
        if until:
            where.append("created_at < :until")
            params["until"] = _ts(until)
        sql = "select continuation_id from conversations" + (" where " + " and ".join(where) if where else "")
        ids = [r[0] for r in self._conn().execute(sql + " order by created_at, id", params)]
        for cid in ids:
            conv = self._get_conversation(cid, None)
            if conv is not None and conv.files:
                # Its redacted uploads (StoredFile has no redacted_at): for the export record.
                redacted = self._conn().execute(
                    "select id, redacted_at from file_uploads where conversation_id = ? and redacted_at is not null",
                    (conv.id,),
                )
                conv = with_upload_redactions(conv, {r[0]: _dt(r[1]) for r in redacted})
            if conv is not None:
                yield conv

    def _import_batch(self, batch: list[ParsedRecord]) -> ImportResult:
        convs = convs_skipped = msgs = msgs_skipped = files = 0
        undecided: list[str] = []  # new uploads whose record does not say whether they were deduplicated
        # Per thread: its owner and the batch's messages for it (see _import_placed).
        incoming: dict[str, tuple[str | None, list[_Incoming]]] = {}
        with self._write() as db:
            after = db.execute("select coalesce(max(rowid), 0) from messages").fetchone()[0]
            threads_after = db.execute("select coalesce(max(rowid), 0) from conversations").fetchone()[0]
            for i, rec in enumerate(batch):
                c = rec.conversation
                redacted_at, message_redactions, upload_redactions = redactions_of(rec)
                row = self._conversation_row(db, c.continuation_id)
                if row is None:
                    self._insert_conversation(db, c, updated_at=rec.updated_at, model=rec.model, facets=False)
                    if redacted_at is not None:
                        db.execute("update conversations set redacted_at = ? where id = ?", (_ts(redacted_at), c.id))
                    conv_id, user_id = c.id, c.user_id
                    convs += 1
                else:
                    conv_id, user_id = row["id"], row["user_id"]
                    convs_skipped += 1
                pending = incoming.setdefault(conv_id, (user_id, []))[1]
                pending.extend(
                    (i, seq, pos, m, message_redactions.get(m.id)) for pos, (seq, m) in enumerate(rec.messages)
                )
                for f in rec.files:
                    files += self._import_file(db, f, conv_id, undecided, upload_redactions.get(f.upload_id or ""))
            for conv_id, (user_id, pending) in incoming.items():
                new = self._import_placed(db, conv_id, pending)
                msgs_skipped += len(pending) - len(new)
                if new:
                    self._insert_messages(db, conv_id, user_id, [(seq, m) for seq, m, _ in new])
                    msgs += len(new)
                    db.executemany(
                        "update messages set redacted_at = ? where id = ?",
                        [(_ts(at), m.id) for _, m, at in new if at is not None],
                    )
            db.executemany(
                """update file_uploads set deduplicated = exists (
                       select 1 from file_uploads e where e.file_id = file_uploads.file_id
                           and (e.created_at, e.id) < (file_uploads.created_at, file_uploads.id))
                   where id = ?""",
                [(upload_id,) for upload_id in undecided],
            )
            if msgs:
                db.execute(_ROLLUP_ADD, {"after": after})
                db.execute(_TOTALS_ADD, {"after": after})
            # Rowids only grow inside this transaction: the rows after the watermarks are the batch's.
            db.execute(_FACETS_ADD, {"after": after, "threads_after": threads_after})
        return ImportResult(convs, convs_skipped, msgs, msgs_skipped, files)

    @staticmethod
    def _import_placed(
        db: sqlite3.Connection, conv_id: str, pending: list[_Incoming]
    ) -> list[tuple[int, PreparedMessage, datetime | None]]:
        """The batch's messages for a thread that it does not hold yet (by id; an id given twice:
        its first copy), each with its seq. As exported when every one is free; when any is
        taken (the thread holds other messages at those turns, or the batch gives one twice),
        all of them go after the thread's last turn, in their records' order: nothing stored
        moves, and the imported turns keep their order. As public.import_batch does."""
        stored = db.execute("select id, seq from messages where conversation_id = ?", (conv_id,)).fetchall()
        seen = {r[0] for r in stored}
        fresh: list[_Incoming] = []
        for item in pending:  # in record order, each record's messages as given
            if item[3].id not in seen:
                seen.add(item[3].id)
                fresh.append(item)
        taken = {r[1] for r in stored}
        seqs = [item[1] for item in fresh]
        if taken.isdisjoint(seqs) and len(set(seqs)) == len(seqs):
            return [(seq, m, at) for _, seq, _, m, at in fresh]
        last = max(taken, default=0)
        ordered = sorted(fresh, key=lambda item: item[:3])
        return [(last + n, m, at) for n, (_, _, _, m, at) in enumerate(ordered, start=1)]

    def _import_file(
        self, db: sqlite3.Connection, f: Any, conv_id: str, undecided: list[str], redacted_at: datetime | None
    ) -> int:
        created = _ts(f.created_at)
        row = db.execute("select id from files where storage_path = ? or id = ?", (f.storage_path, f.id)).fetchone()
        file_id = row[0] if row else f.id
        if row is None:
            db.execute(
                """insert into files (id, file_hash, bucket_name, storage_path, filename, mime_type, file_size,
                       user_id, session_id, conversation_id, tags, description, metadata, created_at, updated_at)
                   values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    f.id,
                    f.file_hash,
                    f.bucket_name,
                    f.storage_path,
                    f.filename,
                    f.mime_type,
                    f.size,
                    f.user_id,
                    f.session_id,
                    conv_id,
                    v.dumps(list(f.tags)),
                    f.description,
                    v.dumps(f.metadata),
                    created,
                    created,
                ),
            )
        else:
            # The stored object describes its first upload (as a live write does): records
            # arrive in thread order, not upload order, so an earlier upload takes it over.
            db.execute(
                """update files set filename = ?, mime_type = ?, session_id = ?, conversation_id = ?, tags = ?,
                       description = ?, metadata = ?, created_at = ?, updated_at = ?
                   where id = ? and created_at > ?""",
                (
                    f.filename,
                    f.mime_type,
                    f.session_id,
                    conv_id,
                    v.dumps(list(f.tags)),
                    f.description,
                    v.dumps(f.metadata),
                    created,
                    created,
                    file_id,
                    created,
                ),
            )
        inserted = 0
        if f.upload_id:
            # As exported; an export without the flag: whether an earlier upload of the same
            # object is stored (the rule 0004 backfilled with), decided once the batch is in.
            inserted = db.execute(
                """insert or ignore into file_uploads (id, file_id, filename, mime_type, file_size, user_id, session_id,
                       conversation_id, tags, description, metadata, created_at, deduplicated, redacted_at)
                   values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    f.upload_id,
                    file_id,
                    f.filename,
                    f.mime_type,
                    f.size,
                    f.user_id,
                    f.session_id,
                    conv_id,
                    v.dumps(list(f.tags)),
                    f.description,
                    v.dumps(f.metadata),
                    created,
                    int(bool(f.deduplicated)),
                    None if redacted_at is None else _ts(redacted_at),
                ),
            ).rowcount
            if inserted > 0 and f.deduplicated is None:
                undecided.append(f.upload_id)
        db.execute(
            "insert or ignore into conversation_files (conversation_id, file_id, created_at) values (?, ?, ?)",
            (conv_id, file_id, created),
        )
        return max(inserted, 0)

    def _doctor(self, progress: DoctorProgress | None = None) -> dict[str, Any]:
        db = self._conn()
        # Progress in checks: the integrity check, the counts, then one per stored file.
        tick = progress or (lambda step, done, total: None)
        try:
            total = 2 + int(db.execute("select count(*) from files").fetchone()[0])
        except sqlite3.DatabaseError:
            total = 2
        size = self.path.stat().st_size if self.path.exists() else 0
        tick(f"integrity check of {size / 1e6:,.0f} MB", 0, total)
        # The integrity check runs first; on a damaged file every figure below is read
        # separately and reported as None when it cannot be, so doctor reports, never crashes.
        quick_check = self._quick_check(db)
        tick("counts", 1, total)

        def figure(read: Any) -> Any:
            try:
                return read()
            except sqlite3.DatabaseError as exc:
                self._translate(exc)  # records the damage
                return None

        def count(table: str) -> int | None:
            return figure(lambda: int(db.execute(f"select count(*) from {table}").fetchone()[0]))

        wal = self.path.with_name(self.path.name + "-wal")
        unpriced = figure(
            lambda: db.execute(
                "select model, sum(unpriced_messages) from usage_daily where unpriced_messages > 0 "
                "group by model order by 2 desc"
            ).fetchall()
        )

        def missing_bytes() -> list[str]:
            tick("file bytes", 2, total)
            missing = []
            for done, r in enumerate(db.execute(_FILES_WITH_BYTES), start=3):
                if not self.files.exists(r[0]):
                    missing.append(r[0])
                if done % 200 == 0:
                    tick("file bytes", min(done, total), total)
            tick("file bytes", total, total)
            return missing

        missing = figure(missing_bytes)
        report = {
            "backend": self.backend,
            "url": self.url,
            "read_only": self.read_only,
            "sqlite_version": sqlite3.sqlite_version,
            "journal_mode": figure(lambda: db.execute("pragma journal_mode").fetchone()[0]),
            "quick_check": quick_check,
            "migrations": figure(lambda: [r[0] for r in db.execute("select name from _migrations order by rowid")]),
            "database_bytes": self.path.stat().st_size if self.path.exists() else 0,
            "wal_bytes": wal.stat().st_size if wal.exists() else 0,
            "files_dir": str(self.files.root),
            "conversations": count("conversations"),
            "messages": count("messages"),
            "files": count("files"),
            "uploads": count("file_uploads"),
            "prices": count("model_prices"),
            "last_message_at": figure(lambda: db.execute("select max(created_at) from messages").fetchone()[0]),
            "unpriced_models": None if unpriced is None else {(m or "(no model)"): n for m, n in unpriced},
            "files_missing_bytes": None if missing is None else missing[:20],
            "files_missing_bytes_count": None if missing is None else len(missing),
            "damaged": self.damage is not None,
        }
        if self.damage is not None:
            report["damage"] = self.damage
            report["recover_command"] = self.recover_command()
        return report

    def _doctor_quick(self) -> dict[str, Any]:
        """What needs no page-by-page read: the counts (messages from the daily rollup, which
        every write keeps current), the damage the checks at open or any statement found, and
        the last full check (store_meta)."""
        db = self._conn()
        wal = self.path.with_name(self.path.name + "-wal")
        report: dict[str, Any] = {
            "backend": self.backend,
            "url": self.url,
            "read_only": self.read_only,
            "check": "quick",
            "database_bytes": self.path.stat().st_size if self.path.exists() else 0,
            "wal_bytes": wal.stat().st_size if wal.exists() else 0,
        }
        try:
            with self._read():
                counts = db.execute(
                    """select (select count(*) from conversations), (select coalesce(sum(messages), 0) from usage_daily),
                              (select count(*) from files), (select count(*) from file_uploads),
                              (select max(created_at) from messages)"""
                ).fetchone()
                unpriced = db.execute(
                    "select model, sum(unpriced_messages) from usage_daily where unpriced_messages > 0 "
                    "group by model order by 2 desc"
                ).fetchall()
                last = db.execute("select value from store_meta where key = 'last_full_check'").fetchone()
        except sqlite3.DatabaseError as exc:
            self._translate(exc)  # records the damage, reported below
            counts, unpriced, last = (None,) * 5, None, None
        report.update(zip(("conversations", "messages", "files", "uploads", "last_message_at"), counts, strict=True))
        report["unpriced_models"] = None if unpriced is None else {(m or "(no model)"): n for m, n in unpriced}
        report["last_full_check"] = None if last is None else json.loads(last[0])
        report["damaged"] = self.damage is not None
        if self.damage is not None:
            report["quick_check"] = self.damage
            report["damage"] = self.damage
            report["recover_command"] = self.recover_command()
        return report

    def _record_full_check(self, findings: dict[str, Any]) -> bool:
        if self.read_only or self.damage is not None:
            return False  # nothing is written into a damaged file; the CLI showed the findings
        with self._write() as db:
            db.execute(
                "insert into store_meta (key, value) values ('last_full_check', ?) "
                "on conflict (key) do update set value = excluded.value",
                (v.dumps(findings),),
            )
        return True

    def _prune(self, cutoff: datetime, *, dry_run: bool) -> PruneResult:
        limit = _ts(cutoff)
        doomed_paths: list[str] = []

        class _DryRun(Exception):
            pass

        counts: dict[str, int] = {}
        try:
            with self._write() as db:
                db.execute("create temp table if not exists prune_conversations (id text primary key)")
                db.execute("delete from prune_conversations")
                db.execute(
                    "insert into prune_conversations select id from conversations where updated_at < ?", (limit,)
                )
                days = {
                    r[0]
                    for r in db.execute(
                        "select distinct substr(created_at, 1, 10) from messages "
                        "where conversation_id in (select id from prune_conversations)"
                    )
                }
                counts["conversations"] = db.execute("select count(*) from prune_conversations").fetchone()[0]
                counts["messages"] = db.execute(
                    "select count(*) from messages where conversation_id in (select id from prune_conversations)"
                ).fetchone()[0]
                # files.conversation_id (the first upload's thread, as in the plan) has no foreign key.
                db.execute(
                    "update files set conversation_id = null where conversation_id in (select id from prune_conversations)"
                )
                db.execute("delete from conversations where id in (select id from prune_conversations)")
                # No foreign key on thread_facets (see schema.THREAD_FACETS_TABLE): one pass here.
                db.execute("delete from thread_facets where conversation_id in (select id from prune_conversations)")
                # Files no remaining thread uses and nobody uploaded since the cutoff.
                doomed = db.execute(
                    """select f.id, f.storage_path, f.file_size,
                              (select count(*) from file_uploads u where u.file_id = f.id)
                       from files f
                       where not exists (select 1 from conversation_files cf where cf.file_id = f.id)
                         and not exists (select 1 from file_uploads u where u.file_id = f.id and u.created_at >= ?)""",
                    (limit,),
                ).fetchall()
                counts["files"] = len(doomed)
                counts["bytes"] = sum(r[2] for r in doomed)
                counts["uploads"] = sum(r[3] for r in doomed)
                db.executemany("delete from files where id = ?", [(r[0],) for r in doomed])
                doomed_paths = [r[1] for r in doomed]
                self._rebuild(db, days, set())
                db.execute("delete from prune_conversations")
                if dry_run:
                    raise _DryRun
        except _DryRun:
            doomed_paths = []
        # Bytes go after the rows are gone: a crash in between leaves unreferenced bytes
        # (harmless, and re-used by the next upload of the same content), never a row without bytes.
        self._sweep_bytes(doomed_paths)
        return PruneResult(cutoff=cutoff, dry_run=dry_run, **counts)

    def _redact(
        self, *, continuation_ids: list[str] | None, user_id: str | None, cutoff: datetime | None, dry_run: bool
    ) -> RedactResult:
        # Its own module: the erasure, the byte sweep and the vacuum (persistence/redaction.py).
        return redact(
            self,
            continuation_ids=continuation_ids,
            user_id=user_id,
            cutoff=None if cutoff is None else _ts(cutoff),
            at=_ts(now()),
            dry_run=dry_run,
        )

    SWEEP_BATCH = 100  # objects deleted per write transaction: uploads wait at most one batch

    def _sweep_bytes(self, paths: list[str]) -> None:
        """Delete the bytes of objects whose rows prune deleted, unless an upload recorded the
        same object again since. The check and the delete run under the write lock, which
        _record_upload holds while it places bytes and records the row: no upload can find
        the bytes in place and record its row between the check and the delete."""
        for start in range(0, len(paths), self.SWEEP_BATCH):
            with self._write() as db:
                for path in paths[start : start + self.SWEEP_BATCH]:
                    if db.execute("select 1 from files where storage_path = ?", (path,)).fetchone() is None:
                        self.files.delete(path)

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
        with self._write() as db:
            row = db.execute(
                "select id from files where id = ? union all select file_id from file_uploads where id = ?",
                (file_id, file_id),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no file with id {file_id}")
            db.execute(
                """insert into provider_files (id, file_id, provider, provider_file_id, purpose, created_at, expires_at)
                   values (?, ?, ?, ?, ?, ?, ?)
                   on conflict (file_id, provider, purpose) do update set
                       provider_file_id = excluded.provider_file_id, created_at = excluded.created_at,
                       expires_at = excluded.expires_at""",
                (
                    str(uuid.uuid4()),
                    row[0],
                    provider,
                    provider_file_id,
                    purpose or "",
                    _ts(created_at),
                    None if expires_at is None else _ts(expires_at),
                ),
            )
            stored = db.execute(
                self._PROVIDER_SELECT + " where p.file_id = ? and p.provider = ? and p.purpose = ?",
                (row[0], provider, purpose or ""),
            ).fetchone()
        return self._provider_file(stored)

    _PROVIDER_SELECT = """select p.id, p.file_id, f.file_hash, p.provider, p.provider_file_id, p.purpose,
               p.created_at, p.expires_at
        from provider_files p join files f on f.id = p.file_id"""

    @staticmethod
    def _provider_file(r: Sequence[Any]) -> ProviderFile:
        return ProviderFile(
            id=r[0],
            file_id=r[1],
            file_hash=r[2],
            provider=r[3],
            provider_file_id=r[4],
            purpose=r[5] or None,
            created_at=_dt(r[6]),
            expires_at=_opt_dt(r[7]),
        )

    def _find_provider_file(
        self, file_hash: str, provider: str, *, purpose: str | None, user_id: str | None, at: datetime
    ) -> ProviderFile | None:
        sql = (
            self._PROVIDER_SELECT
            + """ where f.file_hash = ? and p.provider = ?
            and coalesce(f.user_id, '') = ? and (p.expires_at is null or p.expires_at > ?)"""
        )
        params: list[Any] = [file_hash, provider, user_id or "", _ts(at)]
        if purpose is not None:
            sql += " and p.purpose = ?"
            params.append(purpose)
        row = self._conn().execute(sql + " order by p.created_at desc limit 1", params).fetchone()
        return None if row is None else self._provider_file(row)

    def _list_provider_files(self) -> list[ProviderFile]:
        rows = self._conn().execute(self._PROVIDER_SELECT + " order by p.created_at, p.id").fetchall()
        return [self._provider_file(r) for r in rows]

    def _upload_activity(self, session_id: str, since: datetime) -> tuple[int, int]:
        row = (
            self._conn()
            .execute(
                "select count(*), coalesce(sum(file_size), 0) from file_uploads where session_id = ? and created_at >= ?",
                (session_id, _ts(since)),
            )
            .fetchone()
        )
        return int(row[0]), int(row[1])

    # -- used by tests and the demo ----------------------------------------------------

    def check_fts(self) -> None:
        """Raise if the full-text index disagrees with the messages (FTS5 integrity-check)."""
        self._conn().execute("insert into messages_fts (messages_fts, rank) values ('integrity-check', 1)")


class _AlreadyStored(Exception):
    def __init__(self, message: Message) -> None:
        self.message = message


def _split_sql(script: str) -> list[str]:
    """Statements of a migration script (triggers keep their inner semicolons)."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines(keepends=True):
        current.append(line)
        candidate = "".join(current)
        if sqlite3.complete_statement(candidate):
            if candidate.strip():
                statements.append(candidate.strip())
            current = []
    if "".join(current).strip():
        raise ValidationError("migration", "incomplete SQL statement at the end of a migration")
    return statements


_F = TypeVar("_F", bound=Any)


def _translating(method: _F) -> _F:
    """Wrap a backend primitive so a sqlite3 error leaves it as the package's own error
    (SQLiteStore._translate): a corrupt page as StoreDamagedError, a full disk as
    StorageFullError. Reads run their statements outside ``_write``, so this is where
    their errors are caught."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generator(self: SQLiteStore, *args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from method(self, *args, **kwargs)
            except sqlite3.Error as exc:
                raise self._translate(exc) from None

        return generator  # type: ignore[return-value]

    @functools.wraps(method)
    def wrapper(self: SQLiteStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise self._translate(exc) from None

    return wrapper  # type: ignore[return-value]


# Every primitive the base class calls, and check_fts: one place, so a new read cannot forget.
for _name in sorted({*Store.__abstractmethods__, "check_fts"}):
    setattr(SQLiteStore, _name, _translating(getattr(SQLiteStore, _name)))
