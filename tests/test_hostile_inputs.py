"""Whatever a caller passes, the write path raises the package's own errors or stores it once.

A property test (hypothesis) over generated hostile input: nesting deeper than any parser
recurses, containers that contain themselves, numbers at and past every bound, NUL, lone
surrogates and control characters (in values, keys, paths and MIME types), and the wrong
types everywhere. For ``record_message``, ``put_file`` and ``ThreadStorage.set_with_ttl``,
on SQLite and Postgres (and the outbox path on Postgres):

* nothing but a :class:`~persistence.errors.PersistenceError` escapes;
* a refused call leaves every count the store keeps as it was;
* an accepted call is stored once: read back it is what the call returned, and the counts
  (threads, messages, tokens, cost, uploads) moved by exactly that.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import persistence
from persistence import validation as v
from persistence.errors import PersistenceError
from persistence.filestore import HEAD_BYTES, sniff_mime
from persistence.integrations.zen import RAW_PROMPT_MARKER, ThreadStorage, raw_prompt
from persistence.models import Usage
from persistence.uploads import UploadRules, settle_type

# The store fixture is function-scoped and shared by every example of a test: each example
# compares counts before and after itself, so what earlier examples stored does not matter.
# The same examples on every run (CI stays deterministic); HOSTILE_EXAMPLES=2000 hunts with
# fresh random ones. No .hypothesis folder in the repository: a failure prints its example.
HUNT = os.environ.get("HOSTILE_EXAMPLES")
HOSTILE = settings(
    max_examples=int(HUNT or 60),
    derandomize=not HUNT,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


# -- strategies ----------------------------------------------------------------------------

ODD_CHARS = ["\x00", "\ud800", "\udfff", "\udc80", "\r", "\n", "\x1b", "\u200b", "\ufeff", "\u202e", "数", "😀", "é"]
odd_text = st.text(
    st.one_of(st.characters(codec=None, exclude_categories=()), st.sampled_from(ODD_CHARS)),
    max_size=24,
)
# At and past every bound: 64-bit, the token and duration limits, and (built, since not even
# hypothesis can print it) an int past Python's 4300-digit int-to-str limit.
big_ints = st.one_of(
    st.just(5000).map(lambda n: 10**n),
    st.sampled_from(
        [
            -1,
            -(2**63) - 1,
            2**31,
            2**53 + 1,
            2**62,
            2**63 - 1,
            2**63,
            2**64,
            v.MAX_JSON_INT + 1,
            v.MAX_TOKENS,
            v.MAX_TOKENS + 1,
            v.MAX_DURATION_MS + 1,
        ]
    ),
)
numbers = st.one_of(
    st.integers(-10, 10**6),
    big_ints,
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.5, 1e308, -0.0, 5e-324, 1.5e20]),
)
offsets = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59))
)
times = st.one_of(
    st.datetimes(timezones=st.one_of(st.none(), offsets)),
    st.sampled_from(
        [
            datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
            datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
            datetime(1969, 12, 31, 23, 59, tzinfo=UTC),
            datetime(2199, 12, 31, 23, 59, tzinfo=UTC),
            datetime(2200, 1, 1, tzinfo=UTC),
            datetime(2026, 11, 30, 12, tzinfo=UTC),
        ]
    ),
    st.dates(),
    odd_text,
    st.sampled_from(["2026-11-30", "2026-11-30T12:00:00+05:00", "0001-01-01T00:00:00+05:00", "2026-11-30T12:00:00"]),
)


def _nested(depth: int, as_list: bool) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


def _cycle(kind: int) -> Any:
    if kind == 0:
        d: dict[str, Any] = {}
        d["self"] = d
        return d
    if kind == 1:
        lst: list[Any] = []
        lst.append(lst)
        return {"l": lst}
    inner: dict[str, Any] = {}
    outer = {"x": [1, {"inner": inner}]}
    inner["back"] = outer
    return outer


deep = st.one_of(
    st.builds(
        _nested,
        st.sampled_from([v.MAX_JSON_DEPTH - 1, v.MAX_JSON_DEPTH, v.MAX_JSON_DEPTH + 1, 1000, 10_000]),
        st.booleans(),
    ),
    st.builds(_cycle, st.integers(0, 2)),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    odd_text,
    st.binary(max_size=8),
    times,
    st.frozensets(st.integers(0, 3), max_size=2),
    st.builds(object),
)
dict_keys = st.one_of(odd_text, odd_text, st.integers(-3, 3), st.none(), st.booleans(), st.just(("tuple", "key")))
json_like = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(dict_keys, children, max_size=4),
    ),
    max_leaves=16,
)
anything = st.one_of(scalars, json_like, deep)


def mostly(valid: st.SearchStrategy[Any], *hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` three times in four: a call with one hostile argument reaches the checks of
    the others, and some calls are accepted, so what is stored gets checked too."""
    # Not one_of(valid, valid, valid, ...): one_of draws each distinct strategy equally often.
    return st.sampled_from([True, True, True, False]).flatmap(lambda ok: valid if ok else st.one_of(*hostile))


# JSON every backend takes: what the accepted calls carry (odd text is replaced, not refused).
json_safe = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-v.MAX_JSON_INT, v.MAX_JSON_INT),
        st.floats(allow_nan=False, allow_infinity=False),
        odd_text,
    ),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(odd_text, children, max_size=3),
    max_leaves=10,
)
metadata = mostly(
    st.one_of(st.none(), st.dictionaries(odd_text, json_safe, max_size=4)),
    st.dictionaries(odd_text, json_like, max_size=5),
    st.dictionaries(dict_keys, json_like, max_size=3),
    deep,
    st.builds(lambda n: {"big": "x" * n}, st.sampled_from([v.MAX_JSON_BYTES - 20, v.MAX_JSON_BYTES + 1])),
    json_like,
)


def _usage_report(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(
        st.sampled_from(names), st.one_of(numbers, numbers, anything), min_size=1, max_size=len(names)
    )


small = st.integers(0, 200_000)
usage = mostly(
    st.one_of(
        st.none(),
        st.builds(lambda p, c: {"prompt_tokens": p, "completion_tokens": c}, small, small),
        st.builds(lambda i, o: {"input_tokens": i, "output_tokens": o, "total_tokens": i + o}, small, small),
        st.builds(Usage, input_tokens=small, cached_input_tokens=small, output_tokens=small),
        st.dictionaries(odd_text, json_safe, min_size=1, max_size=3),  # unknown shape: kept, unpriced
    ),
    _usage_report(["prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens"]),
    _usage_report(["input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"]),
    _usage_report(["promptTokenCount", "candidatesTokenCount", "toolUsePromptTokenCount", "thoughtsTokenCount"]),
    _usage_report(["input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens"]),
    st.builds(
        lambda p, c: {"prompt_tokens": p, "completion_tokens": c, "prompt_tokens_details": {"cached_tokens": p}},
        numbers,
        numbers,
    ),
    st.builds(Usage, input_tokens=st.one_of(numbers, anything), output_tokens=numbers),
    st.dictionaries(odd_text, json_like, max_size=3),
    deep,
    anything,
)
thread_ids = mostly(st.sampled_from(["t-hostile", "t-hostile-2"]), odd_text, anything)
text_or_odd = mostly(st.one_of(st.none(), odd_text), anything)
str_lists = mostly(st.one_of(st.just(()), st.lists(odd_text, max_size=3)), st.lists(anything, max_size=2), anything)
message_ids = mostly(st.one_of(st.none(), st.uuids().map(str), st.just(str(uuid.UUID(int=7)))), anything)
models = mostly(st.sampled_from(["glm-4.6", "kimi-k2-0905-preview", "gpt-5", "unknown-model", None]), text_or_odd)
good_times = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2199, 1, 1), timezones=st.one_of(st.just(UTC), offsets)
)
stamps = mostly(st.one_of(st.none(), good_times), times)


@st.composite
def message_calls(draw: st.DrawFn) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "continuation_id": draw(thread_ids),
        "role": draw(mostly(st.sampled_from(["user", "assistant", "system", "tool"]), anything)),
        "content": draw(mostly(odd_text, anything)),
    }
    optional = {
        "model": models,
        "provider": text_or_odd,
        "usage": usage,
        "duration_ms": mostly(st.integers(0, 10**7), numbers, anything),
        "tool_name": text_or_odd,
        "files": str_lists,
        "images": str_lists,
        "metadata": metadata,
        "message_id": message_ids,
        "created_at": stamps,
    }
    for name in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=5)):
        kwargs[name] = draw(optional[name])
    return kwargs


# -- what the store holds --------------------------------------------------------------------


def _counts(store: persistence.Store) -> dict[str, Any]:
    u = store.usage(())
    s = store.storage_usage(())
    return {
        "threads": store.count_conversations(),
        "messages": int(u["messages"].sum()),
        "tokens": int(u["total_tokens"].sum()),
        "unpriced": int(u["unpriced_messages"].sum()),
        "cost": round(float(u["cost_usd"].sum()), 6),
        "uploads": int(s["uploads"].sum()),
        "files": int(s["files"].sum()),
        "bytes": int(s["bytes"].sum()),
        "logical_bytes": int(s["logical_bytes"].sum()),
    }


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values. Numbers compare by value: Postgres jsonb keeps numbers as
    decimals, so a float written as 1.5e+20 reads back as the integer 150000000000000000000."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b or float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _same_message(a: persistence.Message, b: persistence.Message) -> bool:
    plain = ("id", "continuation_id", "seq", "role", "content", "created_at", "tool_name", "provider", "model")
    more = ("usage", "price_id", "duration_ms", "files", "images")
    return (
        all(getattr(a, f) == getattr(b, f) for f in plain + more)
        and _same_json(a.metadata, b.metadata)
        and (a.cost_usd is None) == (b.cost_usd is None)
        and math.isclose(a.cost_usd or 0.0, b.cost_usd or 0.0, rel_tol=1e-9, abs_tol=1e-12)
    )


def _refused_or_stored(
    call: Callable[[], Any], store: persistence.Store
) -> tuple[bool, Any, dict[str, Any], dict[str, Any]]:
    """Run ``call``: only package errors may escape; a refusal must leave the counts as they
    were. Returns (accepted, result, counts before, counts after)."""
    before = _counts(store)
    try:
        result = call()
    except PersistenceError as exc:
        event(f"refused: {type(exc).__name__} {getattr(exc, 'field', '')}".split("[")[0].split(".")[0])
        assert _counts(store) == before, "a refused call changed what the store holds"
        return False, None, before, before
    event("accepted")
    return True, result, before, _counts(store)


@pytest.fixture
def hostile_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        s = persistence.open_store(f"sqlite:///{tmp_path / 'hostile.db'}")
    else:
        s = persistence.open_store(request.getfixturevalue("pg_url"), files_dir=tmp_path / "pg-files")
    yield s
    s.close()


# -- record_message --------------------------------------------------------------------------


@pytest.mark.parametrize("hostile_store", BACKENDS, indirect=True)
@HOSTILE
@given(call=message_calls())
def test_record_message_refuses_or_stores_once(hostile_store: persistence.Store, call: dict[str, Any]) -> None:
    store = hostile_store
    mid = call.get("message_id")
    retry = False
    if isinstance(mid, str):
        with contextlib.suppress(PersistenceError):
            retry = store.get_message(mid) is not None
    accepted, m, before, after = _refused_or_stored(lambda: store.record_message(**call), store)
    if not accepted:
        return
    # Stored, once, as returned.
    got = store.get_message(m.id)
    assert got is not None and _same_message(got, m)
    conv = store.get_conversation(m.continuation_id)
    assert conv is not None
    assert [x.id for x in conv.messages].count(m.id) == 1
    assert conv.message_count == len(conv.messages)
    if retry:
        assert after == before
        return
    assert m.content == v.clean_text(call["content"])
    meta = v.check_json(call.get("metadata"), "metadata")
    assert _same_json({k: m.metadata[k] for k in meta}, meta)
    assert after["messages"] == before["messages"] + 1
    assert after["tokens"] == before["tokens"] + m.usage.total
    assert after["unpriced"] - before["unpriced"] in (0, 1)
    assert math.isclose(after["cost"], before["cost"] + (m.cost_usd or 0.0), abs_tol=2e-6)
    # Every stored count is within its documented bound, and every time in range.
    assert all(0 <= n <= v.MAX_TOKENS for n in m.usage.to_dict().values())
    assert m.duration_ms is None or 0 <= m.duration_ms <= v.MAX_DURATION_MS
    assert m.cost_usd is None or 0 <= m.cost_usd <= v.MAX_COST_USD
    assert v.TIME_MIN <= m.created_at < v.TIME_MAX
    # A retry with the same id (what a client does after a timeout) stores nothing new.
    if isinstance(call.get("message_id"), str):
        again = store.record_message(**call)
        assert again.id == m.id and _counts(store) == after


# -- put_file ----------------------------------------------------------------------------------


class TextStream(io.StringIO):
    """A stream opened in text mode by mistake."""


class OddStream:
    """A 'stream' whose read returns something that is not bytes."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def read(self, n: int = -1) -> Any:
        value, self.value = self.value, b""
        return value


MIME_TYPES = mostly(
    st.sampled_from(
        [
            None,
            "text/plain",
            "Text/Plain; Charset=UTF-8",
            'text/plain; charset="utf-8"',
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ]
    ),
    st.sampled_from(
        [
            "text/plain\r\nX-Evil: 1",
            "text/plain\n",
            "text/plain; charset=utf-8\x00",
            "text/",
            "/plain",
            "text/plain/extra",
            "text/pl ain",
            "text/plaín",
            "a" * 120 + "/" + "b" * 120,
        ]
    ),
    odd_text,
    anything,
)


@st.composite
def file_calls(draw: st.DrawFn, folder: Path) -> tuple[Any, dict[str, Any], bytes | None]:
    """(source, keyword arguments, the bytes the source holds when it is readable)."""
    text_bytes = draw(
        st.one_of(st.text(max_size=40).map(lambda t: ("note: " + t).encode("utf-8")), st.binary(max_size=40))
    )
    kind = draw(
        mostly(
            st.sampled_from(["bytes", "path", "pathlib", "stream"]),
            st.sampled_from(["odd-path", "odd-source", "text-stream", "odd-read"]),
        )
    )
    data: bytes | None = text_bytes
    source: Any
    if kind == "bytes":
        source = text_bytes
    elif kind in ("path", "pathlib"):
        path = folder / f"up-{uuid.uuid4().hex}.txt"
        path.write_bytes(text_bytes)
        source = str(path) if kind == "path" else path
    elif kind == "stream":
        source = io.BytesIO(text_bytes)
    elif kind == "odd-path":
        data = None
        source = draw(
            st.one_of(
                st.sampled_from(
                    [
                        str(folder / "a\x00b.txt"),
                        str(folder / "a\ud800.txt"),
                        str(folder),
                        str(folder / "missing.txt"),
                        "",
                        "/" + "x" * 5000,
                    ]
                ),
                odd_text,
                st.builds(lambda t: Path(str(folder / t)) if "\x00" not in t else str(folder / t), odd_text),
            )
        )
    elif kind == "text-stream":
        data = None
        source = TextStream("some text")
    elif kind == "odd-read":
        data = None
        source = OddStream(draw(st.one_of(st.integers(), st.none(), st.just([b"x"]), odd_text)))
    else:
        data = None
        source = draw(
            st.one_of(
                st.integers(), st.none(), st.lists(st.integers(), max_size=2), st.builds(object), deep, st.floats()
            )
        )
    kwargs: dict[str, Any] = {}
    optional = {
        "filename": mostly(
            st.sampled_from(["notes.txt", "../../etc/passwd", "a\r\nb.txt", "笔记.md"]), st.just(".."), text_or_odd
        ),
        "mime_type": MIME_TYPES,
        "continuation_id": thread_ids,
        "session_id": mostly(st.sampled_from([None, "s-1"]), text_or_odd),
        "tags": str_lists,
        "description": text_or_odd,
        "metadata": metadata,
        "created_at": stamps,
        "upload_id": message_ids,
    }
    for name in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=4)):
        kwargs[name] = draw(optional[name])
    return source, kwargs, data


@pytest.mark.parametrize("hostile_store", BACKENDS, indirect=True)
@HOSTILE
@given(data=st.data())
def test_put_file_refuses_or_stores_once(hostile_store: persistence.Store, tmp_path: Path, data: st.DataObject) -> None:
    store = hostile_store
    # Only the size and type rules matter here, not a session's rate (many examples, one minute).
    store.upload_rules = UploadRules(uploads_per_minute=None, bytes_per_minute=None)
    source, kwargs, content = data.draw(file_calls(tmp_path))
    upload_id = kwargs.get("upload_id")
    retry = False
    if isinstance(upload_id, str):
        with contextlib.suppress(PersistenceError):
            retry = store.get_file(upload_id) is not None
    accepted, f, before, after = _refused_or_stored(lambda: store.put_file(source, **kwargs), store)
    if not accepted:
        return
    got = store.get_file(f.upload_id or f.id)
    assert got is not None
    for name in ("id", "file_hash", "size", "mime_type", "filename", "created_at", "upload_id", "session_id"):
        assert getattr(got, name) == getattr(f, name), name
    assert _same_json(got.metadata, f.metadata)
    if retry:  # an upload id already stored: that upload comes back, nothing is read or written
        assert f.deduplicated and after == before
        return
    if content is None and isinstance(source, str | Path) and os.path.isfile(source):
        content = Path(source).read_bytes()  # an odd path that happens to name a file
    assert content is not None, f"stored a file from {source!r}"
    with store.open_file(f.upload_id or f.id) as fh:
        assert fh.read() == content
    mime = kwargs.get("mime_type")
    if mime is not None:  # the caller's type when it refines the sniffed one, else the sniffed one
        assert f.mime_type == settle_type(sniff_mime(content[:HEAD_BYTES], f.filename), v.check_mime_type(mime))
    assert all(ord(ch) >= 0x20 and ch != "\x7f" for ch in f.mime_type)
    assert v.TIME_MIN <= f.created_at < v.TIME_MAX
    assert after["uploads"] == before["uploads"] + 1
    assert after["logical_bytes"] == before["logical_bytes"] + len(content)
    assert after["files"] - before["files"] == (0 if f.deduplicated else 1)


# -- ThreadStorage.set_with_ttl ------------------------------------------------------------------


def _turn(draw: st.DrawFn, i: int, hostile: bool) -> dict[str, Any]:
    turn: dict[str, Any] = {
        "role": draw(st.sampled_from(["user", "assistant"])),
        "content": draw(st.one_of(odd_text, odd_text.map(lambda t: f"earlier history\n{RAW_PROMPT_MARKER}\n{t}"))),
        "timestamp": draw(
            st.one_of(
                st.just((datetime(2026, 11, 30, 12, tzinfo=UTC) + timedelta(seconds=i)).isoformat()),
                st.just("2026-11-30T12:00:00Z"),
                good_times.map(datetime.isoformat),
            )
        ),
    }
    # One turn in five has a field that ThreadContext itself would not have.
    if hostile and draw(st.integers(0, 4)) == 0:
        name = draw(st.sampled_from(["role", "content", "timestamp"]))
        turn[name] = draw(
            st.one_of(anything, times.map(lambda t: t.isoformat() if isinstance(t, datetime | date) else t))
        )
    fields = {
        "files": str_lists,
        "images": str_lists,
        "tool_name": text_or_odd,
        "model_provider": text_or_odd,
        "model_name": models,
        "model_metadata": mostly(st.builds(lambda u: {"usage": u}, usage), metadata),
        "extra_field": anything,
    }
    for name in draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=4)):
        turn[name] = draw(fields[name])
    return turn


def _json_text(value: Any) -> str | None:
    """The JSON zen would send (NaN and Infinity as Python writes them), or None when this
    value has no JSON form at all (sets, objects, cycles: zen's pydantic would refuse it)."""
    try:
        return json.dumps(value, default=lambda o: o.isoformat() if isinstance(o, datetime | date) else repr(o))
    except (TypeError, ValueError, RecursionError):
        return None


@st.composite
def thread_contexts(draw: st.DrawFn, hostile_turns: bool = False) -> tuple[dict[str, Any], str | None]:
    """(a ThreadContext with hostile fields, or a raw value to send instead of its JSON).
    ``hostile_turns``: a turn's role, content or timestamp may be anything too. The test
    gives the context a thread id of its own, so examples never share a thread."""
    turns = [_turn(draw, i, hostile_turns) for i in range(draw(st.integers(0, 4)))]
    ctx: dict[str, Any] = {
        "thread_id": None,
        "parent_thread_id": draw(mostly(st.one_of(st.none(), st.uuids().map(str)), text_or_odd)),
        "created_at": draw(mostly(st.just("2026-11-30T11:59:00+00:00"), times.map(str), anything)),
        "last_updated_at": "2026-11-30T12:30:00+00:00",
        "tool_name": draw(mostly(st.just("chat"), text_or_odd)),
        "turns": turns,
        "initial_context": draw(mostly(st.just({"prompt": "hello"}), metadata)),
    }
    for name in draw(st.lists(st.sampled_from(["session_fingerprint", "client_friendly_name", "odd"]), unique=True)):
        ctx[name] = draw(mostly(odd_text, anything))
    raw = draw(mostly(st.none(), odd_text, st.just("{not json")))
    return ctx, raw


def _stored_contents(turns: list[dict[str, Any]]) -> set[str]:
    return {v.clean_text(raw_prompt(t["content"]) if t["role"] == "user" else t["content"]) for t in turns}


ZEN_CASES = [
    pytest.param("sqlite", False, id="sqlite"),
    pytest.param("postgres", False, id="postgres", marks=pytest.mark.postgres),
    pytest.param("postgres", True, id="postgres-outbox", marks=pytest.mark.postgres),
]


def _deliver(storage: ThreadStorage) -> None:
    if storage.outbox is None:
        return
    # wait_idle can answer True just before a row submitted a moment ago is delivered (the
    # flusher's "nothing left" check and a caller's append can interleave), so the depth
    # decides.
    deadline = time.monotonic() + 30
    while storage.outbox.depth() and time.monotonic() < deadline:
        storage.outbox.wait_idle(1)
    assert storage.outbox.depth() == 0, "the outbox did not deliver within 30 s"


def _snapshot_case(
    store: persistence.Store,
    outbox: bool,
    tmp_path: Path,
    snapshot: tuple[dict[str, Any], str | None],
) -> None:
    ctx, raw = snapshot
    thread_id = str(uuid.uuid4())
    key = f"thread:{thread_id}"
    value = _json_text({**ctx, "thread_id": thread_id}) if raw is None else raw
    if value is None:  # no JSON form at all (a set, an object, a cycle): zen cannot send it
        value = "{not json"
    storage = ThreadStorage(store, outbox=outbox, outbox_dir=tmp_path / "outbox")
    try:
        accepted, _, before, _ = _refused_or_stored(lambda: storage.set_with_ttl(key, 3600, value), store)
        if not accepted:
            return
        _deliver(storage)
        after = _counts(store)
        # Accepted: every turn is in the store (after delivery), each once.
        turns = json.loads(value)["turns"]  # as sent (a value with no JSON form went as its repr)
        conv = store.get_conversation(thread_id)
        assert conv is not None, "set_with_ttl returned but the thread was not stored"
        ids = [m.id for m in conv.messages]
        assert len(ids) == len(set(ids)) == conv.message_count
        assert {m.content for m in conv.messages} == _stored_contents(turns)
        assert after["messages"] == before["messages"] + conv.message_count
        assert after["threads"] == before["threads"] + 1
        # zen writes back what get() returned plus its new turn: the stored turns are not new.
        again = storage.get(key)
        assert again is not None
        storage.set_with_ttl(key, 3600, again)
        _deliver(storage)
        assert _counts(store) == after, "a turn read back and sent again was stored a second time"
    finally:
        if storage.outbox is not None:
            storage.outbox.close()


@pytest.mark.parametrize(("hostile_store", "outbox"), ZEN_CASES, indirect=["hostile_store"])
@HOSTILE
@given(snapshot=st.booleans().flatmap(lambda hostile_turns: thread_contexts(hostile_turns=hostile_turns)))
def test_set_with_ttl_refuses_or_stores_once(
    hostile_store: persistence.Store, outbox: bool, tmp_path: Path, snapshot: tuple[dict[str, Any], str | None]
) -> None:
    _snapshot_case(hostile_store, outbox, tmp_path, snapshot)


@pytest.mark.parametrize(("hostile_store", "outbox"), ZEN_CASES, indirect=["hostile_store"])
def test_an_echo_turn_read_back_is_accepted_again(
    hostile_store: persistence.Store, outbox: bool, tmp_path: Path
) -> None:
    """Found by the property test above (HOSTILE_EXAMPLES=1500): an echo turn is held to a
    turn's rules, so one that would be refused when sent again is refused the first time."""
    question = {"role": "user", "content": "00", "timestamp": "2026-11-30T12:00:00+00:00"}
    echo = {
        "role": "user",
        "content": f"earlier history\n{RAW_PROMPT_MARKER}\n00",
        "timestamp": "2026-11-30T12:00:01+00:00",
        "model_provider": False,
    }
    thread_id = str(uuid.uuid4())
    ctx = {"thread_id": thread_id, "created_at": "2026-11-30T11:59:00+00:00", "tool_name": "chat"}
    storage = ThreadStorage(hostile_store, outbox=outbox, outbox_dir=tmp_path / "outbox")
    try:
        with pytest.raises(persistence.ValidationError) as refused:
            storage.set_with_ttl(f"thread:{thread_id}", 3600, json.dumps({**ctx, "turns": [question, echo]}))
        assert refused.value.field == "value.turns[1].model_provider"
        assert storage.get(f"thread:{thread_id}") is None
        # The same echo with its fields in order is accepted, once; a read-back resend adds nothing.
        good = json.dumps({**ctx, "turns": [question, {**echo, "model_provider": None}]})
        storage.set_with_ttl(f"thread:{thread_id}", 3600, good)
        _deliver(storage)
        again = storage.get(f"thread:{thread_id}")
        assert again is not None and len(json.loads(again)["turns"]) == 2
        storage.set_with_ttl(f"thread:{thread_id}", 3600, again)
        _deliver(storage)
        conv = hostile_store.get_conversation(thread_id)
        assert conv is not None and conv.message_count == 1  # the question; the echo is not a message
    finally:
        if storage.outbox is not None:
            storage.outbox.close()


zen_values = mostly(st.just("context"), odd_text, anything, st.builds(lambda n: "[" * n + "]" * n, st.just(100_000)))


@pytest.mark.parametrize(("hostile_store", "outbox"), ZEN_CASES, indirect=["hostile_store"])
@HOSTILE
@given(
    key=mostly(st.just("thread"), st.just("other:key"), anything),
    ttl=mostly(st.integers(0, 10**6), numbers, anything),
    value=zen_values,
)
def test_set_with_ttl_any_key_ttl_and_value(
    hostile_store: persistence.Store, outbox: bool, tmp_path: Path, key: Any, ttl: Any, value: Any
) -> None:
    """Whatever zen's storage interface is handed, only package errors come out, and a
    refused call stores nothing; an accepted thread is stored."""
    store = hostile_store
    thread_id = str(uuid.uuid4())
    if key == "thread":
        key = f"thread:{thread_id}"
    if value == "context":
        turn = {"role": "user", "content": "hello", "timestamp": "2026-11-30T12:00:00+00:00"}
        value = json.dumps(
            {"thread_id": thread_id, "created_at": "2026-11-30T12:00:00+00:00", "tool_name": "chat", "turns": [turn]}
        )
    storage = ThreadStorage(store, outbox=outbox, outbox_dir=tmp_path / "outbox")
    try:
        accepted, _, _, _ = _refused_or_stored(lambda: storage.set_with_ttl(key, ttl, value), store)
        if accepted and isinstance(key, str) and key == f"thread:{thread_id}":
            _deliver(storage)
            conv = store.get_conversation(thread_id)
            assert conv is not None and conv.message_count == 1
    finally:
        if storage.outbox is not None:
            storage.outbox.close()
