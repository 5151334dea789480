-- Budgets and the reads behind cost alerts (issue 17, migration 20261130140000_persistence_budgets):
-- what set_budget keeps and refuses, and what tag_costs, thread_costs and top_threads add up.
-- Who may see and change whose rows is in 10_rls_matrix.sql.
-- Runs in one transaction that is rolled back: pg_prove -d <db> supabase/tests/40_budgets.sql

begin;
create extension if not exists pgtap;
select plan(17);

-- The server keeps a budget; setting it again for the same scope, key and period changes its
-- limit and keeps its id.
select is(public.set_budget('c0000000-0000-4000-8000-000000000001', 'model', 'day', 5, 'glm-4.6') ->> 'key',
    'glm-4.6', 'set_budget keeps a budget on a model');
select is(public.set_budget('c0000000-0000-4000-8000-000000000002', 'model', 'day', 7.5, 'glm-4.6') ->> 'id',
    'c0000000-0000-4000-8000-000000000001', 'setting it again keeps the budget''s id');
select is((select limit_usd from public.budgets where key = 'glm-4.6'), 7.5, '... and changes its limit');
select is(public.set_budget('c0000000-0000-4000-8000-000000000003', 'store', 'month', 300) ->> 'key', null,
    'a budget on the whole store has no key');
select is((select count(*)::integer from public.list_budgets() as b, jsonb_array_elements(b) as e), 2,
    'list_budgets lists both');

-- Refused, naming what is wrong.
select throws_ok($$select public.set_budget(gen_random_uuid(), 'colour', 'day', 5, 'x')$$, 'PT400',
    'p_scope must be store, model, provider, tool_name or tag, not colour', 'an unknown scope is refused');
select throws_ok($$select public.set_budget(gen_random_uuid(), 'model', 'year', 5, 'x')$$, 'PT400',
    'p_period must be day, week or month, not year', 'an unknown period is refused');
select throws_ok($$select public.set_budget(gen_random_uuid(), 'model', 'day', 0, 'x')$$, 'PT400', null,
    'a limit of 0 is refused');
select throws_ok($$select public.set_budget(gen_random_uuid(), 'store', 'day', 5, 'x')$$, 'PT400',
    'p_key must be given for a store budget, and only then', 'a store budget with a key is refused');
select throws_ok($$select public.set_budget(gen_random_uuid(), 'tag', 'day', 5)$$, 'PT400',
    'p_key must be given for a tag budget, and only then', 'a tag budget without a tag is refused');

select is(public.delete_budget('c0000000-0000-4000-8000-000000000001'), true, 'delete_budget removes it');
select is(public.delete_budget('c0000000-0000-4000-8000-000000000001'), false, '... and says when there was none');

-- Two tagged threads started on 2026-11-18 (one carrying both tags), one the day before.
select public.start_conversation(p_continuation_id => cid, p_id => gen_random_uuid(), p_tool_name => 'codereview',
        p_tags => tags, p_created_at => at)
    from (values ('tap-t1', array['client-x'], '2026-11-18 08:00+00'::timestamptz),
                 ('tap-t2', array['client-x', 'urgent'], '2026-11-18 09:00+00'),
                 ('tap-t3', array['client-x'], '2026-11-17 09:00+00')) as t (cid, tags, at);
select public.record_message(p_continuation_id => cid, p_id => gen_random_uuid(), p_role => 'assistant',
        p_content => 'answer', p_created_at => at, p_model => 'glm-4.6', p_tool_name => 'codereview',
        p_input_tokens => 1000, p_output_tokens => 0, p_cost => cost)
    from (values ('tap-t1', 1.25, '2026-11-18 08:01+00'::timestamptz), ('tap-t2', 0.5, '2026-11-18 09:01+00'),
                 ('tap-t3', 4.0, '2026-11-17 09:01+00')) as t (cid, cost, at);

select is(public.tag_costs(array['client-x', 'urgent', 'none'], '2026-11-18', '2026-11-18'),
    '{"client-x": 1.75, "urgent": 0.5}'::jsonb, 'tag_costs sums the threads started on the days, per tag');
select is(public.tag_costs(array['client-x'], '2026-11-17', '2026-11-18') -> 'client-x', '5.75'::jsonb,
    '... over every day of the range');
select is(jsonb_array_length(public.thread_costs('2026-11-18', '2026-11-18')), 2,
    'thread_costs lists the threads started on the days');
select is(public.top_threads('2026-11-18', 'model', 'glm-4.6', 1) -> 0 ->> 0, 'tap-t1',
    'top_threads names the costliest thread of a day''s model');
select throws_ok($$select public.top_threads('2026-11-18', 'colour', 'x')$$, 'PT400',
    'p_dimension must be model, provider or tool_name, not colour', 'top_threads refuses another dimension');

select * from finish();
rollback;
