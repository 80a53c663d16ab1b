"""The daily cost chart as SVG geometry, drawn server-side (the template only writes it out).

Two layouts of the same figures: columns for wide screens, one row per day for phones, so the
text is never scaled below a readable size."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from orchestrator import backends
from orchestrator.reports.costs import CostReport

COLOURS = {backends.FAL: "#6d28d9", backends.LOCAL: "#0369a1"}
OTHER_COLOURS = ("#b45309", "#047857", "#be123c")


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    label: str  # for the bar's <title>


@dataclass(frozen=True)
class Tick:
    x: float
    y: float
    text: str


@dataclass
class Chart:
    width: int
    height: int
    days: list[date]
    series: list[tuple[str, str]]  # (backend, colour), in stacking order
    bars: list[Bar] = field(default_factory=list)
    fal_marks: list[tuple[float, float, float, float]] = field(default_factory=list)  # x1 y1 x2 y2
    ticks: list[Tick] = field(default_factory=list)  # axis labels
    grid: list[tuple[float, float, float, float]] = field(default_factory=list)
    rows: list[tuple[str, dict[str, Decimal], Decimal, Decimal]] = field(default_factory=list)
    top: Decimal = Decimal(0)
    description: str = ""


def _days(report: CostReport) -> list[date]:
    first = report.period.since.date()
    last = (report.period.until - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _nice_top(value: Decimal) -> Decimal:
    if value <= 0:
        return Decimal("0.01")
    exponent = value.adjusted()
    for step in (1, 2, 5, 10):
        top = Decimal(step).scaleb(exponent)
        if top >= value:
            return top
    return Decimal(10).scaleb(exponent)  # pragma: no cover - the loop always ends


def figures(report: CostReport) -> tuple[list[date], list[tuple[str, str]],
                                         list[tuple[str, dict[str, Decimal], Decimal, Decimal]]]:
    """Per day: cost by backend, the day's total, and what it would all have cost on fal."""
    days = _days(report)
    names = sorted({row.group["backend"] for row in report.rows})
    palette = iter(OTHER_COLOURS * 4)
    series = [(name, COLOURS.get(name) or next(palette)) for name in names]
    per_day: dict[str, tuple[dict[str, Decimal], Decimal]] = {
        d.isoformat(): ({}, Decimal(0)) for d in days}
    for row in report.rows:
        entry = per_day.get(row.group["day"])
        if entry is None:
            continue
        costs, fal = entry
        costs[row.group["backend"]] = costs.get(row.group["backend"], Decimal(0)) + row.cost_usd
        per_day[row.group["day"]] = (costs, fal + row.all_on_fal_usd)
    rows = [(day, costs, sum(costs.values(), Decimal(0)), fal)
            for day, (costs, fal) in per_day.items()]
    return days, series, rows


def _money(value: Decimal) -> str:
    """Dollars to cents, cents to tenths of a cent, smaller sums to their first digits."""
    if value == 0:
        return "$0"
    if value >= 1:
        return f"${value:,.2f}"
    if value >= Decimal("0.001"):
        return f"${value:,.4f}"
    return "$" + f"{value:.10f}".rstrip("0")


def columns(report: CostReport, *, width: int = 880, height: int = 340) -> Chart:
    """Wide layout: a column per day, stacked by backend, a mark for the all-on-fal cost."""
    days, series, rows = figures(report)
    chart = Chart(width, height, days, series, rows=rows)
    left, right, top_pad, bottom = 72, 12, 12, 40
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    chart.top = _nice_top(max([max(r[2], r[3]) for r in rows] or [Decimal(0)]))
    scale = plot_h / float(chart.top)
    slot = plot_w / max(len(rows), 1)
    bar_w = max(slot * 0.7, 1.0)
    for i in range(5):
        value = chart.top * i / 4
        y = top_pad + plot_h - float(value) * scale
        chart.grid.append((left, y, width - right, y))
        chart.ticks.append(Tick(left - 6, y + 4, _money(value)))
    label_every = max(1, round(len(rows) / 8))
    for i, (day, costs, _total, fal) in enumerate(rows):
        x = left + i * slot + (slot - bar_w) / 2
        base = float(top_pad + plot_h)
        for name, colour in series:
            value = costs.get(name, Decimal(0))
            h = float(value) * scale
            if h > 0:
                base -= h
                chart.bars.append(Bar(x, base, bar_w, h, colour, f"{day} {name}: {_money(value)}"))
        if fal > 0:
            y = top_pad + plot_h - float(fal) * scale
            chart.fal_marks.append((x - 1, y, x + bar_w + 1, y))
        if i % label_every == 0:
            chart.ticks.append(Tick(x + bar_w / 2, height - bottom + 18, day[5:]))
    chart.description = describe(rows, series)
    return chart


def stacked_rows(report: CostReport, *, width: int = 340, row_h: int = 22) -> Chart:
    """Narrow layout: a row per day, the bar growing to the right."""
    days, series, rows = figures(report)
    label_w, top_pad = 52, 8
    chart = Chart(width, top_pad * 2 + row_h * max(len(rows), 1), days, series, rows=rows)
    plot_w = width - label_w - 8
    chart.top = _nice_top(max([max(r[2], r[3]) for r in rows] or [Decimal(0)]))
    scale = plot_w / float(chart.top)
    for i, (day, costs, _total, fal) in enumerate(rows):
        y = top_pad + i * row_h
        x = float(label_w)
        chart.ticks.append(Tick(label_w - 6, y + row_h * 0.65, day[5:]))
        for name, colour in series:
            value = costs.get(name, Decimal(0))
            w = float(value) * scale
            if w > 0:
                chart.bars.append(Bar(x, y + 3, w, row_h - 6, colour,
                                      f"{day} {name}: {_money(value)}"))
                x += w
        if fal > 0:
            fx = label_w + float(fal) * scale
            chart.fal_marks.append((fx, y + 1, fx, y + row_h - 1))
    chart.description = describe(rows, series)
    return chart


def describe(rows: list[tuple[str, dict[str, Decimal], Decimal, Decimal]],
             series: list[tuple[str, str]]) -> str:
    """The chart in a sentence, for screen readers (the table below has every figure)."""
    if not rows:
        return "No days in the period."
    total = sum((r[2] for r in rows), Decimal(0))
    fal = sum((r[3] for r in rows), Decimal(0))
    peak = max(rows, key=lambda r: r[2])
    names = ", ".join(name for name, _ in series) or "no backend"
    return (f"Cost per day from {rows[0][0]} to {rows[-1][0]} for {names}: {_money(total)} in "
            f"all, {_money(fal)} had everything run on fal; the dearest day was {peak[0]} at "
            f"{_money(peak[2])}.")
