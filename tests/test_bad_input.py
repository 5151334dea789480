"""Bad input gets a clear error naming the field, and loses nothing already stored."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import assert_server_only, signed_in

import persistence
from persistence import ReadOnlyStoreError, StoreOpenError, ValidationError, validation
from persistence.models import Usage


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


# -- errors that used to escape validation (issue 10, item 7) ---------------------------------


def _nested(depth: int) -> dict[str, object]:
    """``depth`` + 1 levels of objects: ``depth`` wrapped around an empty one."""
    value: dict[str, object] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def _cyclic_dict() -> dict[str, object]:
    d: dict[str, object] = {}
    d["self"] = d
    return d


def _cyclic_list() -> dict[str, object]:
    lst: list[object] = []
    lst.append(lst)
    return {"l": lst}


def _counts(store: persistence.Store) -> object:
    return (
        store.count_conversations(),
        store.usage(()).to_dict(),
        store.storage_usage(()).to_dict(),
    )


PLUS_5 = timezone(timedelta(hours=5))
MINUS_5 = timezone(timedelta(hours=-5))
LIMIT = validation.MAX_TOKENS


class _IntStream:
    def read(self, n: int = -1) -> object:
        return 42


@pytest.mark.parametrize(
    ("call", "field"),
    [
        # RecursionError before: nesting and cycles.
        (lambda s: s.record_message("t-x", "user", "a", metadata=_nested(10_000)), "metadata.a.a"),
        (lambda s: s.record_message("t-x", "user", "a", metadata=_nested(validation.MAX_JSON_DEPTH)), "metadata.a.a"),
        (lambda s: s.record_message("t-x", "user", "a", metadata=_cyclic_dict()), "metadata.self"),
        (lambda s: s.record_message("t-x", "user", "a", metadata=_cyclic_list()), "metadata.l[0]"),
        (lambda s: s.record_message("t-x", "user", "a", usage={"foo": _nested(10_000)}), "usage.foo.a"),
        (lambda s: s.start_conversation("t-x", initial_context=_cyclic_dict()), "initial_context.self"),
        (lambda s: s.put_file(b"hello", filename="a.txt", metadata=_nested(10_000)), "metadata.a.a"),
        (
            lambda s: s.record_messages(
                [{"continuation_id": "t-x", "role": "user", "content": "a", "metadata": _nested(100)}]
            ),
            "messages[0].metadata.a",
        ),
        # OverflowError before: times at the ends of datetime, counts near 2**62.
        (lambda s: s.record_message("t-x", "user", "a", created_at=datetime(1, 1, 1, tzinfo=PLUS_5)), "created_at"),
        (
            lambda s: s.record_message("t-x", "user", "a", created_at=datetime(9999, 12, 31, 23, tzinfo=MINUS_5)),
            "created_at",
        ),
        (
            lambda s: s.record_message("t-x", "user", "a", created_at=datetime(1969, 12, 31, 23, tzinfo=UTC)),
            "created_at",
        ),
        (lambda s: s.record_message("t-x", "user", "a", created_at=datetime(2200, 1, 1, tzinfo=UTC)), "created_at"),
        (lambda s: s.start_conversation("t-x", expires_at=datetime(9999, 12, 31, 23, tzinfo=MINUS_5)), "expires_at"),
        (lambda s: s.update_conversation("t-keep", expires_at=datetime(1, 1, 1, tzinfo=PLUS_5)), "expires_at"),
        (lambda s: s.put_file(b"hello", filename="a.txt", created_at=datetime(1, 1, 1, tzinfo=PLUS_5)), "created_at"),
        (
            lambda s: s.record_message(
                "t-x", "assistant", "a", model="glm-4.6", usage={"prompt_tokens": 2**62, "completion_tokens": 2**62}
            ),
            "usage.prompt_tokens",
        ),
        (
            lambda s: s.record_message(
                "t-x", "assistant", "a", usage={"prompt_tokens": 1, "completion_tokens": LIMIT + 1}
            ),
            "usage.completion_tokens",
        ),
        (
            # Gemini's prompt is two counts added: each within the limit, the sum is not.
            lambda s: s.record_message(
                "t-x", "assistant", "a", usage={"promptTokenCount": LIMIT, "toolUsePromptTokenCount": LIMIT}
            ),
            "usage.input_tokens",
        ),
        (lambda s: s.record_message("t-x", "assistant", "a", usage=Usage(input_tokens=2**62)), "usage.input_tokens"),
        (lambda s: s.record_message("t-x", "assistant", "a", usage=Usage(output_tokens=-1)), "usage.output_tokens"),
        (
            # 10**10 output tokens of glm-4.6 would cost $22,000: over the per-message cost limit.
            lambda s: s.record_message(
                "t-x", "assistant", "a", model="glm-4.6", usage={"prompt_tokens": 1, "completion_tokens": LIMIT}
            ),
            "usage",
        ),
        (lambda s: s.record_message("t-x", "user", "a", duration_ms=31 * 24 * 3600 * 1000), "duration_ms"),
        (lambda s: s.record_message("t-x", "user", "a", duration_ms=2**70), "duration_ms"),
        (lambda s: s.record_message("t-x", "user", "a", metadata={"n": 2**1100}), "metadata.n"),
        (lambda s: s.record_message("t-x", "user", "a", metadata={"n": 10**5000}), "metadata.n"),
        (lambda s: s.record_message("t-x", "user", "a", message_id=10**5000), "message_id"),
        (lambda s: s.record_message("t-x", 10**5000, "a"), "role"),
        # Non-finite numbers anywhere in JSON.
        (lambda s: s.record_message("t-x", "user", "a", metadata={"x": [1, float("inf")]}), "metadata.x[1]"),
        (lambda s: s.record_message("t-x", "user", "a", usage={"foo": float("nan")}), "usage.foo"),
        (lambda s: s.record_message("t-x", "user", "a", usage={"prompt_tokens": float("inf")}), "usage.prompt_tokens"),
        # Keys: not strings, or equal once NUL and surrogates are replaced; values that are not JSON.
        (lambda s: s.record_message("t-x", "user", "a", metadata={("a", "b"): 1}), "metadata"),
        (lambda s: s.record_message("t-x", "user", "a", metadata={"k\x00": 1, "k\ud800": 2}), "metadata"),
        (lambda s: s.record_message("t-x", "user", "a", metadata={"s": {1, 2}}), "metadata.s"),
        (lambda s: s.record_message("t-x", "user", "a", metadata={"big": "x" * (1024 * 1024)}), "metadata"),
        # ValueError: embedded null byte, and paths the file system cannot encode.
        (lambda s: s.put_file("/tmp/a\x00b.txt"), "source"),
        (lambda s: s.put_file(Path("/tmp/a\x00b.txt")), "source"),
        (lambda s: s.put_file("/tmp/a\ud800.txt"), "source"),
        (lambda s: s.put_file(_IntStream(), filename="a.txt"), "source"),
        # A MIME type with CR/LF (stored verbatim before), or no MIME type at all.
        (lambda s: s.put_file(b"hello", filename="a.txt", mime_type="text/plain\r\nX-Evil: 1"), "mime_type"),
        (lambda s: s.put_file(b"hello", filename="a.txt", mime_type="text/plain\n"), "mime_type"),
        (lambda s: s.put_file(b"hello", filename="a.txt", mime_type="text/pl ain"), "mime_type"),
        (lambda s: s.put_file(b"hello", filename="a.txt", mime_type="text/plaín"), "mime_type"),
        (lambda s: s.put_file(b"hello", filename="a.txt", mime_type=b"text/plain"), "mime_type"),
        (lambda s: s.record_messages(5), "messages"),
        (
            lambda s: s.record_provider_file(
                str(uuid.uuid4()), "kimi", "f-1", expires_at=datetime(9999, 12, 31, 23, tzinfo=MINUS_5)
            ),
            "expires_at",
        ),
    ],
)
def test_what_used_to_escape_is_refused_naming_the_field(seeded: persistence.Store, call, field: str) -> None:  # type: ignore[no-untyped-def]
    before = _counts(seeded)
    conv = seeded.get_conversation("t-keep")
    with pytest.raises(ValidationError) as info:
        call(seeded)
    assert info.value.field.startswith(field), info.value.field
    assert _counts(seeded) == before
    assert seeded.get_conversation("t-keep") == conv
    assert seeded.get_conversation("t-x") is None


def test_counts_at_the_limit_keep_exact_integer_totals(store: persistence.Store) -> None:
    """Three messages at the token limit in every bucket: before the limit, two near 2**62
    turned SQLite's totals into floats and usage() into -9.2e18."""
    at_limit = Usage(LIMIT, LIMIT, LIMIT, LIMIT, LIMIT)
    for _ in range(3):
        store.record_message("t-big", "assistant", "a", model="no-such-model", usage=at_limit)
    conv = store.get_conversation("t-big")
    assert conv is not None and conv.usage.total == 15 * LIMIT
    usage = store.usage(())
    assert usage["total_tokens"].dtype == "int64"
    assert int(usage["total_tokens"].sum()) == 15 * LIMIT
    assert int(usage["input_tokens"].sum()) == 3 * LIMIT


def test_bounds_that_are_accepted(store: persistence.Store) -> None:
    deepest = _nested(validation.MAX_JSON_DEPTH - 2)  # in the outer dict: 64 levels, the most allowed
    m = store.record_message(
        "t-edge",
        "assistant",
        "a",
        metadata={"deep": deepest, "n": 2**70, "neg": -(2**63), "f": 1.5e20, "when": date(2026, 1, 1)},
        usage={"prompt_tokens": 10, "completion_tokens": 5},
        model="glm-4.6",
        duration_ms=validation.MAX_DURATION_MS,
        created_at=datetime(1970, 1, 1, 5, tzinfo=PLUS_5),
    )
    assert m.created_at == datetime(1970, 1, 1, tzinfo=UTC)
    got = store.get_message(m.id)
    assert got is not None and got.metadata == m.metadata and got.metadata["n"] == 2**70
    # What the store hands back is accepted again as it is (Postgres reads 1.5e20 as an int).
    assert store.record_message("t-edge", "user", "again", metadata=got.metadata).metadata == got.metadata
    assert got.metadata["when"] == "2026-01-01"
    late = store.record_message("t-edge", "user", "b", created_at="2199-12-31T23:59:59.999999+00:00")  # type: ignore[arg-type]
    assert late.created_at.year == 2199
    # A date is its midnight UTC.
    conv = store.start_conversation("t-date", created_at=date(2026, 11, 30))  # type: ignore[arg-type]
    assert conv.created_at == datetime(2026, 11, 30, tzinfo=UTC)


def test_mime_types_are_checked_and_normalised(store: persistence.Store) -> None:
    f = store.put_file(b"hello", filename="a.txt", mime_type=" Text/Plain;Charset=UTF-8 ")
    assert f.mime_type == "text/plain; charset=UTF-8"
    g = store.put_file(b"hello again", filename="b.txt", mime_type='text/plain; charset="utf-8"; format=flowed')
    assert g.mime_type == 'text/plain; charset="utf-8"; format=flowed'
    stored = store.get_file(g.upload_id or g.id)
    assert stored is not None and stored.mime_type == g.mime_type
    assert validation.check_mime_type("application/vnd.openxmlformats-officedocument.wordprocessingml.document")


def test_reads_and_prune_refuse_or_reach_the_first_day(seeded: persistence.Store) -> None:
    for call, field in [
        (lambda: seeded.list_conversations(limit=10**5000), "limit"),
        (lambda: seeded.search("precious", limit=10**5000), "limit"),
        (lambda: seeded.list_conversations(min_cost=float("nan")), "min_cost"),
        (lambda: seeded.list_conversations(min_cost=10**400), "min_cost"),
        (lambda: seeded.usage(group_by=[["day"]]), "group_by"),  # type: ignore[list-item]
    ]:
        with pytest.raises(ValidationError) as info:
            call()
        assert info.value.field == field
    assert int(seeded.usage((), until=datetime(1, 1, 1, tzinfo=UTC))["messages"].sum()) == 0
    if signed_in(seeded):  # prune is the server's only
        assert_server_only(lambda: seeded.prune(older_than=timedelta(days=10**8), dry_run=True), "prune")
        return
    result = seeded.prune(older_than=timedelta(days=10**8), dry_run=True)  # longer than datetime reaches
    assert result.conversations == 0 and result.cutoff == datetime(1, 1, 1, tzinfo=UTC)
