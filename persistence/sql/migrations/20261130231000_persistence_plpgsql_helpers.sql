-- message_json and message_unpriced in PL/pgSQL: the same results, no parse per call.
--
-- As SQL-language functions with a SET clause they cannot be inlined, so each query that
-- called them parsed and planned their body again: record_message once for the message it
-- returns, every insert into messages once for the generated column unpriced. In PL/pgSQL
-- the expression is prepared once per session. Measured with pgbench (prepared, one client)
-- calling record_message on a copy of the million-message store: 0.94-1.03 -> 0.82-0.98 ms a
-- call, alternating three times. Per row in a query (get_conversation, search) unchanged or
-- cheaper: 100,000 message_json calls 3.1-4.0 -> 3.1-3.2 s; 300,000 message_unpriced 1.9 ->
-- 1.4 s. Bodies, volatility, settings and grants are unchanged; stored values do not move.

create or replace function public.message_unpriced(p_cost numeric, p_tokens bigint, p_metadata jsonb)
returns boolean
language plpgsql
immutable
set search_path = ''
as $$
begin
    return coalesce(p_cost is null and (p_tokens > 0 or p_metadata ? 'usage_raw'), false);
end;
$$;

create or replace function public.message_json(m public.messages, p_continuation_id text)
returns jsonb
language plpgsql
stable
set search_path = ''
as $$
begin
    return jsonb_build_object(
        'id', m.id, 'conversation_id', m.conversation_id, 'continuation_id', p_continuation_id,
        'seq', m.seq, 'role', m.role, 'content', m.content, 'created_at', m.created_at,
        'tool_name', m.tool_name, 'provider', m.provider, 'model_used', m.model_used, 'tokens', m.tokens,
        'input_tokens', m.input_tokens, 'cached_input_tokens', m.cached_input_tokens,
        'cache_write_tokens', m.cache_write_tokens, 'output_tokens', m.output_tokens,
        'reasoning_tokens', m.reasoning_tokens, 'cost', m.cost, 'price_id', m.price_id,
        'duration_ms', m.duration_ms, 'files', m.files, 'images', m.images, 'metadata', m.metadata,
        'user_id', m.user_id, 'redacted_at', m.redacted_at);
end;
$$;
