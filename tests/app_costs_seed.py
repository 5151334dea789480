"""A small store for the cost and URL-state tests of the app: its costliest thread is the oldest
(so it is not on the first page by recency), one thread has no priced message at all and one is
priced in part.

Used by ``tests/test_app_costs.py`` and ``tests/test_app_url_state.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import persistence

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
PRICED = "glm-4.6"
UNPRICED = "my-local-model"
CHEAP = 55  # more than a page of 50
COSTLY = "costly-old"
UNPRICED_ONLY = "unpriced-only"
PARTLY = "partly-unpriced"
COSTLY_TITLE = "The one expensive investigation"
UNPRICED_TITLE = "Answered by a model without a price"
PARTLY_TITLE = "Half priced conversation"
WORD = "quokka"  # in every thread's reply, for search


def build(store: persistence.Store) -> None:
    store.start_conversation(COSTLY, title=COSTLY_TITLE, tool_name="analyze", created_at=START)
    store.record_message(COSTLY, "user", f"Find the {WORD} leak.", created_at=START)
    store.record_message(
        COSTLY,
        "assistant",
        f"The {WORD} leak is in the pool.",
        model=PRICED,
        usage={"prompt_tokens": 2_000_000, "completion_tokens": 100_000},
        duration_ms=9000,
        created_at=START + timedelta(seconds=30),
    )
    for i in range(CHEAP):
        cid = f"cheap-{i:02}"
        at = START + timedelta(days=1, minutes=i)
        store.start_conversation(cid, title=f"Cheap question {i:02}", tool_name="chat", tags=["cheap"], created_at=at)
        store.record_message(cid, "user", f"Small question {i}", created_at=at)
        store.record_message(
            cid,
            "assistant",
            f"A small {WORD} answer {i}.",
            model=PRICED,
            usage={"prompt_tokens": 100 + i, "completion_tokens": 10},
            created_at=at + timedelta(seconds=5),
        )
    at = START + timedelta(days=2)
    store.start_conversation(UNPRICED_ONLY, title=UNPRICED_TITLE, tool_name="chat", created_at=at)
    store.record_message(UNPRICED_ONLY, "user", "Hello local model", created_at=at)
    store.record_message(
        UNPRICED_ONLY,
        "assistant",
        f"A local {WORD} reply.",
        model=UNPRICED,
        provider="custom",
        usage={"prompt_tokens": 500, "completion_tokens": 50},
        created_at=at + timedelta(seconds=5),
    )
    store.put_file(b"local notes\n", filename="local-notes.txt", continuation_id=UNPRICED_ONLY, created_at=at)
    at = START + timedelta(days=2, hours=1)
    store.start_conversation(PARTLY, title=PARTLY_TITLE, tool_name="chat", created_at=at)
    store.record_message(
        PARTLY,
        "assistant",
        f"A priced {WORD} reply.",
        model=PRICED,
        usage={"prompt_tokens": 3000, "completion_tokens": 300},
        created_at=at,
    )
    store.record_message(
        PARTLY,
        "assistant",
        f"An unpriced {WORD} reply.",
        model=UNPRICED,
        provider="custom",
        usage={"prompt_tokens": 800, "completion_tokens": 80},
        created_at=at + timedelta(minutes=1),
    )


@pytest.fixture(scope="session")
def costs_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("app-costs")
    store = persistence.open_store(f"sqlite:///{folder / 'history.db'}")
    try:
        build(store)
    finally:
        store.close()
    return folder


@pytest.fixture
def costs_store(costs_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[persistence.Store]:
    """The store, set as PERSISTENCE_URL for the app under test and opened read-only for the
    test's own expectations."""
    url = f"sqlite:///{costs_folder / 'history.db'}"
    monkeypatch.setenv("PERSISTENCE_URL", url)
    store = persistence.open_store(url, read_only=True)
    yield store
    store.close()
