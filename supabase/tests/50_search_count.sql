-- How many messages a search matches (issue 14; migration 20261130190000_persistence_search_count).
--
-- 1. count_search_messages is for signed-in users and the server, not anon; security invoker
--    (row level security applies) with the search's own 2 s statement_timeout.
-- 2. As the server: it counts every match, exactly as many as search_messages returns.
-- 3. As user A: A's own matches only, with each filter; B's thread counts 0.
-- 4. Over-limit arguments are refused with PT400 naming the limit; nothing to search for is 0.
-- Runs in one transaction that is rolled back: pg_prove -d <db> supabase/tests/50_search_count.sql

begin;
create extension if not exists pgtap;
select plan(22);

-- A: 4 messages, 3 of them with "xylograph" (2 by the user on 1 and 2 March, 1 by the
-- assistant with model tap-count-a on 3 March); B: 2 with it.
select public.start_conversation('count-a', 'a0000000-0000-4000-8000-00000000c0c1'::uuid,
    p_user_id => 'aaaaaaaa-0000-4000-8000-00000000000a');
select public.record_message('count-a', ('a0000000-0000-4000-8000-00000000c0e' || n)::uuid, role, content,
        ('2026-03-0' || n || ' 10:00+00')::timestamptz, model)
    from (values (1, 'user', 'a xylograph of the harbour', null),
                 (2, 'user', 'xylographs printed in black', null),
                 (3, 'assistant', 'the xylograph is older than the press', 'tap-count-a'),
                 (4, 'assistant', 'something else entirely', 'tap-count-a')) as t (n, role, content, model);
select public.start_conversation('count-b', 'b0000000-0000-4000-8000-00000000c0c1'::uuid,
    p_user_id => 'bbbbbbbb-0000-4000-8000-00000000000b');
select public.record_message('count-b', ('b0000000-0000-4000-8000-00000000c0e' || n)::uuid, 'user',
        'B''s xylograph ' || n, ('2026-03-0' || n || ' 11:00+00')::timestamptz)
    from generate_series(1, 2) as n;

-- ---------------------------------------------------------------------------------------
-- 1. Who may call it, and its bounds

select ok(not has_function_privilege('anon', 'public.count_search_messages(text, text, timestamptz, timestamptz, text, text, text)', 'execute'),
    'anon may not execute count_search_messages');
select ok(has_function_privilege('authenticated', 'public.count_search_messages(text, text, timestamptz, timestamptz, text, text, text)', 'execute'),
    'authenticated may');
select ok(has_function_privilege('service_role', 'public.count_search_messages(text, text, timestamptz, timestamptz, text, text, text)', 'execute'),
    'the service role may');
select ok(not (select prosecdef from pg_catalog.pg_proc where oid = 'public.count_search_messages'::regproc),
    'security invoker: row level security applies to the caller');
select is((select c from pg_catalog.pg_proc p, unnest(p.proconfig) as c
           where p.oid = 'public.count_search_messages'::regproc and c like 'statement_timeout=%'),
    'statement_timeout=2s', 'the search''s own 2 s statement_timeout');

-- ---------------------------------------------------------------------------------------
-- 2. As the server

set local role service_role;
set local request.jwt.claims = '{"role": "service_role"}';
select is(public.count_search_messages(p_tsquery => '''xylograph'''), 5::bigint, 'the server counts every match');
select is(public.count_search_messages(p_tsquery => '''xylograph'''),
    jsonb_array_length(public.search_messages(p_tsquery => '''xylograph''', p_limit => 500))::bigint,
    'as many as search_messages returns');
select is(public.count_search_messages(p_query => 'xylograph -harbour'),
    jsonb_array_length(public.search_messages(p_query => 'xylograph -harbour', p_limit => 500))::bigint,
    'websearch syntax too (an exclusion)');

-- ---------------------------------------------------------------------------------------
-- 3. As user A

set local role authenticated;
set local request.jwt.claims = '{"sub": "aaaaaaaa-0000-4000-8000-00000000000a", "role": "authenticated"}';
select is(public.count_search_messages(p_tsquery => '''xylograph'''), 3::bigint, 'A counts A''s own matches only');
select is(public.count_search_messages(p_tsquery => '''xylograph''', p_continuation_id => 'count-b'), 0::bigint,
    'B''s thread counts nothing for A');
select is(public.count_search_messages(p_tsquery => '''xylograph''', p_continuation_id => 'count-a'), 3::bigint,
    'A''s own thread');
select is(public.count_search_messages(p_tsquery => '''xylograph''', p_role => 'user'), 2::bigint, 'by role');
select is(public.count_search_messages(p_tsquery => '''xylograph''', p_model => 'tap-count-a'), 1::bigint, 'by model');
select is(public.count_search_messages(p_tsquery => '''xylograph''', p_since => '2026-03-02 10:00+00'), 2::bigint,
    'since is inclusive');
select is(public.count_search_messages(p_tsquery => '''xylograph''', p_until => '2026-03-02 10:00+00'), 1::bigint,
    'until is exclusive');
select is(public.count_search_messages(p_tsquery => '''xylograph''', p_since => '2026-03-01 12:00+00',
        p_until => '2026-03-03 09:00+00'), 1::bigint, 'a period inside days (the day bound does not widen it)');
select is(public.count_search_messages(p_tsquery => '''xylograph''', p_model => 'tap-count-a',
        p_since => '2026-03-01', p_until => '2026-03-31'), 1::bigint, 'filters together');
select is(public.count_search_messages(p_tsquery => '''xylograph'''),
    jsonb_array_length(public.search_messages(p_tsquery => '''xylograph''', p_limit => 500))::bigint,
    'as many as A''s search returns');

-- ---------------------------------------------------------------------------------------
-- 4. Bounds and empty queries

select throws_ok($$select public.count_search_messages(p_query => repeat('pool ', 201))$$,
    'PT400', 'p_query is 1005 characters; the limit is 1000', 'p_query over 1,000 characters is refused');
select throws_ok($$select public.count_search_messages(
        p_tsquery => (select string_agg('''w' || i || '''', ' | ') from generate_series(1, 801) as i))$$,
    'PT400', null, 'p_tsquery over 4,000 characters is refused');
select throws_ok($$select public.count_search_messages(
        p_tsquery => (select string_agg('''w' || i || '''', ' | ') from generate_series(1, 101) as i))$$,
    'PT400', 'the query has 201 words and operators; the limit is 200',
    'over 200 words and operators is refused');
select is(public.count_search_messages(p_query => '!!!'), 0::bigint, 'only punctuation: nothing to count');

select * from finish();
rollback;
