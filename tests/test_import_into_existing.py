"""Import into a store that already holds the thread, and redaction through export/import.

Every scenario runs on every backend (``store``), importing records exported from SQLite
stores (``source``, ``other``):

- a thread that already holds other messages at the exported turns (``seq``) takes the
  imported ones after its last turn, in their order, and loses or changes none of its own;
  exported turns that are free keep their seq (a thread continued by a later import);
- the same thread given twice in one batch (two exports concatenated) imports both;
- a batch that fails writes nothing;
- ``redacted_at`` of threads, messages and uploads travels (only when set), and an export
  without it still imports.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import SIGNED_IN_USER, assert_server_only, server_side, signed_in
from test_export_import import assert_same_records, records

import persistence
from persistence.errors import ConflictError

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
KIMI: dict[str, Any] = {"model": "kimi-k2-0905-preview", "usage": {"prompt_tokens": 1200, "completion_tokens": 300}}


@pytest.fixture
def source(tmp_path: Path) -> Iterator[persistence.Store]:
    s = persistence.open_store(f"sqlite:///{tmp_path / 'source.db'}")
    yield s
    s.close()


@pytest.fixture
def other(tmp_path: Path) -> Iterator[persistence.Store]:
    s = persistence.open_store(f"sqlite:///{tmp_path / 'other.db'}")
    yield s
    s.close()


def say(store: persistence.Store, cid: str, texts: list[str], start: datetime) -> None:
    """A user turn and a priced answer per text, a minute apart."""
    for i, text in enumerate(texts):
        at = start + timedelta(minutes=2 * i)
        store.record_message(cid, "user", text, created_at=at, message_id=str(uuid.uuid4()))
        store.record_message(
            cid,
            "assistant",
            f"answer to {text}",
            created_at=at + timedelta(minutes=1),
            message_id=str(uuid.uuid4()),
            **KIMI,
        )


def turns(store: persistence.Store, cid: str) -> list[tuple[int, str, str]]:
    conv = store.get_conversation(cid)
    assert conv is not None
    return [(m.seq, m.id, m.content) for m in conv.messages]


def assert_totals_recomputed(store: persistence.Store) -> None:
    """Thread totals and the daily rollup equal a recomputation from every stored message."""
    rollup: dict[tuple[str, str], list[float]] = {}
    for rec in store.export_records():
        conv = store.get_conversation(rec["conversation"]["continuation_id"], last=1)
        assert conv is not None
        tokens = sum(sum(m["usage"].values()) for m in rec["messages"])
        cost = sum(m["cost_usd"] or 0.0 for m in rec["messages"])
        assert (conv.message_count, conv.total_tokens) == (len(rec["messages"]), tokens)
        assert conv.cost_usd == pytest.approx(cost, rel=1e-9, abs=1e-12)
        for m in rec["messages"]:
            row = rollup.setdefault((m["created_at"][:10], m["model"] or ""), [0, 0, 0.0])
            row[0] += 1
            row[1] += sum(m["usage"].values())
            row[2] += m["cost_usd"] or 0.0
    buckets = ["input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens"]
    frame = store.usage(("day", "model"))
    got: dict[tuple[str, str], list[Any]] = {}
    for r in frame.to_dict("records"):
        key = (r["day"].strftime("%Y-%m-%d"), r["model"] or "")
        got[key] = [int(r["messages"]), sum(int(r[b]) for b in buckets), float(r["cost_usd"])]
    assert got.keys() == rollup.keys()
    for key, (n, tokens, cost) in rollup.items():
        assert got[key][:2] == [n, tokens], key
        assert got[key][2] == pytest.approx(cost, rel=1e-9, abs=1e-12), key


def server_only(store: persistence.Store) -> bool:
    if signed_in(store):  # import writes rows for any owner: the server's only
        assert_server_only(lambda: store.import_records([]), "import")
        return True
    return False


def test_import_into_a_thread_with_other_turns_appends_after_them(
    source: persistence.Store, store: persistence.Store
) -> None:
    if server_only(store):
        return
    source.start_conversation("T", tool_name="chat", created_at=T0)
    say(source, "T", ["imported one", "imported two"], T0)
    store.start_conversation("T", tool_name="chat", created_at=T0 + timedelta(days=1))
    say(store, "T", ["mine one", "mine two", "mine three"], T0 + timedelta(days=1))
    mine = turns(store, "T")
    theirs = turns(source, "T")
    assert [seq for seq, _, _ in mine] == [1, 2, 3, 4, 5, 6]
    assert [seq for seq, _, _ in theirs] == [1, 2, 3, 4]  # every one collides

    result = store.import_records(records(source))

    assert (result.conversations, result.conversations_skipped, result.messages) == (0, 1, 4)
    after = turns(store, "T")
    assert after[:6] == mine  # the stored turns keep their seq, id and content
    assert after[6:] == [(6 + seq, mid, content) for seq, mid, content in theirs]  # after them, in order
    assert_totals_recomputed(store)
    # Importing again adds nothing and moves nothing; the next turn goes after the imported ones.
    again = store.import_records(records(source))
    assert (again.messages, again.messages_skipped) == (0, 4)
    assert turns(store, "T") == after
    store.record_message("T", "user", "later", message_id=str(uuid.uuid4()))
    assert turns(store, "T")[-1][0] == 11
    assert_totals_recomputed(store)


def test_free_turns_keep_their_exported_seq(source: persistence.Store, store: persistence.Store) -> None:
    """A thread whose first turns came with an earlier import: the rest arrive at their own seq."""
    if server_only(store):
        return
    source.start_conversation("T", created_at=T0)
    say(source, "T", ["one", "two", "three"], T0)
    first = records(source)[0]
    partial = json.loads(json.dumps(first))
    partial["messages"] = partial["messages"][:2]
    store.import_records([partial])
    result = store.import_records([first])
    assert (result.messages, result.messages_skipped) == (4, 2)
    assert turns(store, "T") == turns(source, "T")
    assert_same_records([first], records(store))
    assert_totals_recomputed(store)


def test_one_thread_twice_in_a_batch_imports_both(
    source: persistence.Store, other: persistence.Store, store: persistence.Store
) -> None:
    """Two exports of thread T concatenated into one file: both histories, neither lost."""
    if server_only(store):
        return
    source.start_conversation("T", created_at=T0)
    say(source, "T", ["from a"], T0)
    other.start_conversation("T", created_at=T0 + timedelta(hours=1))
    say(other, "T", ["from b", "from b again"], T0 + timedelta(hours=1))
    a, b = records(source), records(other)

    result = store.import_records(a + b)

    assert (result.conversations, result.conversations_skipped, result.messages) == (1, 1, 6)
    got = turns(store, "T")
    expected = [content for _, _, content in turns(source, "T") + turns(other, "T")]
    assert [content for _, _, content in got] == expected
    assert [seq for seq, _, _ in got] == [1, 2, 3, 4, 5, 6]
    assert store.import_records(a + b).messages == 0
    assert_totals_recomputed(store)


def test_a_failed_batch_writes_nothing(
    source: persistence.Store, other: persistence.Store, store: persistence.Store
) -> None:
    """A message id already stored in another thread is a conflict: the whole batch is refused,
    including the turns it appended to an existing thread and a thread it created."""
    if server_only(store):
        return
    store.start_conversation("T", created_at=T0)
    say(store, "T", ["mine"], T0)
    source.start_conversation("T", created_at=T0)
    say(source, "T", ["theirs"], T0)
    source.start_conversation("new", created_at=T0)
    say(source, "new", ["fresh"], T0)
    stolen = turns(store, "T")[0][1]
    other.start_conversation("U", created_at=T0)
    other.record_message("U", "user", "an id of thread T", created_at=T0, message_id=stolen)
    before = (records(store), store.usage(("day", "model")))

    with pytest.raises(ConflictError):
        store.import_records(records(source) + records(other))

    assert records(store) == before[0]
    pd.testing.assert_frame_equal(store.usage(("day", "model")), before[1])
    assert store.get_conversation("new") is None and store.count_conversations() == 1


def redacted_source(store: persistence.Store, owner: str | None = None) -> None:
    """A redacted thread with an upload of its own and one shared with a clean thread, and a
    turn recorded after the redaction (not redacted)."""
    store.start_conversation("secret", tool_name="chat", title="secret plans", user_id=owner, created_at=T0)
    say(store, "secret", ["the secret"], T0)
    store.start_conversation("clean", tool_name="chat", user_id=owner, created_at=T0)
    say(store, "clean", ["ordinary"], T0)
    store.put_file(b"private\n" * 9, filename="private.txt", continuation_id="secret", user_id=owner, created_at=T0)
    store.put_file(b"handbook\n" * 9, filename="hb.txt", continuation_id="secret", user_id=owner, created_at=T0)
    store.put_file(b"handbook\n" * 9, filename="hb.txt", continuation_id="clean", user_id=owner, created_at=T0)


def test_redaction_travels_through_export_and_import(source: persistence.Store, store: persistence.Store) -> None:
    if signed_in(store):
        # A signed-in user's export shows which of their threads and messages were redacted.
        server = server_side(store)
        redacted_source(server, owner=SIGNED_IN_USER)
        server.redact(continuation_id="secret")
        (secret,) = [r for r in records(store) if r["conversation"]["continuation_id"] == "secret"]
        assert secret["conversation"]["redacted_at"] and all(m["redacted_at"] for m in secret["messages"])
        assert [bool(f.get("redacted_at")) for f in secret["files"]] == [True, True]  # their uploads too
        assert_server_only(lambda: store.import_records([]), "import")
        return
    redacted_source(source)
    source.redact(continuation_id="secret")
    source.record_message("secret", "user", "after the redaction", message_id=str(uuid.uuid4()))
    exported = records(source)
    secret, clean = (
        next(r for r in exported if r["conversation"]["continuation_id"] == c) for c in ("secret", "clean")
    )
    # Exported only when set.
    assert secret["conversation"]["redacted_at"] and "redacted_at" not in clean["conversation"]
    assert [bool(m.get("redacted_at")) for m in secret["messages"]] == [True, True, False]
    assert all("redacted_at" not in m for m in clean["messages"])
    assert [bool(f.get("redacted_at")) for f in secret["files"]] == [True, True]
    assert all("redacted_at" not in f for f in clean["files"])

    store.import_records(exported)

    assert_same_records(exported, records(store))
    conv, was = store.get_conversation("secret"), source.get_conversation("secret")
    assert conv is not None and was is not None
    assert conv.redacted_at == was.redacted_at is not None  # the thread page marks it
    assert [m.redacted_at for m in conv.messages] == [m.redacted_at for m in was.messages]
    got = store.get_conversation("clean")
    assert got is not None and got.redacted_at is None
    # No bytes were copied: the unredacted handbook is missing, the private object (every
    # upload redacted) is emptied on purpose, as in the source.
    assert store.doctor()["files_missing_bytes_count"] == 1
    # Importing again changes nothing.
    assert store.import_records(exported).messages == 0
    assert_same_records(exported, records(store))


def test_an_export_without_redacted_at_still_imports(source: persistence.Store, store: persistence.Store) -> None:
    """Exports made before the field was written: messages with "redacted_at": null, nothing
    on threads and uploads. They import, and nothing is marked redacted."""
    if server_only(store):
        return
    redacted_source(source)
    old = records(source)
    for rec in old:
        for m in rec["messages"]:
            m["redacted_at"] = None
    store.import_records(old)
    assert_same_records(records(source), records(store))
    conv = store.get_conversation("secret")
    assert conv is not None and conv.redacted_at is None and conv.messages[0].content == "the secret"


@pytest.mark.parametrize(
    ("where", "field"),
    [
        ("conversation", "conversation.redacted_at"),
        ("message", "messages[0].redacted_at"),
        ("file", "files[0].redacted_at"),
    ],
)
def test_a_bad_redacted_at_is_refused_naming_it(
    source: persistence.Store, store: persistence.Store, where: str, field: str
) -> None:
    if server_only(store):
        return
    redacted_source(source)
    rec = next(r for r in records(source) if r["conversation"]["continuation_id"] == "secret")
    target = {"conversation": rec["conversation"], "message": rec["messages"][0], "file": rec["files"][0]}[where]
    target["redacted_at"] = "yesterday"
    with pytest.raises(persistence.ValidationError) as refused:
        store.import_records([rec])
    assert refused.value.field.endswith(field)
    assert store.count_conversations() == 0


def test_newer_imported_turns_move_the_thread_on_and_older_ones_do_not(
    source: persistence.Store, other: persistence.Store, store: persistence.Store
) -> None:
    """A thread continued elsewhere and imported back goes to the top of the Threads list with
    its newest model, as if its turns had been recorded here; an import of older turns leaves
    its place and model alone."""
    if server_only(store):
        return
    store.start_conversation("T", tool_name="chat", created_at=T0)
    say(store, "T", ["here"], T0)
    store.start_conversation("U", tool_name="chat", created_at=T0 + timedelta(hours=5))
    say(store, "U", ["meanwhile"], T0 + timedelta(hours=5))
    assert [c.continuation_id for c in store.list_conversations()] == ["U", "T"]

    source.start_conversation("T", tool_name="chat", created_at=T0)
    later = T0 + timedelta(days=1)
    source.record_message("T", "user", "continued", created_at=later, message_id=str(uuid.uuid4()))
    source.record_message(
        "T",
        "assistant",
        "on glm",
        created_at=later + timedelta(minutes=1),
        message_id=str(uuid.uuid4()),
        model="glm-4.5",
        usage={"prompt_tokens": 10, "completion_tokens": 5},
    )
    source.record_message(
        "T", "user", "last word", created_at=later + timedelta(minutes=2), message_id=str(uuid.uuid4())
    )
    assert store.import_records(records(source)).messages == 3

    conv = store.get_conversation("T", last=1)
    assert conv is not None
    assert conv.updated_at == later + timedelta(minutes=2)  # its newest turn, a user turn
    assert conv.model == "glm-4.5"  # the newest turn that names a model
    assert [c.continuation_id for c in store.list_conversations()] == ["T", "U"]
    assert store.count_conversations(model="glm-4.5") == 1
    assert_totals_recomputed(store)

    other.start_conversation("T", tool_name="chat", created_at=T0 - timedelta(days=3))
    other.record_message(
        "T",
        "assistant",
        "long ago",
        created_at=T0 - timedelta(days=3),
        message_id=str(uuid.uuid4()),
        model="kimi-k2-turbo-preview",
        usage={"prompt_tokens": 10, "completion_tokens": 5},
    )
    assert store.import_records(records(other)).messages == 1
    conv = store.get_conversation("T", last=1)
    assert conv is not None
    assert (conv.updated_at, conv.model) == (later + timedelta(minutes=2), "glm-4.5")
    assert_totals_recomputed(store)
