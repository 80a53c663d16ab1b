"""The cost report, scoped to the caller (a tenant sees only its own client's costs)."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.commands.caller import Caller
from orchestrator.db.session import get_engine
from orchestrator.reports import CostReport, cost_report, make_period, parse_group_by
from orchestrator.settings import Settings


def costs(settings: Settings, caller: Caller, *, since: str | None = None,
          until: str | None = None, group_by: Sequence[str] = (),
          client: str | None = None) -> CostReport:
    """Raises ReportError for a bad date or grouping, RequestError (forbidden) when a tenant
    asks for another client's costs."""
    scope = caller.client_filter(client)
    period = make_period(since, until)
    groups = parse_group_by(group_by)
    return cost_report(get_engine(settings.database.url.get_secret_value()), period, groups, scope)
