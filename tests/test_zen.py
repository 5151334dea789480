"""The zen-mcp-server storage adapter against the server's contract (shared/contracts).

Every test that takes ``storage`` runs on every backend twice: writing straight to the store
(``outbox=False``) and through the durable outbox (``outbox=True``, the default on Postgres
and Supabase), where ``get`` must answer what the store will hold once delivery is done.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import traceback
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_server_only, signed_in
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import persistence
from persistence import ValidationError
from persistence.integrations.zen import RAW_PROMPT_MARKER, ThreadStorage, turn_id
from persistence.outbox import Outbox, doctor

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


@pytest.fixture(params=[False, True], ids=["direct", "outbox"])
def storage(request: pytest.FixtureRequest, store: persistence.Store, tmp_path: Path) -> Iterator[ThreadStorage]:
    s = ThreadStorage(store, outbox=request.param, outbox_dir=tmp_path / "queue")
    yield s
    if s.outbox is not None:
        s.outbox.close()


def settle(storage: ThreadStorage) -> None:
    """Wait until the outbox (if any) has delivered everything: the store then holds it all."""
    if storage.outbox is not None:
        assert storage.outbox.wait_idle(60), storage.outbox.status()


def key(thread_id: str) -> str:
    return f"thread:{thread_id}"


def test_add_turn_cycle_round_trips_and_fills_columns(storage: ThreadStorage, store: persistence.Store) -> None:
    tid = str(uuid.uuid4())
    ctx = context(tid, [], session_fingerprint="fp-1", client_friendly_name="Claude Desktop")
    storage.set_with_ttl(key(tid), 3600, json.dumps(ctx))
    # zen's add_turn: read, append, write back with a fresh TTL.
    script: list[tuple[str, str, dict[str, Any]]] = [
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
    for i, (role, content, extra) in enumerate(script):
        current = json.loads(storage.get(key(tid)) or "null")
        current["turns"].append(turn(role, content, i, **extra))
        current["last_updated_at"] = (NOW + timedelta(seconds=i + 1)).isoformat()
        storage.setex(key(tid), 3600, json.dumps(current))
        ctx = current
    assert json.loads(storage.get(key(tid)) or "null") == ctx  # field for field
    settle(storage)
    assert json.loads(storage.get(key(tid)) or "null") == ctx  # and from the store
    conv = store.get_conversation(tid)
    assert conv is not None and conv.message_count == 3
    user, kimi, glm = conv.messages
    assert user.files == ("/src/pool.py",) and user.role == "user"
    assert (kimi.model, kimi.provider, kimi.tokens) == ("kimi-k2-0905-preview", "kimi", 1500)
    assert kimi.cost_usd is not None and kimi.cost_usd > 0
    assert glm.tool_name == "debug"
    assert store.search("leak")[0].message.id == kimi.id  # the app can search what the server wrote


# NUL and lone surrogates are what no backend stores (they become U+FFFD, see test_bad_input).
TEXT = st.characters(exclude_characters="\x00", exclude_categories=["Cs"])


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
    settle(storage)
    assert json.loads(storage.get(key(ctx["thread_id"])) or "null") == ctx
    # Writing the same context again (a retry) changes nothing.
    storage.set_with_ttl(key(ctx["thread_id"]), 3600, json.dumps(ctx))
    assert json.loads(storage.get(key(ctx["thread_id"])) or "null") == ctx


@pytest.mark.parametrize("outbox", [False, True], ids=["direct", "outbox"])
def test_newest_turns_are_kept(store: persistence.Store, outbox: bool, tmp_path: Path) -> None:
    storage = ThreadStorage(store, outbox=outbox, outbox_dir=tmp_path / "queue", max_turns=4)
    tid = str(uuid.uuid4())
    turns = [turn("user" if i % 2 == 0 else "assistant", f"turn {i}", i) for i in range(10)]
    storage.set_with_ttl(key(tid), 3600, json.dumps(context(tid, turns)))
    for _ in range(2):  # queued, then delivered
        got = json.loads(storage.get(key(tid)) or "null")
        assert [t["content"] for t in got["turns"]] == ["turn 6", "turn 7", "turn 8", "turn 9"]
        settle(storage)
    if storage.outbox is not None:
        storage.outbox.close()
    conv = store.get_conversation(tid)
    assert conv is not None and conv.message_count == 10  # all kept for the app


def test_ttl_decides_what_get_returns_and_data_stays(storage: ThreadStorage, store: persistence.Store) -> None:
    tid = str(uuid.uuid4())
    storage.set_with_ttl(key(tid), 3600, json.dumps(context(tid, [turn("user", "remember me", 0)])))
    assert storage.get(key(tid)) is not None
    settle(storage)
    store.update_conversation(tid, expires_at=datetime.now(UTC) - timedelta(seconds=1))  # as if 3 h passed
    assert storage.get(key(tid)) is None
    conv = store.get_conversation(tid)
    assert conv is not None and conv.messages[0].content == "remember me"
    storage.set_with_ttl(key(tid), 60, json.dumps(context(tid, [turn("user", "remember me", 0)])))
    assert storage.get(key(tid)) is not None  # a fresh write renews it
    settle(storage)
    assert storage.get(key(tid)) is not None
    assert storage.get(key(str(uuid.uuid4()))) is None


def test_the_raw_prompt_is_stored_not_the_rebuilt_history(storage: ThreadStorage, store: persistence.Store) -> None:
    tid = str(uuid.uuid4())
    history = "=== CONVERSATION HISTORY ===\nTurn 1 (user): earlier question\nTurn 2 (assistant): long answer\n" * 50
    rebuilt = f"{history}\n\n{RAW_PROMPT_MARKER}\nWhat about the retry decorator?"
    ctx = context(tid, [turn("user", rebuilt, 0)], initial_context={"prompt": rebuilt, "_original_user_prompt": "x"})
    storage.set_with_ttl(key(tid), 3600, json.dumps(ctx))
    settle(storage)
    conv = store.get_conversation(tid)
    assert conv is not None
    assert conv.messages[0].content == "What about the retry decorator?"
    assert conv.initial_context is not None and conv.initial_context["prompt"] == "What about the retry decorator?"
    got = json.loads(storage.get(key(tid)) or "null")
    assert got["turns"][0]["content"] == "What about the retry decorator?"
    # The server writes back what it read: still one turn, not a second copy.
    storage.set_with_ttl(key(tid), 3600, json.dumps(got))
    settle(storage)
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
    for _ in range(2):  # queued, then delivered
        got = json.loads(storage.get(key(tid)) or "null")
        assert [t["content"] for t in got["turns"]] == ["q", "answer"]
        assert got["turns"][1]["model_metadata"] == {"usage": {"input_tokens": -5}}
        settle(storage)


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


# -- issue 10: what the store refuses, concurrent callers, unstorable text, zen's echo ----------

# A turn each backend refuses (prepare_message names the field), as seen in the field.
POISON: dict[str, dict[str, Any]] = {
    "model_name": {"model_name": "m" * 201},
    "files": {"files": [1, 2]},
    "nan": {"model_metadata": {"usage": {"input_tokens": 5}, "metadata": {"score": float("nan")}}},
}


@pytest.mark.parametrize("poison", list(POISON))
def test_a_turn_the_store_would_refuse_is_refused_by_set_with_ttl(
    storage: ThreadStorage, store: persistence.Store, poison: str
) -> None:
    """Same ValidationError with or without the outbox, and the thread goes on without it."""
    tid = str(uuid.uuid4())
    good = [turn("user", "q1", 0), turn("assistant", "a1", 1, model_name="glm-4.6")]
    storage.set_with_ttl(key(tid), 3600, json.dumps(context(tid, good)))
    bad = turn("assistant", "poisoned", 2, **POISON[poison])
    with pytest.raises(ValidationError, match=r"value\.turns\[2\]"):
        storage.set_with_ttl(key(tid), 3600, json.dumps(context(tid, [*good, bad])))
    # zen's add_turn failed: its next add_turn reads the thread (without the bad turn) again.
    ctx = json.loads(storage.get(key(tid)) or "null")
    assert [t["content"] for t in ctx["turns"]] == ["q1", "a1"]
    for i, (role, text) in enumerate([("user", "q2"), ("assistant", "a2"), ("user", "q3")], start=2):
        ctx["turns"].append(turn(role, text, i))
        storage.set_with_ttl(key(tid), 3600, json.dumps(ctx))
    settle(storage)
    conv = store.get_conversation(tid)
    assert conv is not None and [m.content for m in conv.messages] == ["q1", "a1", "q2", "a2", "q3"]
    if storage.outbox is not None:
        assert storage.outbox.status()["dead"] == 0


def test_a_turn_refused_at_delivery_is_set_aside_alone(
    store: persistence.Store, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Snapshots already queued with a bad turn (by a version without the check): only that
    turn is set aside, loudly; the thread's other and later turns are delivered."""
    monkeypatch.setenv("PERSISTENCE_OUTBOX_DIR", str(tmp_path / "queue"))
    storage = ThreadStorage(store, outbox=True)
    assert storage.outbox is not None
    tid = str(uuid.uuid4())
    turns = [turn("user", "q1", 0), turn("assistant", "poisoned", 1, model_name="m" * 201)]
    at = datetime.now(UTC).isoformat()
    # Queued as the unchecked code did: straight into the outbox, one snapshot per add_turn.
    for text, i in [("q2", 2), ("a2", 3), ("q3", 4)]:
        turns.append(turn("user" if i % 2 == 0 else "assistant", text, i))
    for n in range(2, len(turns) + 1):
        payload = {"value": json.dumps(context(tid, turns[:n])), "ttl": 3600, "at": at}
        storage.outbox.submit("zen_snapshot", payload, key=key(tid))
    with caplog.at_level(logging.ERROR, logger="persistence.outbox"):
        settle(storage)
    conv = store.get_conversation(tid)
    assert conv is not None and [m.content for m in conv.messages] == ["q1", "q2", "a2", "q3"]
    status = storage.outbox.status()
    assert (status["dead"], status["set_aside"]) == (1, 1)  # the turn once, not every snapshot
    assert any(r.levelno == logging.ERROR and key(tid) in r.getMessage() for r in caplog.records)
    if signed_in(store):  # the store's doctor is the server's only (the outbox's figures are above)
        assert_server_only(lambda: doctor(store), "doctor")
    else:
        report = doctor(store)
        assert report["outbox_set_aside"] == 1 and report["outbox_dead"] == 1
    # get answers what the store holds: no poisoned turn, queued or not.
    got = json.loads(storage.get(key(tid)) or "null")
    assert [t["content"] for t in got["turns"]] == ["q1", "q2", "a2", "q3"]
    storage.outbox.close()


def test_get_merges_every_queued_snapshot_with_the_store(store: persistence.Store, tmp_path: Path) -> None:
    """Two callers append to one thread at once: each wrote a snapshot without the other's
    turn. get answers what the store will hold: both turns, delivered or not."""
    storage = ThreadStorage(store, outbox=True, outbox_dir=tmp_path / "queue")
    assert storage.outbox is not None
    storage.outbox.close()
    outbox = storage.outbox = Outbox(store, storage.outbox.path, start=False)  # delivery by hand
    tid = str(uuid.uuid4())
    base = context(tid, [turn("user", "start", 0), turn("assistant", "answer", 1)])
    storage.set_with_ttl(key(tid), 3600, json.dumps(base))
    outbox.flush_once()
    for round_ in range(3):
        a, b = json.loads(json.dumps(base)), json.loads(json.dumps(base))  # both read the same
        a["turns"].append(turn("user", f"from A {round_}", 10 + 2 * round_))
        b["turns"].append(turn("user", f"from B {round_}", 11 + 2 * round_))
        storage.set_with_ttl(key(tid), 3600, json.dumps(a))
        if round_ == 1:
            outbox.flush_once()  # A's delivered, B's queued
        storage.set_with_ttl(key(tid), 3600, json.dumps(b))
        got = [t["content"] for t in json.loads(storage.get(key(tid)) or "null")["turns"]]
        assert got[-2:] == [f"from A {round_}", f"from B {round_}"], got
        base = json.loads(storage.get(key(tid)) or "null")
    outbox.flush_once()
    assert outbox.depth() == 0
    stored = [m.content for m in store.get_conversation(tid).messages]  # type: ignore[union-attr]
    assert stored == [t["content"] for t in base["turns"]]
    assert json.loads(storage.get(key(tid)) or "null")["turns"] == base["turns"]
    outbox.close()


def test_text_no_backend_stores_is_one_turn_counted_once(storage: ThreadStorage, store: persistence.Store) -> None:
    """NUL and a lone surrogate become U+FFFD when stored; the turn read back and written again
    is the same turn (its id comes from the stored text), so nothing is stored or costed twice."""
    tid = str(uuid.uuid4())
    usage = {"usage": {"input_tokens": 1000, "output_tokens": 100}}
    turns = [
        turn("user", "bad \x00 byte and \ud800 half", 0),
        turn("assistant", "reply with \x00", 1, model_name="glm-4.6", model_metadata=usage),
    ]
    storage.set_with_ttl(key(tid), 3600, json.dumps(context(tid, turns)))
    for i in range(2, 4):  # zen's add_turn: read (cleaned text), append, write back
        settle(storage)
        ctx = json.loads(storage.get(key(tid)) or "null")
        ctx["turns"].append(turn("user" if i % 2 == 0 else "assistant", f"next {i}", i))
        storage.set_with_ttl(key(tid), 3600, json.dumps(ctx))
    settle(storage)
    conv = store.get_conversation(tid)
    assert conv is not None and conv.message_count == 4
    assert conv.messages[0].content == "bad \ufffd byte and \ufffd half"
    assert conv.total_tokens == 1100


def test_ids_of_clean_text_are_unchanged() -> None:
    """Turn ids already stored (from text without NUL or surrogates) stay the same."""
    tid = "0b5f6f9e-1c8e-4b39-9a4e-3c2d1e0f9a77"
    t = {"timestamp": "2026-11-20T09:00:00+00:00", "role": "user"}
    assert turn_id(tid, t, "Why does the pool run dry?") == "68cc4e51-62fc-58a7-a746-09eb7fece76d"
    assert turn_id(tid, t, "a \x00") == turn_id(tid, t, "a \ufffd")


FOLLOW_UP = (
    "\n\nCONVERSATION CONTINUATION: You can continue this discussion with Claude! (18 exchanges remaining)\n\n"
    "Feel free to ask clarifying questions or suggest areas for deeper exploration naturally within your response."
)


def zen_continuation(ctx: dict[str, Any], question: str, answer: str, i: int) -> list[dict[str, Any]]:
    """The snapshots zen writes for a continued question: the raw prompt (server.py), the
    prompt it sent the model (history + marker + question + follow-up instructions, the
    echo), the reply."""
    history = "=== CONVERSATION HISTORY ===\n" + "\n".join(t["content"] for t in ctx["turns"])
    echo = f"{history}\n\n{RAW_PROMPT_MARKER}\n{question}{FOLLOW_UP}"
    out = []
    for t in (
        turn("user", question, i),
        turn("user", echo, i + 1),
        turn("assistant", answer, i + 2, model_name="glm-4.6", model_metadata={"usage": {"input_tokens": 9}}),
    ):
        ctx = {**ctx, "turns": [*ctx["turns"], t]}
        out.append(ctx)
    return out


def test_zens_echo_of_a_question_is_one_visible_turn(storage: ThreadStorage, store: persistence.Store) -> None:
    tid = str(uuid.uuid4())
    ctx = context(tid, [turn("user", "why is the zebra cache cold", 0), turn("assistant", "eviction", 1)])
    storage.set_with_ttl(key(tid), 3600, json.dumps(ctx))
    for question, answer, i in [("and the walrus queue", "backpressure", 2), ("what about retries", "jitter", 5)]:
        for snapshot in zen_continuation(json.loads(storage.get(key(tid)) or "null"), question, answer, i):
            storage.set_with_ttl(key(tid), 3600, json.dumps(snapshot))
            ctx = snapshot
    expected = [t["content"] for t in ctx["turns"]]
    expected[3] = "and the walrus queue" + FOLLOW_UP  # the echo, history cut as for any turn
    expected[6] = "what about retries" + FOLLOW_UP
    for _ in range(2):  # queued, then delivered
        got = json.loads(storage.get(key(tid)) or "null")
        assert [t["content"] for t in got["turns"]] == expected  # what zen wrote, round trip
        assert got["turns"][3] == {**ctx["turns"][3], "content": expected[3]}
        settle(storage)
    # Written back as zen does: nothing new.
    storage.set_with_ttl(key(tid), 3600, json.dumps(got))
    settle(storage)
    assert json.loads(storage.get(key(tid)) or "null") == got
    conv = store.get_conversation(tid)
    assert conv is not None
    # The thread page, search and counts see each question once.
    assert [m.content for m in conv.messages] == [
        "why is the zebra cache cold",
        "eviction",
        "and the walrus queue",
        "backpressure",
        "what about retries",
        "jitter",
    ]
    assert conv.message_count == 6
    assert [h.message.content for h in store.search("walrus")] == ["and the walrus queue"]
    assert store.search("CONTINUATION") == []
    assert int(store.usage(())["messages"].iloc[0]) == 6


def test_an_echo_without_instructions_read_back_is_still_the_echo(
    storage: ThreadStorage, store: persistence.Store
) -> None:
    """zen's echo with nothing after the question comes back from get as the bare question
    (the history is cut): written again, it is still the echo, not a new message."""
    tid = str(uuid.uuid4())
    ctx = context(tid, [turn("user", "0", 0), turn("user", f"history\n{RAW_PROMPT_MARKER}\n0", 1)])
    storage.set_with_ttl(key(tid), 3600, json.dumps(ctx))
    settle(storage)
    got = json.loads(storage.get(key(tid)) or "null")
    assert [t["content"] for t in got["turns"]] == ["0", "0"]
    storage.set_with_ttl(key(tid), 3600, json.dumps(got))
    settle(storage)
    assert store.get_conversation(tid).message_count == 1  # type: ignore[union-attr]
    assert json.loads(storage.get(key(tid)) or "null") == got


def test_keys_and_ttls_zen_never_sends_are_refused_by_name(storage: ThreadStorage) -> None:
    tid = str(uuid.uuid4())
    value = json.dumps(context(tid, [turn("user", "q", 0)]))
    with pytest.raises(ValidationError, match="key"):
        storage.set_with_ttl(["thread", tid], 60, value)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="ttl_seconds"):
        storage.set_with_ttl(key(tid), 10**5000, value)
    with pytest.raises(ValidationError, match="ttl_seconds"):
        storage.set_with_ttl(key(tid), "soon", value)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"value\.created_at"):
        storage.set_with_ttl(key(tid), 60, json.dumps({**json.loads(value), "created_at": "0001-01-01T00:00:00+05:00"}))
    assert storage.get(["thread", tid]) is None  # type: ignore[arg-type]
    assert storage.get(key(tid)) is None  # nothing was stored
