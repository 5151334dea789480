"""The app's sanitiser, checked against an independent CommonMark parser (markdown-it-py).

``safe_markdown`` must leave no link or image whose target could run script, whatever the text;
markdown-it plays the browser's Markdown renderer and reports every link and image it would draw.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from ui.safe import escape_markdown, highlight_html, is_safe_url, safe_markdown

_md = MarkdownIt("commonmark").enable("table").enable("strikethrough")
_md.validateLink = lambda url: True  # type: ignore[method-assign]  # see every link, dangerous ones included


def rendered_targets(text: str) -> list[tuple[str, str]]:
    """(kind, target) of every link and image a CommonMark renderer draws from ``text``."""
    found: list[tuple[str, str]] = []

    def walk(tokens: list[Any]) -> None:
        for tok in tokens:
            if tok.type == "link_open":
                found.append(("link", str(tok.attrGet("href"))))
            elif tok.type == "image":
                found.append(("image", str(tok.attrGet("src"))))
            if tok.children:
                walk(tok.children)

    walk(_md.parse(text))
    return found


def assert_inert(text: str) -> str:
    out = safe_markdown(text)
    for kind, target in rendered_targets(out):
        assert kind == "link", f"an image survives in {out!r}"
        assert is_safe_url(target), f"unsafe {target!r} survives in {out!r}"
    return out


PAYLOADS = [
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x]( javascript:alert(1) )",
    "[x](<javascript:alert(1)>)",
    "[x](&#106;avascript:alert(1))",
    "[x](java&#x09;script:alert(1))",
    "[x](java&Tab;script:alert(1))",
    "[x](javascript&colon;alert(1))",
    "[x](\\javascript:alert(1))",
    "[x](\njavascript:alert(1))",
    "[x](vbscript:msgbox(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[x](file:///etc/passwd)",
    "![x](javascript:alert(1))",
    "![x](https://tracker.example/pixel.gif)",
    "![x][img]\n\n[img]: https://tracker.example/p.gif",
    "[x][evil]\n\n[evil]: javascript:alert(1)",
    "[evil]\n\n[evil]:\n   javascript:alert(1)",
    "> [x][q]\n>\n> [q]: <javascript:alert(1)>",
    "- [x][l]\n\n  [l]: data:text/html,hi",
    "<javascript:alert(1)>",
    "\\\\<javascript:alert(1)>",
    "[a `code`](javascript:alert(1))",
    "```x`\n[x](javascript:alert(1))\n```",
    "- item\n  ```\n[x](javascript:alert(1))\n",
    "> ```\n[x](javascript:alert(1))",
    "`unclosed [x](javascript:alert(1))",
    '[x](javascript:alert(1) "title")',
    "[x](" + "&#9;" * 300 + "javascript:alert(1))",
    "[x](java" + "\u200b" * 400 + "script:alert(1))",
    "| a | b |\n|---|---|\n| [x](javascript:alert(1)) | y |",
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=[f"p{i}" for i in range(len(PAYLOADS))])
def test_dangerous_links_and_images_are_inert(payload: str) -> None:
    assert_inert(payload)


def test_a_neutralised_link_still_shows_what_was_written() -> None:
    html = _md.render(safe_markdown("see [x](javascript:alert(1)) and <vbscript:msgbox(1)>"))
    assert "<a" not in html
    assert "[x](javascript:alert(1))" in html and "&lt;vbscript:msgbox(1)&gt;" in html


def test_script_and_event_handlers_stay_as_text() -> None:
    # Raw HTML is rendered with HTML disabled; the sanitiser keeps it visible as typed.
    text = "<script>alert(1)</script> and <img src=x onerror=alert(1)>"
    assert safe_markdown(text) == text


def test_ordinary_markdown_is_unchanged() -> None:
    text = (
        "# Fix\n\nSee [the docs](https://docs.python.org/3/) and <https://example.com>, mail "
        "[me](mailto:a@b.c), or the [local page](./thread?thread=x).\n\n```python\nx = d['k'](1)\n```\n"
        "Use `vec![1, 2]` or `a[0](x)` in code.\n\n1. one\n2. two\n"
    )
    out = assert_inert(text)
    assert out == text
    targets = rendered_targets(out)
    assert ("link", "https://docs.python.org/3/") in targets and ("link", "mailto:a@b.c") in targets


def test_images_become_links_so_nothing_is_fetched() -> None:
    out = assert_inert("look: ![diagram](https://example.com/d.png)")
    assert rendered_targets(out) == [("link", "https://example.com/d.png")]
    assert "diagram" in out


def test_code_keeps_what_was_typed() -> None:
    text = "```md\n![logo](logo.png) [x](https://example.com)\n```\nand `vec![a](b)` inline\n"
    assert safe_markdown(text) == text


def test_dangerous_link_syntax_is_escaped_even_in_code() -> None:
    # Safety never rests on guessing where code ends; in code the cost is one visible backslash.
    assert safe_markdown("```\n[x](javascript:alert(1))\n```") == "```\n[x]\\(javascript:alert(1))\n```"


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("https://example.com/a?b=c", True),
        ("HTTP://EXAMPLE.COM", True),
        ("mailto:x@y.z", True),
        ("/relative/path", True),
        ("#anchor", True),
        ("thread?thread=abc", True),
        ("javascript:alert(1)", False),
        (" javascript:alert(1)", False),
        ("jav\tascript:alert(1)", False),
        ("&#x6A;avascript:alert(1)", False),
        ("java%73cript:alert(1)", False),
        ("data:image/png;base64,AAAA", False),
        ("vbscript:x", False),
        ("file:///etc/passwd", False),
    ],
)
def test_is_safe_url(url: str, safe: bool) -> None:
    assert is_safe_url(url) is safe


_ALPHABET = st.sampled_from(
    [
        "[",
        "]",
        "(",
        ")",
        "!",
        "<",
        ">",
        ":",
        "\\",
        "`",
        "```",
        "~~~",
        "\n",
        "\n\n",
        " ",
        "   ",
        "- ",
        "> ",
        "1. ",
        "javascript:",
        "JaVa",
        "script:",
        "data:",
        "&#106;",
        "&#x09;",
        "&colon;",
        "alert(1)",
        "x",
        "https://a.b",
        '"t"',
        "|",
    ]
)


@settings(max_examples=600, deadline=None)
@given(st.lists(_ALPHABET, max_size=40).map("".join))
def test_no_generated_text_yields_an_unsafe_link(text: str) -> None:
    assert_inert(text)


def test_escape_markdown_shows_text_literally() -> None:
    title = "[x](javascript:alert(1)) **bold** :red[r] $x$ <b>\nnext"
    escaped = escape_markdown(title)
    assert "\n" not in escaped
    assert rendered_targets(escaped) == []
    html = _md.render(escaped)
    assert "<strong>" not in html and "<b>" not in html


def test_highlight_html_escapes_every_fragment() -> None:
    out = highlight_html([("<img src=x onerror=alert(1)> ", False), ("<b>pool</b>", True), ("\nend", False)])
    assert out == "&lt;img src=x onerror=alert(1)&gt; <mark>&lt;b&gt;pool&lt;/b&gt;</mark> end"
