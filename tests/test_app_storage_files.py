"""The Storage and Files pages: stored vs uploaded bytes, largest and unused files, the file list."""

from __future__ import annotations

import pytest
from app_seed import XSS_THREAD, app_store, app_url, open_page, plotly_figure, plotly_values, seeded_folder

import persistence
from ui import fmt

__all__ = ["app_store", "app_url", "seeded_folder"]
pytestmark = pytest.mark.usefixtures("app_url")


def test_storage_totals_and_dedup_savings(app_store: persistence.Store) -> None:
    at = open_page("storage", period="all")
    assert not at.exception
    t = app_store.storage_usage(()).iloc[0]
    metrics = {m.label: m for m in at.metric}
    assert metrics["Stored"].value == fmt.bytes_(int(t["bytes"]))
    assert metrics["Uploaded"].value == fmt.bytes_(int(t["logical_bytes"]))
    assert metrics["Saved by dedup"].value == fmt.bytes_(int(t["logical_bytes"] - t["bytes"]))
    assert metrics["Uploads / files"].value == f"{int(t['uploads']):,} / {int(t['files']):,}"
    fig = plotly_figure(at, "storage_by_day")
    stored = next(tr for tr in fig["data"] if tr["name"] == "Stored")
    assert sum(plotly_values(stored["y"])) == int(t["bytes"])


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


def test_selecting_a_file_shows_who_used_it(app_store: persistence.Store) -> None:
    at = open_page("files", period="all")
    at.text_input(key="files_thread").input(XSS_THREAD).run()
    at.session_state["files_table_1"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    assert not at.exception
    assert at.subheader[0].value == "pool\\-config\\.yaml"
    assert any(p.proto.query_string == f"thread={XSS_THREAD}" for p in at.get("page_link"))
    assert any(b.proto.label == "Download" for b in at.download_button)


def test_files_next_page(app_store: persistence.Store) -> None:
    at = open_page("files", period="all")
    first = list(at.dataframe[0].value["File"])
    total = sum(1 for _ in app_store.list_files(limit=1000))
    if total <= 50:
        assert at.button(key="files_next").disabled
        return
    at.button(key="files_next").click().run()
    assert len(at.dataframe[0].value) == min(50, total - 50)
    assert list(at.dataframe[0].value["File"]) != first
