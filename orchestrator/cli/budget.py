"""``orchestrator budget``: fal spend limits per UTC day and month, global and per client."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated

import typer
from rich.table import Table

from orchestrator.cli.common import console, console_err, print_json
from orchestrator.commands import Caller
from orchestrator.commands import budgets as budget_commands
from orchestrator.costs import budgets
from orchestrator.errors import BudgetError
from orchestrator.settings import get_settings

app = typer.Typer(help="fal spend limits (USD per UTC day and month).", no_args_is_help=True)

CLIENT_HELP = "One client's limit; without it, the limit for all clients together."


def _usd(text: str | None, name: str) -> Decimal | None:
    if text is None or text.lower() == "none":
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise BudgetError(f"{name} {text!r} is not an amount of USD") from None
    if not value.is_finite() or value < 0:
        raise BudgetError(f"{name} must be 0 or more")
    return value


@app.command(name="set")
def set_(
    daily: Annotated[str | None, typer.Option(help="USD per UTC day ('none': no limit).")] = None,
    monthly: Annotated[str | None, typer.Option(help="USD per UTC month ('none': no limit).")] = None,
    client: Annotated[str | None, typer.Option(help=CLIENT_HELP)] = None,
) -> None:
    """Set the limits of one scope (both at once; an option left out means no limit).
    A global row here overrides ORCH_FAL_BUDGET_DAILY_USD / _MONTHLY_USD."""
    scope = budget_commands.set_budget(get_settings(), Caller.operator(), client=client,
                                       daily=_usd(daily, "--daily"),
                                       monthly=_usd(monthly, "--monthly"))
    console_err.print(f"fal budget for {'all clients' if scope == budgets.ALL_CLIENTS else scope}: "
                      f"daily {daily or 'none'}, monthly {monthly or 'none'} (USD)")


@app.command()
def clear(client: Annotated[str | None, typer.Option(help=CLIENT_HELP)] = None) -> None:
    """Remove a scope's limits (the global one falls back to the settings)."""
    removed = budget_commands.clear_budget(get_settings(), Caller.operator(), client=client)
    console_err.print("removed" if removed else "there was no budget set for that scope")


@app.command()
def show(json_out: Annotated[bool, typer.Option("--json", help="One JSON object per limit.")] = False
         ) -> None:
    """Every limit in force: spent (costed fal attempts), in flight, and what is left."""
    spends = budget_commands.status(get_settings(), Caller.operator())
    if json_out:
        for s in spends:
            print_json({"scope": s.scope, "period": s.period, "period_label": s.period_label,
                        "limit_usd": s.limit_usd, "spent_usd": s.spent_usd,
                        "in_flight": s.pending, "estimate_per_job_usd": s.estimate_usd,
                        "used_usd": s.used_usd, "percent": round(s.percent, 2)})
        return
    if not spends:
        console_err.print("no fal budget is set")
        return
    table = Table("scope", "period (UTC)", "limit $", "spent $", "in flight", "used %", "left $",
                  title="fal budgets")
    for s in spends:
        table.add_row(s.scope, s.period_label, f"{s.limit_usd:,.2f}", f"{s.spent_usd:,.4f}",
                      str(s.pending), f"{s.percent:.1f}", f"{max(s.limit_usd - s.used_usd, 0):,.4f}")
    console.print(table)
