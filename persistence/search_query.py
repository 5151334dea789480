"""The search syntax users type, parsed once and rendered for each backend.

Accepted: words (all must match, English matched by stem), ``"exact phrase"``, ``a OR b``,
``-word`` / ``-"phrase"`` to exclude, ``word*`` for a prefix. Anything else is searched as
words: punctuation separates words, an unbalanced quote ends at the end of the query, a
query of only punctuation or only exclusions matches nothing. The user's text never reaches
the database as syntax: every word is re-quoted when rendered.

Text written without spaces (Chinese, Japanese, Korean, Thai) is matched by substring. It is
indexed as overlapping character pairs (``数据库`` -> ``数据 据库 库``) and a query run
becomes the phrase of its pairs, which matches exactly where the run occurs.

A query is refused (``ValidationError`` naming the limit, never cut) when it is longer than
``MAX_QUERY_CHARS`` characters or searches more than ``MAX_QUERY_WORDS`` words, counting
each character of a Chinese/Japanese/Korean/Thai run as a word (each becomes a character
pair of the index). The same limits hold on every backend; they bound what a search costs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ValidationError

__all__ = [
    "MAX_QUERY_CHARS",
    "MAX_QUERY_WORDS",
    "Clause",
    "Term",
    "cjk_index_text",
    "is_cjk_char",
    "parse_query",
    "python_fragments",
    "to_fts5",
]

# What one search may ask for. Every backend refuses more (ValidationError("query", …)),
# and the Postgres function search_messages refuses the rendered equivalent (PT400).
MAX_QUERY_CHARS = 1000
MAX_QUERY_WORDS = 64

# Scripts written without spaces between words.
_CJK_RANGES = (
    "\u0e00-\u0e7f"  # Thai
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3400-\u4dbf"  # CJK Extension A
    "\u4e00-\u9fff"  # CJK Unified Ideographs
    "\uac00-\ud7af"  # Hangul syllables
    "\uf900-\ufaff"  # CJK Compatibility Ideographs
    "\U00020000-\U0003134f"  # CJK Extensions B-G
)
_CJK_RUN = re.compile(f"[{_CJK_RANGES}]+")
_CJK_CHAR = re.compile(f"[{_CJK_RANGES}]")
# A word as SQLite's unicode61 and Postgres' parser see it: letters and digits (no "_").
_WORD_OR_RUN = re.compile(f"[{_CJK_RANGES}]+|[^\\W_{_CJK_RANGES}]+")


def is_cjk_char(ch: str) -> bool:
    return bool(_CJK_CHAR.match(ch))


@dataclass(frozen=True, slots=True)
class Term:
    """A word or phrase. ``words`` are the units (latin words or CJK runs) in order."""

    words: tuple[str, ...]
    phrase: bool = False
    prefix: bool = False

    def is_cjk(self, i: int) -> bool:
        return bool(_CJK_CHAR.match(self.words[i]))


@dataclass(frozen=True, slots=True)
class Clause:
    """Terms joined by OR; the clause is excluded when ``negated``."""

    terms: tuple[Term, ...]
    negated: bool = False


def _split_chunks(query: str) -> list[tuple[str, bool]]:
    """(text, quoted) chunks: quoted phrases whole, the rest split on whitespace."""
    chunks: list[tuple[str, bool]] = []
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch.isspace():
            i += 1
            continue
        if ch == '"' or (ch == "-" and i + 1 < n and query[i + 1] == '"'):
            neg = ch == "-"
            start = i + (2 if neg else 1)
            end = query.find('"', start)
            if end == -1:
                end = n  # unbalanced quote: the phrase runs to the end
            prefix = end + 1 < n and query[end + 1] == "*"
            chunks.append((("-" if neg else "") + query[start:end] + ("*" if prefix else ""), True))
            i = end + 1 + (1 if prefix else 0)
            continue
        j = i
        while j < n and not query[j].isspace() and query[j] != '"':
            j += 1
        chunks.append((query[i:j], False))
        i = j
    return chunks


def parse_query(query: str) -> list[Clause]:
    """Clauses to AND together (negated ones excluded). Empty: nothing to search for.

    Raises ValidationError when the query is over MAX_QUERY_CHARS or MAX_QUERY_WORDS.
    """
    if not isinstance(query, str):
        return []
    if len(query) > MAX_QUERY_CHARS:
        raise ValidationError(
            "query", f"{len(query):,} characters; a search is at most {MAX_QUERY_CHARS:,} characters long"
        )
    clauses: list[list[Term]] = []
    negations: list[bool] = []
    join_next = False
    words = 0
    for text, quoted in _split_chunks(query):
        if not quoted and text == "OR":
            join_next = bool(clauses)
            continue
        if not quoted and text == "AND":
            continue
        negated = text.startswith("-") and len(text) > 1
        if negated:
            text = text[1:]
        prefix = text.endswith("*")
        units = tuple(_WORD_OR_RUN.findall(text))
        if not units:
            continue
        words += sum(len(u) if _CJK_CHAR.match(u) else 1 for u in units)
        if words > MAX_QUERY_WORDS:
            raise ValidationError(
                "query",
                f"more than {MAX_QUERY_WORDS} words; a search is at most {MAX_QUERY_WORDS} words "
                "(each Chinese, Japanese, Korean or Thai character counts as one)",
            )
        term = Term(words=units, phrase=quoted or len(units) > 1, prefix=prefix)
        if join_next and not negated and not negations[-1]:
            clauses[-1].append(term)
        else:
            clauses.append([term])
            negations.append(negated)
        join_next = False
    parsed = [Clause(tuple(terms), neg) for terms, neg in zip(clauses, negations, strict=True)]
    if not any(not c.negated for c in parsed):
        return []  # only exclusions: there is nothing to rank
    return parsed


def cjk_pairs(run: str) -> list[str]:
    """Overlapping pairs of a run, the way the index stores it (without the tail char)."""
    if len(run) == 1:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)]


def _expand_run(run: str) -> str:
    return run if len(run) == 1 else " ".join([*cjk_pairs(run), run[-1]])


def cjk_index_text(content: str) -> str | None:
    """The text to index instead of ``content`` when it has CJK runs (None when none).

    Each run becomes its overlapping pairs plus its last character, so a query of any
    length finds it (one character as a prefix of a pair, or the tail); text around the
    runs is kept, now separated from them, so ``GLM模型`` indexes ``GLM`` as a word.
    """
    if not _CJK_CHAR.search(content):
        return None
    return _CJK_RUN.sub(lambda m: " " + _expand_run(m.group(0)) + " ", content)


def _fts5_term(term: Term) -> str:
    tokens: list[str] = []
    for i, word in enumerate(term.words):
        if term.is_cjk(i):
            tokens.extend(cjk_pairs(word))
            if len(word) > 1 and i + 1 < len(term.words):
                tokens.append(word[-1])  # the run ends here in the text too, so its tail follows
        else:
            tokens.append(word)
    # FTS5 strings are double-quoted; our tokens never contain quotes or operators.
    rendered = '"' + " ".join(tokens) + '"'
    single_cjk = len(term.words) == 1 and term.is_cjk(0) and len(term.words[0]) == 1
    if term.prefix or single_cjk:
        rendered += "*"
    return rendered


def to_fts5(clauses: list[Clause]) -> str | None:
    """An FTS5 MATCH expression, or None when there is nothing to search for."""
    positive = [c for c in clauses if not c.negated]
    negative = [c for c in clauses if c.negated]
    if not positive:
        return None

    def render(c: Clause) -> str:
        parts = [_fts5_term(t) for t in c.terms]
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    expr = " AND ".join(render(c) for c in positive)
    if negative:
        expr = f"({expr}) NOT (" + " OR ".join(render(c) for c in negative) + ")"
    return expr


def python_fragments(content: str, clauses: list[Clause], width: int = 160) -> tuple[tuple[str, bool], ...]:
    """A snippet of ``content`` around the first match, with matches marked.

    Used where the database cannot cut one from the original text (CJK hits, whose index
    text is made of character pairs). CJK runs are matched as substrings; latin words by
    prefix, case-insensitively (stems like run/running both light up).
    """
    needles: list[str] = []
    for clause in clauses:
        if clause.negated:
            continue
        for term in clause.terms:
            for i, word in enumerate(term.words):
                if term.is_cjk(i):
                    needles.append(re.escape(word))
                else:
                    stem = word if len(word) <= 4 else word[: max(4, len(word) - 3)]
                    needles.append(r"\b" + re.escape(stem) + r"\w*")
    if not needles:
        return ((content[:width], False),)
    pattern = re.compile("|".join(sorted(needles, key=len, reverse=True)), re.IGNORECASE)
    first = pattern.search(content)
    start = 0 if first is None else max(0, first.start() - width // 3)
    end = min(len(content), start + width)
    window = content[start:end]
    parts: list[tuple[str, bool]] = []
    if start > 0:
        parts.append(("…", False))
    pos = 0
    for m in pattern.finditer(window):
        if m.start() > pos:
            parts.append((window[pos : m.start()], False))
        parts.append((m.group(0), True))
        pos = m.end()
    if pos < len(window):
        parts.append((window[pos:], False))
    if end < len(content):
        parts.append(("…", False))
    return tuple(parts)


# Private-use characters mark matches in snippets the databases cut (FTS5 snippet(),
# ts_headline), so message text is never read as markup.
MARK_OPEN, MARK_CLOSE = "\ue000", "\ue001"


def marked_fragments(snippet: str) -> tuple[tuple[str, bool], ...]:
    """``(text, matched)`` pairs from a snippet whose matches are wrapped in MARK_OPEN/CLOSE."""
    parts: list[tuple[str, bool]] = []
    rest = snippet
    while rest:
        start = rest.find(MARK_OPEN)
        if start == -1:
            parts.append((rest, False))
            break
        if start:
            parts.append((rest[:start], False))
        end = rest.find(MARK_CLOSE, start)
        if end == -1:
            parts.append((rest[start + 1 :], True))
            break
        parts.append((rest[start + 1 : end], True))
        rest = rest[end + 1 :]
    merged: list[tuple[str, bool]] = []
    for text, hit in parts:  # adjacent highlighted tokens read better as one highlight
        if merged and merged[-1][1] == hit:
            merged[-1] = (merged[-1][0] + text, hit)
        else:
            merged.append((text, hit))
    return tuple(merged)
