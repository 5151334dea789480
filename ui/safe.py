"""Showing stored text without letting it act: safe Markdown, escaped labels, highlighted snippets.

Message content comes from users and models, so the app treats it as hostile. It is drawn with
``st.markdown`` (raw HTML off: tags show as text), after :func:`safe_markdown` has made every link
and image target inert unless it is ``http``, ``https``, ``mailto`` or relative. Images become
links, so opening a thread never fetches a remote picture (a tracking pixel). User text that lands
in a heading, label or caption goes through :func:`escape_markdown`; search snippets are built from
``SearchHit.fragments`` with every fragment HTML-escaped (:func:`highlight_html`).

Pure functions: no Streamlit import, unit-tested on their own.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from urllib.parse import unquote

__all__ = ["SAFE_SCHEMES", "escape_markdown", "highlight_html", "inline_code", "is_safe_url", "safe_markdown"]

SAFE_SCHEMES = frozenset({"http", "https", "mailto"})

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
# Characters a browser drops or ignores inside a URL, and invisible ones a reader would not see.
_IGNORED = re.compile(r"[\x00-\x20\x7f-\x9f\u00ad\u034f\u180e\u200b-\u200f\u2028-\u202f\u2060-\u206f\ufeff]")
_BACKSLASH_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
# An autolink not already escaped (an even number of backslashes before it leaves it live).
_AUTOLINK = re.compile(r"(?<!\\)((?:\\\\)*)<([A-Za-z][A-Za-z0-9+.\-]{1,31}):[^\s<>]*>")
# A link reference definition: at a line start, after any blockquote / list markers.
_DEFINITION = re.compile(
    r"^((?:[ \t]*(?:>|[-+*]|\d{1,9}[.)])(?=[ \t]|$))*[ \t]*)(\[)((?:[^\[\]\\]|\\[\s\S])+)\]:", re.M
)
_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$&])")


def _decoded(url: str) -> str:
    text = url
    for _ in range(5):
        decoded = unquote(html.unescape(_BACKSLASH_ESCAPE.sub(r"\1", text)))
        if decoded == text:
            break
        text = decoded
    return _IGNORED.sub("", text)


def is_safe_url(url: str) -> bool:
    """True when a link target is http(s), mailto or relative once decoded as a browser would.

    Markdown decodes character references (``&#106;``) and backslash escapes in a target and a
    browser drops tabs and newlines inside it, so ``&#106;ava&#x09;script:`` is still
    ``javascript:``; the check decodes all of that first (repeatedly, to be safe) and refuses
    every other scheme (``javascript:``, ``data:``, ``vbscript:``, ``file:`` …).
    """
    match = _SCHEME.match(_decoded(url))
    return match is None or match.group(1).lower() in SAFE_SCHEMES


_TARGET_PREFIX = 256  # a scheme is decided by a target's first characters; reading more only costs time
_SCHEME_SO_FAR = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.\-]*)?$")


def _target_is_safe(text: str, start: int) -> bool:
    """Whether the link target starting at ``start`` (after ``(`` or ``:``) is safe, reading it as
    CommonMark does: optional spaces and one line break, then ``<...>`` or a run that ends at
    whitespace or an unbalanced ``)``. Only its first characters are read; a target that is still
    spelling a scheme when they run out is refused."""
    i, n = start, len(text)
    while i < n and text[i] in " \t":
        i += 1
    if i < n and text[i] == "\n":
        i += 1
        while i < n and text[i] in " \t":
            i += 1
    end = min(n, i + _TARGET_PREFIX)
    if i < n and text[i] == "<":
        j = i + 1
        while j < end and text[j] not in "<>\n":
            j += 2 if text[j] == "\\" else 1
        target, cut = text[i + 1 : min(j, end)], j >= end
    else:
        depth, j = 0, i
        while j < end:
            ch = text[j]
            if ch == "\\":
                j += 2
                continue
            if ch <= " " or ch == "\x7f":
                break
            if ch == "(":
                depth += 1
            elif ch == ")":
                if depth == 0:
                    break
                depth -= 1
            j += 1
        target, cut = text[i : min(j, end)], j >= end and end < n
    if not is_safe_url(target):
        return False
    return not (cut and _SCHEME_SO_FAR.match(_decoded(target)))


def _escape_unsafe_links(text: str) -> str:
    """Escape the link syntax whose target is unsafe, so it shows as the literal text it is:
    ``](`` of an inline link or image, the ``[`` of a reference definition, the ``<`` of an
    autolink. Applied to the whole text, code included: safety must not rest on guessing where
    code ends, and only dangerous targets are touched."""
    out: list[str] = []
    i = 0
    while True:
        j = text.find("](", i)
        if j < 0:
            break
        out.append(text[i : j + 1])
        if not _target_is_safe(text, j + 2):
            out.append("\\")  # ]\( is no longer a link
        i = j + 1
    out.append(text[i:])
    text = "".join(out)

    def definition(m: re.Match[str]) -> str:
        if _target_is_safe(text, m.end()):
            return m.group(0)
        return m.group(1) + "\\[" + m.group(3) + "]:"

    text = _DEFINITION.sub(definition, text)
    return _AUTOLINK.sub(_autolink, text)


def _autolink(m: re.Match[str]) -> str:
    if m.group(2).lower() in SAFE_SCHEMES:
        return m.group(0)
    return m.group(1) + "\\" + m.group(0)[len(m.group(1)) :]


_IMAGE = re.compile(r"!\[((?:[^\[\]\n]|\[[^\[\]\n]*\])*)\](?=[(\[])")


def _images_to_links(text: str) -> str:
    """``![alt](url)`` becomes ``[image: alt](url)`` outside code: a link waits for a click, an image
    would fetch its target as soon as the thread is opened."""
    return "".join(chunk if is_code else _IMAGE.sub(r"[image: \1]", chunk) for chunk, is_code in _segments(text))


def _segments(text: str) -> Iterable[tuple[str, bool]]:
    """Split Markdown into (chunk, is_code): fenced code blocks and inline code spans are code.

    A close guess, used only to keep image syntax inside code as typed; safety does not rest on it."""
    lines = text.split("\n")
    prose: list[str] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m and not (m.group(2)[0] == "`" and "`" in m.group(3)):
            fence = m.group(2)
            j = i + 1
            while j < len(lines):
                stripped = lines[j].strip()
                if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                    break
                j += 1
            if prose:
                yield from _inline_segments("\n".join(prose) + "\n")
                prose = []
            block = lines[i : j + 1]
            yield "\n".join(block) + ("\n" if j + 1 < len(lines) else ""), True
            i = j + 1
            continue
        prose.append(lines[i])
        i += 1
    if prose:
        yield from _inline_segments("\n".join(prose))


_TICKS = re.compile(r"`+")


def _inline_segments(text: str) -> Iterable[tuple[str, bool]]:
    pos = 0
    search_from = 0
    while True:
        m = _TICKS.search(text, search_from)
        if m is None:
            break
        run = m.group(0)
        close = re.compile(r"(?<!`)" + run + r"(?!`)")
        end = close.search(text, m.end())
        if end is None:
            search_from = m.end()
            continue
        if m.start() > pos:
            yield text[pos : m.start()], False
        yield text[m.start() : end.end()], True
        pos = search_from = end.end()
    if pos < len(text):
        yield text[pos:], False


def safe_markdown(text: str) -> str:
    """Markdown that renders like ``text`` but whose links and images cannot run or fetch anything.

    Raw HTML needs no change here: the app renders with HTML disabled, so ``<script>`` shows as
    text. Code is left as typed except for link syntax with a dangerous target (rare in code,
    and escaping it there only adds a visible backslash).
    """
    return _escape_unsafe_links(_images_to_links(text))


def escape_markdown(text: object) -> str:
    """User text for a heading, caption or label: every Markdown character escaped, one line."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def inline_code(text: object) -> str:
    """``text`` as a Markdown code span, shown exactly as it is (one line)."""
    body = " ".join(str(text).split())
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if body.startswith("`") or body.endswith("`") or longest else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def highlight_html(fragments: Iterable[tuple[str, bool]]) -> str:
    """A search snippet as HTML: every fragment escaped, the matched ones in ``<mark>``."""
    parts = []
    for text, matched in fragments:
        escaped = html.escape(" ".join(text.split("\n")), quote=True)
        parts.append(f"<mark>{escaped}</mark>" if matched else escaped)
    return "".join(parts)
