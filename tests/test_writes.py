"""Idempotent retries, concurrent writers and all-or-nothing writes."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import persistence
from persistence import ConflictError
from persistence.backends.sqlite.store import SQLiteStore

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
USAGE = {"prompt_tokens": 800, "completion_tokens": 200}


def test_a_retried_message_is_stored_once(store: persistence.Store) -> None:
    mid = str(uuid.uuid4())
    first = store.record_message(
        "t-retry", "assistant", "answer", model="glm-4.6", usage=USAGE, message_id=mid, created_at=T0
    )
    again = store.record_message(
        "t-retry", "assistant", "answer", model="glm-4.6", usage=USAGE, message_id=mid, created_at=T0
    )
    assert again.id == first.id and again.seq == first.seq == 1
    conv = store.get_conversation("t-retry")
    assert conv is not None
    assert conv.message_count == 1 and conv.total_tokens == 1000
    usage = store.usage(())
    assert int(usage["messages"].iloc[0]) == 1 and int(usage["total_tokens"].iloc[0]) == 1000


def test_a_message_id_cannot_move_to_another_thread(store: persistence.Store) -> None:
    mid = str(uuid.uuid4())
    store.record_message("t-one", "user", "hi", message_id=mid)
    with pytest.raises(ConflictError, match="t-one"):
        store.record_message("t-two", "user", "hi", message_id=mid)
    assert store.get_conversation("t-two") is None  # the refused write created nothing


def test_concurrent_writers_on_one_thread_lose_nothing(store: persistence.Store) -> None:
    store.start_conversation("t-busy")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(15):
                store.record_message("t-busy", "user", f"writer {n} turn {i}", usage=USAGE, model="glm-4.6")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    conv = store.get_conversation("t-busy")
    assert conv is not None
    assert [m.seq for m in conv.messages] == list(range(1, 91))
    assert sorted(m.content for m in conv.messages) == sorted(
        f"writer {n} turn {i}" for n in range(6) for i in range(15)
    )
    assert conv.message_count == 90 and conv.total_tokens == 90 * 1000
    assert int(store.usage(())["messages"].iloc[0]) == 90


def _process_writer(path: str, n: int) -> None:
    store = persistence.open_store(f"sqlite:///{path}")
    for i in range(25):
        store.record_message("t-procs", "assistant", f"proc {n} turn {i}", model="glm-4.6", usage=USAGE)
    store.close()


def test_concurrent_processes_on_one_sqlite_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    persistence.open_store(f"sqlite:///{path}").close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_writer, args=(path, n)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    store = persistence.open_store(f"sqlite:///{path}")
    conv = store.get_conversation("t-procs")
    assert conv is not None
    assert [m.seq for m in conv.messages] == list(range(1, 101))
    assert conv.message_count == 100
    store.close()


def test_a_failed_step_leaves_nothing_half_written(sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Break the last step of record_message (the rollup) and check no trace remains."""
    store = sqlite_store
    store.record_message("t-atomic", "user", "before", created_at=T0)
    before = store.get_conversation("t-atomic")
    usage_before = store.usage(())
    import persistence.backends.sqlite.store as mod

    monkeypatch.setattr(mod, "_ROLLUP_UPSERT", "insert into no_such_table values (?)")
    with pytest.raises(persistence.PersistenceError):
        store.record_message("t-atomic", "assistant", "unique-word-xyzzy", model="glm-4.6", usage=USAGE)
    with pytest.raises(persistence.PersistenceError):
        store.record_message("t-atomic-new", "user", "a brand new thread")
    monkeypatch.undo()

    after = store.get_conversation("t-atomic")
    assert after == before  # no message, no seq, totals unchanged
    assert store.get_conversation("t-atomic-new") is None  # the auto-created thread rolled back too
    assert store.search("xyzzy") == []  # nothing in the full-text index
    assert store.usage(()).equals(usage_before)
    store.check_fts()
    # And the store still works: the next seq is 2, not 3.
    assert store.record_message("t-atomic", "assistant", "after").seq == 2


def test_record_messages_writes_a_batch_all_or_nothing(store: persistence.Store) -> None:
    mid = str(uuid.uuid4())
    batch: list[dict[str, Any]] = [
        {"continuation_id": "t-batch", "role": "user", "content": "first", "message_id": mid, "created_at": T0},
        {"continuation_id": "t-batch", "role": "assistant", "content": "second", "model": "glm-4.6", "usage": USAGE},
        {"continuation_id": "t-other", "role": "user", "content": "elsewhere"},
    ]
    stored = store.record_messages(batch)
    assert [(m.continuation_id, m.seq, m.content) for m in stored] == [
        ("t-batch", 1, "first"),
        ("t-batch", 2, "second"),
        ("t-other", 1, "elsewhere"),
    ]
    assert stored[1].cost_usd is not None and stored[1].cost_usd > 0
    # A retried batch: stored items come back as stored, new ones are appended.
    again = store.record_messages([batch[0], {"continuation_id": "t-batch", "role": "user", "content": "third"}])
    assert [(m.id, m.seq) for m in again] == [(mid, 1), (again[1].id, 3)]
    conv = store.get_conversation("t-batch")
    assert conv is not None and conv.message_count == 3 and conv.total_tokens == 1000
    # One bad item refuses the whole batch before anything is written, naming the item.
    with pytest.raises(persistence.ValidationError) as info:
        store.record_messages(
            [
                {"continuation_id": "t-new", "role": "user", "content": "ok"},
                {"continuation_id": "t-new", "role": "robot", "content": "x"},
            ]
        )
    assert info.value.field == "messages[1].role"
    with pytest.raises(persistence.ValidationError, match=r"messages\[0\]\.continuation_id"):
        store.record_messages([{"role": "user", "content": "no thread"}])
    # A conflict found by the database rolls the batch back too.
    with pytest.raises(ConflictError):
        store.record_messages(
            [
                {"continuation_id": "t-new", "role": "user", "content": "ok"},
                {**batch[0], "continuation_id": "t-elsewhere"},
            ]
        )
    assert store.get_conversation("t-new") is None and store.get_conversation("t-elsewhere") is None
    assert store.record_messages([]) == []
