"""A cost report as JSON, CSV or a table for people."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

from rich.table import Table

from orchestrator.reports.costs import CostReport, ReportRow

TOTAL_LABEL = "TOTAL"

#: The figures of a row, in column order: (name, header for people, how to show it). The table
#: for people leaves out the ones in TABLE_OMITS (CSV and JSON have all).
FIGURES: list[tuple[str, str, str]] = [
    ("jobs", "jobs", "int"),
    ("succeeded", "ok", "int"),
    ("failed", "failed", "int"),
    ("cancelled", "cancelled", "int"),
    ("attempts", "attempts", "int"),
    ("retries", "retries", "int"),
    ("compute_seconds", "compute s", "seconds"),
    ("cost_usd", "cost $", "usd"),
    ("fal_cost_usd", "fal $", "usd"),
    ("local_cost_usd", "local $", "usd"),
    ("local_fal_equivalent_usd", "local at fal $", "usd"),
    ("saving_usd", "saved $", "usd"),
    ("all_on_fal_usd", "all on fal $", "usd"),
    ("latency_p50_seconds", "p50 s", "latency"),
    ("latency_p95_seconds", "p95 s", "latency"),
    ("local_unpriced_attempts", "local unpriced", "int"),
]


TABLE_OMITS = frozenset({"attempts", "fal_cost_usd", "local_cost_usd", "all_on_fal_usd",
                         "local_unpriced_attempts"})

#: Unknown while local work has no price: shown as NOT_SET (table, chart) or null / an empty
#: cell with ``local_price: "not set"`` (JSON, CSV), never as a $0 that was never charged.
NEEDS_LOCAL_PRICE = frozenset({"cost_usd", "local_cost_usd", "saving_usd"})
NOT_SET = "local price not set"


USD_PLACES = Decimal("0.000000001")  # the money columns' scale, Numeric(18, 9)
SECONDS_PLACES = Decimal("0.000001")  # Numeric(14, 6)


def row_values(row: ReportRow) -> dict[str, Any]:
    """The figures, money and seconds at their columns' scale (exact: no rounding happens)."""
    values: dict[str, Any] = {}
    for name, _, kind in FIGURES:
        value = getattr(row, name)
        if name in NEEDS_LOCAL_PRICE and not row.local_price_set:
            value = None
        elif kind == "usd":
            value = Decimal(value).quantize(USD_PLACES)
        elif kind == "seconds":
            value = Decimal(value).quantize(SECONDS_PLACES)
        values[name] = value
    return values


def report_dict(report: CostReport) -> dict[str, Any]:
    """JSON-ready: money and seconds as decimal strings (exact), counts as integers."""

    def encode(row: ReportRow) -> dict[str, Any]:
        out: dict[str, Any] = dict(row.group)
        for name, value in row_values(row).items():
            out[name] = format(value, "f") if isinstance(value, Decimal) else value
        out["local_price"] = _local_price(row)
        return out

    return {
        "since": report.period.since.isoformat(),
        "until": report.period.until.isoformat(),
        "timezone": "UTC",
        "currency": "USD",
        "group_by": list(report.group_by),
        "client": report.client,
        "rows": [encode(row) for row in report.rows],
        "total": encode(report.total),
    }


def report_csv(report: CostReport) -> str:
    """One line per group and a last line for the total (its first group column says TOTAL)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = [name for name, _, _ in FIGURES]
    writer.writerow([*report.group_by, *names, "local_price"])

    def cells(row: ReportRow, group: list[str]) -> list[str]:
        values = row_values(row)
        return [*group, *(_cell(values[n]) for n in names), _local_price(row)]

    for row in report.rows:
        writer.writerow(cells(row, [row.group[g] for g in report.group_by]))
    total_group = [TOTAL_LABEL, *[""] * (len(report.group_by) - 1)] if report.group_by else []
    writer.writerow(cells(report.total, total_group))
    return buffer.getvalue()


def _local_price(row: ReportRow) -> str:
    return "set" if row.local_price_set else "not set"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def _show(value: Any, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "int":
        return f"{value:,}"
    if kind == "usd":
        return f"{value:,.4f}"
    if kind == "seconds":
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def _table_cell(row: ReportRow, name: str, kind: str) -> str:
    if name in NEEDS_LOCAL_PRICE and not row.local_price_set:
        return "not set"
    return _show(getattr(row, name), kind)


def report_table(report: CostReport) -> Table:
    client = f", client {report.client}" if report.client else ""
    caption = ("money and seconds: sums of attempts by the UTC day they started; "
               "jobs and latency (submit to done, succeeded jobs): by the UTC day submitted")
    if not report.total.local_price_set:
        caption += (f"\n{NOT_SET} for {report.total.local_unpriced_attempts:,} local attempt(s): "
                    "their cost, the total and the saving are unknown (set "
                    "ORCH_LOCAL_PRICE_PER_SECOND or ORCH_LOCAL_HOST_PRICE_PER_HOUR)")
    table = Table(title=f"Costs {report.period.describe()}{client}", caption=caption)
    for name in report.group_by:
        table.add_column(name)
    shown = [(n, h, k) for n, h, k in FIGURES if n not in TABLE_OMITS]
    for _, header, _ in shown:
        table.add_column(header, justify="right")
    for row in report.rows:
        table.add_row(*(row.group[g] for g in report.group_by),
                      *(_table_cell(row, n, k) for n, _, k in shown))
    total_group = [TOTAL_LABEL, *[""] * (len(report.group_by) - 1)] if report.group_by else []
    table.add_row(*total_group, *(_table_cell(report.total, n, k) for n, _, k in shown),
                  style="bold", end_section=True)
    return table
