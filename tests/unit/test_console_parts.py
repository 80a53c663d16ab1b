"""The console's pure parts: query-string parsing and the chart's geometry."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from orchestrator.commands.caller import Caller
from orchestrator.commands.overview import percentile
from orchestrator.console import chart
from orchestrator.console.filters import cost_query, job_filter
from orchestrator.jobs.states import JobState
from orchestrator.reports.costs import CostReport, ReportRow
from orchestrator.reports.period import Period

ADMIN = Caller(client="ops", is_admin=True)
TENANT = Caller(client="acme")


def test_job_filters_parse_and_report_each_bad_value() -> None:
    filters, parsed = job_filter({"state": "failed", "backend": "local", "since": "2026-11-01",
                                  "until": "2026-11-02", "q": " cat ", "client": "acme"},
                                 ADMIN, ["local", "fal"])
    assert filters.state is JobState.FAILED and filters.backend == "local"
    assert filters.created_since == datetime(2026, 11, 1, tzinfo=UTC)
    assert filters.created_until == datetime(2026, 11, 3, tzinfo=UTC)  # through that day
    assert filters.client == "acme" and filters.search == "cat" and parsed.errors == []

    filters, parsed = job_filter({"state": "boom", "backend": "gpu", "since": "soon",
                                  "client": "globex", "sort": "x"}, TENANT, ["local"])
    assert filters == type(filters)()  # nothing usable: every value refused, none raised
    assert len(parsed.errors) == 5 and "sort" not in parsed.values
    assert parsed.query() == ""


def test_cost_query_keeps_one_time_grouping_and_a_tenant_to_itself() -> None:
    query, parsed = cost_query({"client": "globex"}, ["day,week", "backend", "nope"], TENANT)
    assert query.group_by == ("day", "backend") and query.client is None
    assert len(parsed.errors) == 3


def _report() -> CostReport:
    period = Period(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 4, tzinfo=UTC))
    rows = [ReportRow(group={"day": "2026-11-01", "backend": "fal"}, cost_usd=Decimal("2"),
                      fal_cost_usd=Decimal("2")),
            ReportRow(group={"day": "2026-11-01", "backend": "local"}, cost_usd=Decimal("1"),
                      local_cost_usd=Decimal("1"), local_fal_equivalent_usd=Decimal("3")),
            ReportRow(group={"day": "2026-11-03", "backend": "local"}, cost_usd=Decimal("0.5"),
                      local_cost_usd=Decimal("0.5"), local_fal_equivalent_usd=Decimal("1"))]
    return CostReport(period, ("day", "backend"), None, rows, ReportRow())


def test_chart_stacks_each_day_and_marks_the_all_on_fal_cost() -> None:
    wide = chart.columns(_report(), width=400, height=200)
    assert [r[0] for r in wide.rows] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert wide.top == Decimal(5)  # the dearest day on fal, 5, rounded up to a nice number
    plot_h = 200 - 12 - 40
    heights = {b.label.split(":")[0]: b.height for b in wide.bars}
    assert heights["2026-11-01 fal"] == plot_h * 2 / 5
    assert heights["2026-11-01 local"] == plot_h * 1 / 5
    assert len(wide.bars) == 3 and len(wide.fal_marks) == 2  # no bar, no mark on an empty day
    narrow = chart.stacked_rows(_report(), width=300)
    assert narrow.height == 8 * 2 + 22 * 3 and len(narrow.bars) == 3
    assert "2026-11-01" in narrow.description and "$3.50 in all" in narrow.description


def test_percentile_interpolates_like_postgres() -> None:
    assert percentile([], 0.5) is None
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert percentile([float(i) for i in range(1, 101)], 0.95) == 95.05
