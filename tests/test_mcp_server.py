"""The history MCP server, driven by the official MCP SDK client over stdio."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

import persistence
from persistence.demo import generate


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('mcp') / 'history.db'}"
    store = persistence.open_store(url)
    generate(store, 40, seed=11, end=date(2026, 11, 1), files=False)
    store.record_message("known-thread", "user", "How do I tune the zebra cache eviction?", tool_name="chat")
    store.record_message(
        "known-thread",
        "assistant",
        "Use an LRU with a zebra-specific TTL.",
        model="glm-4.6",
        usage={"prompt_tokens": 50, "completion_tokens": 20},
    )
    store.close()
    return url


def run_session(url: str, calls: list[tuple[str, dict[str, Any]]]) -> tuple[list[Any], list[Any]]:
    async def main() -> tuple[list[Any], list[Any]]:
        params = StdioServerParameters(command=sys.executable, args=["-m", "persistence.mcp", "--url", url])
        async with Client(params) as client:
            tools = (await client.list_tools()).tools
            results = [await client.call_tool(name, args) for name, args in calls]
        return tools, results

    return asyncio.run(main())


def test_tools_are_listed_with_descriptions_and_schemas(history: str) -> None:
    tools, _ = run_session(history, [])
    by_name = {t.name: t for t in tools}
    assert set(by_name) == {"search_history", "get_thread", "list_threads", "usage_summary", "budget_status"}
    for tool in tools:
        assert tool.description and len(tool.description) > 40
        assert tool.input_schema["type"] == "object"
        assert tool.annotations is not None and tool.annotations.read_only_hint
    assert by_name["search_history"].input_schema["required"] == ["query"]
    assert by_name["get_thread"].input_schema["required"] == ["continuation_id"]


def test_each_tool_answers_from_the_store(history: str) -> None:
    store = persistence.open_store(history)
    _, (search, thread, listing, usage, missing) = run_session(
        history,
        [
            ("search_history", {"query": "zebra", "limit": 5}),
            ("get_thread", {"continuation_id": "known-thread", "last": 10}),
            ("list_threads", {"limit": 5, "order": "cost"}),
            ("usage_summary", {"group_by": ["model"], "since": "2026-01-01"}),
            ("get_thread", {"continuation_id": "no-such-thread"}),
        ],
    )
    hits = search.structured_content["hits"]
    assert [h["continuation_id"] for h in hits] == ["known-thread", "known-thread"]
    assert any("[zebra" in h["snippet"] for h in hits)
    body = thread.structured_content
    known = store.get_conversation("known-thread")
    assert known is not None
    assert [m["content"] for m in body["messages"]] == [m.content for m in known.messages]
    assert body["cost_usd"] == pytest.approx(known.cost_usd)
    expected = [c.continuation_id for c in store.list_conversations(limit=5, order="cost")]
    assert [t["continuation_id"] for t in listing.structured_content["threads"]] == expected
    assert listing.structured_content["next_cursor"]
    totals = store.usage((), since=datetime(2026, 1, 1, tzinfo=UTC))
    summary = usage.structured_content
    assert summary["totals"]["messages"] == int(totals["messages"].iloc[0])
    assert summary["totals"]["cost_usd"] == pytest.approx(float(totals["cost_usd"].iloc[0]), abs=1e-5)
    assert sum(r["messages"] for r in summary["rows"]) == summary["totals"]["messages"]
    assert missing.is_error and "no-such-thread" in missing.content[0].text
    store.close()


def test_bad_arguments_get_a_clear_error(history: str) -> None:
    _, (bad_date, bad_query) = run_session(
        history, [("list_threads", {"since": "last tuesday"}), ("search_history", {"query": "((("})]
    )
    assert bad_date.is_error and "since" in bad_date.content[0].text
    assert not bad_query.is_error and bad_query.structured_content["hits"] == []


def test_the_server_never_writes(history: str, tmp_path: Path) -> None:
    """The server opens the store read-only. Its copy here is one a writable open would
    update at once (its package prices are older than the package's), yet every byte stays."""
    db = tmp_path / "history.db"
    shutil.copyfile(history.removeprefix("sqlite:///"), db)
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("delete from store_meta where key = 'package_prices_sha256'")
    before = db.read_bytes()
    _, (search, usage) = run_session(f"sqlite:///{db}", [("search_history", {"query": "zebra"}), ("usage_summary", {})])
    assert [h["continuation_id"] for h in search.structured_content["hits"]] == ["known-thread", "known-thread"]
    assert not usage.is_error
    assert db.read_bytes() == before
    wal = db.with_name(db.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # nothing written, not even to the WAL


def test_an_agent_can_ask_whether_it_is_over_budget(tmp_path: Path) -> None:
    """budget_status answers for the call about to be made (its model) and for every budget;
    usage_summary carries the budgets and the period's anomalies with their reasons."""
    url = f"sqlite:///{tmp_path / 'history.db'}"
    with persistence.open_store(url) as store:
        store.record_message(
            "today-thread",
            "assistant",
            "a long answer",
            model="glm-4.6",
            tool_name="chat",
            usage={"prompt_tokens": 2_000_000, "completion_tokens": 500_000},
        )
        spent = store.usage(()).cost_usd.iloc[0]
        assert spent > 0
        store.set_budget(spent / 2, period="day", model="glm-4.6")  # already over
        store.set_budget(spent * 1000, period="month")  # far from it
        store.set_budget(spent / 2, period="day", model="kimi-k2-0905-preview")  # not this call's model
    _, (glm, everything, summary, bad) = run_session(
        url,
        [
            ("budget_status", {"model": "glm-4.6"}),
            ("budget_status", {}),
            ("usage_summary", {"since": "7d"}),
            ("budget_status", {"tags": ["x" * 200]}),
        ],
    )
    answer = glm.structured_content
    assert answer["over"] is True
    assert [(b["budget"]["scope"], b["state"]) for b in answer["budgets"]] == [("model", "over"), ("store", "ok")]
    assert answer["budgets"][0]["spent_usd"] == pytest.approx(spent, abs=1e-6)
    assert "model glm-4.6, day" in answer["budgets"][0]["reason"] and "over by" in answer["budgets"][0]["reason"]
    assert len(everything.structured_content["budgets"]) == 3
    body = summary.structured_content
    assert {b["budget"]["period"] for b in body["budgets"]} == {"day", "month"}
    assert body["anomalies"] == [] and body["anomalies_not_shown"] == 0  # one day of history: nothing to compare
    assert bad.is_error and "tags" in bad.content[0].text


def test_usage_summary_lists_the_periods_anomalies(tmp_path: Path) -> None:
    from test_anomalies import SINCE, UNTIL, _fill

    url = f"sqlite:///{tmp_path / 'history.db'}"
    with persistence.open_store(url) as store:
        _fill(store, planted=True)
        expected = [
            a.reason for a in store.anomalies(since=SINCE, until=UNTIL, dimensions=("model", "provider", "tool"))
        ]
    _, (summary, quiet) = run_session(
        url,
        [
            ("usage_summary", {"since": SINCE.isoformat(), "until": UNTIL.isoformat()}),
            ("usage_summary", {"since": SINCE.isoformat(), "until": UNTIL.isoformat(), "alerts": False}),
        ],
    )
    found = summary.structured_content["anomalies"]
    assert [a["reason"] for a in found] == expected[:20]
    assert any(a["reason"].startswith("acme-big cost $41.20 on 2026-10-08") for a in found)
    spike = next(a for a in found if a["key"] == "acme-big" and a["kind"] == "spike")
    assert spike["top_thread"]["continuation_id"] == "3f0c9a1e-big-review"
    assert "anomalies" not in quiet.structured_content
