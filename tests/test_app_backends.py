"""The app unchanged on the Postgres backend: every page draws the seeded store's figures."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_lists import hit_links
from app_seed import XSS_THREAD, open_page, seed

import persistence
from persistence.formatting import money


@pytest.mark.postgres
def test_every_page_on_postgres(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = tmp_path / "pg-files"
    store = persistence.open_store(pg_url, files_dir=files)
    try:
        seed(store)
        totals = store.usage(()).iloc[0]
        threads = store.count_conversations()
    finally:
        store.close()
    monkeypatch.setenv("PERSISTENCE_URL", pg_url)
    monkeypatch.setenv("PERSISTENCE_FILES_DIR", str(files))

    at = open_page(period="all")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Active threads"] == f"{threads:,}"
    assert metrics["Messages"] == f"{int(totals['messages']):,}"
    assert metrics["Cost"] == money(float(totals["cost_usd"]))
    assert "postgres" in " ".join(c.value for c in at.sidebar.caption)

    for page, query in (
        ("threads", {"period": "all"}),
        ("thread", {"thread": XSS_THREAD}),
        ("search", {"period": "all", "q": "zebracorn"}),
        ("usage", {"period": "all"}),
        ("storage", {"period": "all"}),
        ("files", {"period": "all"}),
    ):
        at = open_page(page, **query)
        assert not at.exception, (page, at.exception)
        assert not at.error, (page, [e.value for e in at.error])
        if page == "search":
            assert hit_links(at) == [f"thread={XSS_THREAD}&seq=2"]
        if page == "thread":
            assert len(at.chat_message) == 2
