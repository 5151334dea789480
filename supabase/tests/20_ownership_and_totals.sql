-- Ownership follows references; totals only the store writes (issue 11, findings 1, 2, 3, 5).
--
-- Users A and B sign in as PostgREST makes them (role authenticated, sub in
-- request.jwt.claims) and try what the issue found working: writing into B's thread,
-- reaching B's file through a row of their own, forging tokens, costs and totals. Then, as
-- the server, the invariant: every thread's totals and every user's daily rollup are the sums
-- over their messages, and a signed-in user's messages are priced by model_prices.
-- Runs in one transaction that is rolled back: pg_prove -d <db> supabase/tests/20_ownership_and_totals.sql

begin;
create extension if not exists pgtap;
select plan(50);

-- A price of our own, so the expected costs do not depend on the package's table.
insert into public.model_prices (id, provider, model, match, effective_from, input, cached_input, output,
    tier_above_tokens, tier_input, tier_output)
values ('tap/tap-model@2020-01-01', 'tap', 'tap-model', '^(tap/)?tap-model$', '2020-01-01', 1, 0.5, 2,
    1000, 3, 4);

-- B's thread, message and file, written by B.
set local role authenticated;
set local request.jwt.claims = '{"sub": "bbbbbbbb-0000-4000-8000-00000000000b", "role": "authenticated"}';
select public.start_conversation('tap-b', 'b0000000-0000-4000-8000-0000000000b1'::uuid);
select public.record_message('tap-b', 'b0000000-0000-4000-8000-0000000000b2'::uuid, 'user', 'B''s secret',
    '2026-01-01 10:00+00', 'tap-model', p_input_tokens => 100, p_output_tokens => 10);
select public.put_file_metadata('b0000000-0000-4000-8000-0000000000f1'::uuid,
    'b0000000-0000-4000-8000-0000000000f2'::uuid, repeat('b', 64), 3,
    'bbbbbbbb-0000-4000-8000-00000000000b/bb/' || repeat('b', 64), 'mcp-files', 'text/plain', 'b.txt', 'tap-b');

-- A's thread and file.
set local request.jwt.claims = '{"sub": "aaaaaaaa-0000-4000-8000-00000000000a", "role": "authenticated"}';
select public.start_conversation('tap-a', 'a0000000-0000-4000-8000-0000000000a1'::uuid);
select public.put_file_metadata('a0000000-0000-4000-8000-0000000000f1'::uuid,
    'a0000000-0000-4000-8000-0000000000f2'::uuid, repeat('a', 64), 3,
    'aaaaaaaa-0000-4000-8000-00000000000a/aa/' || repeat('a', 64), 'mcp-files', 'text/plain', 'a.txt', 'tap-a');

-- ---------------------------------------------------------------------------------------
-- 1. Writing into another user's thread

select throws_ok($$select public.record_message('tap-b', 'a0000000-0000-4000-8000-0000000000a9'::uuid, 'user', 'x')$$,
    'PT409', null, 'record_message into B''s thread is refused');
select throws_ok($$insert into public.messages (id, conversation_id, seq, role, content, user_id, created_at)
    values ('a0000000-0000-4000-8000-0000000000a8', 'b0000000-0000-4000-8000-0000000000b1', 2, 'user', 'x',
            'aaaaaaaa-0000-4000-8000-00000000000a', now())$$,
    '42501', null, 'A cannot insert a message at all, let alone into B''s thread');
select throws_ok($$insert into public.messages (id, conversation_id, seq, role, content, user_id, created_at)
    values ('a0000000-0000-4000-8000-0000000000a8', 'a0000000-0000-4000-8000-0000000000a1', 2, 'user', 'x',
            'aaaaaaaa-0000-4000-8000-00000000000a', now())$$,
    '42501', null, 'A cannot insert a message into its own thread directly either (seq, cost are the store''s)');
select throws_ok($$select public.lock_conversation('tap-b', now())$$, 'PT409', null,
    'lock_conversation on B''s thread: taken, nothing more');
select throws_ok($$select public.get_messages('tap-b')$$, 'PT404', null, 'get_messages: B''s thread is not found');
select throws_ok($$select public.get_messages('tap-none')$$, 'PT404', null, '... like one that does not exist');
select throws_ok($$select public.update_conversation('tap-b', '{"title": "x"}')$$, 'PT404', null,
    'update_conversation: B''s thread is not found');
select throws_ok($$select public.update_conversation('tap-none', '{"title": "x"}')$$, 'PT404', null,
    '... like one that does not exist');
select throws_ok($$select public.record_message('tap-a', 'b0000000-0000-4000-8000-0000000000b2'::uuid, 'user', 'x')$$,
    'PT409', 'message_id b0000000-0000-4000-8000-0000000000b2 already belongs to another conversation',
    'reusing B''s message id names neither B''s thread nor its content');

-- ---------------------------------------------------------------------------------------
-- 2. Reaching another user's file through a row of one's own

select throws_ok($$insert into public.file_uploads (id, file_id, filename, mime_type, file_size, user_id, created_at)
    values ('a0000000-0000-4000-8000-0000000000f9', 'b0000000-0000-4000-8000-0000000000f1', 'mine.txt',
            'text/plain', 3, 'aaaaaaaa-0000-4000-8000-00000000000a', now())$$,
    '23503', null, 'an upload of A cannot point at B''s stored file');
select throws_ok($$insert into public.conversation_files (conversation_id, file_id, user_id, created_at)
    values ('a0000000-0000-4000-8000-0000000000a1', 'b0000000-0000-4000-8000-0000000000f1',
            'aaaaaaaa-0000-4000-8000-00000000000a', now())$$,
    '23503', null, 'A''s thread cannot link B''s file');
select throws_ok($$insert into public.provider_files (id, file_id, provider, provider_file_id, user_id, created_at)
    values ('a0000000-0000-4000-8000-0000000000f8', 'b0000000-0000-4000-8000-0000000000f1', 'kimi', 'x',
            'aaaaaaaa-0000-4000-8000-00000000000a', now())$$,
    '23503', null, 'A cannot record a provider upload of B''s file');
select throws_ok($$select public.link_file('tap-a', 'b0000000-0000-4000-8000-0000000000f1'::uuid)$$,
    'PT404', null, 'link_file with B''s file id: not found');
select throws_ok($$update public.files set storage_path = 'bbbbbbbb-0000-4000-8000-00000000000b/bb/' || repeat('b', 64)
    where id = 'a0000000-0000-4000-8000-0000000000f1'$$,
    '42501', null, 'A cannot repoint its stored object at B''s bytes');
select lives_ok($$update public.files set filename = 'renamed.txt' where id = 'a0000000-0000-4000-8000-0000000000f1'$$,
    'A may still rename its stored object');

-- ---------------------------------------------------------------------------------------
-- 3. Forging usage and cost

select throws_ok($$select public.record_message('tap-a', 'a0000000-0000-4000-8000-0000000000b1'::uuid, 'user', 'x',
    p_input_tokens => -1000000000)$$, 'PT400', null, 'negative tokens are refused');
select throws_ok($$select public.record_message('tap-a', 'a0000000-0000-4000-8000-0000000000b1'::uuid, 'user', 'x',
    p_output_tokens => 10000000001)$$, 'PT400', null, 'more than 10^10 tokens in a bucket are refused');
select throws_ok($$select public.record_message('tap-a', 'a0000000-0000-4000-8000-0000000000b1'::uuid, 'owner', 'x')$$,
    'PT400', null, 'an unknown role is refused');
select throws_ok($$select public.record_message('tap-a', 'a0000000-0000-4000-8000-0000000000b1'::uuid, 'user', 'x',
    p_duration_ms => 2592000001)$$, 'PT400', null, 'a duration over 30 days is refused');
select throws_ok($$select public.record_message(repeat('x', 201), 'a0000000-0000-4000-8000-0000000000b1'::uuid,
    'user', 'x')$$, 'PT400', null, 'a thread id over 200 characters is refused');
select throws_ok($$select public.record_message('tap-a', 'a0000000-0000-4000-8000-0000000000b1'::uuid, 'user', 'x',
    p_created_at => '2300-01-01')$$, 'PT400', null, 'a time after 2200 is refused');

select is((public.record_message('tap-a', 'a0000000-0000-4000-8000-0000000000b1'::uuid, 'assistant', 'a1',
        '2026-01-01 11:00+00', 'tap-model', p_input_tokens => 100, p_output_tokens => 10, p_cost => -99999,
        p_price_id => 'forged', p_unpriced => true) ->> 'cost')::numeric,
    0.00012, 'p_cost is ignored for a signed-in user: the table''s price (100 x $1 + 10 x $2 per 1M)');
select is(price_id, 'tap/tap-model@2020-01-01', '... and so is p_price_id')
from public.messages where id = 'a0000000-0000-4000-8000-0000000000b1';
select is((public.record_message('tap-a', 'a0000000-0000-4000-8000-0000000000b2'::uuid, 'assistant', 'a2',
        '2026-01-01 12:00+00', 'tap/TAP-model', p_input_tokens => 1000, p_cached_input_tokens => 100,
        p_output_tokens => 10, p_reasoning_tokens => 5, p_cost => 9999) ->> 'cost')::numeric,
    0.00311, 'over the tier: the whole request at the tier rates; cache reads at their own rate, reasoning as output');
select is((public.record_message('tap-a', 'a0000000-0000-4000-8000-0000000000b3'::uuid, 'assistant', 'a3',
        '2026-01-01 13:00+00', 'unknown-model', p_input_tokens => 5, p_cost => 1) -> 'cost'),
    'null'::jsonb, 'a model without a price: unpriced (null), whatever p_cost says');
select is((public.record_message('tap-a', 'a0000000-0000-4000-8000-0000000000b4'::uuid, 'assistant', 'a4',
        '2019-12-31 23:00+00', 'tap-model', p_input_tokens => 5, p_cost => 1) -> 'cost'),
    'null'::jsonb, 'before the first price: unpriced');
select is((public.record_message('tap-a', 'a0000000-0000-4000-8000-0000000000b5'::uuid, 'tool', 'a5',
        '2026-01-02 09:00+00', 'tap-model', p_input_tokens => 7, p_cost => 1,
        p_metadata => '{"usage_raw": {"odd": 1}}') -> 'cost'),
    'null'::jsonb, 'usage the package could not read: unpriced');
select lives_ok($$select public.record_messages('[{"continuation_id": "tap-a", "id": "a0000000-0000-4000-8000-0000000000b6",
    "role": "user", "content": "batch", "created_at": "2026-01-02T10:00:00Z", "model": "tap-model", "input_tokens": 10,
    "cached_input_tokens": 0, "cache_write_tokens": 0, "output_tokens": 0, "reasoning_tokens": 0, "cost": 500,
    "unpriced": false, "files": [], "images": [], "metadata": {}}]')$$, 'record_messages prices each item too');

select throws_ok($$update public.usage_daily set cost_usd = -999999999 where user_id = 'aaaaaaaa-0000-4000-8000-00000000000a'$$,
    '42501', null, 'A cannot change its rollup');
select throws_ok($$insert into public.usage_daily (day, user_id, cost_usd) values ('2026-01-05', 'aaaaaaaa-0000-4000-8000-00000000000a', -5)$$,
    '42501', null, 'A cannot add rollup rows');
select throws_ok($$delete from public.usage_daily$$, '42501', null, 'A cannot delete rollup rows');
select throws_ok($$update public.conversations set total_cost = -999999999 where continuation_id = 'tap-a'$$,
    '42501', null, 'A cannot change its thread''s totals');
select throws_ok($$update public.conversations set message_count = 0 where continuation_id = 'tap-a'$$,
    '42501', null, 'A cannot change its thread''s message count');
select throws_ok($$delete from public.conversations where continuation_id = 'tap-a'$$,
    '42501', null, 'A cannot delete a thread (the rollup would keep counting it)');
select throws_ok($$update public.messages set cost = 0, price_id = null where conversation_id = 'a0000000-0000-4000-8000-0000000000a1'$$,
    '42501', null, 'A cannot change a message''s cost or price');
select throws_ok($$update public.messages set seq = 99 where conversation_id = 'a0000000-0000-4000-8000-0000000000a1'$$,
    '42501', null, 'A cannot change a message''s seq');
select lives_ok($$update public.messages set content = 'corrected' where id = 'a0000000-0000-4000-8000-0000000000b1'$$,
    'A may still correct a message''s text');
select lives_ok($$select public.update_conversation('tap-a', '{"title": "mine", "total_cost": -5, "message_count": 0}')$$,
    'update_conversation changes only the fields it names');

-- ---------------------------------------------------------------------------------------
-- The server: trusted with the cost it computed, within the package's bounds; the keys hold
-- for it too.

reset role;
set local role service_role;
set local request.jwt.claims = '{"role": "service_role"}';
select throws_ok($$select public.record_message('tap-s', 'c0000000-0000-4000-8000-000000000009'::uuid, 'user', 'x',
    p_cost => -1)$$, 'PT400', null, 'the service role cannot store a negative cost either');
select is((public.record_message('tap-s', 'c0000000-0000-4000-8000-000000000001'::uuid, 'assistant', 's1',
        '2026-01-03 10:00+00', 'tap-model', p_input_tokens => 10, p_cost => 0.5, p_price_id => 'its-own') ->> 'cost')::numeric,
    0.5, 'the service role''s own cost is kept');
select throws_ok($$insert into public.messages (id, conversation_id, seq, role, content, user_id, created_at)
    values ('c0000000-0000-4000-8000-000000000002', 'b0000000-0000-4000-8000-0000000000b1', 9, 'user', 'x', null, now())$$,
    '23503', null, 'not even the service role can put its own (ownerless) message into B''s thread');
select throws_ok($$insert into public.conversation_files (conversation_id, file_id, user_id, created_at)
    values ('b0000000-0000-4000-8000-0000000000b1', 'a0000000-0000-4000-8000-0000000000f1',
            'bbbbbbbb-0000-4000-8000-00000000000b', now())$$,
    '23503', null, 'nor link A''s file to B''s thread');
select lives_ok($$select public.put_file_metadata('c0000000-0000-4000-8000-0000000000f1'::uuid,
    'c0000000-0000-4000-8000-0000000000f2'::uuid, repeat('c', 64), 3, 'shared/cc/' || repeat('c', 64), 'mcp-files',
    'text/plain', 'shared.txt')$$, 'the server stores a shared file (no owner)');
select lives_ok($$insert into public.conversation_files (conversation_id, file_id, user_id, created_at)
    values ('b0000000-0000-4000-8000-0000000000b1', 'c0000000-0000-4000-8000-0000000000f1',
            'bbbbbbbb-0000-4000-8000-00000000000b', now())$$,
    '... which any thread may use');
reset role;
set local role authenticated;
set local request.jwt.claims = '{"sub": "aaaaaaaa-0000-4000-8000-00000000000a", "role": "authenticated"}';
select throws_ok($$insert into public.conversation_files (conversation_id, file_id, user_id, created_at)
    values ('a0000000-0000-4000-8000-0000000000a1', 'c0000000-0000-4000-8000-0000000000f1',
            'aaaaaaaa-0000-4000-8000-00000000000a', now())$$,
    '23503', null, 'but a signed-in user links only files of their own');

-- ---------------------------------------------------------------------------------------
-- The invariant, for every user and the server: totals and rollup are the sums over messages,
-- and signed-in users' messages carry the table's price.

reset role;
select is_empty($$
    select c.id from public.conversations c
    left join lateral (
        select count(m.id) as n, coalesce(sum(m.tokens), 0) as tokens, coalesce(sum(m.input_tokens), 0) as i,
            coalesce(sum(m.output_tokens), 0) as o, coalesce(sum(m.cost), 0) as cost,
            count(*) filter (where m.cost is null and (m.tokens > 0 or m.metadata ? 'usage_raw')) as unpriced
        from public.messages m where m.conversation_id = c.id) as s on true
    where (c.message_count, c.total_tokens, c.input_tokens, c.output_tokens, c.total_cost, c.unpriced_messages)
        is distinct from (s.n, s.tokens, s.i, s.o, s.cost, s.unpriced)$$,
    'every thread''s totals are the sums over its messages');
select is_empty($$
    (select day, user_id, messages, input_tokens, output_tokens, cost_usd, unpriced_messages from public.usage_daily
     except
     select (created_at at time zone 'UTC')::date, user_id, count(*), sum(input_tokens), sum(output_tokens),
         coalesce(sum(cost), 0), count(*) filter (where cost is null and (tokens > 0 or metadata ? 'usage_raw'))
     from public.messages group by 1, 2, model_used, provider, tool_name)
    union all
    (select (created_at at time zone 'UTC')::date, user_id, count(*), sum(input_tokens), sum(output_tokens),
         coalesce(sum(cost), 0), count(*) filter (where cost is null and (tokens > 0 or metadata ? 'usage_raw'))
     from public.messages group by 1, 2, model_used, provider, tool_name
     except
     select day, user_id, messages, input_tokens, output_tokens, cost_usd, unpriced_messages from public.usage_daily)$$,
    'every user''s daily rollup is the sums over their messages');
select is_empty($$
    select m.id from public.messages m
    where m.user_id is not null and m.cost is distinct from (
        case when m.metadata ? 'usage_raw' then null
             else (public.price_message(m.model_used, m.created_at, m.input_tokens, m.cached_input_tokens,
                   m.cache_write_tokens, m.output_tokens, m.reasoning_tokens) ->> 'cost')::numeric end)$$,
    'every signed-in user''s message carries the table''s price');

-- ---------------------------------------------------------------------------------------
-- 5. Smaller

select ok(not has_table_privilege('anon', 'storage.objects', 'truncate')
          and not has_table_privilege('anon', 'storage.buckets', 'truncate')
          and not has_table_privilege('authenticated', 'storage.objects', 'truncate'),
    'anon and authenticated cannot truncate the storage tables (truncate ignores row level security)');
select ok(not has_function_privilege('authenticated', 'public.applied_migrations()', 'execute')
          and not has_function_privilege('anon', 'public.applied_migrations()', 'execute'),
    'applied_migrations (security definer) is the service role''s only');

select * from finish();
rollback;
