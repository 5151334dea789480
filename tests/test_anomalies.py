"""Cost alerts against a rolling baseline (issue 17, item 1): planted spikes, dips and a new
model are flagged with their reason in words, a steady store raises nothing, on every backend."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import server_side

import persistence
from persistence import Anomaly, ValidationError
from persistence.insights import BASELINE_DAYS
from persistence.pricing import Price

FIRST = date(2026, 9, 1)  # 42 days of history, the last 7 of them looked at
LAST = date(2026, 10, 12)
SINCE = datetime(2026, 10, 6, tzinfo=UTC)
UNTIL = datetime(2026, 10, 13, tzinfo=UTC)
SPIKE_DAY, DIP_DAY, NEW_DAY = date(2026, 10, 8), date(2026, 10, 10), date(2026, 10, 11)
SPIKE_THREAD = "3f0c9a1e-big-review"

# $1 per million tokens, input and output alike: a message's cost is its tokens / 1e6.
PRICES = [
    Price(provider=p, model=m, match=f"^{m}$", effective_from=date(2026, 1, 1), input=1.0, output=1.0)
    for p, m in (("acme", "acme-big"), ("beta", "beta-small"), ("gamma", "gamma-new"))
]


def _message(cid: str, day: date, minute: int, model: str, tool: str, cost: float, **extra: Any) -> dict[str, Any]:
    return {
        "continuation_id": cid,
        "role": "assistant",
        "content": f"answer in {cid}",
        "model": model,
        "tool_name": tool,
        "usage": {"prompt_tokens": round(cost * 1e6), "completion_tokens": 0},
        "created_at": datetime(day.year, day.month, day.day, 10, minute, tzinfo=UTC),
        **extra,
    }


def _fill(store: persistence.Store, *, planted: bool) -> None:
    """Two models on two tools, four threads a day with a few % of day-to-day wobble; planted:
    one $34.44 codereview thread on acme-big (its day: $41.20, 6.3x the usual), a day without beta-small, and a
    new model."""
    server_side(store).add_prices(PRICES)  # the server's: a signed-in user may not change prices
    batch: list[dict[str, Any]] = []
    day, i = FIRST, 0
    while day <= LAST:
        wobble = 1 + 0.02 * ((i * 7) % 5 - 2)
        for n in range(2):
            batch.append(_message(f"big-{i}-{n}", day, n, "acme-big", "chat", 3.25 * wobble))
            if not (planted and day == DIP_DAY):
                batch.append(_message(f"small-{i}-{n}", day, 10 + n, "beta-small", "codereview", 1.5 * wobble))
        if planted and day == SPIKE_DAY:
            batch.append(_message(SPIKE_THREAD, day, 30, "acme-big", "codereview", 34.44))
        if planted and day == NEW_DAY:
            batch.append(_message("new-model-thread", day, 40, "gamma-new", "chat", 2.0))
        day += timedelta(days=1)
        i += 1
    for start in range(0, len(batch), 100):
        store.record_messages(batch[start : start + 100])


def _one(found: list[Anomaly], dimension: str, key: str, day: date) -> Anomaly:
    hits = [a for a in found if a.dimension == dimension and a.key == key and a.day == day]
    assert len(hits) == 1, [a.reason for a in found]
    return hits[0]


def test_planted_spike_dip_and_new_model_are_flagged_with_reasons(store: persistence.Store) -> None:
    _fill(store, planted=True)
    found = store.anomalies(since=SINCE, until=UNTIL)

    spike = _one(found, "model", "acme-big", SPIKE_DAY)
    assert spike.kind == "spike" and spike.metric == "cost_usd"
    assert spike.value == pytest.approx(41.20, abs=0.01)
    assert spike.usual == pytest.approx(6.5, rel=0.05)
    assert spike.top_thread is not None and spike.top_thread.continuation_id == SPIKE_THREAD
    assert spike.top_thread.share == pytest.approx(34.44 / 41.20, abs=0.01)
    assert spike.reason.startswith("acme-big cost $41.20 on 2026-10-08, 6.")
    assert "x its usual" in spike.reason
    assert spike.reason.endswith("84 % of it in thread 3f0c9a1e… (codereview)")
    # The same day seen by tool and provider, and the thread itself against other threads.
    assert _one(found, "tool_name", "codereview", SPIKE_DAY).kind == "spike"
    assert _one(found, "provider", "acme", SPIKE_DAY).kind == "spike"
    thread = _one(found, "thread", SPIKE_THREAD, SPIKE_DAY)
    assert "thread 3f0c9a1e… (codereview)" in thread.reason and "$34.44" in thread.reason

    dip = _one(found, "model", "beta-small", DIP_DAY)
    assert dip.kind == "dip" and dip.value == 0
    assert dip.reason == "beta-small cost $0.00 on 2026-10-10, down from its usual Saturday $3.00"  # weekday-aware
    # A run of low days is one alert: the day after (back to normal) raises nothing either.
    assert not [a for a in found if a.key == "beta-small" and a.day != DIP_DAY]

    new = _one(found, "model", "gamma-new", NEW_DAY)
    assert new.kind == "new"
    assert new.reason.startswith("new model gamma-new: $2.00")
    assert _one(found, "provider", "gamma", NEW_DAY).kind == "new"

    # Nothing else: the ordinary days of every key stay quiet.
    flagged_days = {a.day for a in found}
    assert flagged_days == {SPIKE_DAY, DIP_DAY, NEW_DAY}
    assert found == sorted(found, key=lambda a: a.day, reverse=True)  # newest first


def test_a_steady_store_raises_nothing(store: persistence.Store) -> None:
    _fill(store, planted=False)
    assert store.anomalies(since=SINCE, until=UNTIL) == []
    # Nor on the days before it has enough history to compare (no "new" on the first days).
    assert store.anomalies(since=datetime(2026, 9, 1, tzinfo=UTC), until=UNTIL) == []


def test_dimensions_and_thresholds(store: persistence.Store) -> None:
    _fill(store, planted=True)
    only_threads = store.anomalies(since=SINCE, until=UNTIL, dimensions=["thread"])
    assert [a.key for a in only_threads] == [SPIKE_THREAD]
    # A change must be at least min_cost_usd (and min_tokens) to count: $34.44 above the usual
    # is not $100. A model never seen before is still news, whatever it cost.
    big = store.anomalies(since=SINCE, until=UNTIL, dimensions=("model",), min_cost_usd=100, min_tokens=10**9)
    assert [(a.key, a.kind) for a in big] == [("gamma-new", "new")]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"since": datetime(2026, 10, 13, tzinfo=UTC), "until": datetime(2026, 10, 6, tzinfo=UTC)}, "since"),
        ({"since": datetime(2020, 1, 1, tzinfo=UTC), "until": datetime(2026, 1, 1, tzinfo=UTC)}, "since"),
        ({"since": "yesterday"}, "since"),
        ({"dimensions": ["colour"]}, "dimensions"),
        ({"min_cost_usd": -1}, "min_cost_usd"),
        ({"min_cost_usd": float("nan")}, "min_cost_usd"),
        ({"min_tokens": 1.5}, "min_tokens"),
    ],
)
def test_bad_input_names_the_field(sqlite_store: persistence.Store, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        sqlite_store.anomalies(**kwargs)
    assert err.value.field == field


def test_alerts_cli_exit_code_and_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    steady_url = f"sqlite:///{tmp_path / 'steady.db'}"
    with persistence.open_store(url) as s:
        _fill(s, planted=True)
    with persistence.open_store(steady_url) as s:
        _fill(s, planted=False)
    period = ["--since", "2026-10-06", "--until", "2026-10-13"]
    run = [sys.executable, "-m", "persistence", "alerts", *period]
    out = subprocess.run([*run, "--url", url, "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr  # something is flagged: cron and CI see it
    data = json.loads(out.stdout)
    reasons = [a["reason"] for a in data["anomalies"]]
    assert any(r.startswith("acme-big cost $41.20 on 2026-10-08") for r in reasons)
    assert data["budgets"] == []
    text = subprocess.run([*run, "--url", url], capture_output=True, text=True, timeout=120)
    assert text.returncode == 1 and "acme-big cost $41.20 on 2026-10-08" in text.stdout
    quiet = subprocess.run([*run, "--url", steady_url], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "Nothing unusual" in quiet.stdout


def test_the_report_names_the_unusual_days(store: persistence.Store) -> None:
    from persistence.report import build

    _fill(store, planted=True)
    findings = build(store, since=SINCE, until=UNTIL).findings
    unusual = [f for f in findings if f.startswith("Unusual: ")]
    # Spikes first (they cost money), then what is new; the rest counted with the command to list them.
    assert unusual[0].startswith("Unusual: ") and "2026-10-08" in unusual[0]
    assert any(f.startswith("Unusual: acme-big cost $41.20 on 2026-10-08") for f in unusual)
    assert len(unusual) == 3
    assert findings[-1].startswith("6 more alerts from 06 Oct to 12 Oct; the alerts command lists every one.")
    # The day everything stopped is unusual too: each key's dip.
    stopped = build(store, since=UNTIL, until=UNTIL + timedelta(days=1)).findings
    assert "Unusual: acme-big cost $0.00 on 2026-10-13, down from its usual Tuesday $6.44." in stopped


def test_today_is_not_a_dip_before_it_is_over(sqlite_store: persistence.Store) -> None:
    """This morning has less traffic than a whole usual day: no alert; a spike already is one."""
    sqlite_store.add_prices(PRICES)
    today = datetime.now(UTC).date()
    batch = [
        _message(f"t-{i}", today - timedelta(days=i), 0, "acme-big", "chat", 6.5) for i in range(1, BASELINE_DAYS + 8)
    ]
    batch.append(_message("morning", today, 0, "acme-big", "chat", 0.5))
    sqlite_store.record_messages(batch)
    assert sqlite_store.anomalies(since=datetime.combine(today, datetime.min.time(), UTC)) == []
    sqlite_store.record_message(
        "runaway", "assistant", "…", model="acme-big", usage={"prompt_tokens": 60_000_000}, tool_name="chat"
    )
    found = sqlite_store.anomalies(since=datetime.combine(today, datetime.min.time(), UTC), dimensions=["model"])
    assert [(a.key, a.kind) for a in found] == [("acme-big", "spike")]
