"""Upload safety: each rule refuses what it should, names itself, and leaves no trace."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import persistence
from persistence.uploads import UploadRefusedError, UploadRules

ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 100


def _no_trace(store: persistence.Store, before_files: int) -> None:
    assert len(store.list_files(limit=1000)) == before_files
    assert int(store.storage_usage(())["uploads"].iloc[0]) == before_files
    root = getattr(getattr(store, "files", None), "root", None)
    if root is not None:  # the local file store: no bytes, no temp files left behind
        stored = [p for p in root.rglob("*") if p.is_file()]
        assert len(stored) == len({f.storage_path for f in store.list_files(limit=1000)})


def test_size_limit(store: persistence.Store) -> None:
    store.upload_rules = UploadRules(max_bytes=1000)
    store.put_file(b"a" * 1000, filename="exactly.txt")
    with pytest.raises(UploadRefusedError) as info:
        store.put_file(io.BytesIO(b"a" * 1001), filename="too-big.txt")
    assert info.value.rule == "max_bytes" and "PERSISTENCE_MAX_UPLOAD_BYTES" in str(info.value)
    assert "nothing was stored" in str(info.value)
    _no_trace(store, 1)


def test_types_are_sniffed_from_the_bytes(store: persistence.Store) -> None:
    for data, name in ((ELF, "innocent.txt"), (b"PK\x03\x04zip", "notes.md"), (b"\x00\x01binary", "data.csv")):
        with pytest.raises(UploadRefusedError) as info:
            store.put_file(data, filename=name, mime_type="text/plain")  # a label does not get past
        assert info.value.rule == "allowed_types" and name in str(info.value)
    store.put_file(b"%PDF-1.5 ok", filename="fine.bin")
    store.put_file(b"", filename="empty.txt")  # an empty file is empty text
    _no_trace(store, 2)
    store.upload_rules = UploadRules(allowed_types=("*/*",))
    assert store.put_file(ELF, filename="tool").mime_type == "application/x-executable"


def test_a_late_type_decision_refuses_a_long_stream(store: persistence.Store) -> None:
    """Bytes are judged by their first 8 KiB, before the rest is read."""
    reads: list[int] = []

    class Stream(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b):  # type: ignore[no-untyped-def]
            reads.append(len(b))
            b[: len(ELF)] = ELF
            return len(ELF) if len(reads) == 1 else len(b)

    with pytest.raises(UploadRefusedError):
        store.put_file(io.BufferedReader(Stream(), buffer_size=1 << 20), filename="x")
    assert sum(reads) < 10 * (1 << 20)
    _no_trace(store, 0)


def test_per_session_rate_limits(store: persistence.Store) -> None:
    store.upload_rules = UploadRules(uploads_per_minute=3, bytes_per_minute=None)
    for i in range(3):
        store.put_file(f"file {i}".encode(), filename=f"{i}.txt", session_id="busy")
    with pytest.raises(UploadRefusedError) as info:
        store.put_file(b"one more", filename="4.txt", session_id="busy")
    assert info.value.rule == "uploads_per_minute" and "busy" in str(info.value)
    store.put_file(b"another session", filename="x.txt", session_id="calm")  # per session
    store.put_file(b"no session", filename="y.txt")
    store.upload_rules = UploadRules(uploads_per_minute=None, bytes_per_minute=100)
    store.put_file(b"a" * 60, filename="a.txt", session_id="heavy")
    with pytest.raises(UploadRefusedError) as info:
        store.put_file(b"b" * 60, filename="b.txt", session_id="heavy")
    assert info.value.rule == "bytes_per_minute"
    _no_trace(store, 6)


def test_rules_come_from_the_environment(tmp_path: Path) -> None:
    env = {
        "PERSISTENCE_MAX_UPLOAD_BYTES": "0",
        "PERSISTENCE_UPLOAD_ALLOWED_TYPES": "image/*, application/pdf",
        "PERSISTENCE_UPLOADS_PER_MINUTE": "5",
    }
    store = persistence.open_store(f"sqlite:///{tmp_path / 'h.db'}", env=env)
    assert store.upload_rules == UploadRules(
        max_bytes=None, allowed_types=("image/*", "application/pdf"), uploads_per_minute=5
    )
    with pytest.raises(UploadRefusedError):
        store.put_file(b"plain text", filename="a.txt")
    store.record_message("kept", "user", "written before the bad setting")
    store.close()
    with pytest.raises(persistence.StoreOpenError, match="PERSISTENCE_UPLOADS_PER_MINUTE"):
        persistence.open_store(f"sqlite:///{tmp_path / 'h.db'}", env={"PERSISTENCE_UPLOADS_PER_MINUTE": "lots"})
    # Only the setting was refused: the store opens again as it was, with its rules back to the defaults.
    with persistence.open_store(f"sqlite:///{tmp_path / 'h.db'}") as again:
        kept = again.get_conversation("kept")
        assert kept is not None and [m.content for m in kept.messages] == ["written before the bad setting"]
        assert again.upload_rules == UploadRules()


def test_active_types_are_allowed_only_by_name() -> None:
    rules = UploadRules.from_env({"PERSISTENCE_UPLOAD_ALLOWED_TYPES": "text/*, image/*, image/svg+xml"})
    assert rules.allows("text/markdown") and rules.allows("image/png") and rules.allows("image/svg+xml")
    assert not rules.allows("text/html") and not rules.allows("application/xhtml+xml")  # text/* is not enough
    assert not UploadRules().allows("text/html") and not UploadRules().allows("image/svg+xml")
    assert UploadRules(allowed_types=("*/*",)).allows("text/html")  # */*: the type rules are off
