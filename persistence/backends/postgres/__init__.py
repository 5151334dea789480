"""The Postgres backend: every operation is one call of a SQL function of the migrations in
``persistence/sql/migrations``.

``store`` (:class:`FunctionStore`, what both transports share: arguments in, jsonb documents
parsed), ``psycopg_store`` (``postgresql://``: ``SELECT fn(...)`` through a psycopg pool),
``supabase_store`` (``supabase``: ``client.rpc(fn, ...)`` and a Storage bucket) and ``schema``
(the runner that applies the migrations, as the Supabase CLI does).
"""

# Where SQLite and Postgres each have their own code (the plpgsql functions and their Python
# twins in persistence.backends.sqlite), the conformance suite is the spec: every test taking
# conftest.py's ``store`` fixture (run on each of conftest.BACKENDS) and
# tests/test_postgres_conformance.py. Both backends pass the same scenarios; a difference is a
# bug in one of them.
# The rules they share are written once per language: the unpriced flag (public.message_unpriced,
# stored as messages.unpriced; persistence.pricing.is_unpriced), the thread filters
# (public.conversations_where over one p_filters jsonb; the SQLite store's _CONVERSATION_FILTERS)
# and per-row pricing (public.price_message; persistence.pricing.price_message).
