"""The SQL price rule (``price_message``, what a signed-in user's messages are priced with) is
the package's (``PriceTable.lookup`` + ``Price.cost``), including its prefilter: a price row's
pattern is tested only for model names that contain the row's ``match_literal``
(migration 20261130230000_persistence_price_prefilter)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import persistence
from persistence.models import Usage
from persistence.pricing import Price, PriceTable

pytestmark = pytest.mark.postgres

# Price rows a user might add, of shapes the literal is not read from or is read around: an
# alternation outside a group, classes, braces, escapes, optional last characters, a repeated
# or nested leading group, an upper-case pattern, an unescaped dot.
CUSTOM = {
    r"alpha|beta-7": ["alpha", "beta-7", "BETA-7", "alphabet"],
    r"(foo|bar)-model": ["foo-model", "bar-model", "baz-model"],
    r"x?y?zed": ["zed", "xzed", "yzed", "xyzed", "ed"],
    r"[gk]lm-9": ["glm-9", "klm-9", "lm-9"],
    r"delta\d+": ["delta12", "delta"],
    r"eps-1?": ["eps-", "eps-1", "ep"],
    r"(pre/)*zeta-1": ["zeta-1", "pre/pre/zeta-1", "pre/zeta"],
    r"((a|b)/)?eta-2": ["eta-2", "a/eta-2", "b/eta-2", "c/eta-2"],
    r"eta.*-theta": ["eta-foo-theta", "eta-theta", "etatheta"],
    r"IOTA-X\.1": ["iota-x.1", "IOTA-X.1", "iota-x21"],
    r"kappa-v{2}": ["kappa-vv", "kappa-v"],
    r"lambda\-mu\/nu": ["lambda-mu/nu", "lambda-mu-nu"],
    r"(?:pi/)?rho-3(-latest)?$": ["rho-3", "pi/rho-3-latest", "rho-3-old"],
    r"sigma+": ["sigmaaa", "sigm"],
}


def _sql_price(conn: Any, model: str | None, at: datetime, usage: Usage) -> tuple[str, float] | None:
    found = conn.execute(
        "select public.price_message(%s, %s, %s, %s, %s, %s, %s)",
        (
            model,
            at,
            usage.input_tokens,
            usage.cached_input_tokens,
            usage.cache_write_tokens,
            usage.output_tokens,
            usage.reasoning_tokens,
        ),
    ).fetchone()[0]
    return None if found is None else (found["price_id"], float(found["cost"]))


def _python_price(table: PriceTable, model: str | None, at: datetime, usage: Usage) -> tuple[str, float] | None:
    price = table.lookup(model, at)
    return None if price is None else (price.id, price.cost(usage))


def _usages(price: Price) -> list[Usage]:
    out = [
        Usage(input_tokens=1200, cached_input_tokens=300, cache_write_tokens=50, output_tokens=400, reasoning_tokens=7)
    ]
    for above in (price.tier_above_tokens, price.tier2_above_tokens):
        if above is not None:  # either side of each long-context tier
            out += [Usage(input_tokens=above, output_tokens=10), Usage(input_tokens=above + 1, output_tokens=10)]
    return out


def _names(price: Price) -> list[str]:
    m = price.model
    return [m, m.upper(), f"  {m}\t", f"openai/{m}", f"moonshotai/{m}", f"zai/{m}", f"{m}-latest", f"{m}x", m[:-1]]


@pytest.fixture
def priced(pg_url: str) -> Any:
    import psycopg

    store = persistence.open_store(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        yield store, conn
    store.close()


def test_every_package_price_is_found_by_sql_as_by_the_package(priced: Any) -> None:
    store, conn = priced
    table = store.prices
    assert len(table) > 50
    checked = 0
    for price in table.prices:
        day = datetime.combine(price.effective_from, datetime.min.time(), UTC)
        for at in (day - timedelta(seconds=1), day + timedelta(hours=12), datetime(2026, 11, 30, 9, tzinfo=UTC)):
            for name in _names(price):
                for usage in _usages(price) if name == price.model else _usages(price)[:1]:
                    ours = _sql_price(conn, name, at, usage)
                    assert ours == _python_price(table, name, at, usage), (name, at, usage)
                    checked += 1
    assert checked > 1000
    assert (
        _sql_price(conn, "kimi-k2-0905-preview", datetime(2026, 11, 30, tzinfo=UTC), Usage(input_tokens=10)) is not None
    )
    for nothing in (None, "", "   ", "no-such-model"):
        assert _sql_price(conn, nothing, datetime(2026, 11, 30, tzinfo=UTC), Usage(input_tokens=10)) is None


def test_user_patterns_of_every_shape_price_the_same_in_sql(priced: Any) -> None:
    store, conn = priced
    rows = [
        Price(
            provider="custom", model=f"m{i}", match=pattern, effective_from=date(2026, 1, 1), input=1.0 + i, output=2.0
        )
        for i, pattern in enumerate(CUSTOM)
    ]
    store.add_prices(rows)
    table = store.prices
    at = datetime(2026, 6, 1, tzinfo=UTC)
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    for i, (pattern, names) in enumerate(CUSTOM.items()):
        query = "select match_literal from public.model_prices where id = %s"
        (literal,) = conn.execute(query, (rows[i].id,)).fetchone()
        for name in names:
            ours = _sql_price(conn, name, at, usage)
            assert ours == _python_price(table, name, at, usage), (pattern, name)
            if re.match(f"^(?:{pattern})", name.strip(), re.IGNORECASE):
                assert ours is not None and ours[0] == rows[i].id, (pattern, name)
                # The prefilter's promise: every name the pattern matches contains its literal.
                assert literal is None or literal in name.strip().lower(), (pattern, literal, name)


def test_the_prefilter_leaves_few_patterns_to_compile_per_model(priced: Any) -> None:
    """Postgres keeps 32 compiled patterns per connection: with every row tested, each call
    compiled all of them again (~1.2 ms). A known model now leaves a few."""
    store, conn = priced
    candidates = {
        model: conn.execute(
            """select count(distinct match) from public.model_prices
               where match_literal is null or strpos(lower(%s), match_literal) > 0""",
            (model,),
        ).fetchone()[0]
        for model in {p.model for p in store.prices.prices}
    }
    total = conn.execute("select count(distinct match) from public.model_prices").fetchone()[0]
    assert total > 32
    assert max(candidates.values()) <= 8, sorted(candidates.items(), key=lambda kv: -kv[1])[:5]


def test_a_user_cannot_call_the_literal_function_or_write_the_column(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        for role in ("anon", "authenticated"):
            query = "select has_function_privilege(%s, 'public.price_match_literal(text)', 'execute')"
            assert conn.execute(query, (role,)).fetchone() == (False,)
        store = persistence.open_store(pg_url)
        store.close()
        with pytest.raises(psycopg.errors.GeneratedAlways):
            conn.execute("update public.model_prices set match_literal = 'x'")


# Patterns from a small grammar over a small alphabet, so that short random names often match:
# literal runs, escapes, optional and repeated atoms, groups with alternatives, classes, a
# top-level alternation, anchors.
_ATOMS = st.sampled_from(["a", "b", "ab", "-", "\\.", ".", "a?", "b*", "-+", "[ab]", "(a|b)", "(ab)?", "(a|-)*", "$"])
_PATTERNS = st.builds(
    lambda prefix, first, atoms, alt: prefix + first + "".join(atoms) + alt,
    st.sampled_from(["", "^", "(x/)?", "^(x/|y/)?"]),
    st.sampled_from(["a", "b", "ab", "ba-", "\\.", "a\\.b"]),  # most patterns start with text
    st.lists(_ATOMS, max_size=4),
    st.sampled_from(["", "", "", "|b-a"]),
)


_NAMES = st.lists(
    st.builds(lambda prefix, rest: prefix + rest, st.sampled_from(["", "", "x/", "B"]), st.text("ab-.", max_size=6)),
    min_size=30,
    max_size=60,
)


@given(pattern=_PATTERNS, names=_NAMES)
# pg_url once for all examples: they only call a function, nothing is written.
@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_every_name_a_pattern_matches_contains_its_literal(pg_url: str, pattern: str, names: list[str]) -> None:
    """The prefilter never hides a price: for generated patterns, no name Postgres matches
    lacks the literal derived from the pattern."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        try:
            missed = conn.execute(
                """select n, public.price_match_literal(%(p)s) from unnest(%(names)s::text[]) as n
                   where n ~* ('^(?:' || %(p)s || ')')
                       and strpos(lower(n), coalesce(public.price_match_literal(%(p)s), '')) = 0""",
                {"p": pattern, "names": names},
            ).fetchall()
        except psycopg.errors.InvalidRegularExpression:
            return  # not a pattern Postgres takes (a price row with it could not be priced either)
    assert missed == [], (pattern, missed)
