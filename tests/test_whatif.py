"""What-if pricing (issue 17, item 3): stored tokens repriced on another model, never stored.

Every figure is computed by hand below from the price rows this test adds: a model whose
price changes on 2026-01-03, one with no cached-input or cache-write price (and no price
before 2026-01-03), and one with a long-context tier. The thread what-if prices message by
message; the period what-if prices the daily rollup, day by day.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import server_side

import persistence
from persistence import cli
from persistence.errors import NotFoundError, ValidationError
from persistence.formatting import money, thread_cost
from persistence.models import Usage
from persistence.pricing import Price
from persistence.whatif import whatif, whatif_period, whatif_thread

D1 = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
D2 = datetime(2026, 1, 3, 11, 0, tzinfo=UTC)
D3 = datetime(2026, 1, 4, 9, 0, tzinfo=UTC)

PRICES = [
    # USD per 1M tokens. acme-pro doubles on 2026-01-03 and has every bucket's price.
    Price(
        "acme", "acme-pro", "^acme-pro$", date(2026, 1, 1), input=1.0, cached_input=0.25, cache_write=2.0, output=4.0
    ),
    Price("acme", "acme-pro", "^acme-pro$", date(2026, 1, 3), input=2.0, cached_input=0.5, cache_write=3.0, output=8.0),
    # No cached-input and no cache-write price; no price at all before 2026-01-03.
    Price("acme", "acme-plain", "^acme-plain$", date(2026, 1, 3), input=1.0, output=2.0),
    # Requests with more than 1,000 prompt tokens are billed at the tier rates.
    Price(
        "acme",
        "acme-tier",
        "^acme-tier$",
        date(2026, 1, 1),
        input=1.0,
        cached_input=0.5,
        output=2.0,
        tier_above_tokens=1000,
        tier_input=10.0,
        tier_cached_input=5.0,
        tier_output=20.0,
    ),
]


def _msg(store: persistence.Store, cid: str, at: datetime, usage: object, role: str = "assistant", **kw: Any) -> None:
    store.record_message(
        cid, role, "text", created_at=at, model="glm-4.6", usage=usage, message_id=str(uuid.uuid4()), **kw
    )


def seed(store: persistence.Store) -> persistence.Store:
    server_side(store).add_prices(PRICES)  # the server's: a signed-in user may not change prices
    store.start_conversation("w", tool_name="review", created_at=D1)
    store.record_message("w", "user", "question", created_at=D1, tool_name="review", message_id=str(uuid.uuid4()))
    _msg(store, "w", D1 + timedelta(minutes=1), Usage(1000, 2000, 500, 300, 200), tool_name="review")
    _msg(store, "w", D2, Usage(4000, 1000, 0, 600, 0), tool_name="review")
    _msg(store, "w", D2 + timedelta(hours=1), Usage(0, 0, 1000, 100, 100), tool_name="review")
    _msg(store, "w", D3, {"odd": 1}, tool_name="review")  # a usage report nobody could read
    store.start_conversation("x", tool_name="chat", created_at=D2)
    _msg(store, "x", D2 + timedelta(hours=2), Usage(1_000_000, 0, 0, 0, 0), tool_name="chat")
    return store


@pytest.fixture
def priced(store: persistence.Store) -> persistence.Store:
    return seed(store)


def test_a_thread_on_a_model_whose_price_changed(priced: persistence.Store) -> None:
    stored = priced.usage(("day", "model"))
    result = whatif_thread(priced, "w", "acme-pro")
    # 01-02 at the first price: 1000*1 + 2000*0.25 + 500*2 + (300+200)*4 = 4500 per 1M.
    # 01-03 at the second: 4000*2 + 1000*0.5 + 600*8 = 13300, and 1000*3 + (100+100)*8 = 4600.
    assert [(d.day, d.whatif_cost_usd) for d in result.days] == [
        (date(2026, 1, 2), pytest.approx(0.0045)),
        (date(2026, 1, 3), pytest.approx(0.0179)),
        (date(2026, 1, 4), None),  # only the unreadable report: nothing to price on any model
    ]
    assert result.whatif_cost_usd == pytest.approx(0.0224)
    assert result.price_ids == ("acme/acme-pro@2026-01-01", "acme/acme-pro@2026-01-03")
    assert result.days[2].whatif_unpriced_messages == 1 and result.days_without_price == ()
    conv = priced.get_conversation("w")
    assert conv is not None
    assert result.actual_cost_usd == pytest.approx(conv.cost_usd)
    assert result.unpriced_messages == conv.unpriced_messages == 1
    assert result.usage == conv.usage and result.messages == conv.message_count == 5
    assert result.notes == ()
    # Never written: the stored costs are what they were.
    assert priced.usage(("day", "model")).equals(stored)
    assert priced.get_conversation("w") == conv


def test_a_model_without_cached_prices_says_so(priced: persistence.Store) -> None:
    result = whatif(priced, "acme-plain", continuation_id="w")
    # No price before 2026-01-03: the first day is left out, and named.
    # 01-03: 4000*1 + 1000*1 (cache reads at the input price) + 600*2 = 6200;
    #        1000*0 (cache writes not billed) + (100+100)*2 = 400.
    assert [d.whatif_cost_usd for d in result.days] == [None, pytest.approx(0.0066), None]
    assert result.whatif_cost_usd == pytest.approx(0.0066)
    assert result.days_without_price == (date(2026, 1, 2),)
    assert result.notes == (
        "acme-plain has no cached-input price (acme/acme-plain@2026-01-03): 1,000 cache-read tokens are billed "
        "at its input price",
        "acme-plain has no cache-write price (acme/acme-plain@2026-01-03): 1,000 cache-write tokens are not billed",
        "no acme-plain price was in force on 2026-01-02: left out of the what-if cost",
    )


def test_a_period_from_the_rollup_matches_the_thread(priced: persistence.Store) -> None:
    period = whatif_period(priced, "acme-pro", tool_name="review")
    thread = whatif_thread(priced, "w", "acme-pro")
    assert [(d.day, d.usage) for d in period.days] == [(d.day, d.usage) for d in thread.days]
    # The rollup of 01-03 (4000, 1000, 1000, 700, 100) at the second price: 17900 per 1M.
    assert [d.whatif_cost_usd for d in period.days] == [
        pytest.approx(0.0045),
        pytest.approx(0.0179),
        0.0,
    ]
    assert period.actual_cost_usd == pytest.approx(thread.actual_cost_usd)
    assert period.unpriced_messages == 1
    assert period.scope == "the beginning to now, tool review"
    # The whole period: the other thread's million input tokens at $2 on 01-03.
    everything = whatif_period(priced, "acme-pro")
    assert everything.whatif_cost_usd == pytest.approx(0.0224 + 2.0)
    assert everything.actual_cost_usd == pytest.approx(float(priced.usage(())["cost_usd"].iloc[0]))
    # A period of one day, by the period's own bounds.
    one = whatif_period(priced, "acme-pro", since=D2.replace(hour=0), until=D3.replace(hour=0))
    assert [d.day for d in one.days] == [date(2026, 1, 3)]
    assert one.whatif_cost_usd == pytest.approx(0.0179 + 2.0)


def test_long_context_tiers_per_message_and_base_rates_per_day(priced: persistence.Store) -> None:
    # Per message: 3500 prompt tokens > 1000: 1000*10 + 2000*5 + (300+200)*20 = 30000;
    # 5000 > 1000: 4000*10 + 1000*5 + 600*20 = 57000; 1000 is not above: (100+100)*2 = 400.
    thread = whatif_thread(priced, "w", "acme-tier")
    assert thread.whatif_cost_usd == pytest.approx(0.0874)
    assert not any("long-context tier" in note for note in thread.notes)
    # Per day the rollup has sums, not requests: base rates, and a note that says so.
    # 01-02: 1000*1 + 2000*0.5 + 500*2 = 3000; 01-03: 4000*1 + 1000*0.5 + 800*2 = 6100.
    period = whatif_period(priced, "acme-tier", tool_name="review")
    assert period.whatif_cost_usd == pytest.approx(0.0091)
    assert any("long-context tier" in note for note in period.notes)


def test_bad_input_is_refused_naming_the_field(priced: persistence.Store) -> None:
    with pytest.raises(ValidationError) as info:
        whatif_thread(priced, "w", "no-such-model-anywhere")
    assert info.value.field == "model"
    with pytest.raises(ValidationError) as info:
        whatif_period(priced, "")
    assert info.value.field == "model"
    with pytest.raises(ValidationError) as info:
        whatif(priced, "acme-pro", continuation_id="w", since=D1)
    assert info.value.field == "since"
    with pytest.raises(ValidationError) as info:
        whatif_period(priced, "acme-pro", since=datetime(2026, 1, 1))  # no time zone
    assert info.value.field == "since"
    with pytest.raises(NotFoundError):
        whatif_thread(priced, "nope", "acme-pro")


def test_cli_whatif(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    with persistence.open_store(url) as store:
        seed(store)
    assert cli.main(["whatif", "--url", url, "--model", "acme-plain", "--thread", "w", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["whatif_cost_usd"] == pytest.approx(0.0066)
    assert data["days_without_price"] == ["2026-01-02"]
    assert [d["day"] for d in data["days"]] == ["2026-01-02", "2026-01-03", "2026-01-04"]
    assert cli.main(["whatif", "--url", url, "--model", "acme-pro", "--tool", "review", "--since", "2026-01-03"]) == 0
    out = capsys.readouterr().out
    assert "on acme-pro" in out and "$0.0179" in out
    assert cli.main(["whatif", "--url", url, "--model", "nope-model"]) == 2
    assert "model" in capsys.readouterr().err


def test_the_thread_and_usage_pages_show_the_whatif_beside_the_real_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app_seed import open_page, texts

    url = f"sqlite:///{tmp_path / 'app.db'}"
    with persistence.open_store(url) as store:
        seed(store)
        actual = store.get_conversation("w")
    assert actual is not None
    monkeypatch.setenv("PERSISTENCE_URL", url)

    at = open_page("thread", thread="w")
    assert not at.exception
    at.selectbox(key="whatif_thread_model").set_value("acme-pro").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["On acme-pro"] == money(0.0224)
    assert metrics["Actual cost"] == thread_cost(actual.cost_usd, actual.unpriced_messages)
    at.selectbox(key="whatif_thread_model").set_value("acme-plain").run()
    shown = texts(at).replace("\\", "")  # markdown escapes
    assert "no cached-input price" in shown and "left out of the what-if cost" in shown

    at = open_page("usage", period="custom", **{"from": "2026-01-01", "to": "2026-01-31"})
    assert not at.exception
    at.selectbox(key="whatif_period_model").set_value("acme-pro").run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["On acme-pro"] == money(0.0224 + 2.0)
