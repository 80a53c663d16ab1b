"""The daily cost chart: cost stacked by backend, and the line of what it would have cost on fal.

The gap between the top of a bar and the line is what running locally saved that day.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from orchestrator import backends
from orchestrator.errors import ReportError
from orchestrator.reports.costs import CostReport
from orchestrator.reports.money import usd_text
from orchestrator.reports.render import NOT_SET

FORMATS = {".png": "png", ".svg": "svg"}
COLOURS = {backends.FAL: "#7c3aed", backends.LOCAL: "#0ea5e9"}
DPI = 96  # CSS pixels per inch: a PNG of W px, and an SVG whose size in pt is W CSS px


def _days(report: CostReport) -> list[date]:
    first = report.period.since.date()
    last = (report.period.until - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def chart_title(report: CostReport, days: list[date]) -> str:
    total = report.total
    head = f"Daily cost by backend, {days[0].isoformat()} to {days[-1].isoformat()} (UTC)\n"
    if not total.local_price_set:
        return (f"{head}fal {usd_text(total.fal_cost_usd)}; local: {NOT_SET}; "
                f"all on fal {usd_text(total.all_on_fal_usd)}")
    return (f"{head}total {usd_text(total.cost_usd)}; all on fal {usd_text(total.all_on_fal_usd)};"
            f" saved {usd_text(total.saving_usd)}")


def draw_cost_chart(report: CostReport, path: Path, *, width: int = 1200, height: int = 600) -> None:
    """Write the chart to ``path`` (PNG or SVG by its suffix), ``width`` × ``height`` pixels.

    ``report`` must be grouped by day and backend."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ReportError(f"chart file {path.name!r} must end in .png or .svg")
    if report.group_by != ("day", "backend"):
        raise ReportError("the chart needs a report grouped by day and backend")
    if width < 200 or height < 150:
        raise ReportError("a chart needs at least 200 × 150 pixels")

    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    days = _days(report)
    x = mdates.date2num(days)  # type: ignore[no-untyped-call]  # matplotlib's day numbers
    index = {d.isoformat(): i for i, d in enumerate(days)}
    priced = report.total.local_price_set
    # Unpriced local work has no cost to draw: no bar at a made-up $0, and no "saved" area.
    names = sorted({row.group["backend"] for row in report.rows
                    if priced or row.group["backend"] != backends.LOCAL})
    cost = {b: [0.0] * len(days) for b in names}
    all_on_fal = [Decimal(0)] * len(days)
    for row in report.rows:
        i = index.get(row.group["day"])
        if i is None:
            continue
        if row.group["backend"] in cost:
            cost[row.group["backend"]][i] = float(row.cost_usd)
        all_on_fal[i] += row.all_on_fal_usd

    fig, ax = plt.subplots(figsize=(width / DPI, height / DPI), dpi=DPI)
    try:
        bottom = [0.0] * len(days)
        for backend in names:
            ax.bar(x, cost[backend], bottom=bottom, width=0.8, label=f"cost on {backend}",
                   color=COLOURS.get(backend), edgecolor="none")
            bottom = [b + c for b, c in zip(bottom, cost[backend])]
        ax.plot(x, [float(v) for v in all_on_fal], color="#dc2626", linewidth=2, marker="o",
                markersize=3, label="had it all run on fal")
        if priced:
            ax.fill_between(x, bottom, [float(v) for v in all_on_fal], color="#dc2626",
                            alpha=0.08, step=None, label="saved by running locally")
        ax.set_title(chart_title(report, days))
        ax.set_ylabel("USD per day")
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
        locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        ax.legend(loc="upper left")
        fig.tight_layout()
        # No bbox_inches="tight": the file keeps exactly the size asked for.
        fig.savefig(path, format=fmt, dpi=DPI)
    finally:
        plt.close(fig)
