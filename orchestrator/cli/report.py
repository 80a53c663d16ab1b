"""``orchestrator report``: cost reports, the daily cost chart, fal reconciliation."""

from __future__ import annotations

import enum
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from orchestrator import commands
from orchestrator.cli.common import OPERATOR, console, console_err, print_json
from orchestrator.db.session import get_engine
from orchestrator.errors import ReportError
from orchestrator.reports import make_period
from orchestrator.reports.chart import draw_cost_chart
from orchestrator.reports.reconcile import reconcile_fal
from orchestrator.reports.render import report_csv, report_dict, report_table
from orchestrator.settings import get_settings

app = typer.Typer(help="Cost reports (all dates and times in UTC).", no_args_is_help=True)


class Format(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"


SINCE_HELP = "First day (YYYY-MM-DD) or instant (ISO 8601), UTC. Default: 29 days before until."
UNTIL_HELP = "Last day, included whole (YYYY-MM-DD), or an instant excluded (ISO 8601), UTC. Default: now."


@app.command()
def costs(
    since: Annotated[str | None, typer.Option(help=SINCE_HELP)] = None,
    until: Annotated[str | None, typer.Option(help=UNTIL_HELP)] = None,
    group_by: Annotated[
        list[str] | None,
        typer.Option("--group-by", "-g",
                     help="day|week|month|backend|model|client|state; repeat or comma-separate."),
    ] = None,
    client: Annotated[str | None, typer.Option(help="Only this client's (tenant's) jobs.")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table, csv or json.")] = Format.table,
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    chart: Annotated[
        Path | None,
        typer.Option(help="Also draw daily cost by backend, with the all-on-fal line (.png/.svg)."),
    ] = None,
    chart_size: Annotated[
        str, typer.Option(help="The chart's size in pixels, WIDTHxHEIGHT.")
    ] = "1200x600",
) -> None:
    """Jobs, outcomes, compute seconds, cost, fal-equivalent of local work and the saving,
    latency p50/p95 and retries, per group and in total. Sums of attempt rows, nothing else."""
    settings = get_settings()
    width, height = _size(chart_size) if chart else (0, 0)
    report = commands.costs(settings, OPERATOR, since=since, until=until,
                            group_by=group_by or [], client=client)
    daily = commands.costs(settings, OPERATOR, since=since, until=until,
                           group_by=("day", "backend"), client=client) if chart else None
    if json_out or fmt is Format.json:
        print_json(report_dict(report))
    elif fmt is Format.csv:
        sys.stdout.write(report_csv(report))
    else:
        table = report_table(report)
        # Never squeeze the columns into a narrow (or non-terminal, 80-column) console.
        needed = console.measure(table, options=console.options.update_width(1000)).maximum
        Console(width=max(console.width, needed)).print(table)
    if chart is not None and daily is not None:
        draw_cost_chart(daily, chart, width=width, height=height)
        console_err.print(f"wrote the chart to {chart} ({width}×{height})")


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit()):
        raise ReportError(f"chart size {text!r} is not WIDTHxHEIGHT, e.g. 1200x600")
    return int(width), int(height)


@app.command(name="reconcile-fal")
def reconcile_fal_command(
    billed_seconds: Annotated[
        str, typer.Option(help="fal's total compute seconds for the period (its usage page or API).")
    ],
    since: Annotated[str | None, typer.Option(help=SINCE_HELP)] = None,
    until: Annotated[str | None, typer.Option(help=UNTIL_HELP)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Compare the fal compute seconds recorded for a period with the total fal billed."""
    settings = get_settings()
    try:
        billed = Decimal(billed_seconds)
    except InvalidOperation:
        raise ReportError(f"--billed-seconds {billed_seconds!r} is not a number") from None
    if not billed.is_finite() or billed < 0:
        raise ReportError("--billed-seconds must be a number of seconds, 0 or more")
    period = make_period(since, until)
    result = reconcile_fal(get_engine(settings.database.url.get_secret_value()), period, billed)
    price = settings.fal.price_per_second
    data = {
        "since": period.since.isoformat(),
        "until": period.until.isoformat(),
        "timezone": "UTC",
        "fal_attempts": result.attempts,
        "recorded_seconds": result.recorded_seconds,
        "recorded_seconds_by_basis": {k: format(v, "f") for k, v in result.seconds_by_basis.items()},
        "billed_seconds": billed,
        "difference_seconds": result.difference_seconds,
        "difference_percent": result.difference_percent,
        "recorded_cost_usd": result.recorded_cost_usd,
        "difference_usd_at_price": result.difference_usd(price),
        "fal_price_per_second": price,
    }
    if json_out:
        print_json({k: format(v, "f") if isinstance(v, Decimal) else v for k, v in data.items()})
        return
    percent = result.difference_percent
    console.print(f"fal compute seconds, {period.describe()}")
    console.print(f"  recorded  {result.recorded_seconds:>14,.3f} s over {result.attempts:,} attempts "
                  f"(${result.recorded_cost_usd:,.4f})")
    for basis, seconds in sorted(result.seconds_by_basis.items()):
        console.print(f"    {basis:<20} {seconds:>14,.3f} s")
    console.print(f"  billed    {billed:>14,.3f} s")
    console.print(
        f"  difference {result.difference_seconds:>+13,.3f} s"
        + (f" ({percent:+.2f} % of billed)" if percent is not None else "")
        + f", ${result.difference_usd(price):+,.4f} at ${price}/s"
        + ("  — fal billed more than was recorded" if result.difference_seconds > 0 else "")
    )
