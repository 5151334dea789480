"""Files: streamed, hashed, deduplicated, linked to threads, read back."""

from __future__ import annotations

import hashlib
import io
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import persistence
from persistence import ValidationError
from persistence.backends.sqlite.store import SQLiteStore
from persistence.filestore import sniff_mime

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
T0 = datetime(2026, 2, 1, tzinfo=UTC)


def test_put_and_open_from_path_bytes_and_stream(store: persistence.Store, tmp_path: Path) -> None:
    src = tmp_path / "report.pdf"
    src.write_bytes(b"%PDF-1.7 hello")
    from_path = store.put_file(src)
    assert from_path.filename == "report.pdf" and from_path.mime_type == "application/pdf"
    assert from_path.size == 14 and from_path.file_hash == hashlib.sha256(b"%PDF-1.7 hello").hexdigest()
    from_bytes = store.put_file(PNG, filename="chart.png")
    from_stream = store.put_file(io.BytesIO(b"col\n1\n"), filename="data.csv")
    assert (from_bytes.mime_type, from_stream.mime_type) == ("image/png", "text/csv")
    for f, data in ((from_path, b"%PDF-1.7 hello"), (from_bytes, PNG), (from_stream, b"col\n1\n")):
        with store.open_file(f.id) as fh:
            assert fh.read() == data
        assert f.upload_id is not None
        with store.open_file(f.upload_id) as fh:  # an upload id works too
            assert fh.read() == data
    assert f.storage_path.endswith(f.file_hash) and "data.csv" not in f.storage_path


def test_the_same_bytes_are_stored_once_and_it_says_so(store: persistence.Store) -> None:
    a = store.put_file(b"same bytes", filename="a.txt", session_id="s1", continuation_id="t-1")
    b = store.put_file(b"same bytes", filename="b.txt", session_id="s2", continuation_id="t-2")
    assert not a.deduplicated and b.deduplicated
    assert a.id == b.id and a.upload_id != b.upload_id and b.filename == "b.txt"
    totals = store.storage_usage(())
    assert (int(totals["files"].iloc[0]), int(totals["bytes"].iloc[0])) == (1, 10)
    assert (int(totals["uploads"].iloc[0]), int(totals["logical_bytes"].iloc[0])) == (2, 20)
    # Each thread lists the file under the name it was uploaded with.
    conv = store.get_conversation("t-2")
    assert conv is not None and [f.filename for f in conv.files] == ["b.txt"]
    assert sorted(c.continuation_id for c in store.file_conversations(a.id)) == ["t-1", "t-2"]


def test_whether_an_upload_was_deduplicated_is_stored_and_read_back(store: persistence.Store) -> None:
    first = store.put_file(b"twice\n", filename="a.txt", continuation_id="t-1", created_at=T0)
    again = store.put_file(b"twice\n", filename="b.txt", continuation_id="t-2", created_at=T0 + timedelta(hours=1))
    other = store.put_file(b"once\n", filename="c.txt", created_at=T0 + timedelta(hours=2))
    assert (first.deduplicated, again.deduplicated, other.deduplicated) == (False, True, False)
    listed = {f.filename: f.deduplicated for f in store.list_files(limit=10)}
    assert listed == {"a.txt": False, "b.txt": True, "c.txt": False}
    assert [f.filename for f in store.list_files(order="size", limit=10) if f.deduplicated] == ["b.txt"]
    for upload, expected in ((first, False), (again, True), (other, False)):
        assert upload.upload_id is not None
        got = store.get_file(upload.upload_id)
        assert got is not None and got.deduplicated is expected, upload.filename
    # A thread's file list shows that thread's upload; the object itself is the first upload.
    conv = store.get_conversation("t-2")
    assert conv is not None and [(f.filename, f.deduplicated) for f in conv.files] == [("b.txt", True)]
    by_object = store.get_file(first.id)
    assert by_object is not None and not by_object.deduplicated


def test_files_are_listed_filtered_and_paged(store: persistence.Store) -> None:
    for i in range(7):
        store.put_file(
            f"file {i}".encode() * (i + 1),
            filename=f"f{i}.txt",
            continuation_id="t-used" if i < 3 else None,
            created_at=T0 + timedelta(hours=i),
        )
    store.put_file(PNG, filename="p.png", created_at=T0 + timedelta(hours=9))
    assert [f.filename for f in store.list_files(limit=3)] == ["p.png", "f6.txt", "f5.txt"]
    assert [f.filename for f in store.list_files(mime_type="image/")] == ["p.png"]
    assert sorted(f.filename for f in store.list_files(continuation_id="t-used")) == ["f0.txt", "f1.txt", "f2.txt"]
    assert len(store.list_files(unused=True)) == 5
    largest = store.list_files(order="size", limit=2)
    assert largest.items[0].size >= largest.items[1].size
    seen, cursor = [], None
    while True:
        page = store.list_files(limit=3, cursor=cursor)
        seen += [f.filename for f in page]
        if not (cursor := page.next_cursor):
            break
    assert len(seen) == 8 and len(set(seen)) == 8


def test_storage_usage_by_day_and_type(store: persistence.Store) -> None:
    store.put_file(PNG, filename="a.png", created_at=T0)
    store.put_file(PNG, filename="b.png", created_at=T0 + timedelta(days=1))
    store.put_file(b"text", filename="c.txt", created_at=T0 + timedelta(days=1))
    df = store.storage_usage(("day", "mime_type"))
    rows = {(d.strftime("%m-%d"), t): (f, b, u, lb) for d, t, f, b, u, lb in df.itertuples(index=False)}
    assert rows == {
        ("02-01", "image/png"): (1, len(PNG), 1, len(PNG)),
        ("02-02", "image/png"): (0, 0, 1, len(PNG)),
        ("02-02", "text/plain"): (1, 4, 1, 4),
    }


def test_filenames_never_become_paths(store: persistence.Store) -> None:
    f = store.put_file(b"secret", filename="../../etc/passwd")
    assert f.filename == "passwd" and ".." not in f.storage_path
    assert store.put_file(b"x", filename="C:\\Users\\me\\notes.txt").filename == "notes.txt"
    with pytest.raises(ValidationError, match="filename: longer than 255"):
        store.put_file(b"x", filename="a" * 10_000)
    with pytest.raises(ValidationError, match="filename"):
        store.put_file(b"x", filename="../")
    with pytest.raises(ValidationError, match="source"):
        store.put_file("/no/such/file.txt")
    with pytest.raises(ValidationError, match="source"):
        store.put_file(12345)
    with pytest.raises(ValidationError, match="mime_type"):
        store.put_file(b"x", filename="x", mime_type="not a type")


class _CountingStream(io.RawIOBase):
    """A 40 MiB stream that records the largest read, to prove uploads are streamed."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.largest = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            raise AssertionError("put_file read the whole stream at once")
        self.largest = max(self.largest, n)
        n = min(n, self.left)
        self.left -= n
        return b"z" * n


def test_uploads_are_streamed_in_chunks(store: persistence.Store) -> None:
    stream = _CountingStream(40 * 1024 * 1024)
    f = store.put_file(stream, filename="big.bin")
    assert f.size == 40 * 1024 * 1024 and stream.largest <= 1024 * 1024
    digest = hashlib.sha256()
    with store.open_file(f.id) as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == f.file_hash


def test_local_writes_are_atomic_and_leave_no_temp_files(sqlite_store: SQLiteStore) -> None:
    class Exploding(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            raise OSError("disk went away")

    with pytest.raises(OSError):
        sqlite_store.put_file(Exploding(), filename="broken.bin")
    tmp = sqlite_store.files.root / ".tmp"
    assert not tmp.exists() or os.listdir(tmp) == []
    assert len(sqlite_store.list_files()) == 0  # no row for bytes that never arrived


def test_mime_types_come_from_the_bytes() -> None:
    assert sniff_mime(PNG, "fake.txt") == "image/png"
    assert sniff_mime(b"%PDF-1.4", None) == "application/pdf"
    assert sniff_mime(b"PK\x03\x04rest", "doc.docx").endswith("wordprocessingml.document")
    assert sniff_mime(b"<!DOCTYPE html><html>", "page.txt") == "text/html"
    assert sniff_mime(b"print('hi')\n", "x.py") == "text/x-python"
    assert sniff_mime(b"\x00\x01\x02binary", "x.txt") == "application/octet-stream"
    assert sniff_mime("数据".encode()[:4], "cut.txt") == "text/plain"  # a character cut mid-way
