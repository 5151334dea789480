"""Bad input gets a clear error naming the field, and loses nothing already stored."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

import persistence
from persistence import ReadOnlyStoreError, StoreOpenError, ValidationError


@pytest.fixture
def seeded(store: persistence.Store) -> persistence.Store:
    store.record_message("t-keep", "user", "precious question", tool_name="chat")
    store.record_message(
        "t-keep", "assistant", "precious answer", model="glm-4.6", usage={"prompt_tokens": 10, "completion_tokens": 5}
    )
    return store


def _snapshot(store: persistence.Store) -> object:
    conv = store.get_conversation("t-keep")
    return (conv, store.count_conversations(), store.usage(()).to_dict())


def test_nul_and_lone_surrogates_are_replaced_not_refused(store: persistence.Store) -> None:
    m = store.record_message(
        "t-nul",
        "assistant",
        "before\x00after \ud800 end",
        metadata={"k\x00ey": "va\x00lue", "list": ["\udfff"]},
        model="glm\x00-4.6",
    )
    assert m.content == "before\ufffdafter \ufffd end"
    conv = store.get_conversation("t-nul")
    assert conv is not None
    stored = conv.messages[0]
    assert stored.content == "before\ufffdafter \ufffd end"
    assert stored.metadata == {"k\ufffdey": "va\ufffdlue", "list": ["\ufffd"]}
    assert [h.message.id for h in store.search("after")] == [m.id]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.record_message("t-x", "robot", "hi"), "role"),
        (lambda s: s.record_message("", "user", "hi"), "continuation_id"),
        (lambda s: s.record_message("has spaces", "user", "hi"), "continuation_id"),
        (lambda s: s.record_message("x" * 201, "user", "hi"), "continuation_id"),
        (lambda s: s.record_message(None, "user", "hi"), "continuation_id"),
        (lambda s: s.record_message("t-x", "user", None), "content"),
        (lambda s: s.record_message("t-x", "user", b"bytes"), "content"),
        (
            lambda s: s.record_message("t-x", "assistant", "a", usage={"prompt_tokens": -1, "completion_tokens": 2}),
            "usage.prompt_tokens",
        ),
        (
            lambda s: s.record_message(
                "t-x", "assistant", "a", usage={"prompt_tokens": "many", "completion_tokens": 2}
            ),
            "usage.prompt_tokens",
        ),
        (lambda s: s.record_message("t-x", "assistant", "a", usage=[1, 2]), "usage"),
        (lambda s: s.record_message("t-x", "assistant", "a", duration_ms=-3), "duration_ms"),
        (lambda s: s.record_message("t-x", "user", "a", metadata=["not", "a", "dict"]), "metadata"),
        (lambda s: s.record_message("t-x", "user", "a", metadata={"x": float("nan")}), "metadata.x"),
        (lambda s: s.record_message("t-x", "user", "a", metadata={"x": object()}), "metadata.x"),
        (lambda s: s.record_message("t-x", "user", "a", message_id="not-a-uuid"), "message_id"),
        (lambda s: s.record_message("t-x", "user", "a", created_at=datetime(2026, 1, 1)), "created_at"),
        (lambda s: s.record_message("t-x", "user", "a", files="/one/path"), "files"),
        (lambda s: s.start_conversation("t-x", tags=["ok", ""]), "tags"),
        (lambda s: s.start_conversation("t-x", user_id="alice"), "user_id"),
        (lambda s: s.get_conversation("t-x", last=-1), "last"),
        (lambda s: s.list_conversations(order="random"), "order"),
        (lambda s: s.list_conversations(min_cost=-1), "min_cost"),
        (lambda s: s.search(None), "query"),
    ],
)
def test_refused_with_the_field_named_and_nothing_lost(seeded: persistence.Store, call, field: str) -> None:  # type: ignore[no-untyped-def]
    before = _snapshot(seeded)
    with pytest.raises(ValidationError) as info:
        call(seeded)
    assert info.value.field == field
    assert field in str(info.value)
    assert _snapshot(seeded) == before
    assert seeded.get_conversation("t-x") is None


def test_oversized_content_is_refused(seeded: persistence.Store) -> None:
    before = _snapshot(seeded)
    with pytest.raises(ValidationError, match=r"content: 20,971,520 bytes exceeds the limit"):
        seeded.record_message("t-keep", "user", "x" * (20 * 1024 * 1024))
    assert _snapshot(seeded) == before


def test_the_content_limit_is_configurable(tmp_path: Path) -> None:
    store = persistence.open_store(f"sqlite:///{tmp_path / 'small.db'}", env={"PERSISTENCE_MAX_CONTENT_BYTES": "10"})
    store.record_message("t", "user", "0123456789")
    store.record_message("t", "user", "数据库")  # 3 characters, 9 bytes: fine
    with pytest.raises(ValidationError, match="content: 12 bytes"):
        store.record_message("t", "user", "数据库索")
    store.close()


def test_empty_content_is_stored(store: persistence.Store) -> None:
    m = store.record_message(
        "t-empty", "assistant", "", model="glm-4.6", usage={"prompt_tokens": 5, "completion_tokens": 0}
    )
    assert m.content == "" and m.seq == 1


def test_a_file_that_is_not_sqlite_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database" * 10)
    before = path.read_bytes()
    with pytest.raises(StoreOpenError, match="not a SQLite database"):
        persistence.open_store(f"sqlite:///{path}")
    assert path.read_bytes() == before
    with pytest.raises(StoreOpenError, match="directory"):
        persistence.open_store(f"sqlite:///{tmp_path}")
    with pytest.raises(StoreOpenError, match="unsupported store URL"):
        persistence.open_store("mysql://localhost/db")


@contextlib.contextmanager
def _read_only_file(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable, also for root (permission bits do not stop root)."""
    if os.geteuid() == 0:
        if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
            pytest.skip("running as root and cannot set the immutable flag (chattr)")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=False)
    else:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)


def test_a_read_only_database_can_be_browsed_but_not_written(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    store = persistence.open_store(f"sqlite:///{path}")
    store.record_message("t-ro", "user", "written before it became read-only")
    store.close()
    with _read_only_file(path):
        ro = persistence.open_store(f"sqlite:///{path}")
        assert getattr(ro, "read_only", False)
        conv = ro.get_conversation("t-ro")
        assert conv is not None and conv.messages[0].content == "written before it became read-only"
        assert ro.search("written")
        with pytest.raises(ReadOnlyStoreError, match="read-only"):
            ro.record_message("t-ro", "user", "refused")
        with pytest.raises(ReadOnlyStoreError):
            ro.put_file(b"bytes", filename="x.txt")
        ro.close()
    again = persistence.open_store(f"sqlite:///{path}")
    conv = again.get_conversation("t-ro")
    assert conv is not None and conv.message_count == 1
    again.close()


def test_mode_ro_in_the_url(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    persistence.open_store(f"sqlite:///{path}").close()
    ro = persistence.open_store(f"sqlite:///{path}?mode=ro")
    with pytest.raises(ReadOnlyStoreError):
        ro.start_conversation("t")
    ro.close()
