-- A signed-in user's export says which of their uploads were redacted, as the server's does.
--
-- upload_redactions (20261130200000_persistence_import_fixes) was the service role's only, so a
-- signed-in user's export carried redacted_at on their threads and messages but not on their
-- uploads, and an import of it elsewhere showed those uploads as never redacted. The function
-- runs as the caller (security invoker): row level security on conversations and file_uploads
-- gives a signed-in user their own rows only, so the threads of others named in the argument
-- answer nothing (supabase/tests/10_rls_matrix.sql calls it with another user's thread). Its
-- 5 s statement_timeout stays.

grant execute on function public.upload_redactions(text[]) to authenticated;
comment on function public.upload_redactions is
    'The redacted uploads of the named threads, {continuation_id: {upload id: redacted_at}} (export); '
    'a signed-in caller gets their own only (row level security).';
