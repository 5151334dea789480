-- No warnings from `supabase db lint` (issue 15): plpgsql_check, which the Supabase CLI runs
-- over every PL/pgSQL function, found these in the functions as the migrations before this one
-- left them (tests/test_supabase_cli.py now fails on any warning):
--
-- * record_messages (20261126000002_persistence_api) and prune (20261130100000_persistence_
--   rules_once, and 20261130060000_persistence_blob_sweeps before it): "target type is
--   different type than source type" (detail: cast "text" value to "jsonb" type; hint: the
--   input expression type does not have an assignment cast to the target type), for a local
--   variable declared `jsonb := '[]'`. It worked (the literal is converted when the function
--   runs), but the same warning is how plpgsql_check reports a value of the wrong type assigned
--   by mistake, and a tolerated one hides the next: the literal is now typed, '[]'::jsonb.
-- * record_message (20261130100000_persistence_rules_once, 20261130070000_persistence_ownership
--   before it): "unused parameter p_unpriced". The parameter stays, since callers name it (the
--   package's record_messages items, clients of earlier releases through PostgREST), but the
--   database decides the flag (messages.unpriced, public.message_unpriced): it is now read
--   where it is ignored, with the reason.
--
-- Each function is changed in place: its definition as the earlier migrations left it
-- (pg_get_functiondef: header, settings such as search_path and statement_timeout, body) with
-- one fragment of its body replaced, so nothing else about it changes and create or replace
-- keeps its grants and comment. A fragment that is not found exactly once stops the migration.

create function pg_temp.lint_patch(p_function regprocedure, p_old text, p_new text)
returns void
language plpgsql
as $$
declare
    v_def text := pg_catalog.pg_get_functiondef(p_function);
    v_found integer;
begin
    v_found := (pg_catalog.length(v_def) - pg_catalog.length(pg_catalog.replace(v_def, p_old, '')))
        / pg_catalog.length(p_old);
    if v_found <> 1 then
        raise exception '% has % copies of the fragment to replace, not 1: %', p_function, v_found, p_old;
    end if;
    execute pg_catalog.replace(v_def, p_old, p_new);
end;
$$;

select pg_temp.lint_patch('public.record_messages(jsonb)', $old$
    v_out jsonb := '[]';
$old$, $new$
    v_out jsonb := '[]'::jsonb;
$new$);

select pg_temp.lint_patch('public.prune(timestamptz, boolean)', $old$
    v_claimed jsonb := '[]';
$old$, $new$
    v_claimed jsonb := '[]'::jsonb;
$new$);

select pg_temp.lint_patch(
    'public.record_message(text, uuid, text, text, timestamptz, text, text, text, bigint, bigint, bigint, bigint, '
    'bigint, numeric, text, boolean, bigint, text[], text[], jsonb, text, text)', $old$
begin
    if not v_server and v_uid is null then
$old$, $new$
begin
    -- p_unpriced is accepted for the callers that send it and ignored: the database decides
    -- whether a message is unpriced (messages.unpriced, public.message_unpriced).
    perform p_unpriced;
    if not v_server and v_uid is null then
$new$);

drop function pg_temp.lint_patch(regprocedure, text, text);
