"""Forget content, keep the numbers: ``redact`` (issue 17, item 4).

The scenario tests take the ``store`` fixture (every backend): after a redaction the rollups,
the thread totals, storage figures and the report are what they were, while no byte of the
erased text is left where the store keeps it — the SQLite file, its WAL and its full-text
index; the Postgres tables; the file folder or the Storage bucket. Each text carries a unique
marker, and each test first checks that the marker was there to find.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import assert_server_only, signed_in

import persistence
from persistence import cli, report
from persistence.backends.sqlite.store import SQLiteStore
from persistence.errors import NotFoundError, ValidationError

DAY1 = datetime(2026, 1, 2, 9, 0, tzinfo=UTC)
DAY2 = datetime(2026, 1, 5, 15, 30, tzinfo=UTC)
OWNER = "0b7e8c1a-2d3f-4a5b-8c6d-7e8f90a1b2c3"
OTHER = "5d2c9e4f-1a3b-4c5d-9e8f-0a1b2c3d4e5f"
MARK = "qzxkvtrw"  # in the secret thread only: no stem, no substring of anything else stored
THEIRS = "plomqvbx"  # in the other user's thread only


def _usage(prompt: int, completion: int, cached: int = 0) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "cached_tokens": cached}


def populate(store: persistence.Store) -> None:
    """A thread full of the marker (content, title, metadata, a file), a clean thread that
    shares a file with it, and one of another user."""
    store.start_conversation(
        "secret",
        tool_name="chat",
        user_id=OWNER,
        tags=("billing",),
        metadata={"note": f"{MARK} in the thread metadata"},
        initial_context={"prompt": f"{MARK} in the initial context"},
        created_at=DAY1,
    )
    store.update_conversation("secret", summary=f"summary with {MARK}")
    kimi: dict[str, Any] = {"model": "kimi-k2-0905-preview", "usage": _usage(4000, 500, 1000)}
    turns: list[tuple[str, datetime, dict[str, Any]]] = [
        ("user", DAY1, {}),
        ("assistant", DAY1 + timedelta(minutes=1), kimi),
        ("user", DAY2, {}),
        ("assistant", DAY2 + timedelta(minutes=1), {"model": "glm-4.6", "usage": _usage(900, 100)}),
        # A usage report nobody could read: the message stays unpriced after redaction.
        ("assistant", DAY2 + timedelta(minutes=2), {"model": "glm-4.6", "usage": {"odd": 7}}),
    ]
    for i, (role, at, extra) in enumerate(turns):
        store.record_message(
            "secret",
            role,
            f"Turn {i}: the password is {MARK}{i} and {MARK} again. 秘密{MARK}",
            created_at=at,
            tool_name="chat",
            metadata={"origin": f"{MARK}-meta"},
            files=[f"/home/u/{MARK}.txt"],
            message_id=str(uuid.uuid4()),
            **extra,
        )
    store.start_conversation("clean", tool_name="chat", user_id=OWNER, created_at=DAY1)
    store.record_message(
        "clean", "user", "An ordinary question", created_at=DAY1, tool_name="chat", message_id=str(uuid.uuid4())
    )
    store.record_message(
        "clean",
        "assistant",
        "An ordinary answer",
        created_at=DAY1 + timedelta(minutes=3),
        tool_name="chat",
        message_id=str(uuid.uuid4()),
        **kimi,
    )
    store.start_conversation("theirs", tool_name="debug", user_id=OTHER, created_at=DAY2)
    store.record_message(
        "theirs",
        "user",
        f"Someone else's {THEIRS} stays",
        created_at=DAY2,
        tool_name="debug",
        message_id=str(uuid.uuid4()),
    )
    # Bytes only the secret thread uploaded, and bytes both threads uploaded.
    store.put_file(
        f"private notes {MARK}\n".encode() * 20,
        filename=f"{MARK}-notes.txt",
        continuation_id="secret",
        user_id=OWNER,
        description=f"about {MARK}",
        tags=(f"{MARK}tag",),
        metadata={"k": MARK},
        created_at=DAY1,
    )
    store.put_file(
        b"a shared handbook\n" * 10,
        filename=f"{MARK}-handbook.txt",
        continuation_id="secret",
        user_id=OWNER,
        created_at=DAY1,
    )
    store.put_file(
        b"a shared handbook\n" * 10, filename="handbook.txt", continuation_id="clean", user_id=OWNER, created_at=DAY2
    )


def figures(store: persistence.Store) -> dict[str, Any]:
    """Every number a chart or report shows."""
    out: dict[str, Any] = {}
    for keys in (("day", "model"), ("day", "tool_name"), ("provider", "user_id"), ("month",), ()):
        out[f"usage{keys}"] = store.usage(keys)
    for keys in (("day", "mime_type"), ("user_id",), ()):
        out[f"storage{keys}"] = store.storage_usage(keys)
    for conv in store.list_conversations(limit=100):
        out[f"thread {conv.continuation_id}"] = (conv.message_count, conv.usage, conv.cost_usd, conv.unpriced_messages)
    secret = store.get_conversation("secret")
    assert secret is not None
    out["messages"] = [
        (m.id, m.seq, m.role, m.model, m.provider, m.tool_name, m.usage, m.cost_usd, m.price_id, m.created_at)
        for m in secret.messages
    ]
    built = report.build(store)
    for name, table in built.tables.items():
        table = table.drop(columns=[c for c in ("title",) if c in table.columns])
        if name == "findings":  # a finding may quote a thread's title: the title goes, the figures stay
            table = table.assign(finding=[re.sub(r"“[^”]*”", "“…”", f) for f in table["finding"]])
        out[f"report {name}"] = table.reset_index(drop=True)
    return out


def assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before.keys() == after.keys()
    for key, value in before.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(value, after[key], obj=key)
        else:
            assert value == after[key], key


def stored_file_bytes(store: persistence.Store, request: pytest.FixtureRequest) -> bytes:
    """Every byte of the folder or bucket where the store keeps file bytes."""
    root = getattr(store.files, "root", None)  # type: ignore[attr-defined]
    folder = Path(root) if root is not None else Path(request.getfixturevalue("standin").storage_dir)
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def database_rows_with(store: persistence.Store, request: pytest.FixtureRequest, text: str) -> dict[str, int]:
    """Rows holding ``text`` anywhere (a whole-row text match), per table."""
    if isinstance(store, SQLiteStore):
        raw = b"".join(
            p.read_bytes() for p in (store.path, store.path.with_name(store.path.name + "-wal")) if p.exists()
        )
        return {"the database file and its WAL": raw.count(text.encode())}
    import psycopg

    found: dict[str, int] = {}
    with psycopg.connect(request.getfixturevalue("pg_url")) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "select tablename from pg_catalog.pg_tables where schemaname = 'public' order by tablename"
            )
        ]
        for table in tables:
            n = conn.execute(
                f"select count(*) from public.{table} x where x::text ilike %s",  # table names from the catalog
                (f"%{text}%",),
            ).fetchone()
            assert n is not None
            found[table] = int(n[0])
    return found


def _hit_counts(found: dict[str, int]) -> dict[str, int]:
    return {k: n for k, n in found.items() if n}


def test_redacting_a_thread_keeps_every_figure_and_erases_its_text(
    store: persistence.Store, request: pytest.FixtureRequest
) -> None:
    if signed_in(store):  # redact rewrites rows and rollups: the server's only
        assert_server_only(lambda: store.redact(continuation_id="secret"), "redact")
        return
    populate(store)
    before = figures(store)
    assert _hit_counts(database_rows_with(store, request, MARK))  # the marker is there to find
    assert MARK.encode() in stored_file_bytes(store, request)
    assert {h.continuation_id for h in store.search(MARK)} == {"secret"}

    result = store.redact(continuation_id="secret")

    assert (result.conversations, result.messages, result.uploads) == (1, 5, 2)
    assert (result.files, result.bytes) == (1, len(f"private notes {MARK}\n".encode()) * 20)
    assert_same(before, figures(store))
    # The text is gone from what the API returns …
    conv = store.get_conversation("secret")
    assert conv is not None and conv.redacted_at is not None
    assert (conv.title, conv.summary, conv.metadata, conv.initial_context) == (None, None, {}, None)
    assert conv.tags == ("billing",) and conv.tool_name == "chat"  # accounting keys stay
    assert all(m.content == "" and m.redacted_at is not None and m.files == () for m in conv.messages)
    assert conv.messages[-1].metadata == {"usage_raw": {"odd": 7}}  # why it is unpriced: kept
    assert store.search(MARK) == [] and store.search("password") == []
    assert [h.continuation_id for h in store.search(THEIRS)] == ["theirs"]
    assert all(f.filename == "redacted" and f.description is None and f.tags == () for f in conv.files)
    # … and from where the store keeps it, while the other user's text stays.
    assert _hit_counts(database_rows_with(store, request, MARK)) == {}
    assert _hit_counts(database_rows_with(store, request, THEIRS))
    assert MARK.encode() not in stored_file_bytes(store, request)
    # The shared handbook is still uploaded, unredacted, by the clean thread: its bytes stay.
    clean = store.get_conversation("clean")
    assert clean is not None and clean.redacted_at is None
    (handbook,) = clean.files
    assert handbook.filename == "handbook.txt"
    assert store.open_file(handbook.id).read() == b"a shared handbook\n" * 10
    notes = next(f for f in conv.files if f.size == result.bytes)
    with pytest.raises(NotFoundError):
        store.open_file(notes.id).read()
    assert store.doctor()["files_missing_bytes_count"] == 0  # emptied on purpose, not missing


def test_redacting_again_and_a_later_upload(store: persistence.Store, request: pytest.FixtureRequest) -> None:
    if signed_in(store):  # redact rewrites rows and rollups: the server's only
        assert_server_only(lambda: store.redact(continuation_id="secret"), "redact")
        return
    populate(store)
    store.redact(continuation_id="secret")
    # A new turn in a redacted thread is not redacted; a second redaction erases it too.
    store.record_message("secret", "user", f"new turn {MARK}", created_at=DAY2 + timedelta(hours=1))
    assert [h.continuation_id for h in store.search(f"new {MARK}")] == ["secret"]
    again = store.redact(continuation_id="secret")
    assert (again.conversations, again.messages, again.files) == (1, 6, 0)  # nothing counted twice
    assert store.search(MARK) == []
    assert _hit_counts(database_rows_with(store, request, MARK)) == {}
    # The same bytes uploaded again are stored again, readable.
    back = store.put_file(f"private notes {MARK}\n".encode() * 20, filename="again.txt", user_id=OWNER)
    assert store.open_file(back.upload_id or back.id).read() == f"private notes {MARK}\n".encode() * 20
    assert store.doctor()["files_missing_bytes_count"] == 0


def test_dry_run_counts_and_changes_nothing(store: persistence.Store, request: pytest.FixtureRequest) -> None:
    if signed_in(store):  # redact rewrites rows and rollups: the server's only
        assert_server_only(lambda: store.redact(continuation_id="secret"), "redact")
        return
    populate(store)
    preview = store.redact(continuation_id="secret", dry_run=True)
    assert preview.dry_run and (preview.conversations, preview.messages, preview.uploads, preview.files) == (
        1,
        5,
        2,
        1,
    )
    assert {h.continuation_id for h in store.search(MARK)} == {"secret"}
    conv = store.get_conversation("secret")
    assert conv is not None and conv.redacted_at is None and MARK in conv.messages[0].content
    done = store.redact(continuation_id="secret")
    assert (done.conversations, done.messages, done.uploads, done.files, done.bytes) == (
        preview.conversations,
        preview.messages,
        preview.uploads,
        preview.files,
        preview.bytes,
    )


def test_redact_by_user_by_age_and_by_query(store: persistence.Store) -> None:
    if signed_in(store):  # redact rewrites rows and rollups: the server's only
        assert_server_only(lambda: store.redact(continuation_id="secret"), "redact")
        return
    populate(store)
    before = figures(store)
    by_query = store.redact(query=f'"password is" {MARK}')
    assert by_query.conversations == 1
    assert store.search(MARK) == []
    assert [h.continuation_id for h in store.search(THEIRS)] == ["theirs"]
    by_user = store.redact(user_id=OTHER)
    assert (by_user.conversations, by_user.messages) == (1, 1)
    assert store.search(THEIRS) == []
    # By age: threads last active before the cutoff (the clean thread's last turn is on DAY1;
    # its upload was on DAY2, and goes with the thread).
    by_age = store.redact(older_than=DAY1 + timedelta(days=1))
    assert (by_age.conversations, by_age.messages, by_age.uploads) == (1, 2, 1)
    clean = store.get_conversation("clean")
    assert clean is not None and clean.redacted_at is not None
    assert_same(before, figures(store))
    assert store.doctor()["files_missing_bytes_count"] == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "redact"),
        ({"continuation_id": "a", "user_id": OWNER}, "redact"),
        ({"user_id": "not-a-uuid"}, "user_id"),
        ({"continuation_id": "has space"}, "continuation_id"),
        ({"older_than": timedelta(0)}, "older_than"),
        ({"older_than": datetime(2026, 1, 1)}, "older_than"),  # no time zone
        ({"query": "   "}, "query"),
        ({"query": 5}, "query"),
    ],
)
def test_bad_selectors_are_refused_naming_the_field(
    sqlite_store: SQLiteStore, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        sqlite_store.redact(**kwargs)
    assert info.value.field == field


def test_sqlite_leaves_no_byte_in_the_file_the_wal_or_the_index(sqlite_store: SQLiteStore) -> None:
    populate(sqlite_store)
    db = sqlite3.connect(sqlite_store.path)
    try:

        def index_terms() -> set[str]:
            db.execute("create virtual table if not exists temp.vocab using fts5vocab(main, messages_fts, 'row')")
            return {r[0] for r in db.execute("select term from temp.vocab where term like ?", (f"%{MARK}%",))}

        def index_blobs() -> int:
            return sum(
                bytes(r[0]).count(MARK.encode())
                for r in db.execute("select block from messages_fts_data")
                if r[0] is not None
            )

        assert index_terms() and index_blobs()
        sqlite_store.redact(continuation_id="secret")
        assert index_terms() == set()
        assert index_blobs() == 0
        assert db.execute("select count(*) from messages_fts_idx where term like ?", (f"%{MARK}%",)).fetchone()[0] == 0
    finally:
        db.close()
    sqlite_store.check_fts()
    raw = sqlite_store.path.read_bytes()
    wal = sqlite_store.path.with_name(sqlite_store.path.name + "-wal")
    assert MARK.encode() not in raw
    assert MARK.encode("utf-16-le") not in raw
    assert not wal.exists() or MARK.encode() not in wal.read_bytes()


def test_cli_redact_asks_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    with persistence.open_store(url) as store:
        populate(store)
    assert cli.main(["redact", "--url", url, "--thread", "secret", "--dry-run"]) == 0
    assert "Would erase the text of 1 threads (5 messages), 2 uploads" in capsys.readouterr().out
    # Not a terminal and no --yes: refused, naming the flag, nothing changed.
    assert cli.main(["redact", "--url", url, "--thread", "secret"]) == 2
    assert "--yes" in capsys.readouterr().err
    with persistence.open_store(url) as store:
        assert {h.continuation_id for h in store.search(MARK)} == {"secret"}
    assert cli.main(["redact", "--url", url, "--query", f"{MARK} OR {THEIRS}", "--yes"]) == 0
    assert "Erased the text of 2 threads (6 messages)" in capsys.readouterr().out
    with persistence.open_store(url) as store:
        assert store.search(MARK) == []
    with pytest.raises(SystemExit):  # one selector, required
        cli.main(["redact", "--url", url, "--thread", "a", "--user", OWNER])


def test_the_thread_page_marks_a_redacted_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app_seed import open_page, texts

    url = f"sqlite:///{tmp_path / 'app.db'}"
    with persistence.open_store(url) as store:
        populate(store)
        store.redact(continuation_id="secret")
    monkeypatch.setenv("PERSISTENCE_URL", url)
    at = open_page("thread", thread="secret")
    assert not at.exception
    assert [i.value for i in at.info if "Content redacted" in i.value]
    assert MARK not in texts(at)
    at = open_page("thread", thread="clean")
    assert not at.exception
    assert not [i.value for i in at.info if "Content redacted" in i.value]
