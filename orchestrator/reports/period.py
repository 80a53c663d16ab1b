"""The period a report covers: UTC instants, half-open ``[since, until)``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from orchestrator.errors import ReportError

DEFAULT_DAYS = 30


@dataclass(frozen=True)
class Period:
    since: datetime  # inclusive, UTC
    until: datetime  # exclusive, UTC

    def describe(self) -> str:
        return f"{_show(self.since)} to {_show(self.until)} UTC (end exclusive)"


def _show(moment: datetime) -> str:
    if moment.time() == time(0):
        return moment.strftime("%Y-%m-%d 00:00")
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def parse_moment(text: str, *, end: bool, name: str) -> datetime:
    """``YYYY-MM-DD`` or an ISO 8601 date-time; a bare date as an end means the whole of that
    day (its next midnight). Naive values are UTC; an offset is converted to UTC."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime.combine(day, time(0), tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ReportError(
            f"{name} {text!r} is not a date (YYYY-MM-DD) or an ISO date-time "
            "(YYYY-MM-DDTHH:MM[:SS][+HH:MM])"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def make_period(since: str | None, until: str | None, *, now: datetime | None = None) -> Period:
    """The period from ``--since``/``--until``; by default the last 30 days up to now."""
    now = now or datetime.now(UTC)
    end = parse_moment(until, end=True, name="until") if until else now
    if since:
        start = parse_moment(since, end=False, name="since")
    else:
        today = datetime.combine(end.date(), time(0), tzinfo=UTC)
        start = today - timedelta(days=DEFAULT_DAYS - 1)
    if start >= end:
        raise ReportError(f"since ({_show(start)} UTC) must be before until ({_show(end)} UTC)")
    return Period(start, end)
