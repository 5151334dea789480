-- Forget content, keep the numbers (issue 17; migration 20261130150000_persistence_redact).
--
-- 1. redact is the server's: anon and authenticated may not execute it (a signed-in user
--    cannot reach B's threads through it, nor its own: redaction goes through the server).
-- 2. As the server: A's thread and uploads are erased, B's are not; the daily rollup and the
--    thread totals are unchanged; search finds nothing of the erased text; the stored object
--    no unredacted upload refers to is claimed for the byte sweep, the shared one is not.
-- 3. Bad selectors are refused with PT400; a dry run changes nothing.
-- Runs in one transaction that is rolled back: pg_prove -d <db> supabase/tests/40_redact.sql

begin;
create extension if not exists pgtap;
select plan(21);

insert into public.model_prices (id, provider, model, match, effective_from, input, cached_input, output)
values ('tap/tap-redact@2020-01-01', 'tap', 'tap-redact', '^tap-redact$', '2020-01-01', 1, 0.5, 2);

-- A's thread (with a file of its own and one shared with A's other thread), and B's thread.
select public.start_conversation('red-a', 'a0000000-0000-4000-8000-00000000a0c1'::uuid,
    p_user_id => 'aaaaaaaa-0000-4000-8000-00000000000a', p_title => 'xylophonist secrets');
select public.record_message('red-a', 'a0000000-0000-4000-8000-00000000a0e1'::uuid, 'user',
    'the xylophonist password', '2026-01-01 10:00+00', 'tap-redact', p_input_tokens => 100, p_output_tokens => 10,
    p_metadata => '{"note": "xylophonist"}');
select public.record_message('red-a', 'a0000000-0000-4000-8000-00000000a0e2'::uuid, 'assistant',
    'an xylophonist answer', '2026-01-02 10:00+00', 'tap-redact', p_input_tokens => 50, p_output_tokens => 5,
    p_metadata => '{"usage_raw": {"odd": 1}}');
select public.start_conversation('red-a2', 'a0000000-0000-4000-8000-00000000a0c2'::uuid,
    p_user_id => 'aaaaaaaa-0000-4000-8000-00000000000a');
select public.put_file_metadata('a0000000-0000-4000-8000-00000000a0f1'::uuid,
    'a0000000-0000-4000-8000-00000000a0d1'::uuid, repeat('1', 64), 3,
    'aaaaaaaa-0000-4000-8000-00000000000a/11/' || repeat('1', 64), 'mcp-files', 'text/plain', 'xylophonist.txt',
    'red-a', p_user_id => 'aaaaaaaa-0000-4000-8000-00000000000a', p_description => 'xylophonist notes');
select public.put_file_metadata('a0000000-0000-4000-8000-00000000a0f2'::uuid,
    'a0000000-0000-4000-8000-00000000a0d2'::uuid, repeat('2', 64), 3,
    'aaaaaaaa-0000-4000-8000-00000000000a/22/' || repeat('2', 64), 'mcp-files', 'text/plain', 'xylophonist2.txt',
    'red-a', p_user_id => 'aaaaaaaa-0000-4000-8000-00000000000a');
select public.put_file_metadata('a0000000-0000-4000-8000-00000000a0f2'::uuid,
    'a0000000-0000-4000-8000-00000000a0d3'::uuid, repeat('2', 64), 3,
    'aaaaaaaa-0000-4000-8000-00000000000a/22/' || repeat('2', 64), 'mcp-files', 'text/plain', 'shared.txt',
    'red-a2', p_user_id => 'aaaaaaaa-0000-4000-8000-00000000000a');
select public.start_conversation('red-b', 'b0000000-0000-4000-8000-00000000b0c1'::uuid,
    p_user_id => 'bbbbbbbb-0000-4000-8000-00000000000b');
select public.record_message('red-b', 'b0000000-0000-4000-8000-00000000b0e1'::uuid, 'user',
    'B''s xylophonist stays', '2026-01-01 11:00+00', 'tap-redact', p_input_tokens => 7);

create temporary table rollup_before on commit drop as select * from public.usage_daily;
create temporary table totals_before on commit drop as
select id, message_count, total_tokens, input_tokens, output_tokens, total_cost, unpriced_messages
from public.conversations;

-- ---------------------------------------------------------------------------------------
-- 1. The server's only

select ok(not has_function_privilege('anon', 'public.redact(text[], uuid, timestamptz, boolean)', 'execute'),
    'anon may not execute redact');
select ok(not has_function_privilege('authenticated', 'public.redact(text[], uuid, timestamptz, boolean)', 'execute'),
    'authenticated may not execute redact');
select ok(has_function_privilege('service_role', 'public.redact(text[], uuid, timestamptz, boolean)', 'execute'),
    'the service role may');
set local role authenticated;
set local request.jwt.claims = '{"sub": "aaaaaaaa-0000-4000-8000-00000000000a", "role": "authenticated"}';
select throws_ok($$select public.redact(array['red-b'])$$, '42501', null,
    'a signed-in user calling redact on B''s thread is refused');
reset role;

-- ---------------------------------------------------------------------------------------
-- 3 (first). Bad selectors; a dry run

select throws_ok($$select public.redact()$$, 'PT400', null, 'no selector: refused');
select throws_ok($$select public.redact(array['red-a'], 'aaaaaaaa-0000-4000-8000-00000000000a')$$, 'PT400', null,
    'two selectors: refused');
select is(public.redact(array['red-a'], p_dry_run => true) - 'sweep_id',
    '{"conversations": 1, "messages": 2, "uploads": 2, "files": 1, "bytes": 3, "deleted": []}'::jsonb,
    'a dry run counts: one thread, two messages, two uploads, one object whose bytes would go');
select is((select count(*) from public.messages where content like '%xylophonist%')::integer, 3,
    '... and changes nothing');

-- ---------------------------------------------------------------------------------------
-- 2. As the server

set local role service_role;
select is(public.redact(array['red-a']) - 'sweep_id' - 'deleted',
    '{"conversations": 1, "messages": 2, "uploads": 2, "files": 1, "bytes": 3}'::jsonb,
    'redact of A''s thread counts what it erased');
reset role;

select is((select count(*) from public.messages m join public.conversations c on c.id = m.conversation_id
           where c.continuation_id = 'red-a' and m.content = '' and m.search_extra is null
               and m.redacted_at is not null and m.files = '{}')::integer, 2,
    'A''s messages: content and search text erased, marked redacted');
select is((select metadata from public.messages where id = 'a0000000-0000-4000-8000-00000000a0e2'),
    '{"usage_raw": {"odd": 1}}'::jsonb, 'the unreadable usage report stays (it makes the message unpriced)');
select is((select title from public.conversations where continuation_id = 'red-a'), null,
    'the thread''s title is erased');
select ok((select redacted_at is not null from public.conversations where continuation_id = 'red-a'),
    'the thread is marked redacted');
select is((select count(*) from public.messages where content like '%xylophonist%')::integer, 1,
    'only B''s message keeps the word');
select is((select count(*) from public.messages
           where search_tsv @@ to_tsquery('public.persistence_english', 'xylophonist'))::integer, 1,
    'the search index finds only B''s message');
select is((select count(*) from public.file_uploads u
           where u.filename = 'redacted' and u.description is null and u.redacted_at is not null)::integer, 2,
    'A''s thread''s two uploads are erased');
select is((select filename from public.file_uploads where id = 'a0000000-0000-4000-8000-00000000a0d3'),
    'shared.txt', 'the other thread''s upload of the shared bytes keeps its name');
select is(array(select storage_path from public.blob_sweeps order by 1),
    array['aaaaaaaa-0000-4000-8000-00000000000a/11/' || repeat('1', 64)],
    'only the object no unredacted upload refers to is claimed for the byte sweep');
select ok(public.file_paths()::text not like '%/11/%', 'doctor no longer expects the emptied object''s bytes');

select set_eq($$select * from public.usage_daily$$, $$select * from rollup_before$$,
    'the daily rollup is unchanged');
select set_eq(
    $$select id, message_count, total_tokens, input_tokens, output_tokens, total_cost, unpriced_messages
      from public.conversations$$,
    $$select * from totals_before$$,
    'every thread''s totals are unchanged');

select * from finish();
rollback;
