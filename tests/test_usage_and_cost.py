"""Usage normalisation into five buckets, cost per message, rollups and reprice."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from conftest import assert_server_only, server_side, signed_in

import persistence
from persistence import Usage, ValidationError, normalise_usage
from persistence.pricing import Price, PriceTable, load_price_file

T0 = datetime(2026, 6, 10, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # OpenAI Chat: cached inside prompt, reasoning inside completion.
        (
            {
                "prompt_tokens": 1000,
                "completion_tokens": 500,
                "total_tokens": 1500,
                "prompt_tokens_details": {"cached_tokens": 400},
                "completion_tokens_details": {"reasoning_tokens": 200},
            },
            Usage(600, 400, 0, 300, 200),
        ),
        # Kimi: top-level cached_tokens, part of prompt_tokens.
        ({"prompt_tokens": 19, "completion_tokens": 5, "cached_tokens": 10}, Usage(9, 10, 0, 5, 0)),
        # GLM: OpenAI's details shape (2000 input = 1200 cache hits + 800 new).
        (
            {"prompt_tokens": 2000, "completion_tokens": 100, "prompt_tokens_details": {"cached_tokens": 1200}},
            Usage(800, 1200, 0, 100, 0),
        ),
        # DeepSeek: hit + miss = prompt.
        (
            {
                "prompt_tokens": 100,
                "completion_tokens": 7,
                "prompt_cache_hit_tokens": 60,
                "prompt_cache_miss_tokens": 40,
            },
            Usage(40, 60, 0, 7, 0),
        ),
        # OpenAI Responses API.
        (
            {
                "input_tokens": 300,
                "output_tokens": 90,
                "input_tokens_details": {"cached_tokens": 100},
                "output_tokens_details": {"reasoning_tokens": 30},
            },
            Usage(200, 100, 0, 60, 30),
        ),
        # Anthropic: cache traffic beside input_tokens.
        (
            {
                "input_tokens": 50,
                "cache_read_input_tokens": 1000,
                "cache_creation_input_tokens": 200,
                "output_tokens": 80,
            },
            Usage(50, 1000, 200, 80, 0),
        ),
        (
            {
                "input_tokens": 5,
                "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
                "output_tokens": 1,
            },
            Usage(5, 0, 30, 1, 0),
        ),
        # Gemini REST (camelCase): thoughts and tool-use prompt on top.
        (
            {
                "promptTokenCount": 1000,
                "cachedContentTokenCount": 250,
                "candidatesTokenCount": 100,
                "thoughtsTokenCount": 40,
                "toolUsePromptTokenCount": 10,
            },
            Usage(760, 250, 0, 100, 40),
        ),
        # google-genai SDK (snake_case), wrapped as a response's usage_metadata.
        (
            {"usage_metadata": {"prompt_token_count": 10, "candidates_token_count": 3, "thoughts_token_count": 2}},
            Usage(10, 0, 0, 3, 2),
        ),
        # zen-mcp-server's own shape, and a whole API response wrapping usage.
        ({"input_tokens": 120, "output_tokens": 30, "total_tokens": 150}, Usage(120, 0, 0, 30, 0)),
        ({"id": "chatcmpl-1", "usage": {"prompt_tokens": 3, "completion_tokens": 4}}, Usage(3, 0, 0, 4, 0)),
        # Our canonical buckets, and integral floats.
        (
            {
                "input_tokens": 1,
                "cached_input_tokens": 2,
                "cache_write_tokens": 3,
                "output_tokens": 4.0,
                "reasoning_tokens": 5,
            },
            Usage(1, 2, 3, 4, 5),
        ),
    ],
)
def test_every_provider_shape_lands_in_five_buckets(raw: dict[str, object], expected: Usage) -> None:
    usage, recognised = normalise_usage(raw)
    assert recognised and usage == expected


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"prompt_tokens": -5, "completion_tokens": 1}, "usage.prompt_tokens"),
        ({"prompt_tokens": "12", "completion_tokens": 1}, "usage.prompt_tokens"),
        ({"prompt_tokens": 1.5, "completion_tokens": 1}, "usage.prompt_tokens"),
        ({"prompt_tokens": True, "completion_tokens": 1}, "usage.prompt_tokens"),
        ({"prompt_tokens": 10, "completion_tokens": 1, "cached_tokens": 11}, "usage.cached_tokens"),
        (
            {"input_tokens": 5, "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 3}},
            "usage.output_tokens_details.reasoning_tokens",
        ),
        ({"prompt_tokens": 1, "completion_tokens": 1, "prompt_tokens_details": 7}, "usage.prompt_tokens_details"),
    ],
)
def test_bad_counts_are_refused_naming_the_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        normalise_usage(raw)
    assert info.value.field == field


def test_unknown_shape_is_kept_and_counted_as_unpriced(store: persistence.Store) -> None:
    raw = {"tokens_in": 10, "tokens_out": 3}
    assert normalise_usage(raw) == (Usage(), False)
    m = store.record_message("t-odd", "assistant", "x", model="glm-4.6", usage=raw, created_at=T0)
    assert m.cost_usd is None
    assert m.metadata["usage_raw"] == raw
    conv = store.get_conversation("t-odd")
    assert conv is not None and conv.unpriced_messages == 1
    assert int(store.usage(())["unpriced_messages"].iloc[0]) == 1


def test_cost_uses_each_bucket_price(store: persistence.Store) -> None:
    # claude-sonnet-4-5: input 3.00, cache read 0.30, cache write 3.75, output 15.00 per 1M.
    m = store.record_message(
        "t-cost",
        "assistant",
        "x",
        model="claude-sonnet-4-5-20250929",
        usage={
            "input_tokens": 1000,
            "cache_read_input_tokens": 10_000,
            "cache_creation_input_tokens": 2000,
            "output_tokens": 500,
        },
        created_at=T0,
    )
    assert m.cost_usd == pytest.approx((1000 * 3 + 10_000 * 0.3 + 2000 * 3.75 + 500 * 15) / 1e6)
    assert m.price_id == "anthropic/claude-sonnet-4-5-20250929@2025-09-29"
    # gpt-5: reasoning tokens are billed at the output price.
    m = store.record_message(
        "t-cost",
        "assistant",
        "y",
        model="openai/gpt-5",
        usage={"prompt_tokens": 100, "completion_tokens": 50, "completion_tokens_details": {"reasoning_tokens": 30}},
        created_at=T0,
    )
    price = store.prices.lookup("gpt-5", T0)
    assert price is not None
    assert m.cost_usd == pytest.approx((100 * price.input + 50 * price.output) / 1e6)
    assert m.provider == "openai"  # inferred from the price table when not given


def test_a_tiny_cost_is_not_rounded_away(store: persistence.Store) -> None:
    m = store.record_message(
        "t-tiny",
        "assistant",
        "x",
        model="glm-4.5-air",
        usage={"prompt_tokens": 100, "completion_tokens": 10},
        created_at=T0,
    )
    assert m.cost_usd == pytest.approx((100 * 0.2 + 10 * 1.1) / 1e6)  # $0.000031
    assert m.cost_usd is not None and m.cost_usd > 0


def test_unknown_model_costs_null_not_zero(store: persistence.Store) -> None:
    m = store.record_message(
        "t-unk",
        "assistant",
        "x",
        model="llama-3.1-8b-local",
        usage={"prompt_tokens": 10, "completion_tokens": 5},
        created_at=T0,
    )
    assert m.cost_usd is None and m.price_id is None
    user = store.record_message("t-unk", "user", "no usage, nothing to price", created_at=T0)
    assert user.cost_usd is None
    conv = store.get_conversation("t-unk")
    assert conv is not None and conv.unpriced_messages == 1  # the user turn had nothing to price
    by_model = store.usage(("model",)).set_index("model")
    assert by_model.loc["llama-3.1-8b-local", "unpriced_messages"] == 1
    assert by_model.loc["llama-3.1-8b-local", "cost_usd"] == 0


def test_price_in_force_on_the_day_and_long_context_tiers() -> None:
    table = PriceTable(load_price_file())
    before = table.lookup("deepseek-chat", datetime(2025, 9, 20, tzinfo=UTC))
    after = table.lookup("deepseek-chat", datetime(2026, 5, 1, tzinfo=UTC))
    assert before is not None and after is not None
    assert (before.input, after.input) == (0.56, 0.14)
    assert table.lookup("deepseek-chat", datetime(2025, 1, 1, tzinfo=UTC)) is None  # before any known price
    pro = table.lookup("gemini-2.5-pro", T0)
    assert pro is not None
    small = pro.cost(Usage(input_tokens=100_000, output_tokens=1000))
    large = pro.cost(Usage(input_tokens=300_000, output_tokens=1000))
    assert small == pytest.approx((100_000 * 1.25 + 1000 * 10) / 1e6)
    assert large == pytest.approx((300_000 * 2.5 + 1000 * 15) / 1e6)
    kimi = table.lookup("kimi-latest", T0)
    assert kimi is not None
    assert kimi.cost(Usage(input_tokens=40_000)) == pytest.approx(40_000 * 2.0 / 1e6)  # second tier


def test_rollup_equals_group_by_over_messages(store: persistence.Store) -> None:
    if signed_in(store):  # the demo history is imported, which is the server's only
        assert_server_only(lambda: store.import_records([]), "import")
        return
    from persistence.demo import generate

    generate(store, 40, seed=7, end=date(2026, 6, 1), weeks=2, files=False)
    rollup = store.usage(("day", "model"))
    rows = []
    for conv in store.list_conversations(limit=1000):
        full = store.get_conversation(conv.continuation_id)
        assert full is not None
        for m in full.messages:
            rows.append(
                {
                    "day": pd.Timestamp(m.created_at.date()),
                    "model": m.model,
                    "messages": 1,
                    "total_tokens": m.tokens,
                    "cost_usd": m.cost_usd or 0.0,
                    "unpriced": int(m.cost_usd is None and m.tokens > 0),
                }
            )
    direct = pd.DataFrame(rows).groupby(["day", "model"], dropna=False).sum().reset_index()
    merged = rollup.merge(direct, on=["day", "model"], how="outer", suffixes=("", "_direct"))
    assert len(merged) == len(rollup) == len(direct)
    assert (merged["messages"] == merged["messages_direct"]).all()
    assert (merged["total_tokens"] == merged["total_tokens_direct"]).all()
    assert merged["cost_usd"].to_numpy() == pytest.approx(merged["cost_usd_direct"].to_numpy())
    assert (merged["unpriced_messages"] == merged["unpriced"]).all()


def test_usage_groupings_and_periods(store: persistence.Store) -> None:
    for day in range(10):  # one priced answer a day, Mon 2026-06-01 .. Wed 2026-06-10
        store.record_message(
            f"t-{day}",
            "assistant",
            "a",
            model="glm-4.6" if day % 2 else "kimi-k2-0905-preview",
            provider="glm" if day % 2 else "kimi",
            tool_name="chat" if day < 5 else "debug",
            usage={"prompt_tokens": 1000, "completion_tokens": 100},
            created_at=datetime(2026, 6, 1, 12, tzinfo=UTC) + timedelta(days=day),
        )
    weeks = store.usage(("week",))
    assert list(weeks["week"].dt.strftime("%Y-%m-%d")) == ["2026-06-01", "2026-06-08"]
    assert list(weeks["messages"]) == [7, 3]
    months = store.usage(["month", "provider"])
    assert set(months["provider"]) == {"glm", "kimi"} and set(months["month"].dt.day) == {1}
    tools = store.usage(("tool",)).set_index("tool_name")["messages"].to_dict()
    assert tools == {"chat": 5, "debug": 5}
    # A day counts when it overlaps [since, until).
    part = store.usage((), since=datetime(2026, 6, 3, 18, tzinfo=UTC), until=datetime(2026, 6, 5, tzinfo=UTC))
    assert int(part["messages"].iloc[0]) == 2
    only_glm = store.usage(("day",), model="glm-4.6")
    assert int(only_glm["messages"].sum()) == 5
    empty = store.usage(("day", "model"), since=datetime(2030, 1, 1, tzinfo=UTC))
    assert list(empty.columns)[:2] == ["day", "model"] and empty.empty
    with pytest.raises(ValidationError, match="group_by"):
        store.usage(("colour",))
    with pytest.raises(ValidationError, match="group_by"):
        store.usage(("day", "week"))


def test_reprice_after_a_price_change(store: persistence.Store, tmp_path: Path) -> None:
    m = store.record_message(
        "t-rp",
        "assistant",
        "x",
        model="acme-1",
        usage={"prompt_tokens": 1_000_000, "completion_tokens": 0},
        created_at=T0,
    )
    assert m.cost_usd is None
    assert int(store.usage(())["unpriced_messages"].iloc[0]) == 1
    server_side(store).add_prices(
        [
            Price(
                provider="acme",
                model="acme-1",
                match="^acme-1$",
                effective_from=date(2026, 1, 1),
                input=2.0,
                output=8.0,
            )
        ]
    )
    if signed_in(store):  # reprice rewrites every owner's costs: the server's only
        assert_server_only(store.reprice, "reprice")
        return
    result = store.reprice()
    assert (result.messages_changed, result.unpriced_before, result.unpriced_after) == (1, 1, 0)
    assert result.cost_after - result.cost_before == pytest.approx(2.0)
    repriced = store.get_message(m.id)
    assert repriced is not None and repriced.cost_usd == pytest.approx(2.0)
    assert repriced.price_id == "acme/acme-1@2026-01-01"
    conv = store.get_conversation("t-rp")
    assert conv is not None and conv.cost_usd == pytest.approx(2.0) and conv.unpriced_messages == 0
    totals = store.usage(())
    assert totals["cost_usd"].iloc[0] == pytest.approx(2.0) and int(totals["unpriced_messages"].iloc[0]) == 0
    # A price change from a later date applies only to later messages.
    later = store.record_message(
        "t-rp",
        "assistant",
        "y",
        model="acme-1",
        usage={"prompt_tokens": 1_000_000, "completion_tokens": 0},
        created_at=T0 + timedelta(days=30),
    )
    store.add_prices(
        [
            Price(
                provider="acme",
                model="acme-1",
                match="^acme-1$",
                effective_from=(T0 + timedelta(days=10)).date(),
                input=1.0,
                output=4.0,
            )
        ]
    )
    result = store.reprice()
    assert result.messages_changed == 1
    assert store.get_message(later.id).cost_usd == pytest.approx(1.0)  # type: ignore[union-attr]
    assert store.get_message(m.id).cost_usd == pytest.approx(2.0)  # type: ignore[union-attr]
    assert store.reprice().messages_changed == 0  # idempotent


def test_shipped_price_table_is_valid_and_unambiguous() -> None:
    prices = load_price_file()
    assert len(prices) >= 70 and all(p.source for p in prices)
    table = PriceTable(prices)
    ids = {p.id for p in prices}
    assert len(ids) == len(prices)
    # The table's regexes are mutually exclusive: each canonical id matches one model.
    for p in prices:
        matches = {c.model for c in table._find_candidates(p.model)}
        assert matches == {p.model}, p.model
    assert table.lookup("moonshot/kimi-k2-0905-preview", T0) is not None
    assert table.lookup("zai/glm-4.6", T0) is not None
