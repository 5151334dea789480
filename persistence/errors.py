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


class SchemaVersionError(StoreOpenError):
    """The database was migrated by a newer version of this package than the one running."""
