"""Times typed by people: ``--since``/``--until`` and ``prune --older-than`` of the CLI, the
report's period and the MCP server's arguments.

Errors are :class:`argparse.ArgumentTypeError`, so argparse shows them as usage errors; other
callers turn them into their own.
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, date, datetime, timedelta

__all__ = ["parse_age", "parse_when"]

_RELATIVE = re.compile(r"^(\d+)([hdw])$")


def parse_when(text: str) -> datetime:
    """``2025-10-01``, an ISO timestamp with offset, or ``12h`` / ``30d`` / ``2w`` ago."""
    m = _RELATIVE.match(text.strip())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        delta = {"h": timedelta(hours=n), "d": timedelta(days=n), "w": timedelta(weeks=n)}[unit]
        return datetime.now(UTC) - delta
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use YYYY-MM-DD, an ISO timestamp, or 12h / 30d / 2w") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset (add +00:00 or Z)")
    return value


_AGE = re.compile(r"^(\d+)\s*([hdw])$")


def parse_age(text: str) -> timedelta | datetime:
    """``90d`` / ``12w`` / ``36h`` (an age), or ``2025-01-01`` / an ISO time (a cutoff)."""
    m = _AGE.match(text.strip().lower())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        if n <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: the age must be more than 0")
        return {"h": timedelta(hours=n), "d": timedelta(days=n), "w": timedelta(weeks=n)}[unit]
    try:
        cutoff = parse_when(text)
    except argparse.ArgumentTypeError as exc:
        if "offset" in str(exc):
            raise
        raise argparse.ArgumentTypeError(
            f"{text!r}: use an age like 90d, 12w or 36h, or a date like 2025-01-01"
        ) from None
    if cutoff > datetime.now(UTC):
        raise argparse.ArgumentTypeError(f"{text!r} is in the future: that would delete every thread")
    return cutoff
