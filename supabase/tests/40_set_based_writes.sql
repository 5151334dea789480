-- Set-based record_messages and the thread facets (issue 16,
-- 20261130130000_persistence_set_based_writes).
--
-- Users A and B sign in as PostgREST makes them. A's batches get record_message's owner checks
-- and prices; a batch is all or nothing; each thread's facets (models, providers, tools) follow
-- its writes and are visible to its owner only, and the thread filters read them.
-- Runs in one transaction that is rolled back: pg_prove -d <db> supabase/tests/40_set_based_writes.sql

begin;
create extension if not exists pgtap;
select plan(14);

insert into public.model_prices (id, provider, model, match, effective_from, input, output)
values ('tap/set-model@2020-01-01', 'tap', 'set-model', '^set-model$', '2020-01-01', 1, 2);

-- B's thread, written by B, with a tool and a model of B's own.
set local role authenticated;
set local request.jwt.claims = '{"sub": "bbbbbbbb-0000-4000-8000-00000000000b", "role": "authenticated"}';
select public.start_conversation('set-b', 'b0000000-0000-4000-8000-0000000005b1'::uuid, p_tool_name => 'tool-of-b');
select public.record_messages('[{"continuation_id": "set-b", "id": "b0000000-0000-4000-8000-0000000005b2",
    "role": "user", "content": "B''s turn", "created_at": "2026-01-01T10:00:00Z", "model": "model-of-b",
    "input_tokens": 1, "cached_input_tokens": 0, "cache_write_tokens": 0, "output_tokens": 0,
    "reasoning_tokens": 0}]');

set local request.jwt.claims = '{"sub": "aaaaaaaa-0000-4000-8000-00000000000a", "role": "authenticated"}';

-- 1. Owner checks and prices, as record_message

select throws_ok($$select public.record_messages('[{"continuation_id": "set-b", "id": "a0000000-0000-4000-8000-0000000005a9",
    "role": "user", "content": "planted", "created_at": "2026-01-01T11:00:00Z", "input_tokens": 0,
    "cached_input_tokens": 0, "cache_write_tokens": 0, "output_tokens": 0, "reasoning_tokens": 0}]')$$,
    'PT409', 'continuation_id set-b is used by a thread you cannot access', 'a batch into B''s thread is refused');
select throws_ok($$select public.record_messages('[{"continuation_id": "set-a", "id": "b0000000-0000-4000-8000-0000000005b2",
    "role": "user", "content": "retry of B''s id", "created_at": "2026-01-01T11:00:00Z", "input_tokens": 0,
    "cached_input_tokens": 0, "cache_write_tokens": 0, "output_tokens": 0, "reasoning_tokens": 0}]')$$,
    'PT409', 'p_items[0]: message_id b0000000-0000-4000-8000-0000000005b2 already belongs to another conversation',
    'reusing B''s message id in a batch names neither B''s thread nor its content');
select is(count(*), 0::bigint, 'the refused batches wrote nothing, not even A''s thread')
from public.conversations where continuation_id = 'set-a';

select is(jsonb_path_query_array(public.record_messages('[
    {"continuation_id": "set-a", "id": "a0000000-0000-4000-8000-0000000005a1", "role": "user", "content": "a1",
     "created_at": "2026-01-01T11:00:00Z", "tool_name": "tool-of-a", "input_tokens": 0, "cached_input_tokens": 0,
     "cache_write_tokens": 0, "output_tokens": 0, "reasoning_tokens": 0},
    {"continuation_id": "set-a", "id": "a0000000-0000-4000-8000-0000000005a2", "role": "assistant", "content": "a2",
     "created_at": "2026-01-01T11:01:00Z", "model": "set-model", "provider": "tap", "input_tokens": 100,
     "cached_input_tokens": 0, "cache_write_tokens": 0, "output_tokens": 10, "reasoning_tokens": 0,
     "cost": -99999, "price_id": "forged"},
    {"continuation_id": "set-a2", "id": "a0000000-0000-4000-8000-0000000005a3", "role": "assistant", "content": "a3",
     "created_at": "2026-01-01T11:02:00Z", "model": "set-model", "input_tokens": 5, "cached_input_tokens": 0,
     "cache_write_tokens": 0, "output_tokens": 0, "reasoning_tokens": 0, "metadata": {"usage_raw": {"odd": 1}}},
    {"continuation_id": "set-a", "id": "a0000000-0000-4000-8000-0000000005a2", "role": "assistant", "content": "a2",
     "created_at": "2026-01-01T11:01:00Z", "model": "set-model", "input_tokens": 100, "cached_input_tokens": 0,
     "cache_write_tokens": 0, "output_tokens": 10, "reasoning_tokens": 0}]'), '$[*].seq'),
    '[1, 2, 1, 2]'::jsonb, 'a batch of A''s: seq per thread, the repeated id answered with the stored turn');
select is(cost, 0.00012, 'the caller''s cost is ignored: the table''s price (100 x $1 + 10 x $2 per 1M)')
from public.messages where id = 'a0000000-0000-4000-8000-0000000005a2';
select is(price_id, 'tap/set-model@2020-01-01', '... and its price id')
from public.messages where id = 'a0000000-0000-4000-8000-0000000005a2';
select ok(cost is null and unpriced, 'usage the package could not read: unpriced')
from public.messages where id = 'a0000000-0000-4000-8000-0000000005a3';
select results_eq(
    $$select message_count, total_tokens, total_cost, model_used, user_id::text from public.conversations
      where continuation_id = 'set-a'$$,
    $$values (2, 110::bigint, 0.00012::numeric(20, 10), 'set-model', 'aaaaaaaa-0000-4000-8000-00000000000a')$$,
    'A''s thread: totals of its two turns, the newest model, A''s own');

-- 2. Facets

select results_eq(
    $$select kind, value from public.conversation_facets f join public.conversations c on c.id = f.conversation_id
      where c.continuation_id = 'set-a' order by 1, 2$$,
    $$values ('model', 'set-model'), ('provider', 'tap'), ('tool_name', 'tool-of-a')$$,
    'A''s thread has the facets of its turns');
select is_empty($$select 1 from public.conversation_facets where value like '%of-b'$$,
    'B''s facets are invisible to A');
select is(public.count_conversations('{"model": "set-model"}'), '2'::jsonb, 'the model filter counts A''s threads');
select is(public.count_conversations('{"tool_name": "tool-of-b"}'), '0'::jsonb, '... and never B''s');
select throws_ok($$delete from public.conversation_facets$$, '42501', null, 'A cannot delete facets');

reset role;
select is(public.count_conversations('{"tool_name": "tool-of-b"}'), '1'::jsonb,
    'the server finds B''s thread by its own tool (set at start_conversation, no message names it)');

select * from finish();
rollback;
