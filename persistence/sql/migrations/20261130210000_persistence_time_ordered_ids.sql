-- Time-ordered ids for new threads and messages (UUIDv7, RFC 9562).
--
-- A random (v4) id puts each new row's entry on a random leaf page of every index that holds
-- the id: messages_pkey, conversations_pkey, conversations_id_owner, and the indexes led by a
-- thread's id (messages_conversation_seq, messages_model_used, conversation_facets). At a
-- million messages those pages are mostly cold, so each write reads them in and, the first
-- time after a checkpoint, logs a full page image of each. A v7 id starts with the time, so
-- new rows (and the threads being written to, which are the recent ones) share the
-- right-hand pages. Measured on copies of the million-message store, record_message with v4
-- then v7 ids, alternating: 17.7-17.8 -> 8.1-8.2 KiB of WAL per message (what a replica, a
-- backup and the disk take); the time per call did not move on the 2-core test machine,
-- whose WAL is not its bottleneck (bench/README.md). The package makes message ids and its
-- own thread ids the same way (persistence.store.new_id); these defaults cover threads
-- created here (lock_conversation, record_messages, direct inserts by the server).
--
-- Ids already stored keep their value: an id is an id, whatever its version.

create or replace function public.uuid_v7()
returns uuid
language sql
volatile
parallel safe
set search_path = ''
as $$
    -- 48 bits of Unix milliseconds, then the last 10 bytes of a random v4 id with its version
    -- nibble made 7 (0100 -> 0111); its variant bits are kept. No SET clause (it runs once per
    -- inserted row, as the per-row helpers in supabase/tests/30_bounded.sql).
    select encode(
        set_bit(set_bit(
            substr(int8send(floor(date_part('epoch', clock_timestamp()) * 1000)::bigint), 3, 6)
            || substr(uuid_send(gen_random_uuid()), 7, 10),
            52, 1), 53, 1),
        'hex')::uuid
$$;

comment on function public.uuid_v7() is
    'A new UUIDv7 (time-ordered): the default id of new threads and messages.';

-- A column default runs with the inserting role's rights: a signed-in user may insert a
-- thread of their own (policy conversations_insert), so authenticated may execute it. It
-- takes nothing and reads nothing: the time and random bits. anon gets nothing.
revoke all on function public.uuid_v7() from public, anon;
grant execute on function public.uuid_v7() to authenticated, service_role;

alter table public.conversations alter column id set default public.uuid_v7();
alter table public.messages alter column id set default public.uuid_v7();
