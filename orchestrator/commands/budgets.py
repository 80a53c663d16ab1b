"""fal budgets: where every limit stands (each caller its own), and setting them (admins)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from orchestrator.commands.caller import Caller
from orchestrator.commands.keys import require_admin
from orchestrator.costs import budgets
from orchestrator.costs.budgets import Spend
from orchestrator.db.session import session_scope
from orchestrator.errors import BudgetError
from orchestrator.settings import Settings


def parse_usd(text: str | None, name: str) -> Decimal | None:
    """An amount of USD, 0 or more; empty or ``none`` means no limit."""
    if text is None or not text.strip() or text.strip().lower() == "none":
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise BudgetError(f"{name} {text.strip()[:40]!r} is not an amount of USD") from None
    if not value.is_finite() or value < 0:
        raise BudgetError(f"{name} must be 0 or more")
    return value


def _scope(client: str | None) -> str:
    return client.strip() if client and client.strip() else budgets.ALL_CLIENTS


def status(settings: Settings, caller: Caller) -> list[Spend]:
    """Every limit in force (an admin), or the limits that apply to the caller's own jobs."""
    with session_scope(settings.database.url.get_secret_value()) as session:
        if caller.is_admin:
            return budgets.status(session, settings)
        now = datetime.now(UTC)
        estimate = budgets.cost_estimate(session, settings)
        return [budgets.measure(session, scope, period, limit, estimate, now)
                for scope, period, limit in budgets.limits_for(session, caller.submits_as,
                                                               settings)]


def set_budget(settings: Settings, caller: Caller, *, client: str | None,
               daily: Decimal | None, monthly: Decimal | None) -> str:
    """Set both limits of one scope (None: no limit); the scope set."""
    require_admin(caller)
    scope = _scope(client)
    with session_scope(settings.database.url.get_secret_value()) as session:
        budgets.set_budget(session, scope, daily=daily, monthly=monthly)
    return scope


def clear_budget(settings: Settings, caller: Caller, *, client: str | None) -> bool:
    """Remove a scope's limits (the global one falls back to the settings)."""
    require_admin(caller)
    with session_scope(settings.database.url.get_secret_value()) as session:
        return budgets.clear_budget(session, _scope(client))
