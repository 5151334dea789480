"""New threads and messages get time-ordered ids (UUIDv7) on every backend, so a write lands on
the right-hand pages of the id indexes (bench/README.md: WAL and time per record_message)."""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import persistence
from persistence.store import new_id


def _when(id_: str) -> float:
    """The Unix time (seconds) a v7 id was made at."""
    return (uuid.UUID(id_).int >> 80) / 1000


def test_new_id_is_a_v7_uuid_of_now_and_later_ones_sort_after() -> None:
    first = new_id()
    time.sleep(0.002)
    second = new_id()
    for id_ in (first, second):
        u = uuid.UUID(id_)
        assert u.version == 7 and u.variant == uuid.RFC_4122
        assert abs(_when(id_) - time.time()) < 5
    assert first < second  # in text as in bytes: Postgres and SQLite order them the same way
    assert len({new_id() for _ in range(10_000)}) == 10_000


def test_threads_and_messages_written_get_time_ordered_ids(store: persistence.Store) -> None:
    ids = []
    for i in range(3):
        ids.append(store.record_message("v7-thread", "user", f"turn {i}").id)
        time.sleep(0.002)
    started = store.start_conversation("v7-started")
    conv = store.get_conversation("v7-thread")
    assert conv is not None
    # The thread record_message created (by the database's default on Postgres and Supabase).
    for id_ in (*ids, conv.id, started.id):
        assert uuid.UUID(id_).version == 7, id_
        assert abs(_when(id_) - datetime.now(UTC).timestamp()) < 60
    assert ids == sorted(ids) == [m.id for m in conv.messages]
    # An id the caller gives is kept as it is, whatever its version.
    given = str(uuid.uuid4())
    assert store.record_message("v7-thread", "assistant", "given id", message_id=given).id == given


def test_demo_ids_are_time_ordered_and_the_same_for_a_seed(tmp_path: Path) -> None:
    """The demo writes ids as the package does (v7, of each row's own time), reproducibly, so
    demo stores and the bulk benchmarks meet the indexes real data makes."""
    from persistence.demo import generate

    exported = []
    for name in ("a", "b"):
        store = persistence.open_store(f"sqlite:///{tmp_path / name}.db")
        generate(store, 30, seed=9, files=False)
        exported.append(list(store.export_records()))
        store.close()
    assert exported[0] == exported[1]
    for rec in exported[0]:
        conv = rec["conversation"]
        assert uuid.UUID(conv["id"]).version == 7
        assert abs(_when(conv["id"]) - datetime.fromisoformat(conv["created_at"]).timestamp()) < 0.002
        assert uuid.UUID(conv["continuation_id"]).version == 4  # zen's thread ids are random
        for m in rec["messages"]:
            assert uuid.UUID(m["id"]).version == 7
            assert abs(_when(m["id"]) - datetime.fromisoformat(m["created_at"]).timestamp()) < 0.002
    at = datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert new_id(at, rng=random.Random(3)) == new_id(at, rng=random.Random(3))
    assert _when(new_id(at, rng=random.Random(3))) == at.timestamp()
