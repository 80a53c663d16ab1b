"""The cost chart's title shows the digits its amounts need, not cents only (issue 14, 19)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from orchestrator.reports.chart import chart_title
from orchestrator.reports.costs import CostReport, ReportRow
from orchestrator.reports.money import usd_text
from orchestrator.reports.period import Period


@pytest.mark.parametrize(("value", "text"), [
    (Decimal("0.0022"), "$0.0022"),
    (Decimal("0.002200000"), "$0.0022"),
    (Decimal("0E-9"), "$0.00"),
    (Decimal("1234.5"), "$1,234.50"),
    (Decimal("0.000000001"), "$0.000000001"),
    (Decimal("-0.0105"), "$-0.0105"),
])
def test_usd_text_keeps_every_digit_and_at_least_cents(value: Decimal, text: str) -> None:
    assert usd_text(value) == text


def test_title_of_a_small_days_spend_is_not_zero() -> None:
    total = ReportRow(cost_usd=Decimal("0.002200000"), fal_cost_usd=Decimal("0.002200000"),
                      local_fal_equivalent_usd=Decimal("0.000300000"))
    period = Period(since=datetime(2026, 11, 29, tzinfo=UTC), until=datetime(2026, 11, 30, tzinfo=UTC))
    report = CostReport(period=period, group_by=("day", "backend"), client=None, rows=[], total=total)
    title = chart_title(report, [date(2026, 11, 29)])
    assert "total $0.0022;" in title
    assert "all on fal $0.0025;" in title
    assert "saved $0.0003" in title
