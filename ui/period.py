"""Reporting periods: whole UTC days, as the daily usage rollup counts them. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

__all__ = ["CHOICES", "DEFAULT", "Period", "resolve"]

CHOICES: dict[str, str] = {
    "today": "Today",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "90d": "Last 90 days",
    "month": "This month",
    "all": "All time",
    "custom": "Custom range",
}
DEFAULT = "30d"


def _start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Period:
    """[since, until) in UTC; ``prev_*`` is the period of the same length just before it."""

    key: str
    label: str
    since: datetime | None
    until: datetime | None
    prev_since: datetime | None = None
    prev_until: datetime | None = None

    @property
    def first_day(self) -> date | None:
        return self.since.date() if self.since else None

    @property
    def last_day(self) -> date | None:
        return (self.until - timedelta(days=1)).date() if self.until else None

    @property
    def days(self) -> int | None:
        if self.since is None or self.until is None:
            return None
        return (self.until - self.since).days

    @property
    def compare_label(self) -> str | None:
        if self.prev_since is None:
            return None
        return f"vs. prior {self.days} d"

    def describe(self) -> str:
        if self.since is None:
            return "all time"
        first, last = self.first_day, self.last_day
        return f"{first:%Y-%m-%d}" if first == last else f"{first:%Y-%m-%d} – {last:%Y-%m-%d} (UTC)"


def resolve(key: str, today: date, custom: tuple[date, date] | None = None) -> Period:
    """The period called ``key`` as of ``today`` (a UTC date); ``custom`` is an inclusive range."""
    if key not in CHOICES:
        key = DEFAULT
    label = CHOICES[key]
    if key == "all":
        return Period(key, label, None, None)
    if key == "custom":
        if not custom:
            return resolve(DEFAULT, today)
        first, last = sorted(custom)
        label = f"{first:%Y-%m-%d} – {last:%Y-%m-%d}"
    elif key == "month":
        first, last = today.replace(day=1), today
    else:
        n = {"today": 1, "7d": 7, "30d": 30, "90d": 90}[key]
        first, last = today - timedelta(days=n - 1), today
    since, until = _start(first), _start(last + timedelta(days=1))
    length = until - since
    return Period(key, label, since, until, since - length, since)
