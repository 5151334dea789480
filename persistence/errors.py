"""Exceptions raised by the store.

Every error the store raises on purpose is a :class:`PersistenceError`, so a caller can catch
one type. Nothing is logged-and-swallowed: an operation either completes or raises.
"""

from __future__ import annotations

__all__ = [
    "ConflictError",
    "NotFoundError",
    "PersistenceError",
    "ReadOnlyStoreError",
    "SchemaVersionError",
    "StorageFullError",
    "StoreDamagedError",
    "StoreOpenError",
    "ValidationError",
]


class PersistenceError(Exception):
    """Base class of every error the store raises on purpose."""


class ValidationError(PersistenceError, ValueError):
    """Bad input. ``field`` names what was wrong (``"role"``, ``"usage.prompt_tokens"`` …).

    Raised before anything is written, so a refused call leaves the store as it was.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class NotFoundError(PersistenceError, LookupError):
    """A conversation, message or file that the call needs does not exist."""


class ConflictError(PersistenceError):
    """An id is already used by a different record (e.g. a message id in another thread)."""


class StoreOpenError(PersistenceError):
    """The store could not be opened: not a database, unreachable, bad URL …"""


class ReadOnlyStoreError(PersistenceError):
    """A write was attempted on a store opened read-only (or on a read-only file)."""


class ServerOnlyError(PersistenceError, PermissionError):
    """The operation is the server's only (the service role key), and the store was opened
    as a signed-in user: prune, reprice, redact, import, doctor, price edits and the
    migration history change or read every user's rows, so a user's token may not."""


class SchemaVersionError(StoreOpenError):
    """The database was migrated by a newer version of this package than the one running."""


class StorageFullError(PersistenceError):
    """The disk (or the database server's disk) ran out of space. ``path`` says where.

    The write that hit it was undone whole: no part of the message, upload or batch is kept,
    totals and rollups are as before, and no partial file is left. Free space and retry:
    the store accepts writes again as soon as there is room.
    """

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(
            f"the disk holding {path} is full ({detail}); nothing was written. Free space there and retry."
        )


class StoreDamagedError(PersistenceError):
    """The database file is damaged (SQLite reported a corrupt page, or an integrity check failed).

    Once seen, the store refuses every write (writing into a damaged file can spread the
    damage) and reads that reach the damage raise this error. ``recover_command`` copies what
    is readable into a new file.
    """

    def __init__(self, path: str, detail: str, recover_command: str) -> None:
        self.path = path
        self.detail = detail
        self.recover_command = recover_command
        super().__init__(
            f"{path} is damaged ({detail}); writes are refused until it is repaired. "
            f"Copy what is readable into a new file with `{recover_command}`, then put that file in its place."
        )
