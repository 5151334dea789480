"""A damaged SQLite file (issue 10, item 6): doctor reports it, reads raise StoreDamagedError,
writes are refused, and ``recover`` copies what is readable into a working store.

The damage is real: random bytes over two leaf pages in the middle of the ``messages`` table
of a store holding 300 messages, with the WAL checkpointed into the file first.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import persistence
from persistence import StoreDamagedError
from persistence.backends.sqlite.recover import RecoverResult, recover_sqlite
from persistence.backends.sqlite.store import SQLiteStore
from persistence.cli import main as cli

THREADS = 15
PER_THREAD = 20
MODEL = "kimi-k2-0905-preview"


def build(path: Path) -> None:
    store = SQLiteStore(path)
    rng = random.Random(7)
    for t in range(THREADS):
        store.record_messages(
            [
                {
                    "continuation_id": f"thread-{t}",
                    "role": "user" if i % 2 == 0 else "assistant",
                    "content": f"turn {i} of thread {t}: running the tests "
                    + " ".join(f"w{rng.getrandbits(24):06x}" for _ in range(40)),
                    "model": MODEL,
                    "usage": {"prompt_tokens": 100 + i, "completion_tokens": 10 + t},
                }
                for i in range(PER_THREAD)
            ]
        )
    store.put_file(b"a text file that survives\n", filename="notes.txt", continuation_id="thread-0")
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("pragma wal_checkpoint(truncate)")


def corrupt(path: Path, pages: int = 2) -> list[int]:
    """Overwrite ``pages`` leaf pages in the middle of the messages table; their numbers."""
    with sqlite3.connect(path) as db:
        page_size = db.execute("pragma page_size").fetchone()[0]
        leaves = [r[0] for r in db.execute("select pageno from dbstat where name = 'messages' and pagetype = 'leaf'")]
    assert len(leaves) >= 4, leaves
    chosen = leaves[len(leaves) // 2 : len(leaves) // 2 + pages]
    rng = random.Random(11)
    with open(path, "r+b") as fh:
        for page in chosen:
            fh.seek((page - 1) * page_size)
            fh.write(rng.randbytes(page_size))
    return chosen


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    path = tmp_path / "history.db"
    build(path)
    corrupt(path)
    return path


def read_everything(store: persistence.Store) -> None:
    for t in range(THREADS):
        store.get_conversation(f"thread-{t}")


def test_doctor_reports_the_damage_and_how_to_recover(
    damaged: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="persistence"):
        store = SQLiteStore(damaged)
    try:
        assert any("is damaged" in r.getMessage() for r in caplog.records)  # said at open
        report = store.doctor()
    finally:
        store.close()
    assert report["damaged"] is True and report["quick_check"] != "ok"
    assert report["recover_command"].startswith(f"python -m persistence recover --url sqlite:///{damaged}")
    code = cli(["doctor", "--url", f"sqlite:///{damaged}"])
    err = capsys.readouterr().err
    assert code == 1
    assert "PROBLEM: the database file is damaged (pragma quick_check:" in err
    assert "python -m persistence recover" in err and "Traceback" not in err


def test_reads_raise_the_named_error_and_writes_are_refused(damaged: Path) -> None:
    folder = damaged.with_name("history-files")
    files_before = sorted(p for p in folder.rglob("*") if p.is_file())
    store = SQLiteStore(damaged)
    try:
        with pytest.raises(StoreDamagedError) as refused:  # refused from the start: found at open
            store.record_message("thread-1", "user", "one more")
        assert refused.value.path == str(damaged) and "recover" in str(refused.value)
        with pytest.raises(StoreDamagedError):
            store.put_file(b"new bytes\n", filename="more.txt")
        with pytest.raises(StoreDamagedError) as unreadable:
            read_everything(store)
        assert "python -m persistence recover" in str(unreadable.value)
    finally:
        store.close()
    assert sorted(p for p in folder.rglob("*") if p.is_file()) == files_before  # no bytes of the refused upload


def test_damage_met_by_a_read_refuses_later_writes(damaged: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file too large for the check at open: the first read that meets the damage is
    enough to stop the writes."""
    monkeypatch.setattr("persistence.backends.sqlite.store.OPEN_CHECK_MAX_BYTES", 0)
    store = SQLiteStore(damaged)
    try:
        assert store.damage is None
        with pytest.raises(StoreDamagedError):
            read_everything(store)
        assert store.damage is not None
        with pytest.raises(StoreDamagedError):
            store.record_message("thread-1", "user", "one more")
    finally:
        store.close()


def _check_recovered(output: Path, files_dir: Path) -> None:
    store = SQLiteStore(output, files_dir=files_dir)
    try:
        report = store.doctor()
        assert report["quick_check"] == "ok" and not report["damaged"]
        lost = THREADS * PER_THREAD - report["messages"]
        assert 0 < lost < 3 * PER_THREAD  # two pages' worth of messages, not more
        assert report["conversations"] == THREADS and report["files"] == 1
        store.check_fts()
        for t in range(THREADS):
            conv = store.get_conversation(f"thread-{t}")
            assert conv is not None
            # Totals are recomputed from what survived, not copied from before the damage.
            assert conv.message_count == len(conv.messages)
            assert conv.usage.total == sum(m.usage.total for m in conv.messages)
        totals = store.usage(()).iloc[0]
        assert totals["messages"] == report["messages"]
        assert store.search("running")
        with store.open_file(store.list_files().items[0].id) as fh:
            assert fh.read() == b"a text file that survives\n"
        added = store.record_message("thread-1", "user", "written after the recovery")
        assert added.seq > 0
    finally:
        store.close()


def test_recover_copies_what_is_readable_into_a_working_store(
    damaged: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = damaged.read_bytes()
    output = damaged.with_name("recovered.db")
    code = cli(["recover", "--url", f"sqlite:///{damaged}", "--output", str(output), "--method", "copy"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "table-by-table copy" in out and "quick_check: ok" in out
    assert damaged.read_bytes() == before  # the damaged file is only read
    _check_recovered(output, damaged.with_name("history-files"))
    assert cli(["recover", "--url", f"sqlite:///{damaged}", "--output", str(output)]) == 2  # never overwrites


def _shell_recover_works() -> str | None:
    shell = shutil.which("sqlite3")
    if shell is None:
        return "the sqlite3 shell is not installed"
    probe = subprocess.run([shell, ":memory:", ".recover"], capture_output=True, text=True)
    if probe.returncode != 0 or "BEGIN" not in probe.stdout:
        return f"this sqlite3 shell's .recover does not work: {(probe.stderr or probe.stdout).strip()[:200]}"
    return None


def test_recover_with_the_sqlite3_shell(damaged: Path) -> None:
    why = _shell_recover_works()
    if why:
        pytest.skip(why + " (the table copy is tested above)")
    result = recover_sqlite(damaged, damaged.with_name("recovered.db"), method="shell")
    assert result.method == "shell" and result.quick_check == "ok"
    _check_recovered(damaged.with_name("recovered.db"), damaged.with_name("history-files"))


FAKE_SHELL = """#!{python}
# A stand-in for the sqlite3 shell: ".recover" prints the file as SQL, otherwise SQL from
# stdin is run statement by statement, going on after an error as the shell does. Only the
# plumbing is faked: the rows still come from the real file.
import sqlite3, sys
args = [a for a in sys.argv[1:] if a != "-readonly"]
if args[-1] == ".recover":
    db = sqlite3.connect("file:" + args[0] + "?mode=ro", uri=True)
    for line in db.iterdump():
        print(line)
    sys.exit(0)
db = sqlite3.connect(args[0], isolation_level=None)
failed, statement = 0, ""
for line in sys.stdin:
    statement += line
    if sqlite3.complete_statement(statement):
        try:
            db.execute(statement)
        except sqlite3.Error as exc:
            failed += 1
            print("Parse error:", exc, file=sys.stderr)
        statement = ""
sys.exit(1 if failed else 0)
"""


def test_recover_through_the_shell_plumbing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shell path end to end (dump, load into a scratch file, copy, rebuild), with a
    stand-in shell: the real one may lack .recover (Debian builds it without)."""
    shell = tmp_path / "bin" / "sqlite3"
    shell.parent.mkdir()
    shell.write_text(FAKE_SHELL.format(python=sys.executable))
    shell.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shell.parent}{os.pathsep}{os.environ['PATH']}")
    path = tmp_path / "history.db"
    build(path)
    output = tmp_path / "recovered.db"
    result = recover_sqlite(path, output, method="shell")
    assert result.method == "shell" and result.quick_check == "ok", result.notes
    assert result.rows["messages"] == THREADS * PER_THREAD and result.rows["conversations"] == THREADS
    assert not output.with_name(output.name + ".recover-scratch").exists()
    store = SQLiteStore(output, files_dir=tmp_path / "history-files")
    try:
        conv = store.get_conversation("thread-0")
        assert conv is not None and conv.message_count == PER_THREAD and len(conv.files) == 1
        assert store.usage(()).iloc[0]["messages"] == THREADS * PER_THREAD
    finally:
        store.close()


def test_recover_keeps_messages_whose_thread_row_was_lost(tmp_path: Path) -> None:
    """Rows lost from one table leave rows pointing at nothing: messages keep a stand-in
    thread, uploads of a lost file are dropped (and counted)."""
    path = tmp_path / "history.db"
    build(path)
    with sqlite3.connect(path) as db:  # foreign keys off: as if those pages were unreadable
        conv_id = db.execute("select id from conversations where continuation_id = 'thread-2'").fetchone()[0]
        db.execute("delete from conversations where id = ?", (conv_id,))
        db.execute("delete from files")
    result = recover_sqlite(path, tmp_path / "recovered.db", method="copy")
    assert result.quick_check == "ok" and result.stand_in_threads == 1
    assert result.dropped == {"file_uploads": 1, "conversation_files": 1}
    store = SQLiteStore(tmp_path / "recovered.db")
    try:
        conv = store.get_conversation(f"recovered-{conv_id}")
        assert conv is not None and conv.message_count == PER_THREAD == len(conv.messages)
        assert store.usage(()).iloc[0]["messages"] == THREADS * PER_THREAD
    finally:
        store.close()


def test_recover_falls_back_to_the_table_copy(damaged: Path) -> None:
    """``auto`` uses the shell when it works and the table copy when it does not (or is absent)."""
    result = recover_sqlite(damaged, damaged.with_name("recovered.db"))
    assert result.method == ("copy" if _shell_recover_works() else "shell")
    assert result.quick_check == "ok"


def test_recover_from_the_command_line_process(damaged: Path) -> None:
    output = damaged.with_name("recovered.db")
    done = subprocess.run(
        [sys.executable, "-m", "persistence", "recover", "--url", f"sqlite:///{damaged}", "--output", str(output)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and output.exists()


def test_a_truncated_copy_is_damaged_at_open(tmp_path: Path) -> None:
    whole = tmp_path / "whole.db"
    build(whole)

    results: dict[int, RecoverResult] = {}

    def cut_off(pages: int) -> RecoverResult:
        if pages in results:
            return results[pages]
        path = tmp_path / f"history-{pages}.db"
        shutil.copyfile(whole, path)
        with open(path, "r+b") as fh:
            fh.truncate(path.stat().st_size - pages * 4096)  # the last pages cut off
        # SQLite reads nothing from a file shorter than its header says: refused at open, saying why.
        with pytest.raises(StoreDamagedError, match="truncated") as refused:
            SQLiteStore(path)
        assert "python -m persistence recover" in str(refused.value)
        result = recover_sqlite(path, tmp_path / f"recovered-{pages}.db", method="copy")
        assert result.quick_check == "ok" and result.rows["conversations"] == THREADS
        results[pages] = result
        return result

    # The fewest last pages whose loss takes messages with it (which table the last pages hold
    # depends on the order rows were written and on their sizes): more cut, fewer kept.
    low, high = 3, 60
    while low < high:
        middle = (low + high) // 2
        if cut_off(middle).rows["messages"] < THREADS * PER_THREAD:
            high = middle
        else:
            low = middle + 1
    result = cut_off(low)
    assert THREADS * PER_THREAD - 3 * PER_THREAD < result.rows["messages"] < THREADS * PER_THREAD


def test_an_empty_file_is_said_out_loud(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "history.db"
    path.touch()
    with caplog.at_level(logging.WARNING, logger="persistence"):
        store = SQLiteStore(path)
    store.close()
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "empty file" in r.getMessage()]
    assert warned and str(path) in warned[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="persistence"):
        SQLiteStore(path).close()  # now a store: nothing to say
    assert not [r for r in caplog.records if "empty file" in r.getMessage()]


def test_the_overview_says_the_file_is_damaged(damaged: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app_seed import open_page

    monkeypatch.setenv("PERSISTENCE_URL", f"sqlite:///{damaged}")
    at = open_page(period="all")
    assert not at.exception, at.exception
    shown = " ".join(e.value for e in at.error)
    assert "integrity check failed" in shown or "damaged" in shown, shown
    assert "python -m persistence recover" in shown
