"""Provider file ids: upload a file to Kimi/GLM once, look it up by sha256 afterwards."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

import persistence
from persistence import NotFoundError, ValidationError


def test_a_file_is_found_by_hash_and_provider(store: persistence.Store) -> None:
    f = store.put_file(b"%PDF-1.7 quarterly report", filename="q3.pdf")
    assert store.find_provider_file(f.file_hash, "kimi") is None  # a miss: upload it
    rec = store.record_provider_file(
        f.id, "Kimi", "file-abc123", purpose="file-extract", expires_at=datetime.now(UTC) + timedelta(days=30)
    )
    assert (rec.provider, rec.provider_file_id, rec.purpose, rec.file_hash) == (
        "kimi",
        "file-abc123",
        "file-extract",
        f.file_hash,
    )
    hit = store.find_provider_file(f.file_hash, "kimi")
    assert hit is not None and hit.provider_file_id == "file-abc123"
    assert store.find_provider_file(f.file_hash, "glm") is None  # per provider
    assert store.find_provider_file(f.file_hash, "kimi", purpose="batch") is None  # per purpose when asked
    # The same bytes uploaded again under another name share the provider upload.
    again = store.put_file(b"%PDF-1.7 quarterly report", filename="copy-of-q3.pdf")
    assert again.deduplicated and store.find_provider_file(again.file_hash, "kimi") is not None


def test_a_new_upload_replaces_the_old_and_expiry_is_honoured(store: persistence.Store) -> None:
    f = store.put_file(b"short-lived", filename="a.txt")
    store.record_provider_file(
        f.id, "glm", "old-id", purpose="agent", expires_at=datetime.now(UTC) - timedelta(minutes=1)
    )
    assert store.find_provider_file(f.file_hash, "glm") is None  # expired: upload again
    store.record_provider_file(
        f.upload_id or f.id, "glm", "new-id", purpose="agent", expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    hit = store.find_provider_file(f.file_hash, "glm", purpose="agent")
    assert hit is not None and hit.provider_file_id == "new-id"


def test_provider_file_errors(store: persistence.Store) -> None:
    with pytest.raises(NotFoundError):
        store.record_provider_file(str(uuid.uuid4()), "kimi", "file-x")
    f = store.put_file(b"x", filename="x.txt")
    with pytest.raises(ValidationError, match="provider"):
        store.record_provider_file(f.id, "", "file-x")
    with pytest.raises(ValidationError, match="provider_file_id"):
        store.record_provider_file(f.id, "kimi", "")
    with pytest.raises(ValidationError, match="file_hash"):
        store.find_provider_file("not-a-hash", "kimi")
