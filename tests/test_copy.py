"""copy: the cutover from one store to another, verified, idempotent, resumable."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from conftest import assert_server_only, signed_in

import persistence
from persistence.cli import main
from persistence.cutover import copy_store, verify_stores
from persistence.demo import generate
from persistence.pricing import Price


def seeded_source(path: Path) -> persistence.Store:
    source = persistence.open_store(f"sqlite:///{path}")
    generate(source, 40, seed=5, end=date(2026, 11, 1), weeks=3)
    f = source.put_file(b"%PDF-1.7 contract", filename="contract.pdf", session_id="s-1")  # no thread
    source.record_provider_file(
        f.id, "kimi", "file-kimi-1", purpose="file-extract", expires_at=datetime.now(UTC) + timedelta(days=9)
    )
    source.add_prices(
        [
            Price(
                provider="self",
                model="llama-3.1-8b-local",
                match="^llama-3\\.1-8b-local$",
                effective_from=date(2025, 1, 1),
                input=0.05,
                output=0.1,
            )
        ]
    )
    source.reprice()
    return source


def same_frame(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Equal up to row order and float summation order (numeric on Postgres, REAL on SQLite)."""
    keys = [c for c in a.columns if a[c].dtype == object or str(a[c].dtype).startswith("datetime")]

    def norm(df: pd.DataFrame) -> pd.DataFrame:
        return df.fillna({k: "" for k in keys}).sort_values(keys).reset_index(drop=True)

    pd.testing.assert_frame_equal(norm(a), norm(b), check_exact=False, rtol=1e-9)


def test_copy_into_every_backend_and_verify(store: persistence.Store, tmp_path: Path) -> None:
    if signed_in(store):  # a copy brings prices and every owner's rows: the server's only
        assert_server_only(lambda: copy_store(seeded_source(tmp_path / "source.db"), store), "price table")
        return
    source = seeded_source(tmp_path / "source.db")
    first = copy_store(source, store)
    assert first.conversations == 40 and first.messages == int(source.usage(())["messages"].iloc[0])
    assert first.provider_files == 1 and first.objects_copied == int(source.storage_usage(())["files"].iloc[0])
    assert verify_stores(source, store) == []
    same_frame(store.usage(("day", "model")), source.usage(("day", "model")))
    same_frame(store.storage_usage(("day", "mime_type")), source.storage_usage(("day", "mime_type")))
    hit = store.find_provider_file(source.list_files(session_id="s-1").items[0].file_hash, "kimi")
    assert hit is not None and hit.provider_file_id == "file-kimi-1"
    pdf = store.list_files(session_id="s-1").items[0]
    with store.open_file(pdf.id) as fh:
        assert fh.read() == b"%PDF-1.7 contract"
    # Again: nothing doubled.
    second = copy_store(source, store)
    assert (second.conversations, second.messages, second.uploads, second.objects_copied) == (0, 0, 0, 0)
    assert verify_stores(source, store) == []
    source.close()


def test_an_interrupted_copy_resumes(store: persistence.Store, tmp_path: Path) -> None:
    if signed_in(store):  # a copy brings prices and every owner's rows: the server's only
        assert_server_only(lambda: copy_store(seeded_source(tmp_path / "source.db"), store), "price table")
        return
    source = seeded_source(tmp_path / "source.db")
    uploads = 0

    def interrupt(kind: str, n: int) -> None:
        nonlocal uploads
        uploads += kind == "uploads"
        if uploads == 3:  # threads are in, three uploads are through
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        copy_store(source, store, progress=interrupt)
    assert verify_stores(source, store)  # half-way: the differences are reported
    copy_store(source, store)
    assert verify_stores(source, store) == []
    source.close()


def test_verify_names_what_differs(tmp_path: Path) -> None:
    source = seeded_source(tmp_path / "source.db")
    target = persistence.open_store(f"sqlite:///{tmp_path / 'target.db'}")
    copy_store(source, target)
    cid = source.list_conversations(limit=1).items[0].continuation_id
    target.record_message(cid, "user", "written only in the target", message_id=str(uuid.uuid4()))
    f = target.list_files(limit=1).items[0]
    with open(target.files.root / f.storage_path, "ab") as fh:  # type: ignore[attr-defined]
        fh.write(b"corrupted")
    problems = verify_stores(source, target)
    assert any(cid in p and "messages differ" in p for p in problems)
    assert any("messages:" in p for p in problems)
    assert any(f.storage_path in p and "hash" in p for p in problems)
    source.close()
    target.close()


def test_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seeded_source(tmp_path / "source.db").close()
    src, dst = f"sqlite:///{tmp_path / 'source.db'}", f"sqlite:///{tmp_path / 'target.db'}"
    assert main(["copy", "--from", src, "--to", dst, "--verify"]) == 0
    out = capsys.readouterr()[0]
    assert "Copied 40 threads" in out and "Verified" in out
    assert main(["copy", "--from", src, "--to", dst]) == 0
    assert "Copied 0 threads (40 already there)" in capsys.readouterr()[0]
