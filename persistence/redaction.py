"""Forget content, keep the numbers: what ``Store.redact`` erases and what it keeps.

Erased, in every backend alike:

- messages: ``content`` (to ``""``), the search text (``search_extra``: the full-text index
  then holds nothing of them), ``files`` and ``images`` (names the server passed), and
  ``metadata`` except the unreadable usage report kept under ``usage_raw`` (numbers; it is
  what makes such a message count as unpriced, so dropping it would change the reports);
- threads: ``title``, ``summary``, ``metadata``, ``initial_context``;
- uploads and stored objects: ``filename`` (to :data:`REDACTED_FILENAME`), ``description``,
  ``metadata``, ``tags``; and the bytes of every stored object that no unredacted upload
  refers to any more (deleted from the folder or the Storage bucket, under the same lock and
  claims prune uses, so an upload of the same bytes racing the redaction keeps them).

Kept: ids, ``seq``, roles, models, providers, tools, the five token buckets, costs and price
ids, durations, timestamps, owners, sessions, a thread's tags and status, and the size, type and
sha256 of stored files (the storage path is made of the hash). So the thread totals, the
daily rollup, ``usage()``, ``storage_usage()`` and the reports add up exactly as before.

Threads, messages and uploads get ``redacted_at`` (:class:`~persistence.models.Conversation`
and :class:`~persistence.models.Message` carry it, and the app marks such a thread). A stored
object has no bytes while it has uploads and all of them are redacted; an upload of the same
bytes later stores them again. A message written to a redacted thread afterwards is not
redacted (redact the thread again).

Where erased bytes could linger: SQLite runs the erasure with ``secure_delete`` on, merges the
full-text index (dropping the deleted entries), then ``VACUUM``s and truncates the WAL, so no
byte of the text is left in the database file or its WAL (tests/test_redact.py checks this).
Postgres overwrites the rows in one transaction; the old row versions stay on disk until
``VACUUM`` (autovacuum, or ``VACUUM messages, conversations, file_uploads, files``) reclaims them.
"""

from __future__ import annotations

__all__ = ["REDACTED_FILENAME"]

REDACTED_FILENAME = "redacted"
"""The file name a redacted upload and stored object keep (a name is required)."""
