"""The embedded backend: one SQLite file (WAL, FTS5) and a local content-addressed folder.

``store`` (:class:`SQLiteStore`), ``schema`` (its migrations) and ``recover`` (copying what is
readable out of a damaged file).
"""

# Where SQLite and Postgres each have their own code (queries, search, pricing in bulk, prune),
# the conformance suite is the spec: every test taking conftest.py's ``store`` fixture (run on
# each of conftest.BACKENDS) and tests/test_postgres_conformance.py. Both backends pass the same
# scenarios; a difference is a bug in one of them.
# The rules they share are written once per language: the unpriced flag (persistence.pricing.
# is_unpriced; public.message_unpriced) and the thread filters (store._CONVERSATION_FILTERS;
# public.conversations_where), and per-row pricing is persistence.pricing.price_message here.
