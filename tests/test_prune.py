"""Retention: ``prune`` deletes old threads, their messages and the files only they used.

The scenario tests take the ``store`` fixture (every backend) and check what a user sees
through the API; the orphan checks read SQLite's tables and file folder directly.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import assert_server_only, signed_in

import persistence
from persistence import cli, when
from persistence.backends.sqlite.store import SQLiteStore
from persistence.demo import generate
from persistence.errors import NotFoundError, ValidationError

OLD = datetime(2025, 9, 10, 9, 0, tzinfo=UTC)
NEW = datetime(2025, 10, 10, 9, 0, tzinfo=UTC)
CUTOFF = datetime(2025, 10, 1, tzinfo=UTC)
OWNER = "0b7e8c1a-2d3f-4a5b-8c6d-7e8f90a1b2c3"

ONLY_OLD = b"only the old thread used these bytes\n"
LOOSE_OLD = b"uploaded long ago, by no thread\n" * 3
LOOSE_NEW = b"uploaded recently, by no thread\n"
SHARED = b"shared by an old and a new thread\n"
REUPLOADED = b"used by an old thread, uploaded again since\n"


def _msg(store: persistence.Store, cid: str, at: datetime, role: str, text: str, **kw: Any) -> None:
    store.record_message(cid, role, text, created_at=at, message_id=str(uuid.uuid4()), **kw)


def populate(store: persistence.Store) -> dict[str, Any]:
    kimi = {
        "model": "kimi-k2-0905-preview",
        "usage": {"prompt_tokens": 4000, "completion_tokens": 500, "cached_tokens": 1000},
    }
    local = {"model": "llama-3.1-8b-local", "usage": {"prompt_tokens": 300, "completion_tokens": 80}}
    glm = {"model": "glm-4.6", "usage": {"prompt_tokens": 900, "completion_tokens": 100}}

    store.start_conversation("old-1", tool_name="chat", user_id=OWNER, created_at=OLD)
    _msg(store, "old-1", OLD, "user", "How do I tame the zanzibarquokka scheduler?", tool_name="chat")
    _msg(store, "old-1", OLD + timedelta(minutes=1), "assistant", "Old kimi answer.", tool_name="chat", **kimi)
    _msg(store, "old-1", OLD + timedelta(minutes=2), "assistant", "Old local answer.", tool_name="chat", **local)
    store.start_conversation("old-2", tool_name="debug", created_at=OLD)
    _msg(store, "old-2", OLD + timedelta(hours=1), "user", "另一个旧的问题", tool_name="debug")
    _msg(store, "old-2", OLD + timedelta(hours=1, minutes=1), "assistant", "旧的回答", tool_name="debug", **glm)
    # Started long ago but active since the cutoff: kept, with its old messages (same day
    # as the pruned ones, so that day's rollup must be rebuilt, not dropped).
    store.start_conversation("revived", tool_name="chat", created_at=OLD)
    _msg(store, "revived", OLD + timedelta(hours=2), "user", "Old question, still open", tool_name="chat")
    _msg(
        store, "revived", OLD + timedelta(hours=2, minutes=1), "assistant", "Old answer kept.", tool_name="chat", **kimi
    )
    _msg(store, "revived", NEW, "user", "Coming back to this", tool_name="chat")
    store.start_conversation("new-1", tool_name="codereview", created_at=NEW)
    _msg(store, "new-1", NEW + timedelta(minutes=5), "user", "Fresh question", tool_name="codereview")
    _msg(store, "new-1", NEW + timedelta(minutes=6), "assistant", "Fresh answer", tool_name="codereview", **glm)

    only_old = store.put_file(ONLY_OLD, filename="only-old.txt", continuation_id="old-1", created_at=OLD)
    loose_old = store.put_file(LOOSE_OLD, filename="loose-old.bin", created_at=OLD)
    shared_old = store.put_file(SHARED, filename="shared.txt", continuation_id="old-1", created_at=OLD)
    store.put_file(SHARED, filename="shared.txt", continuation_id="new-1", created_at=NEW)
    reup = store.put_file(REUPLOADED, filename="re.txt", continuation_id="old-2", created_at=OLD)
    store.put_file(REUPLOADED, filename="re-again.txt", created_at=NEW)
    loose_new = store.put_file(LOOSE_NEW, filename="loose-new.txt", created_at=NEW)
    store.record_provider_file(only_old.id, "kimi", "kimi-file-1", purpose="file-extract")
    store.record_provider_file(shared_old.id, "kimi", "kimi-file-2", purpose="file-extract")
    return {
        "deleted_files": [only_old, loose_old],
        "kept_files": [shared_old, reup, loose_new],
        "deleted_threads": ["old-1", "old-2"],
        "kept_threads": ["revived", "new-1"],
        "deleted_messages": 5,
    }


# -- recomputations from what is left ------------------------------------------------------

USAGE_KEYS = ["day", "model", "provider", "tool_name", "user_id"]
SUMS = ["messages", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens"]


def all_uploads(store: persistence.Store) -> list[persistence.StoredFile]:
    out: list[persistence.StoredFile] = []
    cursor = None
    while True:
        page = store.list_files(limit=1000, cursor=cursor)
        out.extend(page)
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


def usage_from_messages(store: persistence.Store) -> pd.DataFrame:
    """The daily rollup recomputed from every stored message (through the export)."""
    groups: dict[tuple[Any, ...], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for record in store.export_records():
        user_id = record["conversation"]["user_id"]
        for m in record["messages"]:
            key = (m["created_at"][:10], m["model"], m["provider"], m["tool_name"], user_id)
            g = groups[key]
            g["messages"] += 1
            for bucket, n in m["usage"].items():
                g[bucket] += n
            g["cost_usd"] += m["cost_usd"] or 0.0
            tokens = sum(m["usage"].values())
            g["unpriced_messages"] += m["cost_usd"] is None and (tokens > 0 or "usage_raw" in m["metadata"])
    rows = [(*key, *(g[c] for c in [*SUMS, "cost_usd", "unpriced_messages"])) for key, g in groups.items()]
    df = pd.DataFrame(rows, columns=[*USAGE_KEYS, *SUMS, "cost_usd", "unpriced_messages"])
    df["day"] = pd.to_datetime(df["day"])
    return _normalised(df)


def _normalised(df: pd.DataFrame) -> pd.DataFrame:
    df = df[[*USAGE_KEYS, *SUMS, "cost_usd", "unpriced_messages"]].copy()
    for col in USAGE_KEYS[1:]:
        df[col] = df[col].astype(object).where(df[col].notna(), "")
    for col in [*SUMS, "unpriced_messages"]:
        df[col] = df[col].astype("int64")
    df["day"] = df["day"].astype("datetime64[s]")
    return df.sort_values(USAGE_KEYS).reset_index(drop=True)


def assert_rollup_matches_messages(store: persistence.Store) -> None:
    rollup = _normalised(store.usage(USAGE_KEYS))
    pd.testing.assert_frame_equal(rollup, usage_from_messages(store), check_exact=False, rtol=1e-9, atol=1e-12)


def assert_storage_matches_uploads(store: persistence.Store) -> None:
    uploads = all_uploads(store)
    first_upload: dict[str, persistence.StoredFile] = {}
    for u in sorted(uploads, key=lambda u: u.created_at):
        first_upload.setdefault(u.id, u)
    stored = store.storage_usage(())
    assert stored["uploads"].sum() == len(uploads)
    assert stored["logical_bytes"].sum() == sum(u.size for u in uploads)
    assert stored["files"].sum() == len(first_upload)
    assert stored["bytes"].sum() == sum(u.size for u in first_upload.values())
    by_day = store.storage_usage(("day",)).set_index("day")
    expected: dict[date, int] = defaultdict(int)
    for u in first_upload.values():
        expected[u.created_at.date()] += u.size
    assert {d.date(): int(b) for d, b in zip(by_day.index, by_day["bytes"], strict=True) if b} == dict(expected)


def snapshot(store: persistence.Store) -> dict[str, Any]:
    files = {}
    for u in all_uploads(store):
        with store.open_file(u.id) as fh:
            files[u.upload_id] = hashlib.sha256(fh.read()).hexdigest()
    return {
        "records": list(store.export_records()),
        "usage": store.usage(USAGE_KEYS).to_dict("records"),
        "storage": store.storage_usage(("day", "mime_type")).to_dict("records"),
        "files": files,
        "threads": store.count_conversations(),
    }


# -- behaviour on every backend ------------------------------------------------------------


def test_prune_deletes_old_threads_and_the_files_only_they_used(store: persistence.Store) -> None:
    if signed_in(store):  # prune deletes every owner's old threads: the server's only
        assert_server_only(lambda: store.prune(older_than=CUTOFF), "prune")
        return
    s = populate(store)
    result = store.prune(older_than=CUTOFF)

    assert (result.conversations, result.messages) == (2, s["deleted_messages"])
    assert (result.files, result.uploads) == (2, 2)
    assert result.bytes == len(ONLY_OLD) + len(LOOSE_OLD)
    assert result.cutoff == CUTOFF and not result.dry_run

    for cid in s["deleted_threads"]:
        assert store.get_conversation(cid) is None
    assert store.search("zanzibarquokka") == []
    assert store.search("旧的回答") == []
    kept = {cid: store.get_conversation(cid) for cid in s["kept_threads"]}
    assert {cid: c.message_count if c else None for cid, c in kept.items()} == {"revived": 3, "new-1": 2}
    assert len(kept["revived"].messages) == 3  # type: ignore[union-attr]  # old messages of a kept thread stay

    for f in s["deleted_files"]:
        assert store.get_file(f.id) is None
        with pytest.raises(NotFoundError):
            store.open_file(f.id)
    for f, data in zip(s["kept_files"], (SHARED, REUPLOADED, LOOSE_NEW), strict=True):
        with store.open_file(f.id) as fh:
            assert fh.read() == data
    assert store.find_provider_file(hashlib.sha256(ONLY_OLD).hexdigest(), "kimi") is None
    assert store.find_provider_file(hashlib.sha256(SHARED).hexdigest(), "kimi") is not None

    assert_rollup_matches_messages(store)
    assert_storage_matches_uploads(store)
    for c in kept.values():
        assert c is not None
        assert c.cost_usd == pytest.approx(sum(m.cost_usd or 0.0 for m in c.messages))
        assert c.total_tokens == sum(m.tokens for m in c.messages)


def test_old_day_keeps_the_rollup_of_kept_messages(store: persistence.Store) -> None:
    if signed_in(store):  # prune deletes every owner's old threads: the server's only
        assert_server_only(lambda: store.prune(older_than=CUTOFF), "prune")
        return
    populate(store)
    store.prune(older_than=CUTOFF)
    old_day = store.usage(("day", "model"), since=OLD.replace(hour=0), until=OLD.replace(hour=0) + timedelta(days=1))
    # Only "revived"'s two old messages are left on that day: one user turn, one kimi answer.
    assert sorted(zip(old_day["model"].fillna(""), old_day["messages"], strict=True)) == [
        ("", 1),
        ("kimi-k2-0905-preview", 1),
    ]
    assert old_day["unpriced_messages"].sum() == 0  # the unpriced local answer was pruned


def test_dry_run_changes_nothing_and_counts_what_prune_then_deletes(store: persistence.Store) -> None:
    if signed_in(store):  # prune deletes every owner's old threads: the server's only
        assert_server_only(lambda: store.prune(older_than=CUTOFF), "prune")
        return
    populate(store)
    before = snapshot(store)
    dry = store.prune(older_than=CUTOFF, dry_run=True)
    assert dry.dry_run and dry.conversations == 2 and dry.files == 2
    assert snapshot(store) == before
    real = store.prune(older_than=CUTOFF)
    assert (real.conversations, real.messages, real.uploads, real.files, real.bytes) == (
        dry.conversations,
        dry.messages,
        dry.uploads,
        dry.files,
        dry.bytes,
    )
    again = store.prune(older_than=CUTOFF)
    assert (again.conversations, again.messages, again.files, again.bytes) == (0, 0, 0, 0)


def test_prune_by_age_keeps_recent_threads(store: persistence.Store) -> None:
    if signed_in(store):  # prune deletes every owner's old threads: the server's only
        assert_server_only(lambda: store.prune(older_than=CUTOFF), "prune")
        return
    now = datetime.now(UTC)
    store.record_message("stale", "user", "stale", created_at=now - timedelta(days=100))
    store.record_message("fresh", "user", "fresh", created_at=now - timedelta(days=10))
    result = store.prune(older_than=timedelta(days=90))
    assert result.conversations == 1
    assert store.get_conversation("stale") is None and store.get_conversation("fresh") is not None
    assert now - timedelta(days=90, seconds=5) < result.cutoff < now - timedelta(days=90) + timedelta(seconds=5)
    with pytest.raises(ValidationError):
        store.prune(older_than=timedelta(0))


# -- SQLite: no orphan rows, no orphan bytes -----------------------------------------------


def assert_no_orphans(store: SQLiteStore) -> None:
    db = store._conn()
    checks = {
        "messages without a thread": "select count(*) from messages where conversation_id not in (select id from conversations)",
        "uploads without a file": "select count(*) from file_uploads where file_id not in (select id from files)",
        "uploads pointing at a deleted thread": "select count(*) from file_uploads where conversation_id is not null and conversation_id not in (select id from conversations)",
        "thread-file links to a deleted thread": "select count(*) from conversation_files where conversation_id not in (select id from conversations)",
        "thread-file links to a deleted file": "select count(*) from conversation_files where file_id not in (select id from files)",
        "provider files of a deleted file": "select count(*) from provider_files where file_id not in (select id from files)",
        "files naming a deleted thread": "select count(*) from files where conversation_id is not null and conversation_id not in (select id from conversations)",
        "full-text rows without a message": "select (select count(*) from messages_fts_docsize) - (select count(*) from messages)",
        "rollup rows with no messages": "select count(*) from usage_daily where messages <= 0",
    }
    found = {name: db.execute(sql).fetchone()[0] for name, sql in checks.items()}
    assert found == dict.fromkeys(checks, 0)
    store.check_fts()  # FTS5 integrity-check: the index agrees with the messages
    root = store.files.root
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".tmp" not in p.parts}
    referenced = {r[0] for r in db.execute("select storage_path from files")}
    assert on_disk == referenced, (
        f"bytes with no file row: {on_disk - referenced}; rows with no bytes: {referenced - on_disk}"
    )


def test_sqlite_prune_leaves_no_orphan_rows_or_bytes(sqlite_store: SQLiteStore) -> None:
    populate(sqlite_store)
    assert_no_orphans(sqlite_store)
    sqlite_store.prune(older_than=CUTOFF)
    assert_no_orphans(sqlite_store)
    assert_rollup_matches_messages(sqlite_store)


def test_sqlite_prune_of_a_demo_store(sqlite_store: SQLiteStore) -> None:
    generate(sqlite_store, 150, seed=11, end=date(2025, 11, 20), weeks=8)
    before = sqlite_store.count_conversations()
    result = sqlite_store.prune(older_than=datetime(2025, 10, 23, tzinfo=UTC))
    assert 0 < result.conversations < before
    assert sqlite_store.count_conversations() == before - result.conversations
    assert_no_orphans(sqlite_store)
    assert_rollup_matches_messages(sqlite_store)
    assert_storage_matches_uploads(sqlite_store)


# -- the CLI -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("12w", timedelta(weeks=12)),
        ("36h", timedelta(hours=36)),
        (" 7D ", timedelta(days=7)),
        ("2025-01-01", datetime(2025, 1, 1, tzinfo=UTC)),
        ("2025-01-01T12:00:00+02:00", datetime(2025, 1, 1, 10, tzinfo=UTC)),
    ],
)
def test_parse_age(text: str, expected: timedelta | datetime) -> None:
    assert when.parse_age(text) == expected


@pytest.mark.parametrize("text", ["0d", "90", "90 days", "3m", "tomorrow", "2999-01-01", "2025-01-01T00:00:00"])
def test_prune_refuses_bad_ages(text: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["prune", "--url", f"sqlite:///{tmp_path / 'x.db'}", "--older-than", text])
    assert exc.value.code == 2
    assert "--older-than" in capsys.readouterr().err


def test_cli_prune_dry_run_then_prune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    with persistence.open_store(url) as store:
        populate(store)
        before = snapshot(store)
    assert cli.main(["prune", "--url", url, "--older-than", "2025-10-01", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    size = len(ONLY_OLD) + len(LOOSE_OLD)
    assert out.strip() == (
        "Would delete 2 threads last active before 2025-10-01 00:00 UTC with 5 messages, "
        f"and 2 files no remaining thread uses (2 uploads, {size:,} B)."
    )
    assert "nothing was changed" in err
    with persistence.open_store(url) as store:
        assert snapshot(store) == before
    assert cli.main(["prune", "--url", url, "--older-than", "2025-10-01"]) == 0
    assert capsys.readouterr().out.startswith("Deleted 2 threads last active before 2025-10-01 00:00 UTC")
    with persistence.open_store(url) as store:
        assert store.count_conversations() == 2
        assert isinstance(store, SQLiteStore)
        assert_no_orphans(store)
