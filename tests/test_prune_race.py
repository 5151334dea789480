"""``prune`` racing an upload of the same bytes: every upload that succeeds can be opened.

Prune deletes rows, then bytes. An upload of the same content in between used to find the
bytes in place, record its row, and lose the bytes to the sweep a moment later: put_file
succeeded, open_file failed and doctor counted a missing file. The tests below widen each
window with an injected pause (in the sweep's delete, or in the upload between storing its
bytes and recording its row) and run both orders on every backend, then a bounded stress run
of uploads against a pruner in threads.
"""

from __future__ import annotations

import functools
import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_server_only, signed_in

import persistence
from persistence.backends.postgres.store import BlobStore, FunctionStore
from persistence.backends.sqlite.store import SQLiteStore
from persistence.errors import NotFoundError

OLD = datetime(2025, 9, 10, 9, 0, tzinfo=UTC)
CUTOFF = datetime(2025, 10, 1, tzinfo=UTC)
CONTENT = b"the same bytes, pruned and uploaded again at once\n"
PAUSE = 0.6  # seconds: the width of the window each test holds open


def read(store: persistence.Store, file_id: str) -> bytes:
    with store.open_file(file_id) as fh:
        data: bytes = fh.read()
    return data


def missing_bytes(store: persistence.Store) -> int:
    count: int = store.doctor()["files_missing_bytes_count"]
    return count


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # reported by the test, not lost in the thread
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def blobs(store: persistence.Store) -> BlobStore:
    """Where the store keeps file bytes: a local folder, or a Supabase Storage bucket."""
    assert isinstance(store, SQLiteStore | FunctionStore)
    return store.files


def joined(thread: threading.Thread, out: dict[str, Any], timeout: float = 30) -> Any:
    thread.join(timeout)
    assert not thread.is_alive(), "the thread is stuck"
    if "error" in out:
        raise out["error"]
    return out.get("result")


def test_an_upload_while_the_sweep_deletes_keeps_its_bytes(store: persistence.Store) -> None:
    """The sweep pauses just before deleting the bytes of an object whose row prune already
    deleted; an upload of the same content runs in that pause."""
    if signed_in(store):  # prune is the server's only, a dry run too
        assert_server_only(lambda: store.prune(older_than=CUTOFF, dry_run=True), "prune")
        return
    old = store.put_file(CONTENT, filename="old.txt", created_at=OLD)
    sweeping = threading.Event()
    real_delete = blobs(store).delete

    def slow_delete(storage_path: str) -> bool:
        if storage_path == old.storage_path:
            sweeping.set()
            time.sleep(PAUSE)  # the upload below records its row meanwhile (or waits to)
        return bool(real_delete(storage_path))

    blobs(store).delete = slow_delete  # type: ignore[method-assign]

    def upload_in_the_pause() -> persistence.StoredFile:
        assert sweeping.wait(30), "the sweep never reached the bytes"
        return store.put_file(CONTENT, filename="again.txt")

    thread, out = in_thread(upload_in_the_pause)
    result = store.prune(older_than=CUTOFF)
    again: persistence.StoredFile = joined(thread, out)

    assert result.files == 1
    assert store.get_file(old.upload_id or old.id) is None  # the old upload is gone ...
    assert read(store, again.upload_id or again.id) == CONTENT  # ... the new one has its bytes
    assert read(store, again.id) == CONTENT
    assert missing_bytes(store) == 0


def test_an_upload_that_found_the_bytes_before_the_prune_keeps_them(store: persistence.Store) -> None:
    """The other order: the upload finds (or stores) its bytes, then pauses; the whole prune
    runs, deleting the bytes; then the upload records its row."""
    if signed_in(store):  # prune is the server's only, a dry run too
        assert_server_only(lambda: store.prune(older_than=CUTOFF, dry_run=True), "prune")
        return
    store.put_file(CONTENT, filename="old.txt", created_at=OLD)
    stored = threading.Event()
    pruned = threading.Event()
    real_put_bytes = store._put_bytes

    def paused_put_bytes(stream: Any, owner: str | None) -> Any:
        blob = real_put_bytes(stream, owner)
        stored.set()
        pruned.wait(PAUSE * 5)  # prune runs to the end here
        return blob

    store._put_bytes = paused_put_bytes  # type: ignore[method-assign]
    thread, out = in_thread(lambda: store.put_file(CONTENT, filename="again.txt"))
    assert stored.wait(30)
    result = store.prune(older_than=CUTOFF)
    pruned.set()
    again: persistence.StoredFile = joined(thread, out)

    assert result.files == 1
    assert read(store, again.upload_id or again.id) == CONTENT
    assert missing_bytes(store) == 0


def test_an_upload_recorded_before_the_prune_decides_keeps_the_object(store: persistence.Store) -> None:
    """An upload recorded before prune looks at the files is a use since the cutoff: the
    object and its bytes stay, and so does the new upload."""
    if signed_in(store):  # prune is the server's only, a dry run too
        assert_server_only(lambda: store.prune(older_than=CUTOFF, dry_run=True), "prune")
        return
    old = store.put_file(CONTENT, filename="old.txt", created_at=OLD)
    again = store.put_file(CONTENT, filename="again.txt")
    result = store.prune(older_than=CUTOFF)
    assert result.files == 0
    assert again.id == old.id and again.deduplicated
    assert read(store, again.upload_id or again.id) == CONTENT
    assert missing_bytes(store) == 0


def test_a_dry_run_leaves_the_bytes_and_no_claims(store: persistence.Store) -> None:
    if signed_in(store):  # prune is the server's only, a dry run too
        assert_server_only(lambda: store.prune(older_than=CUTOFF, dry_run=True), "prune")
        return
    old = store.put_file(CONTENT, filename="old.txt", created_at=OLD)
    assert store.prune(older_than=CUTOFF, dry_run=True).files == 1
    assert read(store, old.id) == CONTENT
    # An upload after a dry run waits on nothing.
    started = time.monotonic()
    store.put_file(CONTENT, filename="again.txt")
    assert time.monotonic() - started < PAUSE


STRESS_SECONDS = 3.0
POOL = [f"shared content number {i}\n".encode() * (i + 1) for i in range(4)]


def test_uploads_racing_a_pruner_never_lose_bytes(store: persistence.Store) -> None:
    """Threads upload a few contents over and over while another prunes everything older than
    a cutoff in the future (so every object is doomed the moment nobody uploads it), with
    small random pauses in the sweep. Each upload that returns can be opened unless a later
    prune legitimately deleted its row; at the end no row lacks its bytes."""
    if signed_in(store):  # prune is the server's only, a dry run too
        assert_server_only(lambda: store.prune(older_than=CUTOFF, dry_run=True), "prune")
        return
    real_delete = blobs(store).delete
    real_put_bytes = store._put_bytes
    rng = random.Random(10)

    def jittery_delete(storage_path: str) -> bool:
        time.sleep(rng.random() * 0.005)
        return bool(real_delete(storage_path))

    def jittery_put_bytes(stream: Any, owner: str | None) -> Any:
        blob = real_put_bytes(stream, owner)
        time.sleep(rng.random() * 0.005)
        return blob

    blobs(store).delete = jittery_delete  # type: ignore[method-assign]
    store._put_bytes = jittery_put_bytes  # type: ignore[method-assign]
    stop = threading.Event()
    problems: list[str] = []
    counts = {"uploads": 0, "prunes": 0, "pruned_files": 0}
    lock = threading.Lock()

    def uploader(n: int) -> None:
        i = 0
        while not stop.is_set():
            content = POOL[(n + i) % len(POOL)]
            i += 1
            stored = store.put_file(content, filename=f"u{n}-{i}.txt")
            try:
                data = read(store, stored.upload_id or stored.id)
            except NotFoundError:
                if store.get_file(stored.upload_id or stored.id) is not None:
                    problems.append(f"upload {stored.upload_id} of {stored.storage_path} has a row but no bytes")
                continue
            if data != content:
                problems.append(f"upload {stored.upload_id} reads back other bytes")
            with lock:
                counts["uploads"] += 1

    def pruner() -> None:
        while not stop.is_set():
            result = store.prune(older_than=datetime.now(UTC) + timedelta(days=1))
            with lock:
                counts["prunes"] += 1
                counts["pruned_files"] += result.files
            time.sleep(0.001)  # leave the uploaders some turns at the lock

    threads = [in_thread(functools.partial(uploader, n)) for n in range(3)] + [in_thread(pruner)]
    time.sleep(STRESS_SECONDS)
    stop.set()
    for thread, out in threads:
        joined(thread, out, timeout=60)

    assert not problems, problems[:5]
    assert counts["uploads"] > 10 and counts["prunes"] > 2 and counts["pruned_files"] > 0, counts
    assert missing_bytes(store) == 0
    for f in store.list_files(limit=500):
        assert read(store, f.upload_id or f.id) in POOL


UPLOADER = """
import json, os, sys, time
import persistence
url, files_dir, marker, source = sys.argv[1:5]
store = persistence.open_store(url, files_dir=files_dir)
while not os.path.exists(marker):
    time.sleep(0.005)
stored = store.put_file(source, filename="again.txt")
print(json.dumps({"id": stored.upload_id}))
store.close()
"""


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_an_upload_in_another_process_keeps_its_bytes(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Two processes on one store (as two servers would be): the lock is the database's
    (SQLite's write lock on the file; Postgres's advisory lock and claims), not a Python one,
    so an upload in one process is safe from a prune in the other."""
    url = f"sqlite:///{tmp_path / 'history.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    files = tmp_path / "files"
    marker = tmp_path / "sweeping"
    pruning = persistence.open_store(url, files_dir=files)
    try:
        old = pruning.put_file(CONTENT, filename="old.txt", created_at=OLD)
        real_delete = blobs(pruning).delete

        def slow_delete(storage_path: str) -> bool:
            if storage_path == old.storage_path:
                marker.touch()  # the other process uploads now
                time.sleep(PAUSE * 2)
            return bool(real_delete(storage_path))

        blobs(pruning).delete = slow_delete  # type: ignore[method-assign]
        source = tmp_path / "again.txt"
        source.write_bytes(CONTENT)
        uploader = subprocess.Popen(
            [sys.executable, "-c", UPLOADER, url, str(files), str(marker), str(source)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert pruning.prune(older_than=CUTOFF).files == 1
        out, err = uploader.communicate(timeout=60)
        assert uploader.returncode == 0, err.decode()
        again = json.loads(out)["id"]
        assert read(pruning, again) == CONTENT
        assert missing_bytes(pruning) == 0
    finally:
        pruning.close()


# -- the claims on Postgres, driven by hand -------------------------------------------------


def _sql(url: str, query: str, *args: Any) -> Any:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, args or None)
        row = cur.fetchone() if cur.description else None
    return None if row is None else row[0]


@pytest.mark.postgres
def test_an_upload_waits_for_a_live_claim_then_places_its_bytes_again(pg_url: str, tmp_path: Any) -> None:
    """A prune that committed its rows and is still deleting bytes (its claim is live): an
    upload of the same bytes records its row, waits for the claim to go, and then finds the
    bytes gone and stores them again."""
    store = persistence.open_store(pg_url, files_dir=tmp_path / "files")
    try:
        old = store.put_file(CONTENT, filename="old.txt", created_at=OLD)
        sweep = _sql(pg_url, "select public.prune(%s)", CUTOFF)  # rows gone, bytes not yet
        assert [path for _bucket, path in sweep["deleted"]] == [old.storage_path]
        thread, out = in_thread(lambda: store.put_file(CONTENT, filename="again.txt"))
        time.sleep(PAUSE)
        assert thread.is_alive(), "the upload did not wait for the sweep"
        assert blobs(store).delete(old.storage_path)  # the sweep's delete ...
        _sql(pg_url, "select public.release_blob_sweep(%s, %s)", sweep["sweep_id"], [old.storage_path])
        again: persistence.StoredFile = joined(thread, out)  # ... and the upload puts them back
        assert read(store, again.upload_id or again.id) == CONTENT
        assert missing_bytes(store) == 0
    finally:
        store.close()


@pytest.mark.postgres
def test_the_claim_of_a_prune_that_died_does_not_hold_uploads(pg_url: str, tmp_path: Any) -> None:
    store = persistence.open_store(pg_url, files_dir=tmp_path / "files")
    try:
        old = store.put_file(CONTENT, filename="old.txt", created_at=OLD)
        _sql(pg_url, "select public.prune(%s)", CUTOFF)
        blobs(store).delete(old.storage_path)  # it deleted the bytes, then died: the lease runs out
        _sql(pg_url, "update public.blob_sweeps set expires_at = now() - interval '1 second'")
        started = time.monotonic()
        again = store.put_file(CONTENT, filename="again.txt")
        assert time.monotonic() - started < PAUSE
        assert read(store, again.upload_id or again.id) == CONTENT
        # A later prune neither deletes the bytes of a live upload nor trips on the old claim.
        assert store.prune(older_than=CUTOFF).files == 0
        assert missing_bytes(store) == 0
    finally:
        store.close()


@pytest.mark.postgres
def test_a_second_prune_leaves_a_live_claim_to_its_holder(pg_url: str, tmp_path: Any) -> None:
    """While one prune holds a live claim on a path, another prune that deletes the same
    object again (an upload recreated it) does not take the claim over: the first one's late
    delete would otherwise land after the second let uploaders go on."""
    store = persistence.open_store(pg_url, files_dir=tmp_path / "files")
    try:
        old = store.put_file(CONTENT, filename="old.txt", created_at=OLD)
        first = _sql(pg_url, "select public.prune(%s)", CUTOFF)  # its claim is live
        # Recorded again with an old date (as an import would), so the next prune deletes it.
        thread, out = in_thread(lambda: store.put_file(CONTENT, filename="again.txt", created_at=OLD))
        time.sleep(PAUSE)  # waiting on the first prune's claim, its row recorded
        second = _sql(pg_url, "select public.prune(%s)", CUTOFF)
        assert second["files"] == 1 and second["deleted"] == []
        holder = _sql(pg_url, "select sweep_id::text from public.blob_sweeps where storage_path = %s", old.storage_path)
        assert holder == first["sweep_id"]
        _sql(pg_url, "select public.release_blob_sweep(%s, %s)", first["sweep_id"], [old.storage_path])
        joined(thread, out)
    finally:
        store.close()
