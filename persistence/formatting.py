"""How numbers read: sizes, money, token counts and shares. One rule each, used by the CLI,
the report and the app. Pure functions, no dependencies.

* Sizes are 1024-based and say so: ``512 B``, ``1.5 KiB``, ``3.2 MiB``, ``1.0 GiB``.
* Money is US dollars: ``$12,345`` / ``$12.35`` / ``$0.44`` / ``$0.0042`` (cents down to
  10 cents, then two significant digits). An amount with no price (None or NaN) is never
  shown as ``$0``: it reads ``unpriced`` (or what the caller passes as ``unpriced=``).
"""

from __future__ import annotations

import math
import re

__all__ = ["money", "percent", "plain_title", "plural", "size", "size_ticks", "thread_cost", "tokens"]

MISSING = "–"
"""What a missing number (None/NaN) reads as, where it is not an unpriced amount."""


def size(n_bytes: float | None) -> str:
    """A byte count in 1024-based units: ``999 B``, ``1.5 KiB``, ``12.0 MiB``, ``2.1 GiB``."""
    if n_bytes is None or math.isnan(n_bytes):
        return MISSING
    n = float(n_bytes)
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:,.0f} B"


def money(usd: float | None, *, unpriced: str = "unpriced") -> str:
    """US dollars as people read them: ``$12,345`` / ``$12.35`` / ``$0.44`` / ``$0.0042``.

    None or NaN is an amount with no price, shown as ``unpriced`` (never as ``$0``)."""
    if usd is None or math.isnan(usd):
        return unpriced
    a = abs(float(usd))
    # The sign before the dollar (``-$0.15``): Streamlit's metric deltas read a leading minus.
    sign = "-" if usd < 0 else ""
    if a >= 1000:
        return f"{sign}${a:,.0f}"
    if a >= 0.1 or a == 0:
        return f"{sign}${a:,.2f}"
    digits = min(10, 1 - math.floor(math.log10(a)))  # two significant digits, fixed point
    return f"{sign}${a:.{digits}f}"


def thread_cost(usd: float, unpriced_messages: int) -> str:
    """A thread's cost, honest about messages without a price: ``$0.12 + 3 unpriced``."""
    if unpriced_messages and not usd:
        return "unpriced"
    return money(usd) + (f" + {unpriced_messages} unpriced" if unpriced_messages else "")


def tokens(n: float | None) -> str:
    """Compact token counts: ``950``, ``12.3k``, ``4.6M``, ``1.2B``."""
    if n is None or math.isnan(n):
        return MISSING
    x = float(n)
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.1f}{suffix}"
    return f"{x:,.0f}"


def percent(share: float | None) -> str:
    """A share (0.25) as a percentage: ``25%``, and ``0.4%`` below one percent."""
    if share is None or math.isnan(share):
        return MISSING
    x = float(share)
    return f"{x:.0%}" if abs(x) >= 0.01 or x == 0 else f"{x:.1%}"


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """A count with its noun in the right number: ``1 row``, ``2 rows``, ``1,234 threads``."""
    return f"{n:,} {noun if n == 1 else nouns or noun + 's'}"


_SIZE_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1))


def size_ticks(max_bytes: float, *, most: int = 6) -> tuple[list[float], list[str]]:
    """Tick positions and labels for an axis of bytes from 0 to ``max_bytes``, in the units
    :func:`size` uses (``0``, ``256 KiB``, ``512 KiB`` …): at most ``most`` + 1 ticks on round
    values of one unit, so an axis never reads ``2M`` or ``1.5e+06 bytes``."""
    top = float(max_bytes) if max_bytes and not math.isnan(max_bytes) and max_bytes > 0 else 1.0
    unit, scale = next((u, s) for u, s in _SIZE_UNITS if top >= s or s == 1)
    span = top / scale
    step = 1.0
    for magnitude in (10.0**k for k in range(-1, 5)):
        step = next((m * magnitude for m in (1, 2, 2.5, 5) if span / (m * magnitude) <= most), 0.0)
        if step:
            break
    if unit == "B":
        step = max(step, 1.0)
    count = math.ceil(span / step - 1e-9)
    values = [i * step * scale for i in range(count + 1)]
    labels = ["0" if i == 0 else f"{f'{i * step:,.2f}'.rstrip('0').rstrip('.')} {unit}" for i in range(count + 1)]
    return values, labels


# Markdown that a title may carry from the message it was taken from (titles are the first
# words of the first user turn, whitespace collapsed), removed for display.
_TITLE_FENCE = re.compile(r"(?:^|(?<=\s))(?:`{3,}|~{3,})[\w+#.-]*")
_TITLE_HEADING = re.compile(r"(?:^|(?<=\s))#{1,6}(?=\s)")
_TITLE_LEADER = re.compile(r"^(?:>\s*|[-*+]\s+)+")
# A link destination may hold one level of parentheses (`alert(3)`, `Foo_(bar)`).
_TITLE_IMAGE = re.compile(r"!\[([^\]]*)\](?:\((?:[^()]|\([^()]*\))*\)?|\[[^\]]*\])?")
_TITLE_LINK = re.compile(r"\[([^\]]+)\](?:\((?:[^()]|\([^()]*\))*(?:\)|$)|\[[^\]]*\])")
_TITLE_AUTOLINK = re.compile(r"<((?:https?|mailto):[^>\s]+)>")
_TITLE_EMPHASIS = (
    re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*"),
    # ``__init__`` is a name, not bold: underscores embolden only words with a space between.
    re.compile(r"(?<!\w)__(?=\S)(\S+ .*?)(?<=\S)__(?!\w)"),
    re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])"),
    re.compile(r"(?<![\w_])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w_])"),
    re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"),
)
_TITLE_MAX = 500
_TITLE_CODE = re.compile(r"(`+)(.+?)\1")
_TITLE_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def plain_title(text: str | None) -> str | None:
    """A thread title without Markdown syntax, for display: ``"```python def fetch("`` reads
    ``def fetch(``, ``## **Fix** the [parser](https://x)`` reads ``Fix the parser``. Words stay
    as they are (``get_conversation``, ``C#``, ``a * b``); one line; None when nothing is left."""
    if text is None:
        return None
    escaped: list[str] = []

    def hold(m: re.Match[str]) -> str:  # an escaped character is text: keep it out of the rules
        escaped.append(m.group(1))
        return f"\x00{len(escaped) - 1}\x00"

    line = " ".join(str(text).replace("\x00", "").split())
    if len(line) > _TITLE_MAX:  # a display title is two lines at most: no need to read a novel
        line = line[: _TITLE_MAX - 1] + "…"
    line = _TITLE_ESCAPE.sub(hold, line)
    line = _TITLE_FENCE.sub(" ", line)
    line = _TITLE_CODE.sub(lambda m: m.group(2).strip(), line)
    line = _TITLE_IMAGE.sub(r"\1", line)
    line = _TITLE_LINK.sub(r"\1", line)
    line = _TITLE_AUTOLINK.sub(r"\1", line)
    for pattern in _TITLE_EMPHASIS:
        line = pattern.sub(lambda m: m.group(m.lastindex or 0), line)
    line = _TITLE_HEADING.sub(" ", " ".join(line.split()))
    line = _TITLE_LEADER.sub("", " ".join(line.split()))
    # What is left of a fence or code span cut off by the title's length ("… with tests. ``…").
    line = line.replace("`", " ")
    line = re.sub(r"\x00(\d+)\x00", lambda m: escaped[int(m.group(1))], line)
    return " ".join(line.split()).replace(" …", "…") or None
