"""A durable write-behind outbox for remote backends.

The caller appends an operation to a local SQLite file and returns (well under a
millisecond); a background flusher delivers the operations to the store in order, in
batches, retrying with exponential backoff while the backend is down or slow. Nothing is
dropped: not when the queue is long (it is a file, not a bounded queue), not at shutdown
(``close`` flushes with a bounded wait and leaves the rest for the next start), not when the
process is killed (committed rows survive; delivery resumes on the next start).

Delivery is at-least-once and every operation is idempotent (messages carry their id, thread
snapshots merge by turn id), so a row delivered but not yet deleted when the process died is
delivered again without doubling anything: exactly-once in effect.

Order: one flusher at a time per outbox file (a lease row, renewed while it works) delivers
rows in the order they were written, and stops a batch at the first transient failure, so a
thread's turns arrive in their order even with several server processes appending. The lease
names its holder's host and pid: a holder on this host whose process is gone (killed, or an
MCP server that exited) is taken over at once instead of when the lease runs out.

Operations: the store's own writes, and whatever an integration registers when it is imported
(:func:`register_operation`; ``persistence.integrations.zen`` adds ``zen_snapshot``), as plugins
register hooks. The outbox imports no integration.

Refused: an operation the store refuses (a ``ValidationError``) is set aside in
``outbox_dead`` and the rows after it go on. An operation delivered in parts (a zen snapshot,
part by turn) has only the refused part set aside (``op = 'zen_turn'``), and every later
snapshot of the thread is delivered without it. Each is logged at ERROR and counted by
:func:`doctor` and the app.

Exit: at interpreter exit (``atexit``) and on SIGTERM (then chained to the handler that was
there before) every open outbox gets a bounded flush (``EXIT_FLUSH_SECONDS``), so the last
turns of a server that exits reach the store; what is left waits for the next start.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib
import json
import logging
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .env import outbox_dir
from .errors import ConflictError, NotFoundError, PersistenceError, StorageFullError, ValidationError
from .store import DoctorProgress, Store

log = logging.getLogger("persistence.outbox")

__all__ = ["OPS", "Outbox", "OutboxStatus", "Part", "doctor", "outbox_path_for", "read_status", "register_operation"]

PERMANENT_ERRORS = (ValidationError, ConflictError, NotFoundError)
LEASE_SECONDS = 15.0
# The whole flush at interpreter exit or SIGTERM, for every outbox of the process. An MCP
# client gives a server 2 s after closing its stdin before SIGTERM, and 2 s more before SIGKILL.
EXIT_FLUSH_SECONDS = 3.0
_JITTER = random.Random()  # its own generator: the flusher never draws from a caller's seeded global one
# How long an append waits for the other writer of the file (a flusher's transaction, in this
# process or another) before it fails, and how often it looks again meanwhile.
APPEND_BUSY_SECONDS = 30.0
_APPEND_RETRY_SECONDS = 0.0002
FLUSHERS = ("thread", "process")
_CHILD_SPEC = "PERSISTENCE_OUTBOX_FLUSHER_SPEC"  # how a flusher process learns its outbox and store
_STOP = b"stop"
# How long a flusher process whose parent is gone (killed) goes on delivering what it queued.
ORPHAN_FLUSH_SECONDS = 30.0
# A delivered batch is deleted in slices of about this many characters of payload (see
# _delete_delivered): 200 short turns are one to three transactions, 200 zen snapshots ~35.
DELETE_SLICE_CHARS = 64 * 1024
_T = TypeVar("_T")

_SCHEMA = """
create table if not exists outbox (
    id integer primary key,
    op text not null,
    key text,                      -- the thread an operation belongs to (for read-your-writes)
    payload text not null,
    created_at real not null,
    attempts integer not null default 0,
    last_error text
);
create index if not exists outbox_key on outbox (key, id);
create table if not exists outbox_dead (
    id integer primary key,
    op text not null,
    key text,
    payload text not null,
    created_at real not null,
    failed_at real not null,
    error text not null
);
create index if not exists outbox_dead_key on outbox_dead (key, op);
create table if not exists outbox_state (
    name text primary key,
    value text,
    until real
);
"""


def outbox_path_for(url: str, folder: Path) -> Path:
    """One outbox file per target store: pending writes never go to a different store."""
    return folder / f"outbox-{hashlib.sha256(url.encode()).hexdigest()[:12]}.db"


class OutboxStatus(dict[str, Any]):
    """``depth``, ``oldest_age_s``, ``dead`` (rows in ``outbox_dead``: refused operations and
    set-aside turns), ``set_aside`` (of those, single zen turns), ``last_error``,
    ``last_error_at``, ``last_delivery_at``."""


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.execute("pragma journal_mode = wal")
    # NORMAL in WAL mode: a committed append survives the process being killed.
    db.execute("pragma synchronous = normal")
    db.execute("pragma busy_timeout = 30000")
    db.executescript(_SCHEMA)
    return db


def read_status(path: Path) -> OutboxStatus | None:
    """The outbox's figures, or None when there is no outbox file (nothing was ever queued)."""
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return _status(db)
    except sqlite3.Error:
        return None
    finally:
        db.close()


def doctor(
    store: Store, folder: Path | None = None, *, quick: bool = False, progress: DoctorProgress | None = None
) -> dict[str, Any]:
    """``store.doctor(quick=..., progress=...)`` with the figures of the store's write outbox as
    ``outbox_depth``, ``outbox_oldest_age_s``, ``outbox_last_error`` … (see :class:`OutboxStatus`)
    when it has one (in ``folder``, default :func:`persistence.env.outbox_dir`)."""
    report = store.doctor(quick=quick, progress=progress)
    status = read_status(outbox_path_for(store.url, folder or outbox_dir()))
    if status is not None:
        report.update({f"outbox_{k}": v for k, v in status.items()})
    return report


def _status(db: sqlite3.Connection) -> OutboxStatus:
    depth, oldest = db.execute("select count(*), min(created_at) from outbox").fetchone()
    dead, set_aside = db.execute("select count(*), sum(op = 'zen_turn') from outbox_dead").fetchone()
    state = {name: (value, until) for name, value, until in db.execute("select name, value, until from outbox_state")}
    last_error = state.get("last_error", (None, None))
    delivered = state.get("last_delivery", (None, None))
    return OutboxStatus(
        depth=int(depth),
        oldest_age_s=round(time.time() - oldest, 1) if oldest else 0.0,
        dead=int(dead),
        set_aside=int(set_aside or 0),
        last_error=last_error[0],
        last_error_at=_iso(last_error[1]),
        last_delivery_at=_iso(delivered[1]),
    )


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


class Outbox:
    """Queue writes for ``store`` (or a factory that opens it, so a backend that is down when
    the server starts does not stop the server from recording turns).

    Operations (``OPS``): ``record_message``, ``start_conversation`` and
    ``update_conversation`` (payloads are their keyword arguments; timestamps as ISO strings),
    and those integrations register (``zen_snapshot``, a ThreadContext: see
    ``persistence.integrations.zen``).

    ``flusher``: ``"thread"`` delivers from a thread of this process; ``"process"`` from a
    process of its own (``python -c …``, started here, ended by :meth:`close`, and ending by
    itself once this process is gone), so delivery never holds this process's GIL while a
    caller appends (bench/README.md: the callers' p99 while it delivers). A process flusher
    reopens the store from the URL it was opened with, so it needs a store from
    :func:`persistence.open_store`, not a factory, and it imports the modules of the
    operations registered here (an integration's ``zen_snapshot``).
    ``poll``: how long an idle flusher waits before it looks at the file again (appends of
    this process wake a thread flusher at once; a process flusher only sees them when it looks).
    """

    def __init__(
        self,
        store: Store | Callable[[], Store],
        path: str | Path,
        *,
        batch_size: int = 200,
        max_backoff: float = 30.0,
        lease_seconds: float = LEASE_SECONDS,
        quiet: float = 0.05,
        start: bool = True,
        flusher: str = "thread",
        poll: float | None = None,
    ) -> None:
        if flusher not in FLUSHERS:
            raise ValidationError("flusher", f"must be one of {', '.join(FLUSHERS)}, not {flusher!r}")
        if flusher == "process" and not (isinstance(store, Store) and store.opened_from is not None):
            raise ValidationError(
                "flusher", "'process' reopens the store from its URL: pass a store opened by persistence.open_store"
            )
        self.flusher = flusher
        self.poll = poll if poll is not None else (1.0 if flusher == "thread" else 0.05)
        self.path = Path(path)
        self._store_or_factory = store
        self._store: Store | None = store if isinstance(store, Store) else None
        self.batch_size = batch_size
        self.max_backoff = max_backoff
        self.lease_seconds = lease_seconds
        self.quiet = quiet
        self._draining = threading.Event()  # close() and wait_idle() want delivery now
        # Two connections: the callers' appends never wait behind the flusher's Python lock,
        # and only the flusher checkpoints the WAL (PASSIVE, between batches), so copying
        # pages back into the file never lands on a caller's append.
        self._db = _connect(self.path)
        self._db.execute("pragma wal_autocheckpoint = 0")
        # The callers wait for the other writer in short sleeps of their own (_on_callers_db),
        # not in SQLite's busy handler, which sleeps 1, 2, 5, 10 ms … between tries.
        self._db.execute("pragma busy_timeout = 0")
        self._lock = threading.Lock()
        self._fdb = _connect(self.path)
        self._flock = threading.Lock()
        # The writes of this process's two connections take turns here: an append that meets
        # the flusher's transaction (deleting a delivered batch, its bookkeeping) waits for it
        # to end, about a millisecond, instead of in SQLite's busy handler, which sleeps 1, 2,
        # 5, 10 ms … between tries (a caller's p99 was 9.4 ms while the flusher delivered 2,000
        # messages/s; bench/README.md). Always taken last, after _lock or _flock.
        self._wlock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        # host:pid:tag, so another process on this host can tell when the holder is gone.
        self._owner = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._process_started = 0.0
        self._lease_until = 0.0  # when the lease this flusher last wrote runs out
        self._closed = False
        self._aside: dict[str, set[str]] | None = None  # set-aside zen turns by key, read per batch
        if start:
            self.start()

    # -- the server-facing side ----------------------------------------------------------

    def submit(self, op: str, payload: dict[str, Any], *, key: str | None = None) -> int:
        """Append one operation durably and return its id. Never touches the network."""
        if op not in OPS:
            raise ValidationError("op", f"unknown outbox operation {op!r}")
        try:
            text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=_json_default)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValidationError("payload", f"cannot be queued: {exc}") from None
        try:
            row_id = self._on_callers_db(
                lambda db: (
                    db.execute(
                        "insert into outbox (op, key, payload, created_at) values (?, ?, ?, ?)",
                        (op, key, text, time.time()),
                    ).lastrowid
                ),
                write=True,
            )
        except sqlite3.Error as exc:
            raise self._append_error(exc) from None
        self._idle.clear()
        self._wake.set()
        if self._process is not None and self._process.poll() is not None:
            self._restart_process()
        return int(row_id or 0)

    def _on_callers_db(self, fn: Callable[[sqlite3.Connection], _T], *, write: bool = False) -> _T:
        """``fn`` on the callers' connection. While the file's other writer (a flusher's
        transaction, here or in another process) holds it, wait in sleeps of 0.2 ms, so an
        append waits about as long as that transaction, not a busy-handler step of 1-10 ms."""
        deadline = 0.0
        while True:
            try:
                with self._lock:
                    if write:
                        with self._wlock:
                            return fn(self._db)
                    return fn(self._db)
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
                now = time.monotonic()
                deadline = deadline or now + APPEND_BUSY_SECONDS
                if now >= deadline:
                    raise
                time.sleep(_APPEND_RETRY_SECONDS)

    def _append_error(self, exc: sqlite3.Error) -> PersistenceError:
        """The package's error for a failed append: the caller learns the write was not
        queued, and why (a full disk names the outbox's folder)."""
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
            return StorageFullError(str(self.path.parent), f"the write outbox {self.path.name}: {exc}")
        return PersistenceError(f"could not queue the write in {self.path}: {exc}")

    def pending(self, key: str) -> list[tuple[str, dict[str, Any]]]:
        """Operations for ``key`` not delivered yet, oldest first (for read-your-writes)."""
        rows = self._on_callers_db(
            lambda db: db.execute("select op, payload from outbox where key = ? order by id", (key,)).fetchall()
        )
        return [(op, json.loads(payload)) for op, payload in rows]

    def status(self) -> OutboxStatus:
        return self._on_callers_db(_status)

    def set_aside(self, key: str) -> set[str]:
        """Ids of the zen turns of ``key`` that delivery set aside (never delivered)."""
        return self._on_callers_db(lambda db: _set_aside(db, key))

    def backend_failing(self) -> bool:
        """Whether the last delivery attempt failed (nothing delivered since the last error)."""
        rows = dict(
            self._on_callers_db(
                lambda db: db.execute(
                    "select name, until from outbox_state where name in ('last_error', 'last_delivery')"
                ).fetchall()
            )
        )
        failed, delivered = rows.get("last_error"), rows.get("last_delivery")
        return failed is not None and (delivered is None or failed > delivered)

    # -- the flusher -----------------------------------------------------------------------

    def start(self) -> None:
        if self.flusher == "process":
            if self._process is None or self._process.poll() is not None:
                self._start_process()
            _LIVE.add(self)
            _install_exit_hooks()
            return
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"outbox-flusher-{self.path.name}", daemon=True)
            self._thread.start()
            _LIVE.add(self)
            _install_exit_hooks()

    def _start_process(self) -> None:
        store = self._store_or_factory
        assert isinstance(store, Store) and store.opened_from is not None
        url, files_dir, env = store.opened_from
        spec = {
            "path": str(self.path),
            "url": url,
            "files_dir": None if files_dir is None else str(files_dir),
            # The modules whose operations the flusher must know (an integration's).
            "modules": sorted({fn.__module__ for fn in OPS.values()} - {__name__}),
            "batch_size": self.batch_size,
            "max_backoff": self.max_backoff,
            "lease_seconds": self.lease_seconds,
            "quiet": self.quiet,
            "poll": self.poll,
        }
        # The URL (it may hold a password) and the store's settings go by the environment,
        # which only this user can read, not the command line, which everyone can.
        child_env = {**os.environ, **env, _CHILD_SPEC: json.dumps(spec)}
        self._process_started = time.monotonic()
        # stdin is the flusher's lifeline: it ends when this process closes it or is gone.
        # stdout is never inherited (an MCP server's stdout is its protocol); its own session,
        # so a Ctrl-C at the terminal reaches this process, which then ends it by close().
        self._process = subprocess.Popen(
            [sys.executable, "-c", "from persistence.outbox import _serve_flusher; _serve_flusher()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=child_env,
            start_new_session=True,
        )
        log.info("outbox: flusher process %d delivers %s", self._process.pid, self.path)

    def _restart_process(self) -> None:
        # A flusher process that died (killed, or its store cannot even be opened): started
        # again, at most every 5 s, so a flusher that cannot start does not cost every append.
        with self._lock:
            proc = self._process
            if self._closed or proc is None or proc.poll() is None:
                return
            if time.monotonic() - self._process_started < 5.0:
                return
            log.error("outbox: flusher process %d exited with %s; starting another", proc.pid, proc.returncode)
            self._start_process()

    def _store_now(self) -> Store:
        if self._store is None:
            factory = self._store_or_factory
            assert callable(factory)
            self._store = factory()  # may raise while the backend is down: retried with backoff
        return self._store

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            with contextlib.suppress(sqlite3.Error), self._flock:
                self._fdb.execute("pragma wal_checkpoint(passive)")
            if self._busy_burst():
                # Writes are arriving right now: deliver once they pause (or the batch fills,
                # or the oldest waits a second), so the flusher's work does not compete with
                # the server's calls and batches come out bigger.
                self._wake.wait(self.quiet)
                self._wake.clear()
                continue
            try:
                delivered = self.flush_once()
            except Exception as exc:  # transient: recorded, retried after a pause
                self._record_error(exc)
                self._drop_store()
                backoff = min(self.max_backoff, max(0.25, backoff * 2)) * _JITTER.uniform(0.8, 1.2)
                self._wake.wait(backoff)
                self._wake.clear()
                continue
            backoff = 0.0
            if delivered == 0:
                if self._flusher_depth() == 0:
                    self._idle.set()
                self._wake.wait(self.poll)
                self._wake.clear()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """The write lock (_wlock), for the flusher. Waited for briefly only: a signal handler
        that drains the outbox (_on_sigterm) may run on a caller's thread in the middle of an
        append, holding it; the flusher then writes without it (SQLite's own lock still
        serialises the two), so it never waits on that thread."""
        held = self._wlock.acquire(timeout=0.05)
        try:
            yield
        finally:
            if held:
                self._wlock.release()

    def _busy_burst(self) -> bool:
        if self._stop.is_set() or self._draining.is_set():
            return False
        with self._flock:
            n, oldest, newest = self._fdb.execute(
                "select count(*), min(created_at), max(created_at) from outbox"
            ).fetchone()
        now = time.time()
        return bool(n) and n < self.batch_size and now - newest < self.quiet and now - oldest < 1.0

    def depth(self) -> int:
        return int(self._on_callers_db(lambda db: db.execute("select count(*) from outbox").fetchone()[0]))

    def _flusher_depth(self) -> int:
        # On the flusher's own connection: never waits for a caller's lock, which a signal
        # handler may be holding up (see _on_sigterm).
        with self._flock:
            return int(self._fdb.execute("select count(*) from outbox").fetchone()[0])

    def _take_lease(self) -> bool:
        now = time.time()
        if self._lease_until - now > self.lease_seconds / 2:
            # Held, with more than half of it left: no write. Every write here is one more
            # time an append of the callers may wait for the file's write lock.
            return True
        with self._flock, self._writing(), _transaction(self._fdb):
            row = self._fdb.execute("select value, until from outbox_state where name = 'lease'").fetchone()
            if row and row[0] != self._owner and row[1] and row[1] > now:
                if not _holder_gone(row[0]):
                    return False
                log.warning("outbox: lease of %s, whose process is gone, taken over by %s", row[0], self._owner)
            self._fdb.execute(
                "insert into outbox_state (name, value, until) values ('lease', ?, ?) "
                "on conflict (name) do update set value = excluded.value, until = excluded.until",
                (self._owner, now + self.lease_seconds),
            )
        self._lease_until = now + self.lease_seconds
        return True

    def _release_lease(self) -> None:
        self._lease_until = 0.0
        with self._flock, self._writing():
            self._fdb.execute("delete from outbox_state where name = 'lease' and value = ?", (self._owner,))

    def flush_once(self) -> int:
        """Deliver one batch (in order); returns how many operations were delivered.

        Raises on a transient failure after recording what was delivered before it.
        """
        if not self._take_lease():
            return 0  # another process is flushing this outbox
        self._aside = None
        with self._flock:
            rows = self._fdb.execute(
                "select id, op, key, payload from outbox order by id limit ?", (self.batch_size,)
            ).fetchall()
        if not rows:
            return 0
        store = self._store_now()
        done: list[int] = []
        try:
            i = 0
            while i < len(rows):
                # Consecutive messages go in one batch: one transaction, one round trip.
                j = i
                while j < len(rows) and rows[j][1] == "record_message":
                    j += 1
                if j - i > 1:
                    try:
                        store.record_messages([json.loads(payload) for _, _, _, payload in rows[i:j]])
                    except PERMANENT_ERRORS:
                        pass  # one of them is bad: deliver them one by one to set it aside
                    else:
                        done.extend(row_id for row_id, _, _, _ in rows[i:j])
                        i = j
                        continue
                row_id, op, key, payload = rows[i]
                self._deliver_one(store, row_id, op, key, payload, done)
                i += 1
        finally:
            if done:
                self._delete_delivered(done, {row_id: len(payload) for row_id, _, _, payload in rows})
        return len(done)

    def _delete_delivered(self, done: list[int], sizes: dict[int, int]) -> None:
        """Delete the delivered rows in slices of about DELETE_SLICE_CHARS of payload, each its
        own write transaction, with a pause between them long enough for a waiting append to
        get in (it retries every _APPEND_RETRY_SECONDS). SQLite's secure_delete (on in Debian's
        build, and wanted: a delivered turn must not linger in the file) zeroes what it deletes:
        deleting a batch of 200 zen snapshots (~11 KB each) in one transaction held the file's
        write lock ~12 ms, and every append in the meantime waited for it. A crash between
        slices leaves delivered rows queued, and they are delivered again: every operation is
        idempotent."""
        slices: list[list[int]] = [[]]
        chars = 0
        for row_id in done:
            if slices[-1] and chars + sizes[row_id] > DELETE_SLICE_CHARS:
                slices.append([])
                chars = 0
            slices[-1].append(row_id)
            chars += sizes[row_id]
        for k, ids in enumerate(slices):
            if k:
                time.sleep(2 * _APPEND_RETRY_SECONDS)
            with self._flock, self._writing(), _transaction(self._fdb):
                self._fdb.executemany("delete from outbox where id = ?", [(i,) for i in ids])
                if k == len(slices) - 1:
                    self._fdb.execute(
                        "insert into outbox_state (name, value, until) values ('last_delivery', ?, ?) "
                        "on conflict (name) do update set value = excluded.value, until = excluded.until",
                        (str(len(done)), time.time()),
                    )

    def _deliver_one(self, store: Store, row_id: int, op: str, key: str | None, payload: str, done: list[int]) -> None:
        try:
            deliver = OPS.get(op)
            if deliver is None:  # transient: a process that registered it delivers the row
                raise PersistenceError(
                    f"no outbox operation {op!r} is registered in this process "
                    "(import the integration that queued it, e.g. persistence.integrations.zen)"
                )
            if op in _IN_PARTS:
                self._deliver_in_parts(deliver, store, row_id, key, json.loads(payload))
            else:
                deliver(store, json.loads(payload))
        except PERMANENT_ERRORS as exc:
            # It will never succeed: set aside (kept, reported) so it blocks nothing.
            log.error(
                "outbox: %s #%s%s refused by the store, moved to outbox_dead: %s",
                op,
                row_id,
                f" ({key})" if key else "",
                exc,
            )
            with self._flock, self._writing(), _transaction(self._fdb):
                # outbox_dead numbers its own rows: outbox ids start again at 1 once it empties.
                self._fdb.execute(
                    "insert into outbox_dead (op, key, payload, created_at, failed_at, error) "
                    "select op, key, payload, created_at, ?, ? from outbox where id = ?",
                    (time.time(), f"{type(exc).__name__}: {exc}", row_id),
                )
                self._fdb.execute("delete from outbox where id = ?", (row_id,))
            return
        except Exception:
            with self._flock, self._writing():
                self._fdb.execute("update outbox set attempts = attempts + 1 where id = ?", (row_id,))
            raise
        done.append(row_id)

    def _deliver_in_parts(
        self, deliver: Callable[..., Any], store: Store, row_id: int, key: str | None, payload: dict[str, Any]
    ) -> None:
        def set_aside(turn: Part, exc: Exception) -> None:
            # Only this turn: the thread's other and later turns are delivered without it.
            log.error(
                "outbox: turn %s of %s refused by the store, set aside in outbox_dead (the thread's other "
                "turns are delivered): %s",
                turn.index,
                key,
                exc,
            )
            record = {"turn_id": turn.id, "snapshot": row_id, "turn": turn.turn}
            with self._flock, self._writing(), _transaction(self._fdb):
                self._fdb.execute(
                    "insert into outbox_dead (op, key, payload, created_at, failed_at, error) "
                    "values ('zen_turn', ?, ?, ?, ?, ?)",
                    (
                        key,
                        json.dumps(record, ensure_ascii=False, default=str),
                        time.time(),
                        time.time(),
                        f"{type(exc).__name__}: {exc}"[:2000],
                    ),
                )
            if key:
                self._aside_by_key().setdefault(key, set()).add(turn.id)

        skip = self._aside_by_key().get(key, set()) if key else set()
        deliver(store, payload, skip=skip, set_aside=set_aside)

    def _aside_by_key(self) -> dict[str, set[str]]:
        # Read once per batch, not per snapshot: each read is one more time the flusher lets
        # go of the GIL and takes it back from a caller.
        if self._aside is None:
            with self._flock:
                rows = self._fdb.execute(
                    "select key, json_extract(payload, '$.turn_id') from outbox_dead where op = 'zen_turn'"
                ).fetchall()
            self._aside = {}
            for key, turn in rows:
                if key and turn:
                    self._aside.setdefault(str(key), set()).add(str(turn))
        return self._aside

    def _record_error(self, exc: BaseException) -> None:
        log.warning("outbox: delivery failed, will retry: %s: %s", type(exc).__name__, exc)
        with contextlib.suppress(sqlite3.Error), self._flock, self._writing():
            self._fdb.execute(
                "insert into outbox_state (name, value, until) values ('last_error', ?, ?) "
                "on conflict (name) do update set value = excluded.value, until = excluded.until",
                (f"{type(exc).__name__}: {exc}"[:500], time.time()),
            )

    def _drop_store(self) -> None:
        # A store opened by the factory is reopened after a failure (its pool may be dead).
        if self._store is not None and not isinstance(self._store_or_factory, Store):
            with contextlib.suppress(Exception):
                self._store.close()
            self._store = None

    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything queued so far is delivered; False on timeout."""
        deadline = time.monotonic() + timeout
        self._draining.set()
        try:
            # The depth decides, not the idle flag alone: an append can land between the
            # flusher seeing an empty queue and setting the flag.
            while self.depth():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.clear()
                self._wake.set()
                self._idle.wait(min(0.1, left))
            return True
        finally:
            self._draining.clear()

    def _drain(self, deadline: float) -> None:
        """Let the flusher deliver until ``deadline`` (monotonic), without taking the callers'
        lock: a signal handler runs this on a thread that may hold it."""
        self._draining.set()
        self._wake.set()
        try:
            if self._process is None:
                self._idle.wait(max(0.0, deadline - time.monotonic()))
            while self._process is not None and time.monotonic() < deadline and self._flusher_depth():
                time.sleep(0.02)  # the flusher process delivers; nothing here to be woken by
        finally:
            self._draining.clear()

    def _flusher_alive(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> int:
        """Deliver what can be delivered within ``timeout`` seconds, then stop. Returns how
        many operations are left in the file for the next start."""
        with self._lock:
            if self._closed:
                return 0
            self._closed = True
        _LIVE.discard(self)
        deadline = time.monotonic() + timeout
        self._draining.set()
        while self.depth() and time.monotonic() < deadline and self._flusher_alive():
            self._wake.set()
            self._idle.wait(min(0.02 if self._process else 0.1, max(0.0, deadline - time.monotonic())))
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=max(1.0, deadline - time.monotonic()))
        if self._process is not None:
            self._end_process(max(2.0, deadline - time.monotonic()))
        self._release_lease()
        left = self.depth()
        with self._lock:
            self._db.close()
        with self._flock:
            with contextlib.suppress(sqlite3.Error):
                self._fdb.execute("pragma wal_checkpoint(truncate)")
            self._fdb.close()
        if self._store is not None and not isinstance(self._store_or_factory, Store):
            self._store.close()
        if left:
            log.warning("outbox: %d operation(s) left in %s for the next start", left, self.path)
        return left

    def _end_process(self, timeout: float) -> None:
        proc = self._process
        assert proc is not None
        with contextlib.suppress(OSError):
            if proc.stdin:
                proc.stdin.write(_STOP)  # the flusher finishes its batch, releases the lease and exits
                proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("outbox: flusher process %d did not stop within %.1f s; killed", proc.pid, timeout)
            proc.kill()
            proc.wait()


def _serve_flusher() -> None:
    """A flusher process (``Outbox(flusher="process")``): deliver the outbox its parent names
    until the parent closes the pipe on our stdin or is gone, then stop like ``close``."""
    from .config import open_store

    spec = json.loads(os.environ.pop(_CHILD_SPEC))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when delivery stops
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s[%(process)d] %(message)s")
    for module in spec["modules"]:
        importlib.import_module(module)  # an integration's operations (zen_snapshot)
    url, files_dir = spec["url"], spec["files_dir"]
    outbox = Outbox(
        lambda: open_store(url, files_dir=files_dir),
        spec["path"],
        batch_size=spec["batch_size"],
        max_backoff=spec["max_backoff"],
        lease_seconds=spec["lease_seconds"],
        quiet=spec["quiet"],
        poll=spec["poll"],
    )
    said = b""
    with contextlib.suppress(OSError):
        said = sys.stdin.buffer.read()  # returns once the parent closes it or exits (even killed)
    # Told to stop: the parent has waited for delivery already. The parent gone without a word
    # (killed): deliver what it queued, within ORPHAN_FLUSH_SECONDS, then the next start does.
    outbox.close(timeout=0.0 if said == _STOP else ORPHAN_FLUSH_SECONDS)


def _set_aside(db: sqlite3.Connection, key: str) -> set[str]:
    rows = db.execute(
        "select json_extract(payload, '$.turn_id') from outbox_dead where key = ? and op = 'zen_turn'", (key,)
    ).fetchall()
    return {str(r[0]) for r in rows if r[0]}


_HOST = socket.gethostname()


def _holder_gone(owner: str) -> bool:
    """Whether a lease holder (``host:pid:tag``) is a process of this host that no longer runs.
    Another host's, or an owner written by an older version, is never taken for gone."""
    parts = owner.split(":")
    if len(parts) < 3 or not parts[-2].isdigit():
        return False
    host, pid = ":".join(parts[:-2]), int(parts[-2])
    if host != _HOST or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    with contextlib.suppress(OSError, IndexError):
        # Exited but not yet reaped by its parent (a zombie) is gone too.
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "Z"
    return False


# Every open outbox of this process, flushed at exit.
_LIVE: weakref.WeakSet[Outbox] = weakref.WeakSet()
_hooks_lock = threading.Lock()
_hooks = {"atexit": False, "sigterm": False}
_exit_flush = threading.Event()  # set while the exit flush runs (SIGTERM during it waits for it)


def _install_exit_hooks() -> None:
    with _hooks_lock:
        if not _hooks["atexit"]:
            atexit.register(_flush_at_exit)
            _hooks["atexit"] = True
        # signal.signal works only on the main thread; an outbox made elsewhere relies on
        # atexit until one is made on the main thread.
        if not _hooks["sigterm"] and threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError, OSError, AttributeError):
                previous = signal.getsignal(signal.SIGTERM)
                signal.signal(signal.SIGTERM, _sigterm_handler(previous))
                _hooks["sigterm"] = True


def _flush_at_exit() -> None:
    _exit_flush.set()
    deadline = time.monotonic() + EXIT_FLUSH_SECONDS
    for outbox in list(_LIVE):
        try:
            outbox.close(timeout=max(0.0, deadline - time.monotonic()))
        except Exception as exc:  # one outbox's failure must not keep the others from flushing
            log.error("outbox: flush at exit of %s failed: %s: %s", outbox.path, type(exc).__name__, exc)


def _sigterm_handler(previous: Any) -> Callable[[int, Any], None]:
    def on_sigterm(signum: int, frame: Any) -> None:
        # Deliver what the flushers can within the bound, then do what was done before us:
        # the host's own handler, or the default (the process ends).
        if _exit_flush.is_set():
            return  # already exiting: the (bounded) flush at exit finishes, then the process ends
        deadline = time.monotonic() + EXIT_FLUSH_SECONDS
        for outbox in list(_LIVE):
            outbox._drain(deadline)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        else:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    return on_sigterm


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("begin immediate")
    try:
        yield
        db.execute("commit")
    except BaseException:
        # On a full disk SQLite may have rolled back already: a second rollback would raise
        # and hide the real error.
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("rollback")
        raise


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"{type(value).__name__} cannot be queued")


class Part(Protocol):
    """A part of an operation delivered in parts (a turn of a zen snapshot)."""

    @property
    def id(self) -> str: ...  # never delivered again once set aside

    @property
    def index(self) -> int: ...  # its place in the operation, for the log

    @property
    def turn(self) -> dict[str, Any]: ...  # what ``outbox_dead`` keeps of it


# Every process that flushes an outbox must know every op that any process may queue: the
# store's writes are here, and an integration registers its own when it is imported.
OPS: dict[str, Callable[..., Any]] = {
    "record_message": lambda s, p: s.record_message(**p),
    "start_conversation": lambda s, p: s.start_conversation(**p),
    "update_conversation": lambda s, p: s.update_conversation(**p),
}
_IN_PARTS: set[str] = set()


def register_operation(name: str, deliver: Callable[..., Any], *, in_parts: bool = False) -> None:
    """Let outboxes queue and deliver operation ``name``: ``deliver(store, payload)`` writes
    one queued payload and must be idempotent (a row may be delivered twice).

    ``in_parts``: ``deliver(store, payload, skip=ids, set_aside=callback)`` writes the payload
    part by part, leaving out the parts whose ids are in ``skip`` and handing a part the store
    refuses to ``set_aside(part, exc)`` (a :class:`Part`), which keeps it in ``outbox_dead``
    (as ``zen_turn``, the one kind so far) and out of every later delivery of the same key."""
    OPS[name] = deliver
    if in_parts:
        _IN_PARTS.add(name)
    else:
        _IN_PARTS.discard(name)
