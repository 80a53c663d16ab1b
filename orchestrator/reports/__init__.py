"""Cost reports over attempt rows (SQL aggregation), the daily cost chart, fal reconciliation."""

from orchestrator.reports.costs import GROUPINGS, CostReport, ReportRow, cost_report, parse_group_by
from orchestrator.reports.period import Period, make_period

__all__ = ["GROUPINGS", "CostReport", "Period", "ReportRow", "cost_report", "make_period",
           "parse_group_by"]
