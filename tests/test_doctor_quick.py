"""doctor's two modes (issue 16): the full check (the CLI's, with a progress bar) reads every
page and every stored file's bytes and records what it found; the quick check (the app's)
reads counts and that record, so a large store's health shows without a page-by-page read."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest
from conftest import assert_server_only, signed_in

import persistence
from persistence.backends.postgres.store import J
from persistence.backends.sqlite.store import SQLiteStore
from persistence.cli import main
from persistence.errors import ValidationError


def fill(store: persistence.Store) -> None:
    store.record_message("t1", "user", "hello", tool_name="chat")
    store.record_message("t1", "assistant", "hi", model="glm-4.6", usage={"input_tokens": 5, "output_tokens": 2})
    store.record_message("t2", "assistant", "no price", model="my-local-model", usage={"input_tokens": 5})
    store.put_file(b"first file\n", filename="a.txt", continuation_id="t1")
    store.put_file(b"second file\n", filename="b.txt", continuation_id="t2")


def test_quick_reads_the_counts_and_the_last_full_checks_findings(store: persistence.Store) -> None:
    if signed_in(store):  # the doctor reads every owner's rows: the server's only
        assert_server_only(lambda: store.doctor(quick=True), "doctor")
        return
    fill(store)
    quick = store.doctor(quick=True)
    assert (quick["conversations"], quick["messages"], quick["files"], quick["uploads"]) == (2, 3, 2, 2)
    assert quick["unpriced_models"] == {"my-local-model": 1}
    # No full check yet: nothing to report about pages or bytes, and it says so.
    assert quick["last_full_check_at"] is None and quick["last_full_check_age_s"] is None
    assert quick["files_missing_bytes_count"] is None

    steps: list[tuple[str, int, int]] = []
    full = store.doctor(progress=lambda step, done, total: steps.append((step, done, total)))
    assert full["full_check_recorded"] is True and full["files_missing_bytes_count"] == 0
    assert full["conversations"] == quick["conversations"] and full["messages"] == quick["messages"]
    # The progress goes forward to its end, and says what it is checking.
    assert [done for _, done, _ in steps] == sorted(done for _, done, _ in steps)
    assert steps[-1][1] == steps[-1][2] and "file bytes" in {step for step, _, _ in steps}

    # A stored file loses its bytes: the quick check shows it once a full check has seen it.
    missing = store.list_files().items[0]
    store.files.delete(missing.storage_path)  # type: ignore[attr-defined]
    assert store.doctor(quick=True)["files_missing_bytes_count"] == 0  # not seen yet
    assert store.doctor()["files_missing_bytes_count"] == 1
    quick = store.doctor(quick=True)
    assert quick["files_missing_bytes_count"] == 1
    assert quick["last_full_check_at"] is not None and 0 <= quick["last_full_check_age_s"] < 60
    assert quick["last_full_check_seconds"] >= 0


@pytest.mark.postgres
def test_findings_that_are_not_an_object_are_refused(pg_url: str, tmp_path: Path) -> None:
    """record_doctor_check is the server's to call; what it keeps must still be findings."""
    store = persistence.open_store(pg_url, files_dir=tmp_path / "files")
    try:
        for bad in (None, [1, 2], {"text": "x" * 20000}):
            with pytest.raises(ValidationError, match="p_findings"):
                store._call("record_doctor_check", {"p_findings": J(bad)})  # type: ignore[attr-defined]
        assert store.doctor(quick=True)["last_full_check_at"] is None
    finally:
        store.close()


def test_the_sqlite_quick_check_reads_no_page_by_page(sqlite_store: SQLiteStore) -> None:
    """What makes it quick: no integrity check, no count of the messages table, no file stat."""
    fill(sqlite_store)
    sqlite_store.doctor()
    statements: list[str] = []
    sqlite_store._conn().set_trace_callback(statements.append)
    checked: list[str] = []
    exists = sqlite_store.files.exists

    def spy(storage_path: str) -> bool:
        checked.append(storage_path)
        return exists(storage_path)

    sqlite_store.files.exists = spy  # type: ignore[method-assign]
    report = sqlite_store.doctor(quick=True)
    sqlite_store._conn().set_trace_callback(None)
    assert report["quick_check"] == "ok" and report["messages"] == 3
    assert statements and not [s for s in statements if "quick_check" in s or "count(*) from messages" in s]
    assert checked == []


def test_a_read_only_store_checks_but_records_nothing(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    writable = persistence.open_store(f"sqlite:///{path}")
    fill(writable)
    writable.close()
    store = persistence.open_store(f"sqlite:///{path}?mode=ro")
    full = store.doctor()
    assert full["quick_check"] == "ok" and full["full_check_recorded"] is False
    assert store.doctor(quick=True)["last_full_check_at"] is None
    store.close()


def test_a_damaged_file_shows_in_the_quick_check(tmp_path: Path) -> None:
    """The checks at open find a damaged small file; the quick check reports it as the
    integrity finding (what the app shows), with the way out."""
    path = tmp_path / "h.db"
    store = persistence.open_store(f"sqlite:///{path}")
    for i in range(300):
        store.record_message(f"t{i % 7}", "user", f"message number {i} " + "words " * 40)
    store.close()
    db = sqlite3.connect(path)
    page_size = db.execute("pragma page_size").fetchone()[0]
    db.execute("pragma wal_checkpoint(truncate)")
    db.close()
    with open(path, "r+b") as fh:  # scribble over pages in the middle of the file
        fh.seek(page_size * 6)
        fh.write(b"\xde\xad" * page_size * 2)
    damaged = persistence.open_store(f"sqlite:///{path}")
    quick = damaged.doctor(quick=True)
    damaged.close()
    assert quick["damaged"] is True and quick["quick_check"] not in (None, "ok")
    assert "recover" in quick["recover_command"]


def test_cli_doctor_full_with_a_progress_bar_then_quick(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    store = persistence.open_store(url)
    fill(store)
    store.close()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: the bar shows
    assert main(["doctor", "--url", url, "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["quick_check"] == "ok"
    assert "integrity check" in err and "file bytes" in err and "100%" in err

    assert main(["doctor", "--url", url, "--quick", "--json"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["check"] == "quick" and report["quick_check"] == "ok" and report["messages"] == 3
    assert report["last_full_check_at"] is not None and "integrity check" not in err
