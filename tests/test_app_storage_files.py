"""The Storage and Files pages: stored vs uploaded bytes, largest and unused files, the file list."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from app_seed import AT, XSS_THREAD, app_store, app_url, open_page, plotly_figure, plotly_values, seeded_folder

import persistence
from persistence.formatting import size, thread_cost

__all__ = ["app_store", "app_url", "seeded_folder"]
pytestmark = pytest.mark.usefixtures("app_url")


def test_storage_totals_and_dedup_savings(app_store: persistence.Store) -> None:
    at = open_page("storage", period="all")
    assert not at.exception
    t = app_store.storage_usage(()).iloc[0]
    metrics = {m.label: m for m in at.metric}
    assert metrics["Stored"].value == size(int(t["bytes"]))
    assert metrics["Uploaded"].value == size(int(t["logical_bytes"]))
    assert metrics["Saved by dedup"].value == size(int(t["logical_bytes"] - t["bytes"]))
    for label in ("Stored", "Uploaded", "Saved by dedup"):  # 1024-based, as the CLI and the report say
        assert re.fullmatch(r"[\d,.]+ (B|KiB|MiB|GiB)", metrics[label].value), metrics[label].value
    assert metrics["Uploads / files"].value == f"{int(t['uploads']):,} / {int(t['files']):,}"
    fig = plotly_figure(at, "storage_by_day")
    stored = next(tr for tr in fig["data"] if tr["name"] == "Stored")
    assert sum(plotly_values(stored["y"])) == int(t["bytes"])


def test_a_period_of_only_duplicate_uploads_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Uploads that all repeat stored bytes store 0 B: the page says dedup kept them, and the
    chart still spans the whole period."""
    url = f"sqlite:///{tmp_path / 'dups.db'}"
    store = persistence.open_store(url)
    try:
        store.put_file(b"pool:\n  size: 20\n", filename="first.yaml", created_at=AT - timedelta(days=10))
        for i in range(3):
            store.put_file(b"pool:\n  size: 20\n", filename=f"again-{i}.yaml", created_at=AT + timedelta(hours=i))
    finally:
        store.close()
    monkeypatch.setenv("PERSISTENCE_URL", url)
    at = open_page("storage", period="custom", **{"from": "2026-01-18", "to": "2026-01-24"})
    assert not at.exception
    metrics = {m.label: m for m in at.metric}
    assert metrics["Stored"].value == "0 B new"
    assert metrics["Stored"].delta == "all 3 uploads were duplicates of stored files"
    assert metrics["Uploads / files"].value == "3 / 0"
    days = plotly_values(plotly_figure(at, "storage_by_day")["data"][0]["x"])
    assert len(days) == 7 and str(days[0]).startswith("2026-01-18")


def test_unused_files_say_they_are_all_time() -> None:
    at = open_page("storage", period="custom", **{"from": "2026-01-18", "to": "2026-01-24"})
    assert any(c.value.startswith("All time") and "prune" in c.value for c in at.caption)


def test_largest_and_unused_files(app_store: persistence.Store) -> None:
    at = open_page("storage", period="all")
    largest, unused = (frame.value for frame in at.dataframe[:2])
    sizes = list(largest["Size"])
    assert sizes == sorted(sizes, reverse=True) and len(set(largest["sha256"])) == len(largest)
    assert "orphan.txt" in set(unused["File"])


def test_files_list_filters_and_details(app_store: persistence.Store) -> None:
    at = open_page("files", period="all")
    assert not at.exception
    table = at.dataframe[0].value
    newest = app_store.list_files(limit=50).items
    assert list(table["File"]) == [f.filename for f in newest]

    at.text_input(key="files_thread").input(XSS_THREAD).run()
    assert list(at.dataframe[0].value["File"]) == ["pool-config.yaml"]
    at.text_input(key="files_thread").input("").run()
    at.toggle(key="files_unused").set_value(True).run()
    assert list(at.dataframe[0].value["File"]) == ["orphan.txt"]
    at.toggle(key="files_unused").set_value(False).run()
    at.selectbox(key="files_type").select("text/").run()
    assert all(t.startswith("text/") for t in at.dataframe[0].value["Type"])


def test_the_dedup_column_is_checked_for_a_duplicate_upload(
    app_store: persistence.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page("files", period="all")
    demo = at.dataframe[0].value
    assert list(demo["Dedup"]) == [f.deduplicated for f in app_store.list_files(limit=50).items]
    assert demo["Dedup"].any() and not demo["Dedup"].all()  # the demo uploads some bytes twice

    url = f"sqlite:///{tmp_path / 'dup.db'}"
    store = persistence.open_store(url)
    try:
        store.put_file(b"pool:\n  size: 20\n", filename="first.yaml", created_at=AT)
        store.put_file(b"pool:\n  size: 20\n", filename="again.yaml", created_at=AT + timedelta(minutes=1))
        store.put_file(b"something else\n", filename="other.txt", created_at=AT + timedelta(minutes=2))
    finally:
        store.close()
    monkeypatch.setenv("PERSISTENCE_URL", url)
    at = open_page("files", period="all")
    assert not at.exception
    table = at.dataframe[0].value
    assert dict(zip(table["File"], table["Dedup"], strict=True)) == {
        "other.txt": False,
        "again.yaml": True,
        "first.yaml": False,
    }
    at.session_state["files_table_1"] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    assert at.subheader[0].value == "again\\.yaml"
    assert any("deduplicated: no new bytes stored" in c.value for c in at.caption)


def test_selecting_a_file_shows_who_used_it(app_store: persistence.Store) -> None:
    at = open_page("files", period="all")
    at.text_input(key="files_thread").input(XSS_THREAD).run()
    at.session_state["files_table_1"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    assert not at.exception
    assert at.subheader[0].value == "pool\\-config\\.yaml"
    used_by = next(h.value for h in at.html if "tl-list" in h.value)
    assert f'href="thread?thread={XSS_THREAD}"' in used_by
    conv = app_store.get_conversation(XSS_THREAD, last=0)
    assert conv is not None and f">{thread_cost(conv.cost_usd, conv.unpriced_messages)}</span>" in used_by
    assert any(b.proto.label == "Download" for b in at.download_button)


def test_files_next_and_previous_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store of 61 uploads (more than a page of 50, whatever the demo data holds): forward to
    the last 11, and back."""
    url = f"sqlite:///{tmp_path / 'files.db'}"
    store = persistence.open_store(url)
    try:
        for i in range(61):
            store.put_file(
                f"upload {i}\n".encode(),
                filename=f"f{i:02}.txt",
                mime_type="text/plain",
                created_at=AT + timedelta(minutes=i),
            )
    finally:
        store.close()
    monkeypatch.setenv("PERSISTENCE_URL", url)
    newest_first = [f"f{i:02}.txt" for i in reversed(range(61))]

    at = open_page("files", period="all")
    assert list(at.dataframe[0].value["File"]) == newest_first[:50]
    assert at.button(key="files_prev").disabled and not at.button(key="files_next").disabled
    at.button(key="files_next").click().run()
    assert not at.exception
    assert list(at.dataframe[0].value["File"]) == newest_first[50:]
    assert at.button(key="files_next").disabled and not at.button(key="files_prev").disabled
    at.button(key="files_prev").click().run()
    assert list(at.dataframe[0].value["File"]) == newest_first[:50]


def test_files_filters_and_order_come_back_from_the_url(app_store: persistence.Store) -> None:
    at = open_page("files", period="all", files_unused="true")
    assert not at.exception
    assert at.toggle(key="files_unused").value
    assert list(at.dataframe[0].value["File"]) == ["orphan.txt"]
    at = open_page("files", period="all", files_thread=XSS_THREAD, files_order="size")
    assert at.text_input(key="files_thread").value == XSS_THREAD
    assert at.segmented_control(key="files_order").value == "size"
    assert list(at.dataframe[0].value["File"]) == ["pool-config.yaml"]
    at = open_page("files", period="all", files_order="size")
    sizes = list(at.dataframe[0].value["Size"])
    assert sizes == sorted(sizes, reverse=True)
    assert sizes == [f.size for f in app_store.list_files(order="size", limit=50).items]
