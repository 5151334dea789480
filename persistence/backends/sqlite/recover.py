"""Copy what is readable from a damaged SQLite store into a new file (``python -m persistence recover``).

The damaged file is only read, never written. It is read one of two ways, the first that works:

1. ``shell``: the sqlite3 command-line shell's ``.recover`` (SQLite 3.29 or newer). It reads
   the file page by page and salvages the rows of damaged b-trees too, so it keeps the most.
   Its output goes into a scratch database beside the new file, removed afterwards.
2. ``copy`` (no shell, or the shell failed): the file itself, table by table in rowid order,
   stepping over the stretches that cannot be read. It loses every row of a damaged page.

Either way the rows are then copied into a store created fresh by this package, so the new
file has this package's schema whatever the damage did to the old one's: the full-text index
is rebuilt from the recovered messages, and each thread's totals and the daily rollups are
recomputed from them (a lost message is not counted). A message whose thread row was lost
keeps a stand-in thread (``recovered-<id>``); an upload or link whose file row was lost is
dropped and counted. The result must pass ``pragma quick_check``.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ...errors import PersistenceError, StoreDamagedError, StoreOpenError
from .schema import flag_unpriced, rebuild_thread_facets, reindex_search

__all__ = ["RecoverResult", "recover_sqlite"]

# In the order foreign keys need. usage_daily and the full-text index are rebuilt, not copied.
TABLES = (
    "conversations",
    "messages",
    "files",
    "file_uploads",
    "conversation_files",
    "provider_files",
    "model_prices",
    "store_meta",
    "budgets",
)
# Tables whose recovered rows replace what the fresh store wrote for itself at creation.
_REPLACE = {"model_prices", "store_meta"}
BATCH = 500


@dataclass
class RecoverResult:
    source: Path
    output: Path
    method: str  # "shell" (sqlite3 .recover) or "copy" (table by table)
    rows: dict[str, int] = field(default_factory=dict)  # rows kept per table
    unreadable: dict[str, int] = field(default_factory=dict)  # stretches skipped per table ("copy")
    stand_in_threads: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # rows pointing at lost rows
    lost_and_found: int = 0  # rows .recover could not place in any table (not copied)
    quick_check: str = ""
    notes: list[str] = field(default_factory=list)


def recover_sqlite(source: str | Path, output: str | Path, *, method: str = "auto") -> RecoverResult:
    """Copy what is readable of the store at ``source`` into a new store at ``output``.

    ``method``: ``"auto"`` (the sqlite3 shell's ``.recover`` when installed, else the table
    copy), ``"shell"`` or ``"copy"``. ``output`` must not exist yet.
    """
    from .store import SQLiteStore

    src, out = Path(source).expanduser(), Path(output).expanduser()
    if not src.is_file():
        raise StoreOpenError(f"{src} does not exist or is not a file")
    if out.exists():
        raise PersistenceError(f"{out} already exists; choose another --output (nothing was written)")
    if method not in ("auto", "shell", "copy"):
        raise PersistenceError(f"unknown recover method {method!r}: auto, shell or copy")
    shell = shutil.which("sqlite3")
    if method == "shell" and shell is None:
        raise PersistenceError("the sqlite3 shell is not installed; use --method copy")
    result = RecoverResult(source=src, output=out, method="copy")

    # The fresh store: this package's schema, migrations and prices. Its file folder is the
    # damaged store's, so nothing new is created beside it; the bytes are not copied.
    SQLiteStore(out, files_dir=src.with_name(src.stem + "-files")).close()
    scratch = out.with_name(out.name + ".recover-scratch")
    try:
        target = sqlite3.connect(out, isolation_level=None)
        try:
            reader = None
            if shell is not None and method != "copy":
                reader = _shell_recover(shell, src, scratch, result)
                if reader is not None:
                    result.method = "shell"
                elif method == "shell":
                    raise PersistenceError("sqlite3 .recover failed: " + "; ".join(result.notes))
            if reader is None:
                reader = _open_read_only(src)
            try:
                _copy_all(reader, target, result)
            finally:
                reader.close()
        finally:
            target.close()
    except BaseException:
        for leftover in (out, out.with_name(out.name + "-wal"), out.with_name(out.name + "-shm")):
            leftover.unlink(missing_ok=True)
        raise
    finally:
        scratch.unlink(missing_ok=True)

    # Totals, rollups and the check, through the store itself.
    store = SQLiteStore(out, files_dir=src.with_name(src.stem + "-files"))
    try:
        with store._write() as db:
            days = {r[0] for r in db.execute("select distinct substr(created_at, 1, 10) from messages")}
            db.execute("delete from usage_daily")
            # A store older than the flag had none to copy: what it is, before it is summed.
            flag_unpriced(db)
            store._rebuild(db, days, {r[0] for r in db.execute("select id from conversations")})
            # The threads' facets (what the Threads page filters read) from the recovered messages.
            rebuild_thread_facets(db)
            # The copied rows carry the index text of the release that wrote them.
            reindex_search(db)
        store.check_fts()
        result.quick_check = store._quick_check(store._conn())
    finally:
        store.close()
    return result


def _open_read_only(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, isolation_level=None)
        # SQLite refuses a file shorter than its header says (a truncated copy) unless the
        # schema is "writable"; this connection cannot write, so it only lifts that refusal.
        db.execute("pragma writable_schema = on")
        return db
    except sqlite3.Error as exc:
        raise StoreDamagedError(str(path), f"cannot even open it: {exc}", "(no recovery possible)") from None


def _shell_recover(shell: str, src: Path, scratch: Path, result: RecoverResult) -> sqlite3.Connection | None:
    """``sqlite3 -readonly SRC .recover | sqlite3 SCRATCH``; the scratch database, or None."""
    scratch.unlink(missing_ok=True)
    with tempfile.TemporaryFile() as errors:
        dump = subprocess.Popen([shell, "-readonly", str(src), ".recover"], stdout=subprocess.PIPE, stderr=errors)
        assert dump.stdout is not None
        try:
            load = subprocess.run([shell, str(scratch)], stdin=dump.stdout, capture_output=True, timeout=3600)
        finally:
            dump.stdout.close()
            dump.wait()
        errors.seek(0)
        dump_errors = errors.read().decode("utf-8", "replace").strip()
    if dump.returncode != 0 or not scratch.exists():
        result.notes.append(f"sqlite3 .recover exited with {dump.returncode}: {dump_errors or '(no message)'}")
        return None
    if load.returncode != 0:
        # Statements the scratch database refused (e.g. a virtual table's): the rows of
        # ordinary tables still went in; say so and carry on.
        result.notes.append("sqlite3 shell: " + load.stderr.decode("utf-8", "replace").strip()[:500])
    db = sqlite3.connect(scratch, isolation_level=None)
    with contextlib.suppress(sqlite3.Error):
        result.lost_and_found = int(db.execute("select count(*) from lost_and_found").fetchone()[0])
    return db


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [str(r[1]) for r in db.execute(f"pragma table_info({table})")]


def _copy_all(reader: sqlite3.Connection, target: sqlite3.Connection, result: RecoverResult) -> None:
    target.execute("pragma foreign_keys = off")  # rows arrive before the rows they point at may
    target.execute("begin immediate")
    try:
        for table in TABLES:
            try:
                source_columns = _columns(reader, table)
            except sqlite3.Error:
                source_columns = []
            columns = [c for c in _columns(target, table) if c in source_columns]
            if not columns:
                result.rows[table] = 0
                result.notes.append(f"table {table}: not readable at all")
                continue
            verb = "insert or replace" if table in _REPLACE else "insert or ignore"
            sql = f"{verb} into {table} ({', '.join(columns)}) values ({', '.join('?' * len(columns))})"
            before = target.execute(f"select count(*) from {table}").fetchone()[0]
            for batch in _readable_rows(reader, table, columns, result):
                target.executemany(sql, batch)
            after = target.execute(f"select count(*) from {table}").fetchone()[0]
            result.rows[table] = after if table in _REPLACE else after - before
        _repair_references(target, result)
        target.execute("commit")
    except BaseException:
        if target.in_transaction:
            target.execute("rollback")
        raise
    target.execute("pragma foreign_keys = on")
    problems = target.execute("pragma foreign_key_check").fetchall()
    if problems:
        raise PersistenceError(f"the recovered rows still break {len(problems)} reference(s): {problems[:5]}")


def _readable_rows(
    db: sqlite3.Connection, table: str, columns: list[str], result: RecoverResult
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``table`` that can be read, in batches. Rowid tables are read in rowid
    order; where a page cannot be read the reader jumps past it (the b-tree's inner pages
    still find the next readable leaf). Tables without rowid are read until the first error."""
    select = f"select {', '.join(columns)} from {table}"
    try:
        db.execute(f"select rowid from {table} limit 0")
        has_rowid = True
    except sqlite3.Error:
        has_rowid = False
    if not has_rowid:
        rows: list[tuple[Any, ...]] = []
        try:
            for row in db.execute(select):
                rows.append(tuple(row))
        except sqlite3.DatabaseError:
            result.unreadable[table] = result.unreadable.get(table, 0) + 1
        if rows:
            yield rows
        return
    try:
        top = db.execute(f"select max(rowid) from {table}").fetchone()[0]
    except sqlite3.DatabaseError:
        top = None
    top = 2**62 if top is None else int(top)
    after = -(2**63)
    while after < top:
        try:
            batch = db.execute(
                f"select rowid, {', '.join(columns)} from {table} where rowid > ? order by rowid limit {BATCH}",
                (after,),
            ).fetchall()
        except sqlite3.DatabaseError:
            batch = _read_one_by_one(db, table, columns, after)
            if not batch:
                result.unreadable[table] = result.unreadable.get(table, 0) + 1
                after = _next_readable(db, table, after, top)
                continue
        if not batch:
            return
        after = int(batch[-1][0])
        yield [tuple(r[1:]) for r in batch]


def _read_one_by_one(db: sqlite3.Connection, table: str, columns: list[str], after: int) -> list[tuple[Any, ...]]:
    """The rows after ``after`` up to the first unreadable one (a batch failed somewhere)."""
    rows: list[tuple[Any, ...]] = []
    sql = f"select rowid, {', '.join(columns)} from {table} where rowid > ? order by rowid limit 1"
    while len(rows) < BATCH:
        try:
            row = db.execute(sql, (rows[-1][0] if rows else after,)).fetchone()
        except sqlite3.DatabaseError:
            break
        if row is None:
            break
        rows.append(tuple(row))
    return rows


def _next_readable(db: sqlite3.Connection, table: str, after: int, top: int) -> int:
    """The rowid to continue after: the smallest ``after + k`` from which reading works
    again (steps doubling to get past the damage, then a binary search back, so the rows at
    the start of the next readable page are not skipped)."""

    def readable(start: int) -> bool:
        try:
            db.execute(f"select rowid from {table} where rowid > ? order by rowid limit 1", (start,)).fetchone()
            return True
        except sqlite3.DatabaseError:
            return False

    step = 1
    while after + step < top and not readable(after + step):
        step *= 2
    if after + step >= top:
        return top  # nothing readable after the damage
    low, high = after + step // 2, after + step  # low unreadable (or after itself), high readable
    while high - low > 1:
        middle = (low + high) // 2
        if readable(middle):
            high = middle
        else:
            low = middle
    return high


def _repair_references(db: sqlite3.Connection, result: RecoverResult) -> None:
    """Make the recovered rows point only at recovered rows: a message whose thread row was
    lost gets a stand-in thread (its turns are the data worth keeping); rows that point at
    a lost file are dropped (a file row cannot be rebuilt from them)."""
    result.stand_in_threads = db.execute(
        """insert into conversations (id, continuation_id, title, status, created_at, updated_at)
           select conversation_id, 'recovered-' || conversation_id, '(recovered: the thread record was lost)',
                  'active', min(created_at), max(created_at)
           from messages where conversation_id not in (select id from conversations)
           group by conversation_id"""
    ).rowcount
    db.execute(
        "update file_uploads set conversation_id = null "
        "where conversation_id is not null and conversation_id not in (select id from conversations)"
    )
    for table, where in (
        ("file_uploads", "file_id not in (select id from files)"),
        (
            "conversation_files",
            "file_id not in (select id from files) or conversation_id not in (select id from conversations)",
        ),
        ("provider_files", "file_id not in (select id from files)"),
    ):
        n = db.execute(f"delete from {table} where {where}").rowcount
        if n:
            result.dropped[table] = n
