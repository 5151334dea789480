"""Threads and messages: write, read back, list. Runs on every backend."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import SIGNED_IN_USER, signed_in

import persistence
from persistence import NotFoundError, ValidationError

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_a_thread_round_trips_every_field(store: persistence.Store) -> None:
    cid = str(uuid.uuid4())
    started = store.start_conversation(
        cid,
        tool_name="chat",
        title="Pool exhaustion",
        session_id="sess-1",
        parent_id="parent-thread",
        tags=["infra", "urgent"],
        metadata={"client": "cursor", "nested": {"a": [1, 2]}},
        initial_context={"prompt": "why", "files": ["/src/app.py"]},
        created_at=T0,
    )
    assert started.continuation_id == cid
    store.record_message(
        cid,
        "user",
        "Why does the pool run dry?",
        files=["/src/app.py"],
        images=["/tmp/chart.png"],
        metadata={"_original_user_prompt": "Why does the pool run dry?"},
        created_at=T0 + timedelta(seconds=1),
    )
    store.record_message(
        cid,
        "assistant",
        "Connections leak on timeout.",
        model="kimi-k2-0905-preview",
        provider="kimi",
        usage={"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500, "cached_tokens": 200},
        duration_ms=2100,
        tool_name="chat",
        metadata={"usage": {"raw": True}, "work_history": [{"step": 1}]},
        created_at=T0 + timedelta(seconds=5),
    )
    conv = store.get_conversation(cid)
    assert conv is not None
    assert (conv.tool_name, conv.title, conv.session_id, conv.parent_id) == (
        "chat",
        "Pool exhaustion",
        "sess-1",
        "parent-thread",
    )
    assert conv.tags == ("infra", "urgent")
    assert conv.metadata == {"client": "cursor", "nested": {"a": [1, 2]}}
    assert conv.initial_context == {"prompt": "why", "files": ["/src/app.py"]}
    assert conv.created_at == T0
    assert conv.updated_at == T0 + timedelta(seconds=5)
    assert conv.model == "kimi-k2-0905-preview"
    assert [m.seq for m in conv.messages] == [1, 2]
    user, assistant = conv.messages
    assert user.files == ("/src/app.py",) and user.images == ("/tmp/chart.png",)
    assert user.metadata == {"_original_user_prompt": "Why does the pool run dry?"}
    assert assistant.metadata == {"usage": {"raw": True}, "work_history": [{"step": 1}]}
    assert assistant.usage.input_tokens == 1000 and assistant.usage.cached_input_tokens == 200
    assert assistant.usage.output_tokens == 300 and assistant.tokens == 1500
    assert assistant.duration_ms == 2100 and assistant.provider == "kimi"
    assert assistant.created_at.tzinfo is not None
    assert conv.message_count == 2 and conv.total_tokens == 1500
    assert conv.cost_usd == pytest.approx(assistant.cost_usd)


def test_start_conversation_is_idempotent(store: persistence.Store) -> None:
    first = store.start_conversation("thread-1", title="first")
    again = store.start_conversation("thread-1", title="ignored on a repeat")
    assert again.id == first.id and again.title == "first"
    assert store.count_conversations() == 1


def test_a_new_thread_gets_a_generated_id(store: persistence.Store) -> None:
    a = store.start_conversation()
    b = store.start_conversation()
    assert a.continuation_id != b.continuation_id
    uuid.UUID(a.continuation_id)


def test_first_message_creates_the_thread_and_titles_it(store: persistence.Store) -> None:
    store.record_message("t-auto", "user", "  Explain   the\nretry decorator  ", tool_name="debug", created_at=T0)
    store.record_message("t-auto", "user", "A second question", created_at=T0 + timedelta(minutes=1))
    conv = store.get_conversation("t-auto")
    assert conv is not None
    assert conv.title == "Explain the retry decorator"
    assert conv.tool_name == "debug"


def test_last_returns_the_newest_turns_oldest_first(store: persistence.Store) -> None:
    for i in range(12):
        store.record_message(
            "t-long", "user" if i % 2 == 0 else "assistant", f"turn {i}", created_at=T0 + timedelta(minutes=i)
        )
    conv = store.get_conversation("t-long", last=5)
    assert conv is not None
    assert [m.content for m in conv.messages] == [f"turn {i}" for i in range(7, 12)]
    assert conv.message_count == 12  # totals cover the whole thread, not the page
    older = store.get_messages("t-long", before_seq=conv.messages[0].seq, limit=5)
    assert [m.content for m in older] == [f"turn {i}" for i in range(2, 7)]
    assert [m.content for m in store.get_messages("t-long", before_seq=3, limit=5)] == ["turn 0", "turn 1"]


def test_missing_threads(store: persistence.Store) -> None:
    assert store.get_conversation("no-such-thread") is None
    with pytest.raises(NotFoundError):
        store.get_messages("no-such-thread")
    with pytest.raises(NotFoundError):
        store.update_conversation("no-such-thread", title="x")
    assert store.get_message(str(uuid.uuid4())) is None


def test_update_conversation_changes_only_what_is_given(store: persistence.Store) -> None:
    store.start_conversation("t-upd", title="old", tags=["a"], metadata={"k": 1})
    conv = store.update_conversation("t-upd", title="new", status="archived")
    assert (conv.title, conv.status, conv.tags, conv.metadata) == ("new", "archived", ("a",), {"k": 1})
    conv = store.update_conversation("t-upd", summary=None, tags=["b", "b", "c"])
    assert conv.tags == ("b", "c")
    with pytest.raises(ValidationError, match="status"):
        store.update_conversation("t-upd", status="gone")


def test_model_used_is_the_newest_turns_model(store: persistence.Store) -> None:
    store.record_message("t-m", "assistant", "a", model="glm-4.6", created_at=T0)
    store.record_message("t-m", "assistant", "b", model="kimi-k2-turbo-preview", created_at=T0 + timedelta(minutes=1))
    # A late-arriving older turn does not take over.
    store.record_message("t-m", "assistant", "c", model="gpt-5", created_at=T0 - timedelta(minutes=1))
    conv = store.get_conversation("t-m")
    assert conv is not None and conv.model == "kimi-k2-turbo-preview"


def _seed_threads(store: persistence.Store) -> None:
    spec = [
        ("t-a", "chat", "glm-4.6", "glm", ["infra"], 0),
        ("t-b", "codereview", "kimi-k2-0905-preview", "kimi", ["billing"], 1),
        ("t-c", "debug", "gpt-5", "openai", [], 2),
        ("t-d", "chat", "kimi-k2-0905-preview", "kimi", ["infra", "billing"], 3),
        ("t-e", "planner", "glm-4.6", "glm", [], 4),
    ]
    for cid, tool, model, provider, tags, day in spec:
        at = T0 + timedelta(days=day)
        store.start_conversation(cid, tool_name=tool, tags=tags, created_at=at, title=f"Thread {cid}")
        store.record_message(cid, "user", f"question for {cid}", created_at=at)
        store.record_message(
            cid,
            "assistant",
            f"answer for {cid}",
            model=model,
            provider=provider,
            usage={"prompt_tokens": 1000 * (day + 1), "completion_tokens": 500},
            created_at=at + timedelta(minutes=1),
        )


def test_list_filters(store: persistence.Store) -> None:
    _seed_threads(store)

    def ids(**kw: object) -> list[str]:
        return [c.continuation_id for c in store.list_conversations(**kw)]  # type: ignore[arg-type]

    assert ids() == ["t-e", "t-d", "t-c", "t-b", "t-a"]  # newest activity first
    assert ids(model="kimi-k2-0905-preview") == ["t-d", "t-b"]
    assert ids(provider="glm") == ["t-e", "t-a"]
    assert ids(tool_name="chat") == ["t-d", "t-a"]
    assert ids(tag="billing") == ["t-d", "t-b"]
    assert ids(text="THREAD t-c") == ["t-c"]
    assert ids(text="100%_") == []  # LIKE wildcards in the text are literal
    assert ids(since=T0 + timedelta(days=2), until=T0 + timedelta(days=4)) == ["t-d", "t-c"]
    # glm-4.6 at 5,000 in / 500 out is $0.0041; gpt-5 at 3,000 / 500 is $0.00875.
    assert ids(min_cost=0.004) == ["t-e", "t-c"]
    assert store.count_conversations(tag="infra") == 2
    by_cost = store.list_conversations(order="cost")
    costs = [c.cost_usd for c in by_cost]
    assert costs == sorted(costs, reverse=True) and by_cost.items[0].continuation_id == "t-c"


def test_every_filter_alone_and_together(store: persistence.Store) -> None:
    """Each key of ConversationFilters filters the same way on every backend, alone and with
    the others; count_conversations counts what list_conversations lists; an empty text is no
    filter; an unknown keyword is refused as Python refuses one."""
    _seed_threads(store)
    # A signed-in user may make threads out to no one but themselves (RLS), so all are theirs.
    owner = SIGNED_IN_USER if signed_in(store) else str(uuid.uuid4())
    at = T0 + timedelta(days=9)
    store.start_conversation("t-f", session_id="s-1", user_id=owner, parent_id="t-a", tags=["infra"], created_at=at)
    store.record_message("t-f", "user", "a question", created_at=at)
    store.update_conversation("t-f", title="Kid")
    store.update_conversation("t-b", status="archived")

    def ids(**kw: Any) -> set[str]:
        listed = {c.continuation_id for c in store.list_conversations(limit=1000, **kw)}
        assert store.count_conversations(**kw) == len(listed), kw
        return listed

    everything = ids()
    assert len(everything) == 6
    assert ids(session_id="s-1") == ids(parent_id="t-a") == ids(text="kid") == {"t-f"}
    assert ids(user_id=owner) == (everything if signed_in(store) else {"t-f"})
    assert ids(status="archived") == {"t-b"}
    assert ids(status="active") == everything - {"t-b"}
    assert ids(tag="infra", session_id="s-1", since=T0, until=T0 + timedelta(days=30)) == {"t-f"}
    assert ids(model="kimi-k2-0905-preview", tag="billing", min_cost=0.0) == {"t-d", "t-b"}
    assert ids(model="kimi-k2-0905-preview", status="active") == {"t-d"}
    assert ids(model="", provider="", tool_name="", tag="", text="", since=None) == everything
    with pytest.raises(TypeError, match="modle"):
        store.list_conversations(modle="glm-4.6")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="tags"):
        store.count_conversations(tags="infra")  # type: ignore[call-arg]


def test_pagination_visits_every_thread_once(store: persistence.Store) -> None:
    for i in range(23):
        store.record_message(f"page-{i:02d}", "user", "hi", created_at=T0 + timedelta(minutes=i % 7))
    for order in ("recent", "created", "cost"):
        seen: list[str] = []
        cursor = None
        while True:
            page = store.list_conversations(limit=5, cursor=cursor, order=order)
            seen.extend(c.continuation_id for c in page)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert sorted(seen) == [f"page-{i:02d}" for i in range(23)], order
    with pytest.raises(ValidationError, match="cursor"):
        store.list_conversations(cursor="not-a-cursor")
    with pytest.raises(ValidationError, match="limit"):
        store.list_conversations(limit=0)


def test_parent_and_children(store: persistence.Store) -> None:
    store.start_conversation("root", title="root")
    store.start_conversation("child-1", parent_id="root")
    store.start_conversation("child-2", parent_id="root")
    kids = store.list_conversations(parent_id="root")
    assert sorted(c.continuation_id for c in kids) == ["child-1", "child-2"]
