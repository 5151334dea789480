"""The zen-mcp-server storage adapter against the server's contract (shared/contracts)."""

from __future__ import annotations

import json
import multiprocessing
import traceback
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import persistence
from persistence import ValidationError
from persistence.integrations.zen import RAW_PROMPT_MARKER, ThreadStorage

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def turn(role: str, content: str, i: int, **extra: Any) -> dict[str, Any]:
    return {
        "role": role,
        "content": content,
        "timestamp": (NOW + timedelta(seconds=i)).isoformat(),
        "files": extra.get("files"),
        "images": extra.get("images"),
        "tool_name": extra.get("tool_name", "chat"),
        "model_provider": extra.get("model_provider"),
        "model_name": extra.get("model_name"),
        "model_metadata": extra.get("model_metadata"),
    }


def context(thread_id: str, turns: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    ctx = {
        "thread_id": thread_id,
        "parent_thread_id": extra.get("parent_thread_id"),
        "created_at": NOW.isoformat(),
        "last_updated_at": (NOW + timedelta(seconds=len(turns))).isoformat(),
        "tool_name": extra.get("tool_name", "chat"),
        "turns": turns,
        "initial_context": extra.get("initial_context", {"prompt": "first question", "files": []}),
    }
    for key in ("session_fingerprint", "client_friendly_name"):
        if key in extra:
            ctx[key] = extra[key]
    return ctx


@pytest.fixture
def storage(store: persistence.Store) -> ThreadStorage:
    return ThreadStorage(store, outbox=False)


def key(thread_id: str) -> str:
    return f"thread:{thread_id}"


def test_add_turn_cycle_round_trips_and_fills_columns(storage: ThreadStorage, store: persistence.Store) -> None:
    tid = str(uuid.uuid4())
    ctx = context(tid, [], session_fingerprint="fp-1", client_friendly_name="Claude Desktop")
    storage.set_with_ttl(key(tid), 3600, json.dumps(ctx))
    # zen's add_turn: read, append, write back with a fresh TTL.
    for i, (role, content, extra) in enumerate(
        [
            ("user", "Why does the pool run dry?", {"files": ["/src/pool.py"]}),
            (
                "assistant",
                "Connections leak on timeout.",
                {
                    "model_provider": "kimi",
                    "model_name": "kimi-k2-0905-preview",
                    "model_metadata": {
                        "usage": {"input_tokens": 1200, "output_tokens": 300, "total_tokens": 1500},
                        "metadata": {"finish_reason": "stop"},
                    },
                },
            ),
            (
                "assistant",
                "Step 2 of the investigation.",
                {
                    "tool_name": "debug",
                    "model_name": "glm-4.6",
                    "model_metadata": {
                        "work_history": [{"step": 1, "findings": "x"}],
                        "initial_request": {"step": "a"},
                    },
                },
            ),
        ]
    ):
        current = json.loads(storage.get(key(tid)) or "null")
        current["turns"].append(turn(role, content, i, **extra))
        current["last_updated_at"] = (NOW + timedelta(seconds=i + 1)).isoformat()
        storage.setex(key(tid), 3600, json.dumps(current))
        ctx = current
    assert json.loads(storage.get(key(tid)) or "null") == ctx  # field for field
    conv = store.get_conversation(tid)
    assert conv is not None and conv.message_count == 3
    user, kimi, glm = conv.messages
    assert user.files == ("/src/pool.py",) and user.role == "user"
    assert (kimi.model, kimi.provider, kimi.tokens) == ("kimi-k2-0905-preview", "kimi", 1500)
    assert kimi.cost_usd is not None and kimi.cost_usd > 0
    assert glm.tool_name == "debug"
    assert store.search("leak")[0].message.id == kimi.id  # the app can search what the server wrote


# NUL and lone surrogates are what no backend stores (they become U+FFFD, see test_bad_input).
TEXT = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(TEXT, max_size=20)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(TEXT, max_size=8), inner, max_size=3),
        max_leaves=8,
    )


@st.composite
def thread_contexts(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 8))
    turns = []
    for i in range(n):
        role = "user" if i % 2 == 0 else "assistant"
        text = draw(st.text(min_size=0, max_size=200).filter(lambda t: RAW_PROMPT_MARKER not in t and "\x00" not in t))
        turns.append(
            turn(
                role,
                text,
                i,
                files=draw(
                    st.none() | st.lists(st.text(min_size=1, max_size=30).filter(lambda t: "\x00" not in t), max_size=2)
                ),
                images=draw(st.none() | st.just([])),
                tool_name=draw(st.sampled_from(["chat", "thinkdeep", None])),
                model_provider=draw(st.sampled_from(["kimi", "glm", None])) if role == "assistant" else None,
                model_name=draw(st.sampled_from(["glm-4.6", "kimi-k2-turbo-preview", "unknown-model", None]))
                if role == "assistant"
                else None,
                model_metadata=draw(
                    st.none()
                    | st.fixed_dictionaries(
                        {
                            "usage": st.fixed_dictionaries(
                                {"input_tokens": st.integers(0, 10**6), "output_tokens": st.integers(0, 10**5)}
                            )
                        },
                        optional={"work_history": st.lists(_json_values(), max_size=3), "metadata": _json_values()},
                    )
                ),
            )
        )
    extra: dict[str, Any] = {
        "parent_thread_id": draw(st.none() | st.just(str(uuid.UUID(int=draw(st.integers(0, 2**64)), version=4)))),
        "initial_context": draw(
            st.dictionaries(st.sampled_from(["prompt", "files", "step", "model_config"]), _json_values(), max_size=4)
        ),
    }
    if draw(st.booleans()):
        extra["session_fingerprint"] = draw(st.text(max_size=16).filter(lambda t: "\x00" not in t))
        extra["client_friendly_name"] = draw(st.none() | st.just("Cursor"))
    return context(str(uuid.uuid4()), turns, **extra)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ctx=thread_contexts())
def test_get_returns_what_was_set(storage: ThreadStorage, ctx: dict[str, Any]) -> None:
    storage.set_with_ttl(key(ctx["thread_id"]), 3600, json.dumps(ctx))
    assert json.loads(storage.get(key(ctx["thread_id"])) or "null") == ctx
    # Writing the same context again (a retry) changes nothing.
    storage.set_with_ttl(key(ctx["thread_id"]), 3600, json.dumps(ctx))
    assert json.loads(storage.get(key(ctx["thread_id"])) or "null") == ctx


def test_newest_turns_are_kept(store: persistence.Store) -> None:
    storage = ThreadStorage(store, outbox=False, max_turns=4)
    tid = str(uuid.uuid4())
    turns = [turn("user" if i % 2 == 0 else "assistant", f"turn {i}", i) for i in range(10)]
    storage.set_with_ttl(key(tid), 3600, json.dumps(context(tid, turns)))
    got = json.loads(storage.get(key(tid)) or "null")
    assert [t["content"] for t in got["turns"]] == ["turn 6", "turn 7", "turn 8", "turn 9"]
    conv = store.get_conversation(tid)
    assert conv is not None and conv.message_count == 10  # all kept for the app


def test_ttl_decides_what_get_returns_and_data_stays(storage: ThreadStorage, store: persistence.Store) -> None:
    tid = str(uuid.uuid4())
    storage.set_with_ttl(key(tid), 3600, json.dumps(context(tid, [turn("user", "remember me", 0)])))
    assert storage.get(key(tid)) is not None
    store.update_conversation(tid, expires_at=datetime.now(UTC) - timedelta(seconds=1))  # as if 3 h passed
    assert storage.get(key(tid)) is None
    conv = store.get_conversation(tid)
    assert conv is not None and conv.messages[0].content == "remember me"
    storage.set_with_ttl(key(tid), 60, json.dumps(context(tid, [turn("user", "remember me", 0)])))
    assert storage.get(key(tid)) is not None  # a fresh write renews it
    assert storage.get(key(str(uuid.uuid4()))) is None


def test_the_raw_prompt_is_stored_not_the_rebuilt_history(storage: ThreadStorage, store: persistence.Store) -> None:
    tid = str(uuid.uuid4())
    history = "=== CONVERSATION HISTORY ===\nTurn 1 (user): earlier question\nTurn 2 (assistant): long answer\n" * 50
    rebuilt = f"{history}\n\n{RAW_PROMPT_MARKER}\nWhat about the retry decorator?"
    ctx = context(tid, [turn("user", rebuilt, 0)], initial_context={"prompt": rebuilt, "_original_user_prompt": "x"})
    storage.set_with_ttl(key(tid), 3600, json.dumps(ctx))
    conv = store.get_conversation(tid)
    assert conv is not None
    assert conv.messages[0].content == "What about the retry decorator?"
    assert conv.initial_context is not None and conv.initial_context["prompt"] == "What about the retry decorator?"
    got = json.loads(storage.get(key(tid)) or "null")
    assert got["turns"][0]["content"] == "What about the retry decorator?"
    # The server writes back what it read: still one turn, not a second copy.
    storage.set_with_ttl(key(tid), 3600, json.dumps(got))
    again = store.get_conversation(tid)
    assert again is not None and again.message_count == 1


def _append_turn(url: str, tid: str, text: str, start: Any, report: str) -> None:
    try:
        storage = ThreadStorage(persistence.open_store(url), outbox=False)
        current = json.loads(storage.get(key(tid)) or "null")
        start.wait(120)  # both have read the same context before either writes (spawn + imports are slow under load)
        current["turns"].append(turn("user", text, 5 if "A" in text else 6))
        storage.set_with_ttl(key(tid), 3600, json.dumps(current))
        storage.shutdown()
    except BaseException:
        Path(report).write_text(traceback.format_exc())  # the parent shows it: a child's stderr is lost
        raise


def test_two_processes_appending_keep_both_turns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    storage = ThreadStorage(persistence.open_store(url), outbox=False)
    tid = str(uuid.uuid4())
    storage.set_with_ttl(key(tid), 3600, json.dumps(context(tid, [turn("user", "start", 0)])))
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    reports = {name: tmp_path / f"{name}.txt" for name in ("turn from A", "turn from B")}
    procs = [ctx.Process(target=_append_turn, args=(url, tid, name, start, str(reports[name]))) for name in reports]
    for p in procs:
        p.start()
    for p, (name, report) in zip(procs, reports.items(), strict=True):
        p.join(180)
        assert p.exitcode == 0, f"{name}: " + (report.read_text() if report.exists() else "no report")
    got = json.loads(storage.get(key(tid)) or "null")
    assert sorted(t["content"] for t in got["turns"]) == ["start", "turn from A", "turn from B"]
    storage.shutdown()


def test_bad_values_are_refused_clearly(storage: ThreadStorage) -> None:
    tid = str(uuid.uuid4())
    with pytest.raises(ValidationError, match="value"):
        storage.set_with_ttl(key(tid), 60, "{not json")
    with pytest.raises(ValidationError, match=r"value\.turns"):
        storage.set_with_ttl(
            key(tid), 60, json.dumps({**context(tid, []), "turns": [{"role": "robot", "content": "x"}]})
        )
    with pytest.raises(ValidationError, match=r"value\.thread_id"):
        storage.set_with_ttl(key(tid), 60, json.dumps(context(str(uuid.uuid4()), [])))
    # A malformed usage report does not cost the turn.
    bad_usage = turn("assistant", "answer", 1, model_name="glm-4.6", model_metadata={"usage": {"input_tokens": -5}})
    storage.set_with_ttl(key(tid), 60, json.dumps(context(tid, [turn("user", "q", 0), bad_usage])))
    got = json.loads(storage.get(key(tid)) or "null")
    assert [t["content"] for t in got["turns"]] == ["q", "answer"]
    assert got["turns"][1]["model_metadata"] == {"usage": {"input_tokens": -5}}


def test_other_keys_stay_in_memory(storage: ThreadStorage) -> None:
    storage.set_with_ttl("session:abc", 60, "value")
    assert storage.get("session:abc") == "value"
    storage.set_with_ttl("session:old", -1, "gone")
    assert storage.get("session:old") is None


def test_thread_contexts_the_server_saved_can_be_imported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """E.g. the values of a Redis backend's thread:* keys, one per line, or a .json file."""
    from persistence.cli import main

    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    ctx_a = context(
        a,
        [
            turn("user", "from redis", 0),
            turn(
                "assistant",
                "an answer",
                1,
                model_name="glm-4.6",
                model_metadata={"usage": {"input_tokens": 10, "output_tokens": 5}},
            ),
        ],
    )
    ctx_b = context(b, [turn("user", "another thread", 0)], parent_thread_id=a)
    (tmp_path / "threads.jsonl").write_text(json.dumps(ctx_a) + "\n" + json.dumps(ctx_b) + "\n")
    (tmp_path / "one.json").write_text(json.dumps(ctx_b, indent=2))
    url = f"sqlite:///{tmp_path / 'h.db'}"
    assert main(["import", "--url", url, str(tmp_path / "threads.jsonl"), str(tmp_path / "one.json")]) == 0
    assert "3 ThreadContexts with 3 new turns" in capsys.readouterr()[0]
    store = persistence.open_store(url)
    conv = store.get_conversation(a)
    assert conv is not None and [m.content for m in conv.messages] == ["from redis", "an answer"]
    assert conv.messages[1].cost_usd is not None
    assert store.list_conversations(parent_id=a).items[0].continuation_id == b
    storage = ThreadStorage(store, outbox=False)
    assert storage.get(key(a)) is None  # history for the app, not a live thread
    storage.shutdown()
