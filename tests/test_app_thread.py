"""The Thread page: the chat, newest first with "load older", deep links, safety, files, exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from app_lists import shown_rows
from app_seed import (
    CHILD_THREAD,
    CJK_QUESTION,
    CJK_REPLY,
    LONG_THREAD,
    LONG_TURNS,
    XSS_PAYLOADS,
    XSS_THREAD,
    app_store,
    app_url,
    open_page,
    seeded_folder,
    texts,
)

import persistence
from persistence.formatting import money
from ui.export import thread_json, thread_markdown
from ui.safe import escape_markdown, safe_markdown

__all__ = ["app_store", "app_url", "seeded_folder"]
pytestmark = pytest.mark.usefixtures("app_url")


def bodies(at) -> list[str]:  # type: ignore[no-untyped-def]
    """The message bodies drawn, in order."""
    return [md.value for msg in at.chat_message for md in msg.markdown if not md.value.startswith(":orange-badge[")]


def seqs(at) -> list[int]:  # type: ignore[no-untyped-def]
    return [int(c.value.split(" ")[0].lstrip("\\#")) for msg in at.chat_message for c in msg.caption[:1]]


def test_newest_page_first_then_load_older(app_store: persistence.Store) -> None:
    at = open_page("thread", thread=LONG_THREAD)
    assert not at.exception
    assert at.title[0].value == "A long debugging session"
    assert seqs(at) == list(range(LONG_TURNS - 29, LONG_TURNS + 1))
    assert bodies(at)[-1] == f"Turn number {LONG_TURNS} of the long thread."
    at.button(key="thread_load_older").click().run()
    assert seqs(at) == list(range(LONG_TURNS - 59, LONG_TURNS + 1))
    at.button(key="thread_load_older").click().run()
    assert seqs(at) == list(range(1, LONG_TURNS + 1))
    assert not [b for b in at.button if b.key == "thread_load_older"]


def test_a_deep_link_loads_back_to_the_message_and_marks_it() -> None:
    at = open_page("thread", thread=LONG_THREAD, seq="10")
    assert not at.exception
    assert seqs(at)[0] <= 10 and seqs(at)[-1] == LONG_TURNS
    marked = [msg for msg in at.chat_message if any("Linked message" in md.value for md in msg.markdown)]
    assert len(marked) == 1 and marked[0].markdown[-1].value == "Turn number 10 of the long thread."


def test_per_message_model_tokens_cost_and_duration(app_store: persistence.Store) -> None:
    at = open_page("thread", thread=XSS_THREAD)
    conv = app_store.get_conversation(XSS_THREAD)
    assert conv is not None
    reply = conv.messages[1]
    meta = at.chat_message[1].caption[0].value.replace("\\", "")
    assert "kimi-k2-0905-preview" in meta and "in 1,000" in meta and "cached 200" in meta and "out 300" in meta
    assert f"${reply.cost_usd:.2g}" in meta and "2.3 s" in meta


def test_hostile_content_is_drawn_inert() -> None:
    at = open_page("thread", thread=XSS_THREAD)
    assert not at.exception
    # The title is plain text (ui.widgets.thread_title) and escaped: its tags show as text.
    assert at.title[0].value.startswith(escape_markdown("<b>Bold</b>"))
    user_body = bodies(at)[0]
    assert user_body == safe_markdown(XSS_PAYLOADS)
    assert "](javascript:" not in user_body and "](data:" not in user_body and "![" not in user_body
    assert "\\<javascript:" in user_body  # the autolink shows as text
    # Raw HTML is passed to st.markdown with HTML disabled (Streamlit shows it as text).
    assert all(not md.proto.allow_html for msg in at.chat_message for md in msg.markdown)


def test_chinese_text_round_trips() -> None:
    at = open_page("thread", thread="thread-cjk")
    assert bodies(at) == [CJK_QUESTION, CJK_REPLY]
    assert at.title[0].value == escape_markdown(CJK_QUESTION)


def test_files_parent_and_children_are_linked() -> None:
    at = open_page("thread", thread=XSS_THREAD)
    assert any(e.label.startswith("Files (1)") for e in at.expander)
    assert "pool\\-config\\.yaml" in texts(at)
    assert any(b.proto.label == "Download" for b in at.download_button)

    at = open_page("thread", thread=LONG_THREAD)
    links = [p.proto for p in at.get("page_link")]
    assert any(p.query_string == f"thread={CHILD_THREAD}" for p in links)
    at = open_page("thread", thread=CHILD_THREAD)
    links = [p.proto for p in at.get("page_link")]
    assert any(p.query_string == f"thread={LONG_THREAD}" for p in links)


def test_exports_are_offered(app_store: persistence.Store) -> None:
    at = open_page("thread", thread=XSS_THREAD)
    labels = {b.proto.label for b in at.download_button}
    assert {"JSON", "Markdown"} <= labels


def test_json_export_imports_back_unchanged(app_store: persistence.Store, tmp_path: Path) -> None:
    conv = app_store.get_conversation(LONG_THREAD)
    assert conv is not None
    record = json.loads(thread_json(conv))
    target = persistence.open_store(f"sqlite:///{tmp_path / 'copy.db'}")
    target.import_records([record])
    copy = target.get_conversation(LONG_THREAD)
    assert copy is not None
    assert [m.content for m in copy.messages] == [m.content for m in conv.messages]
    assert copy.cost_usd == conv.cost_usd
    target.close()


def test_markdown_export_has_every_turn(app_store: persistence.Store) -> None:
    conv = app_store.get_conversation(XSS_THREAD)
    assert conv is not None
    text = thread_markdown(conv)
    assert text.startswith("# <b>Bold</b>")
    assert "## 1. user" in text and "## 2. assistant · kimi-k2-0905-preview" in text
    assert XSS_PAYLOADS in text and "pool-config.yaml" in text


def test_an_unknown_thread_says_so() -> None:
    at = open_page("thread", thread="no-such-thread")
    assert not at.exception
    assert at.title[0].value == "Thread not found"


def test_without_a_thread_it_offers_recent_ones(app_store: persistence.Store) -> None:
    at = open_page("thread")
    assert not at.exception
    assert at.text_input(key="thread_id_input")
    recent = app_store.list_conversations(limit=20).items
    rows = shown_rows(at)
    assert [r.href for r in rows] == [f"thread?thread={c.continuation_id}" for c in recent]
    assert all(r.cost and r.cost != "$0.00" for r in rows)
    assert any(p.proto.label == "All threads" for p in at.get("page_link"))


def test_the_turn_strip_has_cost_latency_cache_hit_and_running_cost(app_store: persistence.Store) -> None:
    at = open_page("thread", thread=XSS_THREAD)
    conv = app_store.get_conversation(XSS_THREAD)
    assert conv is not None
    strip = next(f.value for f in at.dataframe if "Running cost" in f.value.columns)
    assert list(strip["Turn"]) == [1, 2]
    user, reply = strip.iloc[0], strip.iloc[1]
    assert user["Cost"] == "" and reply["Cost"] == money(conv.messages[1].cost_usd)
    assert reply["Latency"] == "2.3 s"
    assert reply["Cache hit"] == pytest.approx(200 / 1200)  # 200 of the 1,200 prompt tokens were cached
    assert reply["Running cost"] == money(conv.cost_usd)


def test_the_running_cost_counts_unpriced_turns_and_older_turns_not_loaded(app_store: persistence.Store) -> None:
    at = open_page("thread", thread=CHILD_THREAD)
    strip = next(f.value for f in at.dataframe if "Running cost" in f.value.columns)
    assert list(strip["Cost"]) == ["unpriced"] and list(strip["Running cost"]) == ["unpriced"]

    at = open_page("thread", thread=LONG_THREAD)  # only the newest 30 of 75 turns are loaded
    conv = app_store.get_conversation(LONG_THREAD)
    assert conv is not None
    strip = next(f.value for f in at.dataframe if "Running cost" in f.value.columns)
    assert list(strip["Turn"]) == list(range(LONG_TURNS - 29, LONG_TURNS + 1))
    before_first = sum(m.cost_usd or 0.0 for m in conv.messages if m.seq <= LONG_TURNS - 29)
    assert strip["Running cost"].iloc[0] == money(before_first)
    assert strip["Running cost"].iloc[-1] == money(conv.cost_usd)


def test_newer_and_older_threads_and_the_id_to_copy(app_store: persistence.Store) -> None:
    everything = app_store.list_conversations(limit=1000).items
    i = next(n for n, c in enumerate(everything) if c.continuation_id == XSS_THREAD)
    at = open_page("thread", thread=XSS_THREAD)
    links = " ".join(h.value for h in at.html if "tl-nav" in h.value)
    if i > 0:
        assert f'href="thread?thread={everything[i - 1].continuation_id}"' in links and "← Newer" in links
    assert f'href="thread?thread={everything[i + 1].continuation_id}"' in links and "Older →" in links
    assert any(c.value == XSS_THREAD for c in at.code)

    at = open_page("thread", thread=everything[0].continuation_id)  # the newest has no newer one
    links = " ".join(h.value for h in at.html if "tl-nav" in h.value)
    assert "← Newer" not in links and "Older →" in links


def test_a_long_reply_is_folded_unless_linked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'long.db'}"
    store = persistence.open_store(url)
    long_text = "First line of a long answer.\n\n" + "More detail. " * 600
    try:
        store.record_message("long-reply", "user", "Explain it at length.")
        store.record_message("long-reply", "assistant", long_text, model="glm-4.6", usage={"prompt_tokens": 10})
    finally:
        store.close()
    monkeypatch.setenv("PERSISTENCE_URL", url)
    at = open_page("thread", thread="long-reply")
    assert not at.exception
    folded = [e for e in at.expander if e.label.startswith("Show all (")]
    assert len(folded) == 1 and f"({len(long_text):,} characters)" in folded[0].label
    assert not folded[0].proto.expanded
    assert any(c.value.startswith("First line of a long answer\\.") for c in at.chat_message[1].caption)
    at = open_page("thread", thread="long-reply", seq="2")
    assert next(e for e in at.expander if e.label.startswith("Show all (")).proto.expanded
