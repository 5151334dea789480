"""The search syntax users type, parsed once and rendered for each backend.

Accepted: words (all must match, English matched by stem), ``"exact phrase"``, ``a OR b``,
``-word`` / ``-"phrase"`` to exclude, ``word*`` for a prefix. Anything else is searched as
words: punctuation separates words, an unbalanced quote ends at the end of the query, a
query of only punctuation or only exclusions matches nothing. The user's text never reaches
the database as syntax: every word is re-quoted when rendered.

Text and queries are normalised alike (``normalise``: NFKC, variation selectors dropped,
accents stripped from Latin letters only; case folded per token) and cut into the same
tokens (``index_text`` for messages, ``term_tokens`` for queries), so SQLite and Postgres
index and look up the very same words whatever their own tokenizers would do:

- Text written without spaces (Chinese, Japanese, Korean, Thai) is matched by substring. It
  is indexed as overlapping character pairs (``数据库`` -> ``数据 据库 库``) and a query run
  becomes the phrase of its pairs, which matches exactly where the run occurs.
- Words with combining marks (Hindi, Arabic with vowel marks, Hebrew with points), other
  non-ASCII words, emoji and symbols (a ZWJ sequence such as 👩‍💻 is one) are spelled as one
  a-z0-9 token each (``_token``), which neither database splits or stems.
- Identifiers (``get_conversation``, ``CamelCase``, ``file.py``, ``--flag``, URLs) are
  indexed whole and by their parts.
- Plain English words are left to the databases, which stem them.

The index text goes to ``messages.search_extra`` (indexed instead of the content), or None
where the databases' own tokenizers see the same words (plain ASCII text). ``INDEX_VERSION``
names this spelling: rows written under an older one are recomputed (see there).

A query is refused (``ValidationError`` naming the limit, never cut) when it is longer than
``MAX_QUERY_CHARS`` characters or searches more than ``MAX_QUERY_WORDS`` words, counting
each character of a Chinese/Japanese/Korean/Thai run as a word (each becomes a character
pair of the index), or holds a prefix shorter than ``MIN_PREFIX_CHARS``, more than
``MAX_QUERY_PREFIXES`` prefixes or more than ``MAX_QUERY_EXCLUSIONS`` exclusions. The same limits hold on every backend; they bound what a
search costs.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

from .errors import ValidationError

__all__ = [
    "INDEX_VERSION",
    "MAX_QUERY_CHARS",
    "MAX_QUERY_EXCLUSIONS",
    "MAX_QUERY_PREFIXES",
    "MAX_QUERY_WORDS",
    "MIN_PREFIX_CHARS",
    "SEARCH_COUNT_CAP",
    "SEARCH_RANK_WINDOW",
    "SEARCH_STOPPED",
    "SEARCH_TIME_LIMIT_S",
    "Clause",
    "Term",
    "cjk_index_text",
    "index_text",
    "is_cjk_char",
    "normalise",
    "parse_query",
    "python_fragments",
    "term_tokens",
    "to_fts5",
    "to_tsquery",
    "unit_tokens",
]

# What one search may ask for. Every backend refuses more (ValidationError("query", …)),
# and the Postgres function search_messages refuses the rendered equivalent (PT400).
MAX_QUERY_CHARS = 1000
MAX_QUERY_WORDS = 64
# Ranking (order "rank") reads the score of at most this many of the newest matches (or of
# ``limit`` of them when more are asked for, so a page is always full), the same number on
# every backend so they answer alike: a word in half of a million messages would otherwise
# cost a pass over all of them per query. A rarer word is ranked in full; order "recent" is
# exact whatever the count. 250 is 12 pages of the default 20 hits; it was 1,000, but reading
# 1,000 rows to rank them was most of a search's time on Postgres (p50 2.5x that of order
# "recent" at a million messages, 1.5x with 250: bench/README.md).
SEARCH_RANK_WINDOW = 250
# A prefix (``word*``) is looked up by merging the index entries of every word it begins, on
# both backends, so its cost grows with how many words share it. At a million messages, on
# SQLite (bench/bench_search.py, limit 500): ``s*`` over 2 s, ``con*`` 1.3 s, ``conn*`` 0.4 s
# on a loaded machine (FTS5 has no prefix index here: ``prefix=`` on messages_fts would allow
# shorter ones). A prefix needs this many characters (a Chinese, Japanese, Korean or Thai
# character is a prefix of the character pairs it starts, and is counted by the next limit).
MIN_PREFIX_CHARS = 4
# ... and one search holds at most this many prefixes, single CJK characters included.
MAX_QUERY_PREFIXES = 4
# An exclusion (``-word``, ``-"a phrase"``) is checked against every match of the rest of the
# query, on both backends: ``queue`` minus 63 common words took 0.7 s on SQLite and 1.3 s on
# Postgres at a million messages. A search needs few of them; this many at most.
MAX_QUERY_EXCLUSIONS = 8
# Store.count_search counts matches up to this many and answers SEARCH_COUNT_CAP + 1 beyond:
# counting every match of a common word read every matching row on Postgres (1.5-2 s for
# `the` at a million messages); "more than 10,000" says what a person needs. The SQL function
# count_search_messages stops at the same number (migration 20261130190000).
SEARCH_COUNT_CAP = 10_000
# A search still running after this many seconds is stopped with ValidationError("query",
# SEARCH_STOPPED) (nothing is changed): the statement_timeout of Postgres' search_messages, applied by
# PostgREST and by the psycopg transport, and SQLite's progress handler. Queries within the
# limits above are cheap as a rule; a few shapes (dozens of common words OR'd, one-letter
# prefixes, many exclusions of a common word) can cost more at a million messages.
SEARCH_TIME_LIMIT_S = 2.0
SEARCH_STOPPED = (
    f"stopped at the search time limit ({SEARCH_TIME_LIMIT_S:g} s); nothing was changed. "
    "Narrow it: fewer common words, a longer prefix, a period or a filter"
)

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
_THAI = re.compile("[\u0e00-\u0e7f]")


def _category_ranges(prefix: str, top: int = 0x20000) -> str:
    """A regex character class body of the code points whose category starts with ``prefix``."""
    out: list[str] = []
    start = None
    for cp in [*range(top), -1]:
        inside = cp >= 0 and unicodedata.category(chr(cp)).startswith(prefix)
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            end = cp - 1
            out.append(re.escape(chr(start)) + ("" if end == start else "-" + re.escape(chr(end))))
            start = None
    return "".join(out)


# Combining marks (Hindi vowel signs and virama, Arabic harakat, Hebrew points …) belong to
# the word they are written in, as do ZWNJ/ZWJ inside Indic and Persian words.
_MARKS = _category_ranges("M") + "\U000e0100-\U000e01ef\u200c"
# Letters, digits and marks outside the CJK runs: one word however the databases' own
# parsers would split it (Postgres' splits at combining marks).
_WORD_CHARS = f"(?:[^\\W_{_CJK_RANGES}]|[{_MARKS}])"
# Characters that join words into one identifier: get_conversation, file.py, a/b, user@host.
_JOINERS = "[._\\-/:@#+~%=?&]"
# A symbol (emoji and other "So" characters) with its modifiers (skin tones, keycaps, tags),
# and ZWJ sequences (👩‍💻) as one cluster.
_SYMBOL = _category_ranges("So", 0x30000)
_SYMBOL_MODS = f"[{_MARKS}\U0001f3fb-\U0001f3ff\U000e0020-\U000e007f]*"
_UNIT = re.compile(
    f"[{_CJK_RANGES}]+"
    f"|[{_SYMBOL}]{_SYMBOL_MODS}(?:\u200d[{_SYMBOL}]{_SYMBOL_MODS})*"
    f"|(?:--|_+)?{_WORD_CHARS}+(?:{_JOINERS}+{_WORD_CHARS}+)*_*"
)
# _UNIT for ASCII text (no CJK, symbols or marks there; a word character is [A-Za-z0-9]): the
# same units, found about ten times faster, and most messages are ASCII.
_UNIT_ASCII = re.compile(f"(?:--|_+)?[A-Za-z0-9]+(?:{_JOINERS}+[A-Za-z0-9]+)*_*")
_PIECE = re.compile(f"{_WORD_CHARS}+")
_CAMEL = re.compile("[a-z][A-Z]|[A-Z][A-Z][a-z]")
_CAMEL_PART = re.compile("[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z0-9]+|[A-Z0-9]+")
_PLAIN = re.compile("[a-z0-9]+")
_LATIN_MARKS = re.compile("([A-Za-z\u00c0-\u024f\u1e00-\u1eff])[\u0300-\u036f]+")
_VARIATION = re.compile("[\ufe0e\ufe0f]")
# Spelled tokens longer than this are left out (on both sides): Postgres drops words over
# 2,047 bytes, and a whole long URL is still found by its parts.
MAX_TOKEN_CHARS = 2000
# The tokens of one query, spelled, are at most this many characters: the rendered query
# must stay under what search_messages accepts (4,000), so no backend refuses what another runs.
MAX_QUERY_TOKEN_CHARS = 3600
# An identifier longer than this is indexed by its parts only.
MAX_WHOLE_CHARS = 100


def is_cjk_char(ch: str) -> bool:
    return bool(_CJK_CHAR.match(ch))


def normalise(text: str) -> str:
    """The one normalisation applied to message text and to queries, before tokenising.

    NFKC (full-width letters, ligatures, compatibility forms become their plain letters),
    variation selectors dropped (❤️ and ❤ are one emoji), and accents stripped from Latin
    letters only (café = cafe, as SQLite's remove_diacritics did): marks are kept on every
    other script, where they are part of the spelling (Hindi, Arabic, Hebrew, Thai).
    Case is folded per token (see ``_fold``), after identifiers are split at CamelCase.
    """
    if text.isascii():
        return text
    text = _VARIATION.sub("", unicodedata.normalize("NFKC", text))
    decomposed = unicodedata.normalize("NFD", text)
    stripped = _LATIN_MARKS.sub(r"\1", decomposed)
    return text if stripped == decomposed else unicodedata.normalize("NFC", stripped)


def _fold(text: str) -> str:
    """Full Unicode case folding (ß -> ss, final sigma -> sigma), which is safe to apply to
    both the index and the query because it is the same function on both; it is not
    language-tailored (Turkish dotless ı stays its own letter; İ folds to i)."""
    return text if text.isascii() and text.islower() else normalise(text.casefold())


def _escape(text: str) -> str:
    # Letters a-z (but q) and digits stand for themselves; anything else is q<hex>q, so the
    # spelling is unambiguous and a prefix of a word encodes to a prefix of its encoding.
    return "".join(c if ("a" <= c <= "z" and c != "q") or "0" <= c <= "9" else f"q{ord(c):x}q" for c in text)


def _token(text: str, prefix: bool = False) -> str | None:
    """``text`` (one word, identifier or symbol) as an index token both backends read as one
    word and neither stems: plain a-z0-9 words as they are (each backend stems and lowercases
    those itself), anything else spelled q0q…q0q in a-z0-9 (a Postgres "numword", which it
    does not stem; SQLite's porter stemmer leaves a word ending in q alone). ``prefix``: the
    beginning of such a token, for ``word*``. None when too long to index."""
    folded = _fold(text)
    if _PLAIN.fullmatch(folded):
        token = text if text.isascii() and text.lower() == folded else folded
    else:
        token = "q0q" + _escape(folded) + ("" if prefix else "q0q")
    return token if len(token) <= MAX_TOKEN_CHARS or _PLAIN.fullmatch(folded) else None


def _pieces(unit: str) -> list[str]:
    parts: list[str] = []
    for piece in _PIECE.findall(unit):
        if piece.isascii() and _CAMEL.search(piece):
            parts.extend(_CAMEL_PART.findall(piece))
        else:
            parts.append(piece)
    return parts


def unit_tokens(unit: str, prefix: bool = False, lead: bool = False) -> list[str]:
    """The index tokens of one non-CJK unit (a word, an identifier or a symbol cluster).

    In the index an identifier (get_conversation, CamelCase, file.py, --flag, a URL) is its
    whole spelling followed by its parts, so it is found by a part (``conversation``), by
    its parts as a phrase, or, leading a query, by its parts alone: ``snake_case`` finds
    ``snake_case_helper`` (``lead``: the unit starts the query's term). A unit after another
    one in a phrase is looked for with its whole spelling too, so the phrase's words stay
    adjacent as they are in the index."""
    if prefix:  # word*: the beginning of the whole spelling
        token = _token(unit, prefix=True)
        return [token] if token else []
    pieces = _pieces(unit)
    if pieces == [unit]:
        token = _token(unit)
        return [token] if token else []
    whole = _token(unit) if len(unit) <= MAX_WHOLE_CHARS or not pieces else None
    tokens = [whole] if whole and not (lead and len(pieces) > 1) else []
    for piece in pieces:
        token = _token(piece)
        if token:
            tokens.append(token)
    return tokens


def _cjk_token(text: str, prefix: bool = False) -> str:
    # Thai runs hold combining vowel signs, which Postgres' parser splits at: spelled out.
    if not _THAI.search(text):
        return text
    return "q0q" + _escape(text) + ("" if prefix else "q0q")


def units(text: str) -> list[str]:
    """The units of normalised text: CJK runs, symbol clusters, and words/identifiers."""
    return (_UNIT_ASCII if text.isascii() else _UNIT).findall(text)


@dataclass(frozen=True, slots=True)
class Term:
    """A word or phrase. ``words`` are the units (words, identifiers, symbols or CJK runs) in
    order, normalised."""

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


def term_tokens(term: Term) -> tuple[list[str], bool]:
    """The index tokens a term looks for, in order, and whether the last one is a prefix.

    CJK runs become their character pairs (a run's tail follows it when a word comes
    next, as in the index); a lone CJK character is a prefix of the pairs it starts."""
    tokens: list[str] = []
    last = len(term.words) - 1
    for i, word in enumerate(term.words):
        if term.is_cjk(i):
            tokens.extend(_cjk_token(p) for p in cjk_pairs(word))
            if len(word) > 1 and i < last:
                tokens.append(_cjk_token(word[-1]))  # the run ends here in the text too, so its tail follows
        else:
            tokens.extend(unit_tokens(word, prefix=term.prefix and i == last, lead=i == 0))
    single_cjk = len(term.words) == 1 and term.is_cjk(0) and len(term.words[0]) == 1
    if tokens and (single_cjk or (term.prefix and term.is_cjk(last))):
        tokens[-1] = _cjk_token(cjk_pairs(term.words[last])[-1], prefix=True)
    return tokens, bool(tokens) and (term.prefix or single_cjk)


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
    words = spelled = prefixes = exclusions = 0
    for text, quoted in _split_chunks(query):
        if not quoted and text == "OR":
            join_next = bool(clauses)
            continue
        if not quoted and text == "AND":
            continue
        # -word excludes; --flag is a word (a command-line flag).
        negated = text.startswith("-") and len(text) > 1 and not text.startswith("--")
        if negated:
            text = text[1:]
            exclusions += 1
            if exclusions > MAX_QUERY_EXCLUSIONS:
                raise ValidationError(
                    "query",
                    f"more than {MAX_QUERY_EXCLUSIONS} exclusions; a search excludes at most "
                    f'{MAX_QUERY_EXCLUSIONS} words or phrases (-word, -"a phrase")',
                )
        prefix = text.endswith("*")
        found = tuple(units(normalise(text)))
        if not found:
            continue
        term = Term(words=found, phrase=quoted or len(found) > 1, prefix=prefix)
        tokens, is_prefix = term_tokens(term)
        if not tokens:
            continue
        if is_prefix:
            last = found[-1]
            if term.prefix and not term.is_cjk(len(found) - 1) and len(last) < MIN_PREFIX_CHARS:
                raise ValidationError(
                    "query",
                    f"the prefix {last}* is too short: a prefix (word*) has at least {MIN_PREFIX_CHARS} characters",
                )
            prefixes += 1
            if prefixes > MAX_QUERY_PREFIXES:
                raise ValidationError(
                    "query",
                    f"more than {MAX_QUERY_PREFIXES} prefixes; a search has at most {MAX_QUERY_PREFIXES} "
                    "prefixes (word*), each single Chinese, Japanese, Korean or Thai character counting as one",
                )
        # Each token is a word of the index (a CJK character is one pair).
        words += len(tokens) + sum(1 for i in range(len(found)) if term.is_cjk(i) and len(found[i]) > 1)
        if words > MAX_QUERY_WORDS:
            raise ValidationError(
                "query",
                f"more than {MAX_QUERY_WORDS} words; a search is at most {MAX_QUERY_WORDS} words "
                "(each Chinese, Japanese, Korean or Thai character counts as one, an identifier "
                "such as get_conversation as its parts and itself)",
            )
        spelled += sum(len(t) + 6 for t in tokens)  # quotes and an operator around each
        if spelled > MAX_QUERY_TOKEN_CHARS:
            raise ValidationError(
                "query",
                f"too long once spelled for the index ({spelled:,} characters; at most "
                f"{MAX_QUERY_TOKEN_CHARS:,}): emoji and non-Latin words take several characters each",
            )
        if join_next and not negated and not negations[-1]:
            clauses[-1].append(term)
        else:
            clauses.append([term])
            negations.append(negated)
        join_next = False
    # A clause typed twice asks nothing more (``word word``), but each copy would be looked
    # up again (64 copies of a word cost 64 passes of bm25 over its matches): kept once.
    parsed = list(dict.fromkeys(Clause(tuple(terms), neg) for terms, neg in zip(clauses, negations, strict=True)))
    if not any(not c.negated for c in parsed):
        return []  # only exclusions: there is nothing to rank
    return parsed


def cjk_pairs(run: str) -> list[str]:
    """Overlapping pairs of a run, the way the index stores it (without the tail char)."""
    if len(run) == 1:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)]


# Bumped whenever index_text changes what it writes: stores recompute search_extra of the
# rows written before (SQLite by a migration, Postgres by ``python -m persistence reindex``).
INDEX_VERSION = 2


def _expand_run(run: str) -> str:
    pairs = [_cjk_token(p) for p in cjk_pairs(run)]
    return pairs[0] if len(run) == 1 else " ".join([*pairs, _cjk_token(run[-1])])


def index_text(content: str) -> str | None:
    """The text to index instead of ``content``, or None when the databases' own tokenizers
    already see what this would write (plain ASCII words).

    The text is normalised (``normalise``), then written as the tokens both backends index
    alike: CJK runs as overlapping pairs plus their last character, so a query of any length
    finds them (one character as a prefix of a pair, or the tail); words with combining
    marks, other non-ASCII words, symbols (emoji) and identifiers spelled by ``_token``; plain
    words as they are.
    """
    text = normalise(content)
    out: list[str] = []
    plain = content.isascii()
    for unit in units(text):
        tokens = _index_tokens(unit) if len(unit) <= _CACHED_UNIT_CHARS else _unit_index_tokens(unit)
        if plain and tokens != (unit,):
            plain = False
        out.extend(tokens)
    return None if plain else " ".join(out)


def _unit_index_tokens(unit: str) -> tuple[str, ...]:
    if _CJK_CHAR.match(unit):
        return (_expand_run(unit),)
    return tuple(unit_tokens(unit))


# Every write indexes its text: words repeat (a Zipf vocabulary), so the tokens of a short
# unit are computed once and then looked up, which keeps index_text near the cost of the
# regex that splits the text. Long units (a CJK paragraph, a hash) are rarely seen twice.
_CACHED_UNIT_CHARS = 64
_index_tokens = functools.lru_cache(maxsize=65536)(_unit_index_tokens)


def cjk_index_text(content: str) -> str | None:
    """The old name of ``index_text``."""
    return index_text(content)


def _fts5_term(term: Term) -> str:
    tokens, prefix = term_tokens(term)
    # FTS5 strings are double-quoted; our tokens never contain quotes or operators.
    return '"' + " ".join(tokens) + '"' + ("*" if prefix else "")


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


def _tsquery_quote(token: str) -> str:
    return "'" + token.replace("\\", "\\\\").replace("'", "''") + "'"


def _tsquery_term(term: Term) -> str:
    tokens, prefix = term_tokens(term)
    quoted = [_tsquery_quote(tok) for tok in tokens]
    if prefix:
        quoted[-1] += ":*"
    return quoted[0] if len(quoted) == 1 else "(" + " <-> ".join(quoted) + ")"


def to_tsquery(clauses: list[Clause]) -> str | None:
    """The same query as Postgres ``to_tsquery`` text, or None when there is nothing to search
    for. Every token is quoted, so the text can never be a syntax error; CJK runs become
    phrases of character pairs, as they are indexed."""
    positive = [c for c in clauses if not c.negated]
    negative = [c for c in clauses if c.negated]
    if not positive:
        return None

    def render(c: Clause) -> str:
        parts = [_tsquery_term(t) for t in c.terms]
        return parts[0] if len(parts) == 1 else "(" + " | ".join(parts) + ")"

    expr = " & ".join(render(c) for c in positive)
    if negative:
        expr = f"({expr}) & !(" + " | ".join(render(c) for c in negative) + ")"
    return expr


@functools.lru_cache(maxsize=4096)
def _same_length_fold(ch: str) -> str:
    """``ch`` normalised where that is still one character (é -> e, Ａ -> A), else itself."""
    folded = normalise(ch)
    return folded if len(folded) == 1 else ch


@functools.lru_cache(maxsize=64)
def _fragment_pattern(clauses: tuple[Clause, ...]) -> re.Pattern[str] | None:
    """What python_fragments marks, compiled once per query (a search cuts up to 500)."""
    literals: set[str] = set()
    stems: set[str] = set()
    for clause in clauses:
        if clause.negated:
            continue
        for term in clause.terms:
            for i, word in enumerate(term.words):
                if term.is_cjk(i) or not word.isascii() or not _PLAIN.fullmatch(word.lower()):
                    literals.add(re.escape(word))
                else:
                    stems.add(re.escape(word if len(word) <= 4 else word[: max(4, len(word) - 3)]))
    # Longest first, so the longer of two needles starting at one place is marked. The stems
    # share one word boundary: a pattern of 64 ``\bstem\w*`` alternatives tried each one at
    # every character, which cost more than the rest of a search at limit 500.
    needles = sorted(literals, key=lambda n: (-len(n), n))
    if stems:
        needles.append(r"\b(?:" + "|".join(sorted(stems, key=lambda n: (-len(n), n))) + r")\w*")
    return re.compile("|".join(needles), re.IGNORECASE) if needles else None


def python_fragments(content: str, clauses: list[Clause], width: int = 160) -> tuple[tuple[str, bool], ...]:
    """A snippet of ``content`` around the first match, with matches marked.

    Used where the database cannot cut one from the original text (CJK hits, whose index
    text is made of character pairs). CJK runs are matched as substrings; latin words by
    prefix, case-insensitively (stems like run/running both light up).
    """
    pattern = _fragment_pattern(tuple(clauses))
    if pattern is None:
        return ((content[:width], False),)
    # Matched against a view of the text as normalised as it can be at the same length
    # (café, cafe\u0301 -> cafe, cafe\u0301), so positions are the original's.
    # Folded per distinct character (a translate table), not per character: a search at limit
    # 500 cuts hundreds of these, and a call per character cost milliseconds per message.
    if content.isascii():
        view = content
    else:
        changed = {ord(c): f for c in set(content) if (f := _same_length_fold(c)) != c}
        view = content.translate(changed) if changed else content
    first = pattern.search(view)
    start = 0 if first is None else max(0, first.start() - width // 3)
    end = min(len(content), start + width)
    window = content[start:end]
    parts: list[tuple[str, bool]] = []
    if start > 0:
        parts.append(("…", False))
    pos = 0
    for m in pattern.finditer(view[start:end]):
        if m.start() < pos:
            continue  # inside the marks taken with the previous match
        if m.start() > pos:
            parts.append((window[pos : m.start()], False))
        stop = m.end()
        while stop < len(window) and unicodedata.category(window[stop]).startswith("M"):
            stop += 1  # a decomposed accent or a variation selector belongs to the match
        parts.append((window[m.start() : stop], True))
        pos = stop
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
