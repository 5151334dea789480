"""The demo's uploads (persistence/demo_files.py): valid files of their types, of realistic
sizes, made the same for the same seed, accepted by the upload rules."""

from __future__ import annotations

import io
import re
from datetime import date
from pathlib import Path

import pytest

import persistence
from persistence.backends.sqlite.store import SQLiteStore
from persistence.demo import generate
from persistence.demo_files import DEMO_FILES, demo_file_bytes

Image = pytest.importorskip("PIL.Image")  # installed with streamlit (requirements.txt)

VARIANTS = range(1, 5)


def test_every_demo_file_is_a_valid_file_of_its_type_and_passes_the_upload_rules(sqlite_store: SQLiteStore) -> None:
    for spec in DEMO_FILES:
        for variant in VARIANTS:
            data = demo_file_bytes(0, spec.name, variant)
            where = f"{spec.name} variant {variant}"
            assert spec.min_size * 0.9 <= len(data) <= spec.max_size * 1.1, where
            stored = sqlite_store.put_file(data, filename=spec.name, mime_type=spec.mime_type)  # the default rules
            assert stored.mime_type == spec.mime_type, where
            if spec.kind in ("png", "jpeg"):
                with Image.open(io.BytesIO(data)) as image:
                    image.load()  # decodes every pixel
                    assert image.format == {"png": "PNG", "jpeg": "JPEG"}[spec.kind], where
                    assert image.width >= 64 and image.height >= 16, where
            elif spec.kind == "pdf":
                assert_valid_pdf(data, where)
            else:
                data.decode("utf-8")


def assert_valid_pdf(data: bytes, where: str) -> None:
    """The header, the trailer, and a cross-reference table whose every offset is its object's."""
    assert data.startswith(b"%PDF-1.4\n") and data.endswith(b"%%EOF\n"), where
    xref_at = int(re.search(rb"startxref\n(\d+)\n%%EOF\n$", data).group(1))  # type: ignore[union-attr]
    assert data[xref_at : xref_at + 5] == b"xref\n", where
    count = int(re.match(rb"xref\n0 (\d+)\n", data[xref_at:]).group(1))  # type: ignore[union-attr]
    entries = re.findall(rb"(\d{10}) 00000 n \n", data[xref_at:])
    assert len(entries) == count - 1 > 3, where
    for number, offset in enumerate(entries, start=1):
        assert data[int(offset) :].startswith(b"%d 0 obj\n" % number), f"{where}: object {number}"
    for length, body in re.findall(rb"<< /Length (\d+) >>\nstream\n(.*?)endstream", data, re.DOTALL):
        assert int(length) == len(body), where


def test_the_same_seed_makes_the_same_bytes() -> None:
    for spec in DEMO_FILES:
        assert demo_file_bytes(3, spec.name, 2) == demo_file_bytes(3, spec.name, 2)
        assert demo_file_bytes(3, spec.name, 2) != demo_file_bytes(4, spec.name, 2), spec.name
        assert demo_file_bytes(3, spec.name, 2) != demo_file_bytes(3, spec.name, 1), spec.name


def test_a_demo_stores_realistic_files(tmp_path: Path) -> None:
    store = persistence.open_store(f"sqlite:///{tmp_path / 'demo.db'}")
    try:
        summary = generate(store, 200, seed=0, end=date(2026, 3, 1))
        uploads = list(store.list_files(limit=1000))
        assert len(uploads) == summary.uploads > 30
        types = {f.mime_type for f in uploads}
        assert {"application/pdf", "image/png", "image/jpeg", "text/plain", "text/csv"} <= types
        sizes = sorted(f.size for f in uploads)
        assert sizes[0] < 10_000 and sizes[-1] > 1_000_000  # from a small config to a photo
        assert sum(s > 100_000 for s in sizes) >= len(sizes) // 3  # many of tens of KB to MBs
        totals = store.storage_usage(()).iloc[0]
        assert 5_000_000 < int(totals["bytes"]) < 100_000_000  # a picture of real use, not of a disk
        assert int(totals["logical_bytes"]) > int(totals["bytes"])  # some uploaded again
        assert any(f.deduplicated for f in uploads) and not all(f.deduplicated for f in uploads)
    finally:
        store.close()
