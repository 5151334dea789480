-- Row level security, table by table and function by function (DESIGN.md, Security).
--
-- Run by `supabase test db` on a Supabase project and by tests/test_pgtap.py (pg_prove) on the
-- local Postgres with the stand-in bootstrap and every migration applied. Self-contained: it
-- needs nothing from the other files, creates its rows and helpers inside one transaction and
-- rolls everything back.
--
-- 1. The matrix: every table in public (and storage.objects) x select, insert, update, delete
--    x the owner (A on A's rows), another signed-in user (A on B's rows), anon and the service
--    role. Each cell runs as that role in a subtransaction that is always rolled back, and is
--    "allowed" when it touched (or saw) at least one row, "denied" when it raised or touched
--    none. Expected, per DESIGN.md: RLS on every table; policies to authenticated scoped by
--    user_id = (select auth.uid()); anon sees nothing; the service role bypasses RLS but no
--    caller crosses owners; totals, rollups, seq, costs and price ids are written by the
--    store only (so no direct DML on messages or usage_daily, nor on a thread's totals).
-- 2. Every function in public that authenticated may execute, called by A with B's ids:
--    nothing of B's comes back and nothing of B's changes.
-- 3. The security definer functions, against an allow-list that says why each one is one.

begin;

-- pgTAP lives in the extensions schema on Supabase; a plain Postgres gets the same layout here
-- (rolled back with the rest).
create schema if not exists extensions;
create extension if not exists pgtap with schema extensions;
do $$
begin
    if not has_schema_privilege('authenticated', 'extensions', 'usage') then
        grant usage on schema extensions to anon, authenticated, service_role;
    end if;
end
$$;
set local search_path = public, extensions;

-- ---------------------------------------------------------------------------------------
-- Helpers (pg_temp: gone with the session, invisible to the function checks below)

create temporary table k (key text primary key, val text not null) on commit drop;
insert into k values
    ('A', 'aaaaaaaa-0000-4000-8000-00000000000a'),
    ('B', 'bbbbbbbb-0000-4000-8000-00000000000b'),
    ('convA', 'a0000000-0000-4000-8000-0000000000c1'),
    ('convA2', 'a0000000-0000-4000-8000-0000000000c2'),
    ('convB', 'b0000000-0000-4000-8000-0000000000c1'),
    ('msgA', 'a0000000-0000-4000-8000-0000000000e1'),
    ('msgB', 'b0000000-0000-4000-8000-0000000000e1'),
    ('fileA', 'a0000000-0000-4000-8000-0000000000f1'),
    ('fileB', 'b0000000-0000-4000-8000-0000000000f1'),
    ('uploadA', 'a0000000-0000-4000-8000-0000000000d1'),
    ('uploadB', 'b0000000-0000-4000-8000-0000000000d1'),
    ('provA', 'a0000000-0000-4000-8000-000000000091'),
    ('provB', 'b0000000-0000-4000-8000-000000000091'),
    ('budgetA', 'a0000000-0000-4000-8000-0000000000b1'),
    ('budgetB', 'b0000000-0000-4000-8000-0000000000b1'),
    ('new', 'a0000000-0000-4000-8000-0000000000aa'),
    ('new2', 'a0000000-0000-4000-8000-0000000000ab'),
    ('hashA', repeat('a', 64)),
    ('hashB', repeat('b', 64)),
    ('hashNew', repeat('e', 64)),
    ('pathA', 'aaaaaaaa-0000-4000-8000-00000000000a/aa/' || repeat('a', 64)),
    ('pathB', 'bbbbbbbb-0000-4000-8000-00000000000b/bb/' || repeat('b', 64)),
    ('sweepB', 'bbbbbbbb-0000-4000-8000-00000000000b/cc/' || repeat('c', 64));

-- {key} -> the value as a SQL literal.
create function pg_temp.q(p_sql text) returns text language plpgsql as $$
declare
    r record;
begin
    for r in select key, val from pg_temp.k loop
        p_sql := replace(p_sql, '{' || r.key || '}', quote_literal(r.val));
    end loop;
    return p_sql;
end
$$;

-- Act as a caller the way PostgREST does: the role and the JWT claims, local to the transaction.
-- owner and other are both user A (the statement decides whose rows it aims at).
create function pg_temp.become(p_actor text) returns void language plpgsql as $$
begin
    perform set_config('request.jwt.claims', case p_actor
        when 'anon' then '{"role": "anon"}'
        when 'service_role' then '{"role": "service_role"}'
        else json_build_object('sub', (select val from pg_temp.k where key = 'A'), 'role', 'authenticated')::text
        end, true);
    perform set_config('role', case when p_actor in ('owner', 'other') then 'authenticated' else p_actor end, true);
end
$$;

-- Run a statement as p_actor in a subtransaction that is always rolled back: 'allowed (n rows)'
-- when it touched or returned rows; 'denied (...)' when it touched none or was refused (no
-- privilege, a policy, a foreign or check constraint, an exception raised by the schema);
-- 'broken (...)' for any other error, which means the statement itself is wrong.
create function pg_temp.attempt(p_actor text, p_sql text) returns text language plpgsql as $$
declare
    v_sql text := pg_temp.q(p_sql);
    v_rows bigint;
begin
    begin
        perform pg_temp.become(p_actor);
        execute v_sql;
        get diagnostics v_rows = row_count;
        raise exception using errcode = 'TZ001', message = v_rows::text;
    exception
        when sqlstate 'TZ001' then
            return case when sqlerrm::bigint > 0 then 'allowed (' || sqlerrm || ' rows)' else 'denied (0 rows)' end;
        when insufficient_privilege or foreign_key_violation or check_violation or raise_exception
             or sqlstate 'PT400' or sqlstate 'PT403' or sqlstate 'PT404' or sqlstate 'PT409' then
            return 'denied (' || sqlstate || ': ' || sqlerrm || ')';
        when others then
            return 'broken (' || sqlstate || ': ' || sqlerrm || ')';
    end;
end
$$;

-- Everything of B's, and every row that refers to one of B's rows, as one digest.
create function pg_temp.b_digest() returns text language sql as $$
    with b as (select val::uuid as id from pg_temp.k where key = 'B'),
    bc as (select c.id from public.conversations c, b where c.user_id = b.id),
    bf as (select f.id from public.files f, b where f.user_id = b.id)
    select md5(string_agg(t, E'\n' order by t)) from (
        select c::text as t from public.conversations c, b where c.user_id = b.id
        union all select m::text from public.messages m, b
            where m.user_id = b.id or m.conversation_id in (select id from bc)
        union all select f::text from public.files f, b where f.user_id = b.id
        union all select u::text from public.file_uploads u, b
            where u.user_id = b.id or u.file_id in (select id from bf) or u.conversation_id in (select id from bc)
        union all select cf::text from public.conversation_files cf, b
            where cf.user_id = b.id or cf.file_id in (select id from bf) or cf.conversation_id in (select id from bc)
        union all select p::text from public.provider_files p, b where p.user_id = b.id or p.file_id in (select id from bf)
        union all select d::text from public.usage_daily d, b where d.user_id = b.id
        union all select f::text from public.conversation_facets f, b
            where f.user_id = b.id or f.conversation_id in (select id from bc)
        union all select bu::text from public.budgets bu, b where bu.user_id = b.id
        union all select o.name from storage.objects o, b where o.name like b.id::text || '/%'
    ) as s
$$;

-- B's rows, values and names all carry one of these marks; A's never do. p_echo: a mark that
-- also appears there (the call's own arguments, which an error message may quote) is no leak.
create function pg_temp.leaks(p_text text, p_echo text default '') returns boolean language sql as $$
    select exists (
        select 1 from unnest(array['bbbbbbbb', 'b0000000-', 'thread-b', 'secret-b', 'model-b', 'tool-b', 'tag-b',
                                   'session-b', 'prov-b', '7777']) as m
        where strpos(lower(p_text), m) > 0 and strpos(lower(p_echo), m) = 0)
$$;

-- Call a function as user A in a subtransaction that is always rolled back. 'no leak, B
-- unchanged' when the result shows nothing of B's (an error: nothing but what the arguments
-- said) and B's rows are as they were; else what went wrong.
create function pg_temp.as_a(p_sql text) returns text language plpgsql as $$
declare
    v_sql text := pg_temp.q(p_sql);
    v_before text := pg_temp.b_digest();
    v_result text;
    v_after text;
    v_detail text;
    v_hint text;
begin
    begin
        perform pg_temp.become('other');
        execute v_sql into v_result;
        perform set_config('role', 'none', true);
        v_after := pg_temp.b_digest();
        raise exception using errcode = 'TZ001';
    exception
        when sqlstate 'TZ001' then
            null;
        when others then  -- raised: nothing written; the message may quote the arguments
            if sqlstate like '42%' and sqlstate <> '42501' then  -- no such function, a wrong argument ...
                return 'BROKEN call ' || sqlstate || ': ' || sqlerrm;
            end if;
            get stacked diagnostics v_detail = pg_exception_detail, v_hint = pg_exception_hint;
            if pg_temp.leaks(concat_ws(' ', sqlerrm, v_detail, v_hint), v_sql) then
                return 'LEAK in the error ' || sqlstate || ': ' || concat_ws(' ', sqlerrm, v_detail, v_hint);
            end if;
            return 'no leak, B unchanged';
    end;
    if v_after is distinct from v_before then
        return 'B CHANGED, returned: ' || coalesce(v_result, 'null');
    elsif pg_temp.leaks(v_result) then
        return 'LEAK: ' || v_result;
    end if;
    return 'no leak, B unchanged';
end
$$;

-- The raw result of a call as user A (rolled back), or 'error <SQLSTATE>'.
create function pg_temp.a_result(p_sql text) returns text language plpgsql as $$
declare
    v_sql text := pg_temp.q(p_sql);
    v_result text;
begin
    begin
        perform pg_temp.become('other');
        execute v_sql into v_result;
        raise exception using errcode = 'TZ001';
    exception
        when sqlstate 'TZ001' then
            return coalesce(v_result, 'null');
        when others then
            return 'error ' || sqlstate;
    end;
end
$$;

-- ---------------------------------------------------------------------------------------
-- Two users' data, written as the server writes it (service role, through the SQL API).

select pg_temp.become('service_role');
select public.start_conversation(p_continuation_id => 'thread-' || x, p_id => id::uuid,
        p_created_at => '2026-11-01 10:00+00', p_tool_name => 'tool-' || x, p_title => 'secret-' || x || ' title',
        p_session_id => 'session-' || x, p_user_id => owner::uuid, p_tags => array['tag-' || x])
    from (values ('a', 'a0000000-0000-4000-8000-0000000000c1', 'aaaaaaaa-0000-4000-8000-00000000000a'),
                 ('a2', 'a0000000-0000-4000-8000-0000000000c2', 'aaaaaaaa-0000-4000-8000-00000000000a'),
                 ('b', 'b0000000-0000-4000-8000-0000000000c1', 'bbbbbbbb-0000-4000-8000-00000000000b'))
        as t (x, id, owner);
select public.record_message(p_continuation_id => 'thread-' || x, p_id => (x || '0000000-0000-4000-8000-0000000000e' || n)::uuid,
        p_role => role, p_content => 'secret-' || x || ' the password is swordfish',
        p_created_at => '2026-11-01 10:00+00'::timestamptz + n * interval '1 minute',
        p_model => 'model-' || x, p_provider => 'prov-' || x, p_tool_name => 'tool-' || x,
        p_input_tokens => tokens, p_output_tokens => 10, p_cost => cost)
    from (values ('a', 1, 'user', 1000, 0.01), ('a', 2, 'assistant', 1000, 0.01),
                 ('b', 1, 'user', 7777, 0.07), ('b', 2, 'assistant', 7777, 0.07)) as t (x, n, role, tokens, cost);
select public.put_file_metadata(p_file_id => file_id::uuid, p_upload_id => upload_id::uuid, p_file_hash => hash,
        p_file_size => 5, p_storage_path => owner || '/' || left(hash, 2) || '/' || hash, p_bucket_name => 'mcp-files',
        p_mime_type => 'text/plain', p_filename => 'secret-' || x || '.txt', p_continuation_id => 'thread-' || x,
        p_session_id => 'session-' || x, p_user_id => owner::uuid, p_created_at => '2026-11-01 10:00+00')
    from (values ('a', 'a0000000-0000-4000-8000-0000000000f1', 'a0000000-0000-4000-8000-0000000000d1', repeat('a', 64),
                  'aaaaaaaa-0000-4000-8000-00000000000a'),
                 ('b', 'b0000000-0000-4000-8000-0000000000f1', 'b0000000-0000-4000-8000-0000000000d1', repeat('b', 64),
                  'bbbbbbbb-0000-4000-8000-00000000000b')) as t (x, file_id, upload_id, hash, owner);
select public.record_provider_file(p_id => id::uuid, p_file_id => file_id::uuid, p_provider => 'prov-' || x,
        p_provider_file_id => 'prov-' || x || '-file')
    from (values ('a', 'a0000000-0000-4000-8000-000000000091', 'a0000000-0000-4000-8000-0000000000f1'),
                 ('b', 'b0000000-0000-4000-8000-000000000091', 'b0000000-0000-4000-8000-0000000000f1')) as t (x, id, file_id);
select public.set_budget(p_id => id::uuid, p_scope => 'model', p_key => 'model-' || x, p_period => 'day',
        p_limit_usd => 5, p_user_id => owner::uuid)
    from (values ('a', 'a0000000-0000-4000-8000-0000000000b1', 'aaaaaaaa-0000-4000-8000-00000000000a'),
                 ('b', 'b0000000-0000-4000-8000-0000000000b1', 'bbbbbbbb-0000-4000-8000-00000000000b')) as t (x, id, owner);
reset role;
insert into storage.objects (bucket_id, name) select 'mcp-files', val from pg_temp.k where key in ('pathA', 'pathB');
insert into public.blob_sweeps (storage_path, bucket_name, sweep_id, expires_at)
    select val, 'mcp-files', gen_random_uuid(), now() + interval '10 minutes' from pg_temp.k where key = 'sweepB';
insert into public.model_prices (id, provider, model, match, effective_from, input, output, origin)
    values ('pgtap-price', 'prov-x', 'model-x', 'model-x', '2026-01-01', 1, 2, 'user');
insert into public.store_meta (key, value) values ('pgtap-key', 'pgtap-value');
-- Both uploads redacted: upload_redactions has something of B's to leak.
update public.file_uploads set redacted_at = '2026-11-02 10:00+00'
    where id in (select val::uuid from pg_temp.k where key in ('uploadA', 'uploadB'));

-- ---------------------------------------------------------------------------------------
-- 1. The matrix. {key} stands for the literal of that key above.

create temporary table cases (
    n serial primary key,
    tbl text not null,
    op text not null,
    actor text not null,
    expect text not null check (expect in ('allowed', 'denied')),
    what text not null,
    stmt text not null
) on commit drop;

insert into cases (tbl, op, actor, expect, what, stmt) values
-- conversations
('conversations', 'select', 'owner', 'allowed', 'their thread', $$select 1 from public.conversations where id = {convA}$$),
('conversations', 'insert', 'owner', 'allowed', 'a thread of their own',
    $$insert into public.conversations (continuation_id, user_id, title) values ('thread-new', {A}, 'mine')$$),
('conversations', 'insert', 'owner', 'denied', 'a thread with forged totals (the store writes them)',
    $$insert into public.conversations (continuation_id, user_id, message_count, total_tokens, total_cost)
      values ('thread-new', {A}, 5, 1000000, -99999)$$),
('conversations', 'update', 'owner', 'allowed', 'their thread''s title',
    $$update public.conversations set title = 'renamed' where id = {convA}$$),
('conversations', 'update', 'owner', 'denied', 'their thread''s total_cost (the store writes totals)',
    $$update public.conversations set total_cost = -99999 where id = {convA}$$),
('conversations', 'update', 'owner', 'denied', 'their thread''s message_count and token totals',
    $$update public.conversations set message_count = 0, total_tokens = 0, input_tokens = 0 where id = {convA}$$),
('conversations', 'delete', 'owner', 'denied', 'their thread (the rollup would go on counting its messages)',
    $$delete from public.conversations where id = {convA}$$),
('conversations', 'select', 'other', 'denied', 'B''s thread', $$select 1 from public.conversations where id = {convB}$$),
('conversations', 'insert', 'other', 'denied', 'a thread owned by B',
    $$insert into public.conversations (continuation_id, user_id) values ('thread-new', {B})$$),
('conversations', 'update', 'other', 'denied', 'B''s thread', $$update public.conversations set title = 'mine' where id = {convB}$$),
('conversations', 'update', 'other', 'denied', 'their thread handed to B',
    $$update public.conversations set user_id = {B} where id = {convA}$$),
('conversations', 'delete', 'other', 'denied', 'B''s thread', $$delete from public.conversations where id = {convB}$$),
('conversations', 'select', 'anon', 'denied', 'any thread', $$select 1 from public.conversations$$),
('conversations', 'insert', 'anon', 'denied', 'a thread', $$insert into public.conversations (continuation_id) values ('thread-new')$$),
('conversations', 'update', 'anon', 'denied', 'any thread', $$update public.conversations set title = 'x'$$),
('conversations', 'delete', 'anon', 'denied', 'any thread', $$delete from public.conversations$$),
('conversations', 'select', 'service_role', 'allowed', 'every thread',
    $$select 1 from public.conversations where id in ({convA}, {convB})$$),
('conversations', 'insert', 'service_role', 'allowed', 'a thread for B',
    $$insert into public.conversations (continuation_id, user_id) values ('thread-new', {B})$$),
('conversations', 'update', 'service_role', 'allowed', 'B''s thread', $$update public.conversations set title = 'x' where id = {convB}$$),
('conversations', 'delete', 'service_role', 'allowed', 'B''s thread', $$delete from public.conversations where id = {convB}$$),

-- messages: seq, tokens, cost and price_id are the store's; record_message writes messages.
('messages', 'select', 'owner', 'allowed', 'their messages', $$select 1 from public.messages where user_id = {A}$$),
('messages', 'insert', 'owner', 'denied', 'a message in their thread, bypassing record_message (seq, cost)',
    $$insert into public.messages (id, conversation_id, seq, role, content, user_id, cost)
      values ({new}, {convA}, 99, 'user', 'forged', {A}, -99999)$$),
('messages', 'update', 'owner', 'allowed', 'the content of their message',
    $$update public.messages set content = 'corrected' where id = {msgA}$$),
('messages', 'update', 'owner', 'denied', 'the cost of their message',
    $$update public.messages set cost = -99999, price_id = 'forged' where id = {msgA}$$),
('messages', 'update', 'owner', 'denied', 'the seq and tokens of their message',
    $$update public.messages set seq = 99, input_tokens = 0, tokens = 0 where id = {msgA}$$),
('messages', 'delete', 'owner', 'denied', 'their message (the thread''s totals count it)',
    $$delete from public.messages where id = {msgA}$$),
('messages', 'select', 'other', 'denied', 'B''s messages', $$select 1 from public.messages where conversation_id = {convB}$$),
('messages', 'insert', 'other', 'denied', 'a message of their own into B''s thread',
    $$insert into public.messages (id, conversation_id, seq, role, content, user_id)
      values ({new}, {convB}, 99, 'user', 'planted', {A})$$),
('messages', 'insert', 'other', 'denied', 'a message owned by B',
    $$insert into public.messages (id, conversation_id, seq, role, content, user_id)
      values ({new}, {convB}, 99, 'user', 'planted', {B})$$),
('messages', 'update', 'other', 'denied', 'B''s message', $$update public.messages set content = 'x' where id = {msgB}$$),
('messages', 'update', 'other', 'denied', 'their message moved into B''s thread',
    $$update public.messages set conversation_id = {convB}, seq = 99 where id = {msgA}$$),
('messages', 'delete', 'other', 'denied', 'B''s message', $$delete from public.messages where id = {msgB}$$),
('messages', 'select', 'anon', 'denied', 'any message', $$select 1 from public.messages$$),
('messages', 'insert', 'anon', 'denied', 'a message',
    $$insert into public.messages (id, conversation_id, seq, role, content) values ({new}, {convA}, 99, 'user', 'x')$$),
('messages', 'update', 'anon', 'denied', 'any message', $$update public.messages set content = 'x'$$),
('messages', 'delete', 'anon', 'denied', 'any message', $$delete from public.messages$$),
('messages', 'select', 'service_role', 'allowed', 'every message',
    $$select 1 from public.messages where conversation_id in ({convA}, {convB})$$),
('messages', 'insert', 'service_role', 'allowed', 'a message of B''s in B''s thread',
    $$insert into public.messages (id, conversation_id, seq, role, content, user_id)
      values ({new}, {convB}, 99, 'user', 'x', {B})$$),
('messages', 'insert', 'service_role', 'denied', 'a message of A''s in B''s thread (no caller crosses owners)',
    $$insert into public.messages (id, conversation_id, seq, role, content, user_id)
      values ({new}, {convB}, 99, 'user', 'x', {A})$$),
('messages', 'update', 'service_role', 'allowed', 'B''s message', $$update public.messages set content = 'x' where id = {msgB}$$),
('messages', 'delete', 'service_role', 'allowed', 'B''s message', $$delete from public.messages where id = {msgB}$$),

-- files
('files', 'select', 'owner', 'allowed', 'their file', $$select 1 from public.files where id = {fileA}$$),
('files', 'insert', 'owner', 'allowed', 'a file in their folder',
    $$insert into public.files (id, filename, storage_path, file_size, mime_type, file_hash, user_id)
      values ({new}, 'x.txt', {A} || '/ee/' || {hashNew}, 1, 'text/plain', {hashNew}, {A})$$),
('files', 'update', 'owner', 'allowed', 'their file''s description',
    $$update public.files set description = 'mine' where id = {fileA}$$),
('files', 'delete', 'owner', 'allowed', 'their file', $$delete from public.files where id = {fileA}$$),
('files', 'select', 'other', 'denied', 'B''s file', $$select 1 from public.files where id = {fileB}$$),
('files', 'insert', 'other', 'denied', 'a file owned by B',
    $$insert into public.files (id, filename, storage_path, file_size, mime_type, file_hash, user_id)
      values ({new}, 'x.txt', {B} || '/ee/' || {hashNew}, 1, 'text/plain', {hashNew}, {B})$$),
('files', 'insert', 'other', 'denied', 'a file of their own stored in B''s folder (paths come from the owner)',
    $$insert into public.files (id, filename, storage_path, file_size, mime_type, file_hash, user_id)
      values ({new}, 'x.txt', {B} || '/ee/' || {hashNew}, 1, 'text/plain', {hashNew}, {A})$$),
('files', 'update', 'other', 'denied', 'B''s file', $$update public.files set description = 'x' where id = {fileB}$$),
('files', 'update', 'other', 'denied', 'their file handed to B', $$update public.files set user_id = {B} where id = {fileA}$$),
('files', 'delete', 'other', 'denied', 'B''s file', $$delete from public.files where id = {fileB}$$),
('files', 'select', 'anon', 'denied', 'any file', $$select 1 from public.files$$),
('files', 'insert', 'anon', 'denied', 'a file',
    $$insert into public.files (id, filename, storage_path, file_size, mime_type) values ({new}, 'x', 'x/y/z', 1, 'text/plain')$$),
('files', 'update', 'anon', 'denied', 'any file', $$update public.files set description = 'x'$$),
('files', 'delete', 'anon', 'denied', 'any file', $$delete from public.files$$),
('files', 'select', 'service_role', 'allowed', 'every file', $$select 1 from public.files where id in ({fileA}, {fileB})$$),
('files', 'insert', 'service_role', 'allowed', 'a file for B',
    $$insert into public.files (id, filename, storage_path, file_size, mime_type, file_hash, user_id)
      values ({new}, 'x.txt', {B} || '/ee/' || {hashNew}, 1, 'text/plain', {hashNew}, {B})$$),
('files', 'update', 'service_role', 'allowed', 'B''s file', $$update public.files set description = 'x' where id = {fileB}$$),
('files', 'delete', 'service_role', 'allowed', 'B''s file', $$delete from public.files where id = {fileB}$$),

-- file_uploads
('file_uploads', 'select', 'owner', 'allowed', 'their upload', $$select 1 from public.file_uploads where id = {uploadA}$$),
('file_uploads', 'insert', 'owner', 'allowed', 'another upload of their file',
    $$insert into public.file_uploads (id, file_id, filename, mime_type, file_size, user_id, created_at)
      values ({new}, {fileA}, 'again.txt', 'text/plain', 5, {A}, now())$$),
('file_uploads', 'update', 'owner', 'allowed', 'their upload''s description',
    $$update public.file_uploads set description = 'mine' where id = {uploadA}$$),
('file_uploads', 'delete', 'owner', 'allowed', 'their upload', $$delete from public.file_uploads where id = {uploadA}$$),
('file_uploads', 'select', 'other', 'denied', 'B''s upload', $$select 1 from public.file_uploads where id = {uploadB}$$),
('file_uploads', 'insert', 'other', 'denied', 'an upload of their own pointing at B''s file',
    $$insert into public.file_uploads (id, file_id, filename, mime_type, file_size, user_id, created_at)
      values ({new}, {fileB}, 'stolen.txt', 'text/plain', 5, {A}, now())$$),
('file_uploads', 'insert', 'other', 'denied', 'an upload owned by B',
    $$insert into public.file_uploads (id, file_id, filename, mime_type, file_size, user_id, created_at)
      values ({new}, {fileB}, 'x.txt', 'text/plain', 5, {B}, now())$$),
('file_uploads', 'update', 'other', 'denied', 'B''s upload', $$update public.file_uploads set description = 'x' where id = {uploadB}$$),
('file_uploads', 'update', 'other', 'denied', 'their upload re-pointed at B''s file',
    $$update public.file_uploads set file_id = {fileB} where id = {uploadA}$$),
('file_uploads', 'delete', 'other', 'denied', 'B''s upload', $$delete from public.file_uploads where id = {uploadB}$$),
('file_uploads', 'select', 'anon', 'denied', 'any upload', $$select 1 from public.file_uploads$$),
('file_uploads', 'insert', 'anon', 'denied', 'an upload',
    $$insert into public.file_uploads (id, file_id, filename, mime_type, file_size, created_at)
      values ({new}, {fileA}, 'x', 'text/plain', 5, now())$$),
('file_uploads', 'update', 'anon', 'denied', 'any upload', $$update public.file_uploads set description = 'x'$$),
('file_uploads', 'delete', 'anon', 'denied', 'any upload', $$delete from public.file_uploads$$),
('file_uploads', 'select', 'service_role', 'allowed', 'every upload',
    $$select 1 from public.file_uploads where id in ({uploadA}, {uploadB})$$),
('file_uploads', 'insert', 'service_role', 'allowed', 'another upload of B''s file for B',
    $$insert into public.file_uploads (id, file_id, filename, mime_type, file_size, user_id, created_at)
      values ({new}, {fileB}, 'x.txt', 'text/plain', 5, {B}, now())$$),
('file_uploads', 'insert', 'service_role', 'denied', 'an upload of A''s pointing at B''s file (no caller crosses owners)',
    $$insert into public.file_uploads (id, file_id, filename, mime_type, file_size, user_id, created_at)
      values ({new}, {fileB}, 'x.txt', 'text/plain', 5, {A}, now())$$),
('file_uploads', 'update', 'service_role', 'allowed', 'B''s upload',
    $$update public.file_uploads set description = 'x' where id = {uploadB}$$),
('file_uploads', 'delete', 'service_role', 'allowed', 'B''s upload', $$delete from public.file_uploads where id = {uploadB}$$),

-- conversation_files
('conversation_files', 'select', 'owner', 'allowed', 'their thread''s files',
    $$select 1 from public.conversation_files where conversation_id = {convA}$$),
('conversation_files', 'insert', 'owner', 'allowed', 'their file used by another thread of theirs',
    $$insert into public.conversation_files (conversation_id, file_id, user_id, created_at) values ({convA2}, {fileA}, {A}, now())$$),
('conversation_files', 'update', 'owner', 'allowed', 'their link''s time',
    $$update public.conversation_files set created_at = now() where conversation_id = {convA}$$),
('conversation_files', 'delete', 'owner', 'allowed', 'their link',
    $$delete from public.conversation_files where conversation_id = {convA}$$),
('conversation_files', 'select', 'other', 'denied', 'B''s links',
    $$select 1 from public.conversation_files where conversation_id = {convB}$$),
('conversation_files', 'insert', 'other', 'denied', 'B''s file linked to their thread',
    $$insert into public.conversation_files (conversation_id, file_id, user_id, created_at) values ({convA2}, {fileB}, {A}, now())$$),
('conversation_files', 'insert', 'other', 'denied', 'their file linked to B''s thread',
    $$insert into public.conversation_files (conversation_id, file_id, user_id, created_at) values ({convB}, {fileA}, {A}, now())$$),
('conversation_files', 'update', 'other', 'denied', 'B''s link',
    $$update public.conversation_files set created_at = now() where conversation_id = {convB}$$),
('conversation_files', 'update', 'other', 'denied', 'their link re-pointed at B''s file',
    $$update public.conversation_files set file_id = {fileB} where conversation_id = {convA}$$),
('conversation_files', 'delete', 'other', 'denied', 'B''s link',
    $$delete from public.conversation_files where conversation_id = {convB}$$),
('conversation_files', 'select', 'anon', 'denied', 'any link', $$select 1 from public.conversation_files$$),
('conversation_files', 'insert', 'anon', 'denied', 'a link',
    $$insert into public.conversation_files (conversation_id, file_id, created_at) values ({convA2}, {fileA}, now())$$),
('conversation_files', 'update', 'anon', 'denied', 'any link', $$update public.conversation_files set created_at = now()$$),
('conversation_files', 'delete', 'anon', 'denied', 'any link', $$delete from public.conversation_files$$),
('conversation_files', 'select', 'service_role', 'allowed', 'every link',
    $$select 1 from public.conversation_files where conversation_id in ({convA}, {convB})$$),
('conversation_files', 'insert', 'service_role', 'allowed', 'A''s file used by A''s other thread',
    $$insert into public.conversation_files (conversation_id, file_id, user_id, created_at) values ({convA2}, {fileA}, {A}, now())$$),
('conversation_files', 'update', 'service_role', 'allowed', 'B''s link',
    $$update public.conversation_files set created_at = now() where conversation_id = {convB}$$),
('conversation_files', 'delete', 'service_role', 'allowed', 'B''s link',
    $$delete from public.conversation_files where conversation_id = {convB}$$),

-- provider_files
('provider_files', 'select', 'owner', 'allowed', 'their provider upload', $$select 1 from public.provider_files where id = {provA}$$),
('provider_files', 'insert', 'owner', 'allowed', 'a provider upload of their file',
    $$insert into public.provider_files (id, file_id, provider, provider_file_id, user_id, created_at)
      values ({new}, {fileA}, 'prov-z', 'z-1', {A}, now())$$),
('provider_files', 'update', 'owner', 'allowed', 'their provider upload''s expiry',
    $$update public.provider_files set expires_at = now() where id = {provA}$$),
('provider_files', 'delete', 'owner', 'allowed', 'their provider upload', $$delete from public.provider_files where id = {provA}$$),
('provider_files', 'select', 'other', 'denied', 'B''s provider upload', $$select 1 from public.provider_files where id = {provB}$$),
('provider_files', 'insert', 'other', 'denied', 'a provider upload of their own for B''s file',
    $$insert into public.provider_files (id, file_id, provider, provider_file_id, user_id, created_at)
      values ({new}, {fileB}, 'prov-z', 'z-1', {A}, now())$$),
('provider_files', 'insert', 'other', 'denied', 'a provider upload owned by B',
    $$insert into public.provider_files (id, file_id, provider, provider_file_id, user_id, created_at)
      values ({new}, {fileB}, 'prov-z', 'z-1', {B}, now())$$),
('provider_files', 'update', 'other', 'denied', 'B''s provider upload',
    $$update public.provider_files set expires_at = now() where id = {provB}$$),
('provider_files', 'delete', 'other', 'denied', 'B''s provider upload', $$delete from public.provider_files where id = {provB}$$),
('provider_files', 'select', 'anon', 'denied', 'any provider upload', $$select 1 from public.provider_files$$),
('provider_files', 'insert', 'anon', 'denied', 'a provider upload',
    $$insert into public.provider_files (id, file_id, provider, provider_file_id, created_at)
      values ({new}, {fileA}, 'prov-z', 'z-1', now())$$),
('provider_files', 'update', 'anon', 'denied', 'any provider upload', $$update public.provider_files set expires_at = now()$$),
('provider_files', 'delete', 'anon', 'denied', 'any provider upload', $$delete from public.provider_files$$),
('provider_files', 'select', 'service_role', 'allowed', 'every provider upload',
    $$select 1 from public.provider_files where id in ({provA}, {provB})$$),
('provider_files', 'insert', 'service_role', 'allowed', 'a provider upload of B''s file for B',
    $$insert into public.provider_files (id, file_id, provider, provider_file_id, user_id, created_at)
      values ({new}, {fileB}, 'prov-z', 'z-1', {B}, now())$$),
('provider_files', 'update', 'service_role', 'allowed', 'B''s provider upload',
    $$update public.provider_files set expires_at = now() where id = {provB}$$),
('provider_files', 'delete', 'service_role', 'allowed', 'B''s provider upload',
    $$delete from public.provider_files where id = {provB}$$),

-- budgets: each user keeps their own
('budgets', 'select', 'owner', 'allowed', 'their budget', $$select 1 from public.budgets where id = {budgetA}$$),
('budgets', 'insert', 'owner', 'allowed', 'a budget of their own',
    $$insert into public.budgets (id, user_id, scope, key, period, limit_usd, created_at, updated_at)
      values ({new}, {A}, 'store', '', 'week', 5, now(), now())$$),
('budgets', 'update', 'owner', 'allowed', 'their budget''s limit', $$update public.budgets set limit_usd = 9 where id = {budgetA}$$),
('budgets', 'delete', 'owner', 'allowed', 'their budget', $$delete from public.budgets where id = {budgetA}$$),
('budgets', 'select', 'other', 'denied', 'B''s budget', $$select 1 from public.budgets where id = {budgetB}$$),
('budgets', 'insert', 'other', 'denied', 'a budget owned by B',
    $$insert into public.budgets (id, user_id, scope, key, period, limit_usd, created_at, updated_at)
      values ({new}, {B}, 'store', '', 'week', 5, now(), now())$$),
('budgets', 'update', 'other', 'denied', 'B''s budget', $$update public.budgets set limit_usd = 9 where id = {budgetB}$$),
('budgets', 'delete', 'other', 'denied', 'B''s budget', $$delete from public.budgets where id = {budgetB}$$),
('budgets', 'select', 'anon', 'denied', 'any budget', $$select 1 from public.budgets$$),
('budgets', 'insert', 'anon', 'denied', 'a budget',
    $$insert into public.budgets (id, scope, key, period, limit_usd, created_at, updated_at)
      values ({new}, 'store', '', 'week', 5, now(), now())$$),
('budgets', 'update', 'anon', 'denied', 'any budget', $$update public.budgets set limit_usd = 9$$),
('budgets', 'delete', 'anon', 'denied', 'any budget', $$delete from public.budgets$$),
('budgets', 'select', 'service_role', 'allowed', 'every budget',
    $$select 1 from public.budgets where id in ({budgetA}, {budgetB})$$),
('budgets', 'insert', 'service_role', 'allowed', 'a budget for B',
    $$insert into public.budgets (id, user_id, scope, key, period, limit_usd, created_at, updated_at)
      values ({new}, {B}, 'store', '', 'week', 5, now(), now())$$),
('budgets', 'update', 'service_role', 'allowed', 'B''s budget', $$update public.budgets set limit_usd = 9 where id = {budgetB}$$),
('budgets', 'delete', 'service_role', 'allowed', 'B''s budget', $$delete from public.budgets where id = {budgetB}$$),

-- usage_daily: the rollup, written by the store only.
('usage_daily', 'select', 'owner', 'allowed', 'their usage', $$select 1 from public.usage_daily where user_id = {A}$$),
('usage_daily', 'insert', 'owner', 'denied', 'a usage row of their own',
    $$insert into public.usage_daily (day, user_id, model, messages, cost_usd) values ('2026-10-01', {A}, 'm', 1, -99999)$$),
('usage_daily', 'update', 'owner', 'denied', 'their usage''s cost', $$update public.usage_daily set cost_usd = -99999 where user_id = {A}$$),
('usage_daily', 'delete', 'owner', 'denied', 'their usage', $$delete from public.usage_daily where user_id = {A}$$),
('usage_daily', 'select', 'other', 'denied', 'B''s usage', $$select 1 from public.usage_daily where user_id = {B}$$),
('usage_daily', 'insert', 'other', 'denied', 'a usage row of B''s',
    $$insert into public.usage_daily (day, user_id, model, messages, cost_usd) values ('2026-10-01', {B}, 'm', 1, 99999)$$),
('usage_daily', 'update', 'other', 'denied', 'B''s usage', $$update public.usage_daily set cost_usd = 99999 where user_id = {B}$$),
('usage_daily', 'delete', 'other', 'denied', 'B''s usage', $$delete from public.usage_daily where user_id = {B}$$),
('usage_daily', 'select', 'anon', 'denied', 'any usage', $$select 1 from public.usage_daily$$),
('usage_daily', 'insert', 'anon', 'denied', 'a usage row',
    $$insert into public.usage_daily (day, model, messages) values ('2026-10-01', 'm', 1)$$),
('usage_daily', 'update', 'anon', 'denied', 'any usage', $$update public.usage_daily set cost_usd = 0$$),
('usage_daily', 'delete', 'anon', 'denied', 'any usage', $$delete from public.usage_daily$$),
('usage_daily', 'select', 'service_role', 'allowed', 'everyone''s usage',
    $$select 1 from public.usage_daily where user_id in ({A}, {B})$$),
('usage_daily', 'insert', 'service_role', 'allowed', 'a usage row',
    $$insert into public.usage_daily (day, user_id, model, messages) values ('2026-10-01', {B}, 'm', 1)$$),
('usage_daily', 'update', 'service_role', 'allowed', 'B''s usage', $$update public.usage_daily set duration_ms = 1 where user_id = {B}$$),
('usage_daily', 'delete', 'service_role', 'allowed', 'B''s usage', $$delete from public.usage_daily where user_id = {B}$$),

-- model_prices: reference data every signed-in user reads; only the service role writes it.
('model_prices', 'select', 'owner', 'allowed', 'the price table', $$select 1 from public.model_prices where id = 'pgtap-price'$$),
('model_prices', 'insert', 'owner', 'denied', 'a price',
    $$insert into public.model_prices (id, provider, model, match, effective_from, input, output)
      values ('forged', 'p', 'm', 'm', '2026-01-01', 0, 0)$$),
('model_prices', 'update', 'owner', 'denied', 'a price', $$update public.model_prices set input = 0 where id = 'pgtap-price'$$),
('model_prices', 'delete', 'owner', 'denied', 'a price', $$delete from public.model_prices where id = 'pgtap-price'$$),
('model_prices', 'select', 'anon', 'denied', 'the price table', $$select 1 from public.model_prices$$),
('model_prices', 'insert', 'anon', 'denied', 'a price',
    $$insert into public.model_prices (id, provider, model, match, effective_from, input, output)
      values ('forged', 'p', 'm', 'm', '2026-01-01', 0, 0)$$),
('model_prices', 'update', 'anon', 'denied', 'a price', $$update public.model_prices set input = 0$$),
('model_prices', 'delete', 'anon', 'denied', 'a price', $$delete from public.model_prices$$),
('model_prices', 'select', 'service_role', 'allowed', 'the price table', $$select 1 from public.model_prices where id = 'pgtap-price'$$),
('model_prices', 'insert', 'service_role', 'allowed', 'a price',
    $$insert into public.model_prices (id, provider, model, match, effective_from, input, output)
      values ('new-price', 'p', 'm', 'm', '2026-01-01', 1, 1)$$),
('model_prices', 'update', 'service_role', 'allowed', 'a price', $$update public.model_prices set input = 3 where id = 'pgtap-price'$$),
('model_prices', 'delete', 'service_role', 'allowed', 'a price', $$delete from public.model_prices where id = 'pgtap-price'$$),

-- conversation_facets: the thread filters' index, written by the store only (triggers).
('conversation_facets', 'select', 'owner', 'allowed', 'their threads'' facets',
    $$select 1 from public.conversation_facets where conversation_id = {convA}$$),
('conversation_facets', 'insert', 'owner', 'denied', 'a facet of their own thread',
    $$insert into public.conversation_facets (conversation_id, kind, value, user_id) values ({convA}, 'model', 'forged', {A})$$),
('conversation_facets', 'update', 'owner', 'denied', 'their thread''s facet',
    $$update public.conversation_facets set value = 'forged' where conversation_id = {convA}$$),
('conversation_facets', 'delete', 'owner', 'denied', 'their thread''s facets',
    $$delete from public.conversation_facets where conversation_id = {convA}$$),
('conversation_facets', 'select', 'other', 'denied', 'B''s facets',
    $$select 1 from public.conversation_facets where conversation_id = {convB}$$),
('conversation_facets', 'insert', 'other', 'denied', 'a facet of B''s thread',
    $$insert into public.conversation_facets (conversation_id, kind, value, user_id) values ({convB}, 'model', 'x', {B})$$),
('conversation_facets', 'update', 'other', 'denied', 'B''s facets', $$update public.conversation_facets set value = 'x' where conversation_id = {convB}$$),
('conversation_facets', 'delete', 'other', 'denied', 'B''s facets', $$delete from public.conversation_facets where conversation_id = {convB}$$),
('conversation_facets', 'select', 'anon', 'denied', 'any facet', $$select 1 from public.conversation_facets$$),
('conversation_facets', 'insert', 'anon', 'denied', 'a facet',
    $$insert into public.conversation_facets (conversation_id, kind, value) values ({convA}, 'model', 'x')$$),
('conversation_facets', 'update', 'anon', 'denied', 'any facet', $$update public.conversation_facets set value = 'x'$$),
('conversation_facets', 'delete', 'anon', 'denied', 'any facet', $$delete from public.conversation_facets$$),
('conversation_facets', 'select', 'service_role', 'allowed', 'every thread''s facets',
    $$select 1 from public.conversation_facets where conversation_id in ({convA}, {convB})$$),
('conversation_facets', 'insert', 'service_role', 'allowed', 'a facet of B''s thread for B',
    $$insert into public.conversation_facets (conversation_id, kind, value, user_id) values ({convB}, 'model', 'x', {B})$$),
('conversation_facets', 'insert', 'service_role', 'denied', 'a facet of A''s on B''s thread (no caller crosses owners)',
    $$insert into public.conversation_facets (conversation_id, kind, value, user_id) values ({convB}, 'model', 'x', {A})$$),
('conversation_facets', 'update', 'service_role', 'allowed', 'B''s facets',
    $$update public.conversation_facets set value = value || '-x' where conversation_id = {convB}$$),
('conversation_facets', 'delete', 'service_role', 'allowed', 'B''s facets',
    $$delete from public.conversation_facets where conversation_id = {convB}$$),

-- store_meta and blob_sweeps: the server's bookkeeping, no policy, the service role only.
('store_meta', 'select', 'owner', 'denied', 'the bookkeeping', $$select 1 from public.store_meta$$),
('store_meta', 'insert', 'owner', 'denied', 'a key', $$insert into public.store_meta values ('k', 'v')$$),
('store_meta', 'update', 'owner', 'denied', 'a key', $$update public.store_meta set value = 'x'$$),
('store_meta', 'delete', 'owner', 'denied', 'a key', $$delete from public.store_meta$$),
('store_meta', 'select', 'anon', 'denied', 'the bookkeeping', $$select 1 from public.store_meta$$),
('store_meta', 'insert', 'anon', 'denied', 'a key', $$insert into public.store_meta values ('k', 'v')$$),
('store_meta', 'update', 'anon', 'denied', 'a key', $$update public.store_meta set value = 'x'$$),
('store_meta', 'delete', 'anon', 'denied', 'a key', $$delete from public.store_meta$$),
('store_meta', 'select', 'service_role', 'allowed', 'the bookkeeping', $$select 1 from public.store_meta$$),
('store_meta', 'insert', 'service_role', 'allowed', 'a key', $$insert into public.store_meta values ('k', 'v')$$),
('store_meta', 'update', 'service_role', 'allowed', 'a key', $$update public.store_meta set value = 'x'$$),
('store_meta', 'delete', 'service_role', 'allowed', 'a key', $$delete from public.store_meta$$),
('blob_sweeps', 'select', 'owner', 'denied', 'the sweeps', $$select 1 from public.blob_sweeps$$),
('blob_sweeps', 'insert', 'owner', 'denied', 'a claim on their own path',
    $$insert into public.blob_sweeps (storage_path, bucket_name, sweep_id, expires_at)
      values ({pathA}, 'mcp-files', gen_random_uuid(), now() + interval '1 day')$$),
('blob_sweeps', 'update', 'owner', 'denied', 'a claim', $$update public.blob_sweeps set expires_at = now()$$),
('blob_sweeps', 'delete', 'owner', 'denied', 'a claim', $$delete from public.blob_sweeps$$),
('blob_sweeps', 'select', 'anon', 'denied', 'the sweeps', $$select 1 from public.blob_sweeps$$),
('blob_sweeps', 'insert', 'anon', 'denied', 'a claim',
    $$insert into public.blob_sweeps (storage_path, bucket_name, sweep_id, expires_at)
      values ({pathA}, 'mcp-files', gen_random_uuid(), now())$$),
('blob_sweeps', 'update', 'anon', 'denied', 'a claim', $$update public.blob_sweeps set expires_at = now()$$),
('blob_sweeps', 'delete', 'anon', 'denied', 'a claim', $$delete from public.blob_sweeps$$),
('blob_sweeps', 'select', 'service_role', 'allowed', 'the sweeps', $$select 1 from public.blob_sweeps$$),
('blob_sweeps', 'insert', 'service_role', 'allowed', 'a claim',
    $$insert into public.blob_sweeps (storage_path, bucket_name, sweep_id, expires_at)
      values ({pathA}, 'mcp-files', gen_random_uuid(), now())$$),
('blob_sweeps', 'update', 'service_role', 'allowed', 'a claim', $$update public.blob_sweeps set expires_at = now()$$),
('blob_sweeps', 'delete', 'service_role', 'allowed', 'a claim', $$delete from public.blob_sweeps$$),

-- storage.objects in the private bucket: each user's own folder {owner}/...
('storage.objects', 'select', 'owner', 'allowed', 'an object in their folder',
    $$select 1 from storage.objects where bucket_id = 'mcp-files' and name = {pathA}$$),
('storage.objects', 'insert', 'owner', 'allowed', 'an object in their folder',
    $$insert into storage.objects (bucket_id, name) values ('mcp-files', {A} || '/ee/' || {hashNew})$$),
('storage.objects', 'update', 'owner', 'allowed', 'an object in their folder',
    $$update storage.objects set metadata = '{}' where bucket_id = 'mcp-files' and name = {pathA}$$),
('storage.objects', 'delete', 'owner', 'allowed', 'an object in their folder',
    $$delete from storage.objects where bucket_id = 'mcp-files' and name = {pathA}$$),
('storage.objects', 'select', 'other', 'denied', 'an object in B''s folder',
    $$select 1 from storage.objects where name = {pathB}$$),
('storage.objects', 'insert', 'other', 'denied', 'an object in B''s folder',
    $$insert into storage.objects (bucket_id, name) values ('mcp-files', {B} || '/ee/' || {hashNew})$$),
('storage.objects', 'insert', 'other', 'denied', 'an object outside any user''s folder',
    $$insert into storage.objects (bucket_id, name) values ('mcp-files', 'shared/ee/' || {hashNew})$$),
('storage.objects', 'update', 'other', 'denied', 'an object in B''s folder',
    $$update storage.objects set metadata = '{}' where name = {pathB}$$),
('storage.objects', 'update', 'other', 'denied', 'their object moved into B''s folder',
    $$update storage.objects set name = {B} || '/ee/' || {hashNew} where name = {pathA}$$),
('storage.objects', 'delete', 'other', 'denied', 'an object in B''s folder', $$delete from storage.objects where name = {pathB}$$),
('storage.objects', 'select', 'anon', 'denied', 'any object', $$select 1 from storage.objects$$),
('storage.objects', 'insert', 'anon', 'denied', 'an object',
    $$insert into storage.objects (bucket_id, name) values ('mcp-files', {A} || '/ee/' || {hashNew})$$),
('storage.objects', 'update', 'anon', 'denied', 'any object', $$update storage.objects set metadata = '{}'$$),
('storage.objects', 'delete', 'anon', 'denied', 'any object', $$delete from storage.objects$$),
('storage.objects', 'select', 'service_role', 'allowed', 'every object',
    $$select 1 from storage.objects where name in ({pathA}, {pathB})$$),
('storage.objects', 'insert', 'service_role', 'allowed', 'an object in B''s folder',
    $$insert into storage.objects (bucket_id, name) values ('mcp-files', {B} || '/ee/' || {hashNew})$$),
('storage.objects', 'update', 'service_role', 'allowed', 'an object in B''s folder',
    $$update storage.objects set metadata = '{}' where name = {pathB}$$),
('storage.objects', 'delete', 'service_role', 'allowed', 'an object in B''s folder',
    $$delete from storage.objects where name = {pathB}$$);

-- 2. Every function authenticated can call, by A with B's ids (see the list checked below).
create temporary table calls (
    n serial primary key,
    fn text not null,
    stmt text not null
) on commit drop;

insert into calls (fn, stmt) values
('get_conversation', $$select public.get_conversation('thread-b')::text$$),
('get_conversation', $$select public.get_conversation('thread-b', 1)::text$$),
('get_messages', $$select public.get_messages('thread-b')::text$$),
('get_message', $$select public.get_message({msgB})::text$$),
('list_conversations', $$select public.list_conversations()::text$$),
('list_conversations', $$select public.list_conversations(jsonb_build_object('user_id', {B}))::text$$),
('list_conversations', $$select public.list_conversations('{"model": "model-b", "tag": "tag-b"}')::text$$),
('list_conversations', $$select public.list_conversations('{"session_id": "session-b"}', p_order => 'cost')::text$$),
('count_conversations', $$select public.count_conversations(jsonb_build_object('user_id', {B}))::text || ' threads'$$),
('count_conversations', $$select public.count_conversations('{"text": "secret-b"}')::text || ' threads'$$),
('conversation_ids', $$select public.conversation_ids()::text$$),
('search_messages', $$select public.search_messages(p_query => 'swordfish')::text$$),
('search_messages', $$select public.search_messages(p_query => 'swordfish', p_order => 'recent')::text$$),
('search_messages', $$select public.search_messages(p_tsquery => '''secret''', p_continuation_id => 'thread-b')::text$$),
('search_messages', $$select public.search_messages(p_query => 'password', p_model => 'model-b')::text$$),
-- A count shows no row, so a count that includes B's messages is turned into a mark of B's.
('count_search_messages', $$select case public.count_search_messages(p_query => 'swordfish')
    when 2 then 'A''s 2' else 'counted thread-b''s too' end$$),
('count_search_messages', $$select case when public.count_search_messages(p_tsquery => '''secret''',
    p_continuation_id => 'thread-b') > 0 then 'counted thread-b' else 'none' end$$),
('count_search_messages', $$select case when public.count_search_messages(p_query => 'password',
    p_model => 'model-b') > 0 then 'counted model-b' else 'none' end$$),
('get_file', $$select public.get_file({fileB})::text$$),
('get_file', $$select public.get_file({uploadB})::text$$),
('list_files', $$select public.list_files()::text$$),
('list_files', $$select public.list_files(p_continuation_id => 'thread-b')::text$$),
('list_files', $$select public.list_files(p_session_id => 'session-b', p_order => 'size')::text$$),
('list_files', $$select public.list_files(p_unused => true)::text$$),
('file_conversations', $$select public.file_conversations({fileB})::text$$),
('file_conversations', $$select public.file_conversations({uploadB})::text$$),
('find_provider_file', $$select public.find_provider_file({hashB}, 'prov-b', p_user_id => {B})::text$$),
('find_provider_file', $$select public.find_provider_file({hashB}, 'prov-b')::text$$),
('list_provider_files', $$select public.list_provider_files()::text$$),
('upload_activity', $$select public.upload_activity('session-b', '2000-01-01')::text$$),
('usage_report', $$select public.usage_report()::text$$),
('usage_report', $$select public.usage_report(array['user_id', 'model', 'provider', 'tool_name', 'day'])::text$$),
('usage_report', $$select public.usage_report(p_model => 'model-b')::text$$),
('storage_usage_report', $$select public.storage_usage_report(array['user_id', 'mime_type', 'day'])::text$$),
('facets', $$select public.facets()::text$$),
('list_model_prices', $$select public.list_model_prices()::text$$),
('price_message', $$select public.price_message('model-b', now(), 7777, 0, 0, 0, 0)::text || ' (priced)'$$),
('caller_is_server', $$select public.caller_is_server()::text$$),
('list_budgets', $$select public.list_budgets()::text$$),
('tag_costs', $$select public.tag_costs(array['tag-b'], '2026-01-01', '2026-12-31')::text$$),
('thread_costs', $$select public.thread_costs('2026-10-01', '2026-11-30')::text$$),
('top_threads', $$select public.top_threads('2026-11-01', 'model', 'model-b', 10)::text$$),
('top_threads', $$select public.top_threads('2026-11-01', 'tool_name', 'tool-b', 10)::text$$),
('budget_json', $$select public.budget_json(null::public.budgets)::text$$),
('upload_redactions', $$select public.upload_redactions(array['thread-a', 'thread-b'])::text$$),
-- Writers, aimed at B's rows: they must raise or leave B's rows as they were.
('start_conversation', $$select public.start_conversation('thread-b')::text$$),
('start_conversation', $$select public.start_conversation('thread-new', p_user_id => {B})::text$$),
('update_conversation', $$select public.update_conversation('thread-b', '{"title": "mine", "status": "deleted"}')::text$$),
('lock_conversation', $$select to_jsonb(public.lock_conversation('thread-b', now()))::text$$),
('record_message', $$select public.record_message('thread-b', {new}, 'user', 'planted')::text$$),
('record_message', $$select public.record_message('thread-a', {msgB}, 'user', 'retry of B''s id')::text$$),
('record_message', $$select public.record_message('thread-b', {msgB}, 'user', 'retry of B''s id')::text$$),
('record_messages', $$select public.record_messages(jsonb_build_array(jsonb_build_object(
    'continuation_id', 'thread-b', 'id', {new}, 'role', 'user', 'content', 'planted', 'created_at', now(),
    'input_tokens', 0, 'cached_input_tokens', 0, 'cache_write_tokens', 0, 'output_tokens', 0,
    'reasoning_tokens', 0, 'unpriced', false)))::text$$),
('put_file_metadata', $$select public.put_file_metadata({fileB}, {new}, {hashB}, 5, {pathB}, 'mcp-files',
    'text/plain', 'stolen.txt')::text$$),
('put_file_metadata', $$select public.put_file_metadata({new}, {new2}, {hashB}, 5, {pathB}, 'mcp-files',
    'text/plain', 'stolen.txt')::text$$),
('put_file_metadata', $$select public.put_file_metadata({new}, {new2}, {hashNew}, 5, {A} || '/ee/' || {hashNew},
    'mcp-files', 'text/plain', 'x.txt', p_continuation_id => 'thread-b')::text$$),
('put_file_metadata', $$select public.put_file_metadata({new}, {new2}, {hashNew}, 5, {B} || '/ee/' || {hashNew},
    'mcp-files', 'text/plain', 'x.txt', p_user_id => {B})::text$$),
('link_file', $$select public.link_file('thread-a', {fileB})::text$$),
('link_file', $$select public.link_file('thread-a', {uploadB})::text$$),
('link_file', $$select public.link_file('thread-b', {fileA})::text$$),
('record_provider_file', $$select public.record_provider_file({new}, {fileB}, 'prov-b', 'mine')::text$$),
('record_provider_file', $$select public.record_provider_file({provB}, {fileA}, 'prov-b', 'mine')::text$$),
('set_budget', $$select public.set_budget({budgetB}, 'model', 'day', 1, 'model-b')::text$$),
('set_budget', $$select public.set_budget({new}, 'model', 'day', 1, 'model-z', p_user_id => {B})::text$$),
('delete_budget', $$select public.delete_budget({budgetB})::text$$),
-- Pure helpers: they format or build from what they are given, and read no table.
('message_json', $$select public.message_json(null::public.messages, 'thread-x')::text$$),
('file_json', $$select public.file_json(null::public.files, null::public.file_uploads, 'thread-x')::text$$),
('conversations_where', $$select public.conversations_where(jsonb_build_object('user_id', {B}))$$);

select plan(
    (select count(*)::integer from cases)   -- the matrix
    + 5                                     -- the matrix covers every table; RLS, policies, grants
    + (select count(*)::integer from calls) -- every function with B's ids
    + 1                                     -- blob_sweep_until with B's path
    + 2                                     -- every function authenticated may call is covered; anon none
    + 7                                     -- A's own rows come back (the checks above are not vacuous)
    + 2                                     -- ... and A's own budgets and thread costs
    + 1                                     -- security definer allow-list
);

-- ---------------------------------------------------------------------------------------
-- 1. The matrix

select set_eq(
    $$select 'public.' || c.relname from pg_catalog.pg_class c
      where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
        and not exists (select 1 from pg_catalog.pg_depend d where d.objid = c.oid and d.deptype = 'e')
      union all select 'storage.objects'$$,
    $$select distinct case when tbl like '%.%' then tbl else 'public.' || tbl end from pg_temp.cases$$,
    'the matrix covers every table in public, and storage.objects'
);
select is_empty(
    $$select c.relnamespace::regnamespace::text || '.' || c.relname from pg_catalog.pg_class c
      where (c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
             or c.oid in ('storage.objects'::regclass, 'storage.buckets'::regclass))
        and not c.relrowsecurity$$,
    'row level security is on for every table in public, storage.objects and storage.buckets'
);
select is_empty(
    $$select tablename || ': ' || policyname || ' to ' || roles::text from pg_catalog.pg_policies
      where schemaname = 'public' and roles <> '{authenticated}'$$,
    'every policy in public is to authenticated only'
);
select is_empty(
    $$select table_name || ' ' || privilege_type from information_schema.role_table_grants
      where grantee in ('anon', 'PUBLIC') and table_schema = 'public'$$,
    'anon (and PUBLIC) hold no privilege on any table in public'
);
select is_empty(
    $$select table_schema || '.' || table_name || ' to ' || grantee from information_schema.role_table_grants
      where grantee in ('anon', 'authenticated', 'PUBLIC') and table_schema = 'public'
        and privilege_type in ('TRUNCATE', 'REFERENCES', 'TRIGGER')$$,
    'authenticated may not TRUNCATE (which RLS does not guard), reference or trigger any table in public'
);

create function pg_temp.run_matrix() returns setof text language plpgsql as $$
declare
    r record;
begin
    for r in select * from pg_temp.cases order by n loop
        return next matches(pg_temp.attempt(r.actor, r.stmt), '^' || r.expect,
            format('%s %s by %s: %s is %s', r.tbl, r.op,
                case r.actor when 'owner' then 'the owner' when 'other' then 'another user' else r.actor end,
                r.what, r.expect));
    end loop;
end
$$;
select * from pg_temp.run_matrix();

-- ---------------------------------------------------------------------------------------
-- 2. The functions, by A with B's ids

create function pg_temp.run_calls() returns setof text language plpgsql as $$
declare
    r record;
begin
    for r in select * from pg_temp.calls order by n loop
        return next is(pg_temp.as_a(r.stmt), 'no leak, B unchanged',
            format('%s with B''s ids returns and changes nothing of B''s: %s', r.fn,
                   left(regexp_replace(pg_temp.q(r.stmt), '\s+', ' ', 'g'), 160)));
    end loop;
end
$$;
select * from pg_temp.run_calls();

-- A lease's time is not marked as B's: ask directly.
select is(pg_temp.a_result($$select public.blob_sweep_until({sweepB})::text$$), 'null',
    'blob_sweep_until tells a signed-in user nothing about a path in another user''s folder');

-- Every function authenticated may execute is exercised above (a new one must be added here,
-- with its cross-owner calls); anon may execute none. Trigger functions cannot be called.
select set_eq(
    $$select p.proname::text from pg_catalog.pg_proc p
      where p.pronamespace = 'public'::regnamespace and p.prorettype <> 'pg_catalog.trigger'::regtype
        and has_function_privilege('authenticated', p.oid, 'execute')
        and not exists (select 1 from pg_catalog.pg_depend d where d.objid = p.oid and d.deptype = 'e')$$,
    -- uuid_v7 (the id columns' default) takes no argument and reads no table.
    $$select distinct fn from pg_temp.calls union all select 'blob_sweep_until' union all select 'uuid_v7'$$,
    'every function in public that authenticated may execute is called with another user''s ids'
);
select is_empty(
    $$select p.oid::regprocedure::text from pg_catalog.pg_proc p
      where p.pronamespace = 'public'::regnamespace and p.prorettype <> 'pg_catalog.trigger'::regtype
        and has_function_privilege('anon', p.oid, 'execute')
        and not exists (select 1 from pg_catalog.pg_depend d where d.objid = p.oid and d.deptype = 'e')$$,
    'anon may execute no function in public'
);

-- The same functions do return A's own rows.
select ok(pg_temp.a_result($$select public.get_conversation('thread-a')::text$$) like '%secret-a title%',
    'get_conversation returns the caller''s own thread');
select ok(pg_temp.a_result($$select public.search_messages(p_query => 'swordfish')::text$$) like '%thread-a%',
    'search_messages finds the caller''s own messages');
select ok(pg_temp.a_result($$select public.get_file({fileA})::text$$) like '%secret-a.txt%',
    'get_file returns the caller''s own file');
select ok(pg_temp.a_result($$select public.file_conversations({fileA})::text$$) like '%thread-a%',
    'file_conversations returns the caller''s own threads');
select is(pg_temp.a_result($$select (public.usage_report() -> 0 ->> 5) || ' messages, ' || (public.usage_report() -> 0 ->> 6) || ' input tokens'$$),
    '2 messages, 2000 input tokens', 'usage_report sums the caller''s own usage only');
select ok(pg_temp.a_result($$select public.list_provider_files()::text$$) like '%prov-a-file%',
    'list_provider_files lists the caller''s own provider uploads');
select ok(pg_temp.a_result($$select public.upload_redactions(array['thread-a', 'thread-b'])::text$$)
        like '{"thread-a": {"a0000000-0000-4000-8000-0000000000d1": %',
    'upload_redactions gives the caller''s own redacted uploads');
select ok(pg_temp.a_result($$select public.list_budgets()::text$$) like '%model-a%',
    'list_budgets lists the caller''s own budgets');
select ok(pg_temp.a_result($$select public.tag_costs(array['tag-a', 'tag-b'], '2026-11-01', '2026-11-01')::text$$)
        ~ '^\{"tag-a": 0\.0[0-9]*\}$',
    'tag_costs sums the caller''s own tagged threads');

-- ---------------------------------------------------------------------------------------
-- 3. Security definer functions in public: each one bypasses row level security, so each is
-- listed here with the reason it must be one. Anything else is security invoker.
select set_eq(
    $$select p.pronamespace::regnamespace::text || '.' || p.proname from pg_catalog.pg_proc p
      where p.prosecdef and p.pronamespace = 'public'::regnamespace
        and not exists (select 1 from pg_catalog.pg_depend d where d.objid = p.oid and d.deptype = 'e')$$,
    $$values
        -- blob_sweeps is the server's table (no policy); a signed-in uploader (put_file_metadata,
        -- which is invoker) must still learn whether a prune is deleting the bytes at the path it
        -- stores to. It returns one timestamp or null, and only for the caller's own folder
        -- (checked above).
        ('public.blob_sweep_until'),
        -- Writes a message with its seq, the thread's totals and the daily rollup, which
        -- authenticated may not write directly (matrix above); it checks the thread's owner
        -- itself and prices signed-in callers' messages from model_prices (the functions with
        -- B's ids above, and 20_ownership_and_totals.sql).
        ('public.record_message'),
        -- The same for many turns at once, set-based (20261130130000_persistence_set_based_writes):
        -- the same checks and prices as record_message (the functions with B's ids above, and
        -- 20_ownership_and_totals.sql).
        ('public.record_messages'),
        -- Trigger of conversations: a new thread's tool as its facet. Signed-in users create
        -- threads (start_conversation) but may not write facets (matrix above); it writes only
        -- the inserted thread's own tool, with the thread's owner.
        ('public.conversation_facets_of_threads'),
        -- The migration history is in supabase_migrations, a schema the API roles cannot read;
        -- only the service role may execute it (anon and authenticated may not: checked above)
        -- and it returns versions and names only.
        ('public.applied_migrations')$$,
    'the security definer functions are exactly the allow-list'
);

select * from finish();
rollback;
