"""Report periods (UTC, half-open) and groupings: parsed, or refused with a message."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestrator.errors import ReportError
from orchestrator.reports import make_period, parse_group_by

NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)


def test_a_date_until_covers_that_whole_day_and_since_starts_at_midnight_utc() -> None:
    period = make_period("2026-11-01", "2026-11-27", now=NOW)
    assert period.since == datetime(2026, 11, 1, tzinfo=UTC)
    assert period.until == datetime(2026, 11, 28, tzinfo=UTC)


def test_instants_are_utc_and_offsets_are_converted() -> None:
    period = make_period("2026-11-01T10:00", "2026-11-02T01:00+02:00", now=NOW)
    assert period.since == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert period.until == datetime(2026, 11, 1, 23, tzinfo=UTC)


def test_default_is_the_last_30_utc_days_up_to_now() -> None:
    period = make_period(None, None, now=NOW)
    assert period.until == NOW
    assert period.since == datetime(2026, 10, 30, tzinfo=UTC)
    assert "UTC" in period.describe()


@pytest.mark.parametrize(("since", "until", "message"), [
    ("yesterday", None, "not a date"),
    ("2026-02-30", None, "not a date"),
    ("2026-11-10", "2026-11-09", "must be before"),
    (None, "9999-12-31", "not a date"),  # its next midnight does not exist
])
def test_bad_periods_are_refused_with_a_message(since: str | None, until: str | None,
                                                message: str) -> None:
    with pytest.raises(ReportError, match=message):
        make_period(since, until, now=NOW)


def test_group_by_takes_commas_and_repeats_in_order_without_duplicates() -> None:
    assert parse_group_by(["day,backend", "client", "Backend"]) == ("day", "backend", "client")
    assert parse_group_by([]) == ()


@pytest.mark.parametrize(("values", "message"), [
    (["hour"], "cannot group by 'hour'"),
    (["day,week"], "at most one of day, week, month"),
])
def test_bad_groupings_are_refused(values: list[str], message: str) -> None:
    with pytest.raises(ReportError, match=message):
        parse_group_by(values)
