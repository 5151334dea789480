"""``Store.redact`` on SQLite: erase text, keep numbers, leave no byte of it in the file.

What is erased and kept: persistence/redaction.py. How no byte stays behind:

1. The erasure runs with ``pragma secure_delete = on``, so the cells and pages it frees are
   overwritten with zeros rather than left in place.
2. Updating a message re-indexes it (the ``messages_fts_update`` trigger), but FTS5 records a
   delete as a tombstone in a new segment: the old segments still hold the erased words until
   they are merged. The index is merged (``optimize``) in the same transaction. (SQLite 3.42's
   ``secure-delete`` option of FTS5 would avoid the full merge; Debian 12 ships 3.40.)
3. Text written before, by writes that did not zero what they freed (an earlier FTS merge, a
   page split), may still sit in free pages or in the unused space of pages: ``VACUUM`` then
   rebuilds the file from the live rows only, and a ``TRUNCATE`` checkpoint empties the WAL,
   which holds copies of pages as they were written.

``VACUUM`` rewrites the whole file (it needs as much free disk again): a redaction costs about one
``VACUUM`` of the file, 16 to 42 s for the 2.15 GB million-message store on a loaded 2-core
machine (bench/README.md). The price of a guarantee about every byte.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from ...errors import PersistenceError
from ...models import RedactResult
from ...pricing import UNREAD_USAGE
from ...redaction import REDACTED_FILENAME

__all__ = ["redact"]

log = logging.getLogger("persistence")

# The threads each selector picks (into temp.redact_threads), then the uploads (temp.redact_uploads).
_THREADS = {
    "ids": "select id from conversations where continuation_id in (select value from json_each(:ids))",
    "user": "select id from conversations where user_id = :user_id",
    "cutoff": "select id from conversations where updated_at < :cutoff",
}
_UPLOADS = {
    "ids": "select id from file_uploads where conversation_id in (select id from temp.redact_threads)",
    "user": "select id from file_uploads where user_id = :user_id "
    "or conversation_id in (select id from temp.redact_threads)",
    # A thread's uploads go with it; an upload outside any thread goes by its own age.
    "cutoff": "select id from file_uploads where conversation_id in (select id from temp.redact_threads) "
    "or (conversation_id is null and created_at < :cutoff)",
}
# Stored objects the selected uploads refer to; whether an unredacted upload outside the
# selection still refers to each (then its bytes stay), and whether this redaction is what
# empties it (an object emptied before is not counted again; its bytes are swept again).
_OBJECTS = """
select f.id, f.storage_path, f.file_size,
    exists (select 1 from file_uploads u where u.file_id = f.id and u.redacted_at is null
            and u.id not in (select id from temp.redact_uploads)) as kept,
    exists (select 1 from file_uploads u where u.file_id = f.id and u.redacted_at is null
            and u.id in (select id from temp.redact_uploads)) as fresh
from files f
where f.id in (select file_id from file_uploads where id in (select id from temp.redact_uploads))
"""
_ERASE_MESSAGES = f"""
update messages set
    content = '', search_extra = null, files = '[]', images = '[]',
    metadata = case when json_type(metadata, '$.{UNREAD_USAGE}') is not null
                    then json_object('{UNREAD_USAGE}', json_extract(metadata, '$.{UNREAD_USAGE}'))
                    else '{{}}' end,
    redacted_at = :at
where conversation_id in (select id from temp.redact_threads)
    and (redacted_at is null or content <> '' or search_extra is not null or metadata <> '{{}}')
"""
_ERASE_THREADS = """
update conversations set title = null, summary = null, metadata = '{}', initial_context = null,
    redacted_at = coalesce(redacted_at, :at)
where id in (select id from temp.redact_threads)
"""
_ERASE_UPLOADS = """
update file_uploads set filename = :name, description = null, metadata = '{}', tags = '[]',
    redacted_at = coalesce(redacted_at, :at)
where id in (select id from temp.redact_uploads)
"""
# The object's own text is its first upload's: erased whenever one of its uploads is, while
# an unredacted upload keeps the bytes (and shows its own name).
_ERASE_OBJECTS = """
update files set filename = :name, description = null, metadata = '{}', tags = '[]'
where id in (select file_id from file_uploads where id in (select id from temp.redact_uploads))
"""


class _Files(Protocol):
    def delete(self, storage_path: str) -> bool: ...


class _Store(Protocol):
    """What redact uses of SQLiteStore (a protocol: this module is imported by the store)."""

    path: Path
    SWEEP_BATCH: int

    @property
    def files(self) -> _Files: ...

    def _conn(self) -> sqlite3.Connection: ...
    def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...
    def _translate(self, exc: sqlite3.Error) -> PersistenceError: ...


class _DryRun(Exception):
    pass


def redact(
    store: _Store,
    *,
    continuation_ids: list[str] | None,
    user_id: str | None,
    cutoff: str | None,
    at: str,
    dry_run: bool,
) -> RedactResult:
    """``cutoff`` and ``at`` (the time of the redaction) are stored timestamps (SQLiteStore's _ts)."""
    if continuation_ids is not None:
        key, params = "ids", {"ids": json.dumps(continuation_ids)}
    elif user_id is not None:
        key, params = "user", {"user_id": user_id}
    else:
        assert cutoff is not None
        key, params = "cutoff", {"cutoff": cutoff}
    conn = store._conn()
    previous = int(conn.execute("pragma secure_delete").fetchone()[0])
    conn.execute("pragma secure_delete = on")
    counts: dict[str, int] = {}
    doomed: list[str] = []
    try:
        try:
            with store._write() as db:
                db.execute("create temp table if not exists redact_threads (id text primary key)")
                db.execute("create temp table if not exists redact_uploads (id text primary key)")
                db.execute("delete from temp.redact_threads")
                db.execute("delete from temp.redact_uploads")
                db.execute(f"insert into temp.redact_threads {_THREADS[key]}", params)
                db.execute(f"insert into temp.redact_uploads {_UPLOADS[key]}", params)
                counts["conversations"] = _count(db, "select count(*) from temp.redact_threads")
                counts["messages"] = _count(
                    db, "select count(*) from messages where conversation_id in (select id from temp.redact_threads)"
                )
                counts["uploads"] = _count(db, "select count(*) from temp.redact_uploads")
                objects = db.execute(_OBJECTS).fetchall()
                going = [(path, size) for _fid, path, size, kept, fresh in objects if fresh and not kept]
                counts["files"] = len(going)
                counts["bytes"] = sum(size for _path, size in going)
                if dry_run:
                    raise _DryRun
                changed = db.execute(_ERASE_MESSAGES, {"at": at}).rowcount
                db.execute(_ERASE_THREADS, {"at": at})
                db.execute(_ERASE_UPLOADS, {"at": at, "name": REDACTED_FILENAME})
                db.execute(_ERASE_OBJECTS, {"name": REDACTED_FILENAME})
                if changed:
                    # Drop the erased words from the index's older segments now (module docstring, 2).
                    db.execute("insert into messages_fts (messages_fts) values ('optimize')")
                doomed = [path for _fid, path, _size, kept, _fresh in objects if not kept]
                db.execute("delete from temp.redact_threads")
                db.execute("delete from temp.redact_uploads")
        except _DryRun:
            return RedactResult(dry_run=True, **counts)
        _sweep(store, doomed)
        if any(counts.values()):
            _vacuum(store, conn)
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute(f"pragma secure_delete = {previous}")
    return RedactResult(dry_run=False, **counts)


def _count(db: sqlite3.Connection, sql: str) -> int:
    return int(db.execute(sql).fetchone()[0])


def _sweep(store: _Store, paths: list[str]) -> None:
    """Delete the bytes of the objects redact emptied, as prune's sweep does (SQLiteStore.
    _sweep_bytes): the check and the delete run under the write lock, which _record_upload
    holds while it places bytes and records a row, so an upload of the same bytes either comes
    first (an unredacted upload refers to the object: its bytes stay) or places them again."""
    for start in range(0, len(paths), store.SWEEP_BATCH):
        with store._write() as db:
            for path in paths[start : start + store.SWEEP_BATCH]:
                live = db.execute(
                    "select 1 from files f join file_uploads u on u.file_id = f.id "
                    "where f.storage_path = ? and u.redacted_at is null limit 1",
                    (path,),
                ).fetchone()
                if live is None:
                    store.files.delete(path)


def _vacuum(store: _Store, conn: sqlite3.Connection) -> None:
    """Rebuild the file from live rows and empty the WAL (module docstring, 3)."""
    try:
        conn.execute("vacuum")
        busy, _log, _done = conn.execute("pragma wal_checkpoint(truncate)").fetchone()
    except sqlite3.Error as exc:
        raise store._translate(exc) from None
    if busy:
        # A reader of another connection holds an old snapshot: the erased text may remain
        # in the WAL until the next checkpoint. Said, not hidden.
        log.warning(
            "redact: the WAL of %s could not be emptied (a reader is active); erased text may stay in %s-wal "
            "until the next checkpoint",
            store.path,
            store.path.name,
        )
