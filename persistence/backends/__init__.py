"""The backends: ``sqlite`` (the embedded store) and ``postgres`` (the SQL API in
``persistence/sql``, called through psycopg or the Supabase client). :func:`persistence.open_store`
picks one by URL; each implements the primitives of :class:`persistence.store.Store`."""
