"""The plan's migration path: bring a folder of existing files in, and copy one store into
another (the cutover from the embedded default to Supabase), with a verification.

Both are idempotent and resumable: every write is keyed (thread by continuation id, message
by id, upload by id, bytes by owner and sha256), so running again after an interruption
picks up where the last run stopped and doubles nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import PersistenceError, ValidationError
from .models import StoredFile
from .store import Store
from .transfer import conversation_record
from .uploads import UploadRefusedError, UploadRules

__all__ = ["CopyResult", "FolderImport", "copy_store", "import_folder", "verify_stores"]

_IMPORT_NAMESPACE = uuid.UUID("0b6f6d1e-2c55-4a8f-a1d3-6f9e0c2b7a14")


@dataclass
class FolderImport:
    """What ``import_folder`` did: counts and bytes per outcome, and why files were refused."""

    new: int = 0
    new_bytes: int = 0
    deduplicated: int = 0
    deduplicated_bytes: int = 0
    skipped: int = 0
    skipped_bytes: int = 0
    rejected: int = 0
    rejected_bytes: int = 0
    refusals: list[tuple[str, str]] = field(default_factory=list)


def _walk(root: Path) -> Iterator[Path]:
    # Sorted, so a re-run meets files in the same order; symlinks are not followed (a link
    # could point outside the folder, or loop).
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                yield path


def import_folder(
    store: Store,
    folder: str | Path,
    *,
    tags: tuple[str, ...] = (),
    session_id: str | None = None,
    progress: Callable[[int], object] | None = None,
) -> FolderImport:
    """Store every file under ``folder`` through ``put_file`` (hashed, deduplicated, type
    sniffed, size-limited), with its path relative to ``folder`` in ``metadata.source_path``.

    A file already imported (same relative path, size and modification time) is skipped
    without being read, so a re-run after an interruption only does what is left. The
    per-session upload rate limit does not apply to an import; the size and type rules do.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValidationError("folder", f"{root} is not a folder")
    rules = store.upload_rules
    store.upload_rules = dataclasses.replace(rules, uploads_per_minute=None, bytes_per_minute=None)
    result = FolderImport()
    try:
        for path in _walk(root):
            rel = path.relative_to(root).as_posix()
            try:
                st = path.stat()
            except OSError as exc:
                result.rejected += 1
                result.refusals.append((rel, f"cannot read: {exc.strerror}"))
                continue
            key = f"{rel}\n{st.st_size}\n{st.st_mtime_ns}\n{session_id or ''}"
            upload_id = str(uuid.uuid5(_IMPORT_NAMESPACE, key))
            if store.get_file(upload_id) is not None:
                result.skipped += 1
                result.skipped_bytes += st.st_size
            else:
                try:
                    stored = store.put_file(
                        path,
                        filename=path.name,
                        session_id=session_id,
                        tags=tags,
                        metadata={"source_path": rel, "imported_from": str(root.resolve())},
                        upload_id=upload_id,
                    )
                except (UploadRefusedError, ValidationError, OSError) as exc:
                    result.rejected += 1
                    result.rejected_bytes += st.st_size
                    result.refusals.append((rel, str(exc)))
                else:
                    if stored.deduplicated:
                        result.deduplicated += 1
                        result.deduplicated_bytes += stored.size
                    else:
                        result.new += 1
                        result.new_bytes += stored.size
            if progress:
                progress(1)
    finally:
        store.upload_rules = rules
    return result


@dataclass
class CopyResult:
    prices: int = 0
    conversations: int = 0
    conversations_skipped: int = 0
    messages: int = 0
    messages_skipped: int = 0
    uploads: int = 0
    uploads_skipped: int = 0
    objects_copied: int = 0
    bytes_copied: int = 0
    provider_files: int = 0


def _all_uploads(store: Store) -> Iterator[StoredFile]:
    cursor = None
    while True:
        page = store.list_files(limit=500, cursor=cursor)
        yield from page
        if not (cursor := page.next_cursor):
            return


def _blobs(store: Store) -> Any:
    files = getattr(store, "files", None)
    if files is None or not all(hasattr(files, m) for m in ("exists", "put", "open")):
        raise PersistenceError(f"{store.backend} store has no file store to copy bytes with")
    return files


def copy_store(source: Store, target: Store, *, progress: Callable[[str, int], object] | None = None) -> CopyResult:
    """Copy everything from ``source`` into ``target``: prices, threads and messages (ids,
    seq, costs unchanged), every upload and the bytes behind it, and provider file ids.

    Idempotent and resumable. Bytes are streamed and re-hashed on the way in: a stored
    object whose bytes do not hash to its recorded sha256 stops the copy.
    """
    result = CopyResult()
    target.add_prices(source.prices.prices)
    result.prices = len(source.prices)

    def counted(kind: str) -> Callable[[Iterator[dict[str, Any]]], Iterator[dict[str, Any]]]:
        def wrap(records: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            for r in records:
                if progress:
                    progress(kind, 1)
                yield r

        return wrap

    imported = target.import_records(counted("threads")(source.export_records()))
    result.conversations, result.conversations_skipped = imported.conversations, imported.conversations_skipped
    result.messages, result.messages_skipped = imported.messages, imported.messages_skipped

    dst_blobs = _blobs(target)
    rules = target.upload_rules
    # The source accepted these files already; the target's upload rules are for new uploads.
    target.upload_rules = UploadRules(
        max_bytes=None, allowed_types=("*/*",), uploads_per_minute=None, bytes_per_minute=None
    )
    try:
        _copy_uploads(source, target, dst_blobs, result, progress)
    finally:
        target.upload_rules = rules
    for pf in source.list_provider_files():
        target.record_provider_file(
            pf.file_id, pf.provider, pf.provider_file_id, purpose=pf.purpose, expires_at=pf.expires_at
        )
        result.provider_files += 1
    return result


def _copy_uploads(
    source: Store, target: Store, dst_blobs: Any, result: CopyResult, progress: Callable[[str, int], object] | None
) -> None:
    for f in _all_uploads(source):
        if not dst_blobs.exists(f.storage_path):
            owner = f.storage_path.split("/", 1)[0]
            with source.open_file(f.id) as stream:
                blob = dst_blobs.put(stream, None if owner == "shared" else owner)
            if blob.sha256 != f.file_hash or blob.storage_path != f.storage_path:
                raise PersistenceError(
                    f"the bytes of {f.storage_path} in {source.url} hash to {blob.sha256}, not {f.file_hash}: not copied further"
                )
            result.objects_copied += 1
            result.bytes_copied += blob.size
        if f.upload_id and target.get_file(f.upload_id) is None:
            # An upload no thread made (the export carries threads' uploads): its row, with the
            # bytes now in place.
            with source.open_file(f.id) as stream:
                target.put_file(
                    stream,
                    filename=f.filename,
                    mime_type=f.mime_type,
                    continuation_id=f.continuation_id,
                    session_id=f.session_id,
                    user_id=f.user_id,
                    tags=f.tags,
                    description=f.description,
                    metadata=f.metadata,
                    created_at=f.created_at,
                    upload_id=f.upload_id,
                )
            result.uploads += 1
        else:
            result.uploads_skipped += 1
        if progress:
            progress("uploads", 1)


def _message_digest(record: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record["messages"], sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def verify_stores(source: Store, target: Store, *, check_bytes: bool = True) -> list[str]:
    """Differences between two stores (empty when the target holds what the source does):
    counts, each thread's messages (hashed), each upload's file hash, and (``check_bytes``)
    that the target's bytes hash to what the rows say."""
    problems: list[str] = []
    for name, a, b in (
        ("threads", source.count_conversations(), target.count_conversations()),
        ("messages", int(source.usage(())["messages"].iloc[0]), int(target.usage(())["messages"].iloc[0])),
        ("uploads", int(source.storage_usage(())["uploads"].iloc[0]), int(target.storage_usage(())["uploads"].iloc[0])),
        (
            "stored files",
            int(source.storage_usage(())["files"].iloc[0]),
            int(target.storage_usage(())["files"].iloc[0]),
        ),
        ("provider files", len(source.list_provider_files()), len(target.list_provider_files())),
    ):
        if a != b:
            problems.append(f"{name}: {a:,} in the source, {b:,} in the target")
    for record in source.export_records():
        cid = record["conversation"]["continuation_id"]
        conv = target.get_conversation(cid)
        if conv is None:
            problems.append(f"thread {cid}: missing from the target")
            continue
        mine = conversation_record(conv)
        if _message_digest(mine) != _message_digest(record):
            problems.append(f"thread {cid}: its messages differ ({len(record['messages'])} vs {len(mine['messages'])})")
    dst_blobs = _blobs(target) if check_bytes else None
    checked: set[str] = set()
    for f in _all_uploads(source):
        other = target.get_file(f.upload_id or f.id)
        if other is None:
            problems.append(f"upload {f.upload_id} ({f.filename}): missing from the target")
            continue
        if other.file_hash != f.file_hash:
            problems.append(f"upload {f.upload_id} ({f.filename}): sha256 {other.file_hash} != {f.file_hash}")
        if dst_blobs is not None and f.storage_path not in checked:
            checked.add(f.storage_path)
            digest = hashlib.sha256()
            try:
                with dst_blobs.open(f.storage_path) as fh:
                    while chunk := fh.read(1 << 20):
                        digest.update(chunk)
            except PersistenceError as exc:
                problems.append(f"{f.storage_path}: {exc}")
                continue
            if digest.hexdigest() != f.file_hash:
                problems.append(f"{f.storage_path}: the target's bytes hash to {digest.hexdigest()}")
    return problems
