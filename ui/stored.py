"""How a "Stored" figure reads when uploads stored no new bytes. Pure.

Files are stored once per content hash, so a period whose every upload repeated bytes already
stored adds 0 B: that is dedup working, not a failure, and the figure must say so instead of a
bare "0 B ↓ −100 %"."""

from __future__ import annotations

from persistence.formatting import size

__all__ = ["all_duplicates", "stored_value"]


def all_duplicates(*, files: int, uploads: int) -> str | None:
    """The note for a period with uploads but no new stored file, else None."""
    if uploads <= 0 or files > 0:
        return None
    if uploads == 1:
        return "the 1 upload was a duplicate of a stored file"
    return f"all {uploads:,} uploads were duplicates of stored files"


def stored_value(stored_bytes: int, *, files: int, uploads: int) -> str:
    """The figure itself: "0 B new" when dedup kept every upload out of storage."""
    text = size(stored_bytes)
    return f"{text} new" if all_duplicates(files=files, uploads=uploads) else text
