"""Export -> import is lossless across backends.

The round trip goes SQLite -> ``store`` -> SQLite, where ``store`` is every registered backend
(SQLite today; Postgres and Supabase when they are in ``conftest.BACKENDS``): each hop's
export must equal the first one record for record, and the usage rollup and storage totals
must come out the same at every hop.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import assert_server_only, signed_in

import persistence
from persistence import cli
from persistence.demo import generate

T0 = datetime(2025, 10, 6, 9, 30, 15, 123456, tzinfo=UTC)
OWNER = "6f1c2d3e-4b5a-4c6d-8e7f-901234567890"


def sqlite_at(path: Path) -> persistence.Store:
    return persistence.open_store(f"sqlite:///{path}")


@pytest.fixture
def source(tmp_path: Path) -> Iterator[persistence.Store]:
    s = sqlite_at(tmp_path / "source.db")
    yield s
    s.close()


@pytest.fixture
def final(tmp_path: Path) -> Iterator[persistence.Store]:
    s = sqlite_at(tmp_path / "final.db")
    yield s
    s.close()


def populate(store: persistence.Store) -> None:
    """A bit of everything an export has to carry, including the awkward cases."""
    a = "thread-a"
    store.start_conversation(
        a,
        tool_name="chat",
        title='Ünïcode ✓ 标题 — "quotes" and <b>markup</b>',
        session_id="session-1",
        user_id=OWNER,
        parent_id="a-parent-that-is-not-stored",
        tags=("billing", "中文", "x y"),
        metadata={"client": "cursor", "nested": {"n": [1, 2.5, None, True, "é"]}, "big": 2**53 + 1, "emoji": "🙂"},
        initial_context={"prompt": "review this", "files": ["src/a.py"], "depth": 3},
        expires_at=T0 + timedelta(days=30),
        created_at=T0,
    )
    store.update_conversation(a, summary="A summary\nover two lines.", status="archived")
    at = T0
    turns: list[tuple[str, str, dict[str, Any]]] = [
        (
            "user",
            "请审查一下这段代码：\n```python\nprint('hi')\n```",
            {"files": ["src/a.py"], "images": ["diagram.png"]},
        ),
        (
            "assistant",
            "Kimi answer with cached tokens.",
            {
                "model": "kimi-k2-0905-preview",
                "usage": {"prompt_tokens": 5000, "completion_tokens": 700, "cached_tokens": 3000},
                "duration_ms": 1830,
                "metadata": {"finish_reason": "stop", "request_id": "req-1"},
            },
        ),
        (
            "assistant",
            "Claude with a cache write.",
            {
                "model": "claude-sonnet-4-5-20250929",
                "usage": {
                    "input_tokens": 1200,
                    "cache_read_input_tokens": 0,
                    "cache_creation_input_tokens": 4000,
                    "output_tokens": 321,
                },
            },
        ),
        (
            "assistant",
            "GPT-5 reasoning.",
            {
                "model": "gpt-5",
                "usage": {
                    "prompt_tokens": 900,
                    "completion_tokens": 2000,
                    "completion_tokens_details": {"reasoning_tokens": 1500},
                },
            },
        ),
        ("assistant", "A tiny one.", {"model": "gpt-4.1-mini", "usage": {"prompt_tokens": 3, "completion_tokens": 1}}),
        (
            "assistant",
            "Self-hosted: no price.",
            {"model": "llama-3.1-8b-local", "usage": {"prompt_tokens": 100, "completion_tokens": 50}},
        ),
        ("assistant", "Unknown usage shape.", {"model": "glm-4.6", "usage": {"weird": {"shape": 1}}}),
        ("tool", "tool output\twith tabs\r\nand CRLF", {"tool_name": "codereview"}),
        ("system", "", {}),
    ]
    for role, content, kw in turns:
        at += timedelta(seconds=37, microseconds=1)
        store.record_message(a, role, content, created_at=at, message_id=str(uuid.uuid4()), **kw)

    # Thread B is created after A but uploads the shared bytes first (uploads out of
    # thread order), and uploads one file twice under two names (two uploads, one object).
    b = "thread-b"
    store.start_conversation(b, tool_name="codereview", created_at=T0 + timedelta(minutes=5))
    store.record_message(b, "user", "second thread", created_at=T0 + timedelta(minutes=5))
    shared = b"shared bytes\n" * 10
    store.put_file(
        shared,
        filename="shared.txt",
        continuation_id=b,
        session_id="session-2",
        tags=("demo",),
        description="first",
        metadata={"k": 1},
        created_at=T0 + timedelta(days=1),
    )
    store.put_file(shared, filename="shared.txt", continuation_id=a, created_at=T0 + timedelta(days=3))
    store.put_file(b"# twice\n", filename="notes.md", continuation_id=b, created_at=T0 + timedelta(days=2))
    store.put_file(b"# twice\n", filename="notes (1).md", continuation_id=b, created_at=T0 + timedelta(days=2, hours=1))
    store.put_file(b"\x89PNG\r\n\x1a\n" + bytes(64), filename="diagram.png", continuation_id=a, created_at=T0)

    store.start_conversation("thread-empty", title="nothing said yet", created_at=T0 + timedelta(days=4))


def records(store: persistence.Store) -> list[dict[str, Any]]:
    # Through JSON, as the CLI writes them: what survives serialisation is what counts.
    return [json.loads(json.dumps(r, ensure_ascii=False)) for r in store.export_records()]


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if type(a) is not type(b) and not (isinstance(a, int | float) and isinstance(b, int | float)):
        return f"{path or '.'}: {a!r} != {b!r}"
    if isinstance(a, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{path}.{key}: only on {'left' if key in a else 'right'}"
            found = first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{path or '.'}: {a!r} != {b!r}"


def assert_same_records(expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> None:
    assert len(got) == len(expected), f"{len(got)} records, expected {len(expected)}"
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        diff = first_difference(e, g)
        assert diff is None, f"record {i + 1} ({e['conversation']['continuation_id']}) differs at {diff}"


USAGE_KEYS = ("day", "model", "provider", "tool_name", "user_id")
STORAGE_KEYS = ("day", "mime_type", "user_id")


def assert_same_totals(expected: persistence.Store, got: persistence.Store) -> None:
    pd.testing.assert_frame_equal(got.usage(USAGE_KEYS), expected.usage(USAGE_KEYS), check_exact=False, rtol=1e-12)
    pd.testing.assert_frame_equal(got.storage_usage(STORAGE_KEYS), expected.storage_usage(STORAGE_KEYS))
    assert got.count_conversations() == expected.count_conversations()


def round_trip(source: persistence.Store, middle: persistence.Store, final: persistence.Store) -> None:
    first = records(source)
    middle.import_records(first)
    assert_same_records(first, records(middle))
    assert_same_totals(source, middle)
    final.import_records(records(middle))
    assert_same_records(first, records(final))
    assert_same_totals(source, final)


def test_round_trip_keeps_every_field(
    source: persistence.Store, store: persistence.Store, final: persistence.Store
) -> None:
    if signed_in(store):  # import writes rows for any owner: the server's only
        assert_server_only(lambda: store.import_records([]), "import")
        return
    populate(source)
    round_trip(source, store, final)
    # Spot checks of what the comparison covers, so a vacuous export cannot pass.
    conv = final.get_conversation("thread-a")
    assert conv is not None
    assert conv.status == "archived" and conv.summary == "A summary\nover two lines."
    assert conv.metadata["big"] == 2**53 + 1 and conv.metadata["emoji"] == "🙂"
    assert conv.initial_context == {"prompt": "review this", "files": ["src/a.py"], "depth": 3}
    assert [m.cost_usd is None for m in conv.messages].count(True) >= 2  # unpriced stays NULL, not 0
    assert final.count_conversations() == 3
    uploads = final.list_files(continuation_id="thread-b", limit=100)
    assert sorted(f.filename for f in uploads if f.continuation_id == "thread-b") == [
        "notes (1).md",
        "notes.md",
        "shared.txt",
    ]
    # Whether each upload was deduplicated travels with it, though the threads arrive in
    # another order than the uploads were made (thread-a's shared.txt is the later upload).
    assert dedup_flags(final) == DEDUP_FLAGS


DEDUP_FLAGS = {
    ("thread-a", "diagram.png"): False,
    ("thread-a", "shared.txt"): True,
    ("thread-b", "notes (1).md"): True,
    ("thread-b", "notes.md"): False,
    ("thread-b", "shared.txt"): False,
}


def dedup_flags(store: persistence.Store) -> dict[tuple[str | None, str], bool]:
    return {(f.continuation_id, f.filename): f.deduplicated for f in store.list_files(limit=100)}


def test_the_dedup_flag_is_imported_as_exported(source: persistence.Store, store: persistence.Store) -> None:
    """Thread A alone: its shared.txt was deduplicated against thread B's earlier upload, which
    this export leaves out. The flag says what happened when it was uploaded, so it stays."""
    if signed_in(store):  # import writes rows for any owner: the server's only
        assert_server_only(lambda: store.import_records([]), "import")
        return
    populate(source)
    only_a = list(source.export_records(until=T0 + timedelta(minutes=1)))
    assert [r["conversation"]["continuation_id"] for r in only_a] == ["thread-a"]
    store.import_records(only_a)
    assert dedup_flags(store) == {("thread-a", "diagram.png"): False, ("thread-a", "shared.txt"): True}


def test_an_export_without_dedup_flags_gets_them_from_earlier_uploads(
    source: persistence.Store, store: persistence.Store
) -> None:
    """Exports made before the flag was stored have none: the importing store decides by the
    rule its migration backfilled with (an earlier upload of the same object)."""
    if signed_in(store):  # import writes rows for any owner: the server's only
        assert_server_only(lambda: store.import_records([]), "import")
        return
    populate(source)
    assert dedup_flags(source) == DEDUP_FLAGS
    old = records(source)
    for record in old:
        for f in record["files"]:
            del f["deduplicated"]
    store.import_records(old)
    assert dedup_flags(store) == DEDUP_FLAGS


def test_round_trip_of_a_demo_store(
    source: persistence.Store, store: persistence.Store, final: persistence.Store
) -> None:
    if signed_in(store):  # import writes rows for any owner: the server's only
        assert_server_only(lambda: store.import_records([]), "import")
        return
    generate(source, 60, seed=7, end=date(2025, 11, 20), weeks=3)
    round_trip(source, store, final)


def test_import_twice_adds_nothing(source: persistence.Store, store: persistence.Store) -> None:
    if signed_in(store):  # import writes rows for any owner: the server's only
        assert_server_only(lambda: store.import_records([]), "import")
        return
    populate(source)
    first = records(source)
    store.import_records(first)
    again = store.import_records(first)
    assert (again.conversations, again.messages, again.files) == (0, 0, 0)
    assert again.conversations_skipped == len(first)
    assert_same_records(first, records(store))
    assert_same_totals(source, store)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("messages", 0, "usage", "input_tokens"), 2**62, "messages[0].usage.input_tokens"),
        (("messages", 0, "cost_usd"), 1e300, "messages[0].cost_usd"),
        (("messages", 0, "created_at"), "0001-01-01T00:00:00+05:00", "messages[0].created_at"),
        (("messages", 0, "duration_ms"), 10**15, "messages[0].duration_ms"),
        (("conversation", "expires_at"), "9999-12-31T23:59:59-05:00", "conversation.expires_at"),
    ],
)
def test_import_holds_records_to_the_same_bounds_as_writes(
    source: persistence.Store, store: persistence.Store, path: tuple[Any, ...], value: Any, field: str
) -> None:
    """An export edited by hand (or by an attacker) cannot bring in what a write would refuse:
    totals near 2**62 would turn into floats, years 1 and 9999 overflow on the way to UTC."""
    if signed_in(store):  # import writes rows for any owner: the server's only
        assert_server_only(lambda: store.import_records([]), "import")
        return
    populate(source)
    good = records(source)
    bad = json.loads(json.dumps(good[0], default=str))
    target = bad
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(persistence.ValidationError) as refused:
        store.import_records([bad])
    assert refused.value.field.endswith(field)
    assert store.count_conversations() == 0  # the batch was refused whole


def test_cli_export_then_import(source: persistence.Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    populate(source)
    src_url = f"sqlite:///{tmp_path / 'source.db'}"
    dst_url = f"sqlite:///{tmp_path / 'copy.db'}"
    out = tmp_path / "threads.jsonl"
    assert cli.main(["export", "--url", src_url, "--out", str(out)]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and all(json.loads(line)["format"] == "mcp-persistence/1" for line in lines)
    assert "标题" in out.read_text(encoding="utf-8")  # written as UTF-8, not \\u escapes
    assert cli.main(["import", "--url", dst_url, str(out)]) == 0
    assert "Imported 3 threads" in capsys.readouterr().out
    with persistence.open_store(dst_url) as copy:
        assert_same_records(records(source), records(copy))
        assert_same_totals(source, copy)


def _recomputed(store: persistence.Store) -> tuple[pd.DataFrame, dict[str, tuple[int, int, float]]]:
    """The rollup and each thread's totals, recomputed here from every stored message."""
    rollup: dict[tuple[Any, ...], list[float]] = {}
    threads: dict[str, tuple[int, int, float]] = {}
    for rec in store.export_records():
        n = tokens = 0
        cost = 0.0
        for m in rec["messages"]:
            u = m["usage"]
            key = (m["created_at"][:10], m["model"], m["provider"], m["tool_name"])
            row = rollup.setdefault(key, [0, 0, 0, 0.0])
            row[0] += 1
            row[1] += u["input_tokens"]
            row[2] += u["output_tokens"]
            row[3] += m["cost_usd"] or 0.0
            n += 1
            tokens += sum(u.values())
            cost += m["cost_usd"] or 0.0
        threads[rec["conversation"]["continuation_id"]] = (n, tokens, cost)
    frame = pd.DataFrame(
        [(*k, *v) for k, v in rollup.items()],
        columns=["day", "model", "provider", "tool_name", "messages", "input_tokens", "output_tokens", "cost_usd"],
    )
    return frame, threads


def test_bulk_imports_into_a_full_store_add_up_to_a_full_recomputation(
    source: persistence.Store, store: persistence.Store
) -> None:
    """Imports add each batch's sums to the daily rollup and the thread totals rather than
    rebuilding whole days (issue 16): into a store that already holds those days, in uneven
    batches, with a thread continued by a later import and a re-import that adds nothing,
    the result must equal a recomputation from the messages."""
    if signed_in(store):  # import writes rows for any owner: the server's only
        assert_server_only(lambda: store.import_records([]), "import")
        return
    generate(store, 40, seed=1, end=date(2025, 11, 20), weeks=2, files=False)  # the days already hold data
    generate(source, 40, seed=7, end=date(2025, 11, 20), weeks=2, files=False)
    exported = records(source)
    partial = json.loads(json.dumps(exported[0]))
    partial["messages"] = partial["messages"][:2]  # a thread whose later turns arrive in a later import
    store.import_records([partial])
    store.import_records(exported[:15], batch_size=7)
    store.import_records(exported, batch_size=11)
    again = store.import_records(exported, batch_size=11)
    assert again.messages == 0

    expected, threads = _recomputed(store)
    keys = ["day", "model", "provider", "tool_name"]
    got = store.usage(tuple(keys))
    got = got.assign(day=got["day"].dt.strftime("%Y-%m-%d"))[
        [*keys, "messages", "input_tokens", "output_tokens", "cost_usd"]
    ]
    order = [*keys]
    expected = expected.fillna("").sort_values(order).reset_index(drop=True)
    got = got.fillna("").sort_values(order).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, check_exact=False, rtol=1e-9)
    assert int(got["messages"].sum()) == sum(n for n, _, _ in threads.values())
    for cid, (n, tokens, cost) in threads.items():
        conv = store.get_conversation(cid, last=1)
        assert conv is not None
        assert (conv.message_count, conv.total_tokens) == (n, tokens), cid
        assert conv.cost_usd == pytest.approx(cost, rel=1e-9, abs=1e-12), cid
