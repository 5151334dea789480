"""A full disk (issue 10, item 5): one named error, nothing half-written, writes resume.

The disk is a real 2 MB tmpfs mounted for the test (root only: CI runs as root, so there it
must work; elsewhere the tests skip and say why). Postgres gets the same on a tablespace on a
tmpfs, when the server runs on this machine; the SQLSTATE mapping is also tested on its own.
"""

from __future__ import annotations

import errno
import io
import os
import random
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import IN_CI, PG_ADMIN_URL, create_database, drop_database

import persistence
from persistence import StorageFullError
from persistence.backends.postgres.store import sql_error
from persistence.backends.sqlite.store import SQLiteStore

MODEL = "kimi-k2-0905-preview"
USAGE = {"prompt_tokens": 1200, "completion_tokens": 300}


def _mount(disk: Path, size: str) -> None:
    disk.mkdir(exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True, text=True
        )
        why = done.stderr.strip() if done.returncode else ""
    except FileNotFoundError:
        why = "no mount command"
    if why:
        message = f"cannot mount a {size} tmpfs here (needs root): {why}"
        if IN_CI:
            pytest.fail(message + " (CI=true runs as root: this test may not skip)")
        pytest.skip(message)


def _unmount(disk: Path) -> None:
    subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    _mount(disk, "2m")
    try:
        yield disk
    finally:
        _unmount(disk)


def fill(disk: Path) -> Path:
    """Fill the file system to the last block with a ballast file; the ballast's path."""
    ballast = disk / "ballast"
    with open(ballast, "wb", buffering=0) as fh:
        for chunk in (65536, 4096, 512):
            try:
                while True:
                    fh.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return ballast


def text(n: int, seed: str) -> str:
    """n characters of text that does not repeat (so nothing about it is small)."""
    rng = random.Random(seed)
    return " ".join(f"{seed}{rng.getrandbits(32):08x}" for _ in range(n // 9 + 1))[:n]


def snapshot(store: persistence.Store, threads: tuple[str, ...]) -> dict[str, Any]:
    """What a half-written write would change: messages, thread totals, the rollup, files."""
    out: dict[str, Any] = {"usage": store.usage(()).to_dict("records"), "files": len(store.list_files().items)}
    for cid in threads:
        conv = store.get_conversation(cid)
        out[cid] = None if conv is None else (conv.message_count, conv.usage, conv.cost_usd, len(conv.messages))
    return out


def files_on_disk(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_sqlite_full_disk_is_named_nothing_is_half_written_and_writes_resume(small_disk: Path) -> None:
    store = SQLiteStore(small_disk / "history.db", files_dir=small_disk / "files")
    try:
        kept = store.record_message(
            "t1", "user", "accepted before the disk filled", model=MODEL, usage=USAGE, message_id=str(uuid.uuid4())
        )
        before = snapshot(store, ("t1", "t2"))
        ballast = fill(small_disk)

        one: dict[str, Any] = {"message_id": str(uuid.uuid4()), "model": MODEL, "usage": USAGE}
        batch = [
            {"continuation_id": "t2", "role": "user", "content": text(40_000, f"b{i}"), "message_id": str(uuid.uuid4())}
            for i in range(3)
        ]
        upload = text(300_000, "file").encode()
        with pytest.raises(StorageFullError) as full:
            store.record_message("t1", "assistant", text(60_000, "a"), **one)
        assert full.value.path == str(small_disk) and "full" in str(full.value)
        with pytest.raises(StorageFullError):
            store.record_messages(batch)
        with pytest.raises(StorageFullError) as full_file:
            store.put_file(upload, filename="notes.txt", continuation_id="t1")
        assert str(small_disk / "files") in full_file.value.path

        # Nothing of the three refused writes is kept anywhere.
        assert snapshot(store, ("t1", "t2")) == before
        assert store.get_conversation("t2") is None
        assert files_on_disk(small_disk / "files") == []  # no partial blob, no spooled copy
        assert store.doctor()["quick_check"] == "ok"

        # Space returns: the very same calls go through, each once.
        ballast.unlink()
        answer = store.record_message("t1", "assistant", text(60_000, "a"), **one)
        stored = store.record_messages(batch)
        f = store.put_file(upload, filename="notes.txt", continuation_id="t1")
        t1, t2 = store.get_conversation("t1"), store.get_conversation("t2")
        assert t1 is not None and t2 is not None
        assert [m.id for m in t1.messages] == [kept.id, answer.id] and t1.message_count == 2
        assert [m.id for m in t2.messages] == [m.id for m in stored] and t2.message_count == 3
        assert t1.usage.total == 2 * kept.usage.total
        totals = store.usage(()).iloc[0]
        assert totals["messages"] == 5 and totals["total_tokens"] == 2 * kept.usage.total
        again = store.get_message(kept.id)  # accepted before the disk filled: still there
        assert again is not None and (again.content, again.seq) == (kept.content, 1)
        with store.open_file(f.id) as fh:
            assert fh.read() == upload
        assert store.doctor()["quick_check"] == "ok"
    finally:
        store.close()


def test_a_full_spool_folder_leaves_no_partial_copy(small_disk: Path) -> None:
    """The Supabase path spools uploads to a temporary folder first: full there is named too."""
    from persistence.filestore import spool

    ballast = fill(small_disk)
    ballast.unlink()
    (small_disk / "half").write_bytes(b"\0" * (1024 * 1024))  # about 1 MB left
    with pytest.raises(StorageFullError) as full, spool(io.BytesIO(os.urandom(3 * 1024 * 1024)), small_disk / "spool"):
        pass
    assert full.value.path == str(small_disk / "spool")
    assert files_on_disk(small_disk / "spool") == []


def test_a_full_outbox_disk_refuses_the_append_by_name_and_delivers_the_rest(small_disk: Path, tmp_path: Path) -> None:
    """The write outbox is a SQLite file too: an append that does not fit is refused with
    StorageFullError (the caller knows the turn was not queued), what was queued before is
    delivered once, and appends work again when space returns."""
    from persistence.outbox import Outbox

    target = SQLiteStore(tmp_path / "target.db")
    outbox = Outbox(target, small_disk / "outbox.db", start=False)
    try:
        thread = str(uuid.uuid4())

        def submit(i: int) -> None:
            outbox.submit(
                "record_message",
                {
                    "continuation_id": thread,
                    "role": "user",
                    "content": text(20_000, f"q{i}"),
                    "message_id": str(uuid.UUID(int=i + 1)),
                },
                key=thread,
            )

        submit(0)
        ballast = fill(small_disk)
        with pytest.raises(StorageFullError) as full:
            for i in range(1, 200):  # the WAL takes what the ballast left: a few appends at most
                submit(i)
        assert full.value.path == str(small_disk)
        queued = outbox.depth()
        assert queued >= 1
        ballast.unlink()
        submit(1000)
        while outbox.flush_once():
            pass
        assert outbox.depth() == 0
        conv = target.get_conversation(thread)
        assert conv is not None and conv.message_count == queued + 1
        assert len({m.id for m in conv.messages}) == queued + 1
    finally:
        outbox.close(timeout=1)
        target.close()


# -- Postgres --------------------------------------------------------------------------------


def test_postgres_disk_full_sqlstate_is_storage_full() -> None:
    error = sql_error("53100", 'could not extend file "base/1/2": No space left on device', "record_message")
    assert isinstance(error, StorageFullError) and "record_message" in str(error)
    # Out of memory (53200) and too many connections (53300) are not a full disk.
    assert not isinstance(sql_error("53200", "out of memory", "record_message"), StorageFullError)


@pytest.mark.postgres
def test_postgres_full_disk_is_named_and_writes_resume(pg_server: str, tmp_path: Path) -> None:
    """The messages table on a tablespace on a 1 MB tmpfs: the server's own "No space left
    on device" (SQLSTATE 53100) reaches the caller as StorageFullError, the call is rolled
    back whole, and after the tmpfs grows the same call is stored once."""
    import psycopg

    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    # The server (user postgres) must reach the folder: not under pytest's private tmp_path.
    disk = Path(tempfile.mkdtemp(prefix="pt_pgdisk_"))
    disk.chmod(0o755)
    _mount(disk, "1m")
    tablespace = f"pt_full_{uuid.uuid4().hex[:8]}"
    url = create_database()
    try:
        try:
            shutil.chown(disk, "postgres", "postgres")
            disk.chmod(0o700)
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f"create tablespace {tablespace} location '{disk}'")
        except (LookupError, OSError, psycopg.Error) as exc:
            pytest.skip(f"cannot put a tablespace on a tmpfs for this Postgres (is it on this machine?): {exc}")
        store = persistence.open_store(url, files_dir=tmp_path / "files")
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"alter table messages set tablespace {tablespace}")
            kept = store.record_message("t1", "user", "accepted before the disk filled", model=MODEL, usage=USAGE)
            refused: tuple[dict[str, Any], StorageFullError] | None = None
            accepted = 1
            while refused is None and accepted < 200:
                args: dict[str, Any] = {"message_id": str(uuid.uuid4()), "model": MODEL, "usage": USAGE}
                try:
                    store.record_message("t1", "assistant", os.urandom(20_000).hex(), **args)
                    accepted += 1
                except StorageFullError as exc:
                    refused = (args, exc)
            assert refused is not None, "the 1 MB tablespace never filled"
            args, error = refused
            assert "No space left on device" in str(error) and "nothing was written" in str(error)
            conv = store.get_conversation("t1")
            assert conv is not None and conv.message_count == len(conv.messages) == accepted
            assert store.usage(()).iloc[0]["messages"] == accepted
            assert store.get_message(args["message_id"]) is None

            subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
            stored = store.record_message("t1", "assistant", "after the disk grew", **args)
            conv = store.get_conversation("t1")
            assert conv is not None and conv.message_count == len(conv.messages) == accepted + 1
            assert conv.messages[-1].id == stored.id and conv.messages[0].content == kept.content
        finally:
            store.close()
    finally:
        drop_database(url)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"drop tablespace if exists {tablespace}")
        _unmount(disk)
        disk.rmdir()
