-- The plan's three tables (PLAN.md, 2025-10-15: conversations, messages, files), as its two
-- migrations created them.
--
-- A new database and one that already ran the plan's migrations take the same path from here:
-- everything is created only where missing, and the next migration upgrades these tables to
-- the data model in place, keeping their rows. The plan's "for all using (true)" policies are
-- not recreated (they open every row to every role, anon included); the next migration drops
-- them where they exist. Its indexes that later ones make redundant are left out too.

create or replace function public.update_updated_at_column()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
    new.updated_at = now();
    return new;
end;
$$;

create table if not exists public.conversations (
    id uuid primary key default gen_random_uuid(),
    created_at timestamptz default now(),
    updated_at timestamptz default now(),
    continuation_id text unique not null,
    session_id text,
    title text,
    summary text,
    model_used text,
    total_tokens integer default 0,
    total_cost decimal(10, 4) default 0,
    status text default 'active',
    tags text[],
    metadata jsonb
);

create table if not exists public.messages (
    id uuid primary key default gen_random_uuid(),
    created_at timestamptz default now(),
    conversation_id uuid references public.conversations (id) on delete cascade,
    role text not null,
    content text not null,
    model_used text,
    tokens integer,
    cost decimal(10, 4),
    duration_ms integer,
    metadata jsonb
);

create table if not exists public.files (
    id uuid primary key default gen_random_uuid(),
    created_at timestamptz default now(),
    updated_at timestamptz default now(),
    filename text not null,
    storage_path text not null unique,
    bucket_name text not null default 'mcp-files',
    file_size bigint,
    mime_type text,
    file_hash text,
    user_id uuid,
    session_id text,
    conversation_id uuid,
    tags text[],
    description text,
    metadata jsonb
);

create index if not exists idx_conversations_session_id on public.conversations (session_id);
create index if not exists idx_messages_created_at on public.messages (created_at);
create index if not exists idx_files_session_id on public.files (session_id);
create index if not exists idx_files_conversation_id on public.files (conversation_id);
create index if not exists idx_files_created_at on public.files (created_at desc);
create index if not exists idx_files_tags on public.files using gin (tags);

drop trigger if exists update_files_updated_at on public.files;
create trigger update_files_updated_at
    before update on public.files
    for each row execute function public.update_updated_at_column();

alter table public.conversations enable row level security;
alter table public.messages enable row level security;
alter table public.files enable row level security;
