"""fal spend limits per UTC day and month, for all clients together and per client.

Spend is what the attempt rows say (principle 5): the ``cost_usd`` of fal attempts that started
in the period, plus, for each fal attempt still without a cost (sent, or running at fal), an
estimate measured from what fal really charged: the 95th percentile of the last 100 costed fal
attempts. Until there are ``MIN_MEASURED`` of those, the estimate is the dearest of them, at least
``ORCH_FAL_JOB_COST_ESTIMATE_USD`` (a guess that may be many times a small image's cost). A
submission is let through while that total is below every limit; so the last one let through
can take spend over a limit by at most one job's cost.

A submission refused only because of reservations for attempts in flight (what is really spent
is still below the limit) is not refused for good: it waits ``IN_FLIGHT_RECHECK_SECONDS`` for
those to be costed and is checked again, even with ``ORCH_FAL_OVER_BUDGET=fail``. Otherwise 50
jobs submitted at once against an empty day would see two of them in flight at the fixed
estimate and fail the other 48 with most of the budget unspent.

Atomic across workers: :func:`admit` takes a Postgres transaction-level advisory lock, sums,
and returns; the caller then inserts the new attempt row *in the same transaction*, and the lock
is released by its commit. The next checker, on any worker, waits for the lock and then sees
that attempt (READ COMMITTED takes a fresh snapshot per statement), so concurrent submissions
are checked one after another against everything before them. The attempt row is the
reservation: nothing else to keep in step with the rows (a counter in Redis could drift from
them, and outlive a rolled-back transaction), and a worker that dies mid-check releases the lock
with its connection. The lock is taken only when a limit is set.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import and_, event, func, literal_column, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from orchestrator import backends
from orchestrator.db.models import Attempt, FalBudget, FalBudgetAlert, Job
from orchestrator.db.portable import utc_bucket, utc_day_value
from orchestrator.errors import BudgetError
from orchestrator.settings import Settings

log = logging.getLogger("orchestrator.budgets")

ALL_CLIENTS = "*"
THRESHOLDS = (80, 100)
# pg_advisory_xact_lock key: one lock for every fal budget check ("fal$" as a number).
LOCK_KEY = 0x66616C24
RECENT_ATTEMPTS = 100
MIN_MEASURED = 3  # costed fal attempts before the estimate is measured rather than the guess
PERCENTILE = 95
IN_FLIGHT_RECHECK_SECONDS = 2.0



@dataclass(frozen=True)
class Spend:
    """One limit of one scope in the current period, and what counts against it."""

    scope: str  # "*" or a client
    period: str  # "day" | "month"
    period_label: str  # 2026-11-28 | 2026-11
    limit_usd: Decimal
    spent_usd: Decimal  # costed fal attempts
    pending: int  # fal attempts not yet costed
    estimate_usd: Decimal  # counted for each of them

    @property
    def used_usd(self) -> Decimal:
        return self.spent_usd + self.pending * self.estimate_usd

    @property
    def percent(self) -> float:
        return float(self.used_usd / self.limit_usd * 100) if self.limit_usd else 100.0

    def describe(self) -> str:
        who = "all clients" if self.scope == ALL_CLIENTS else f"client {self.scope}"
        return (f"the fal {'daily' if self.period == 'day' else 'monthly'} budget of "
                f"${self.limit_usd:,.2f} for {who} ({self.period_label} UTC) is used up: "
                f"${self.spent_usd:,.4f} spent + {self.pending} submission(s) in flight")


@dataclass(frozen=True)
class Verdict:
    spends: list[Spend]
    blocking: Spend | None  # the first limit reached, or None: the submission may go

    @property
    def allowed(self) -> bool:
        return self.blocking is None

    @property
    def waits_for_in_flight(self) -> bool:
        """Refused only for what attempts in flight are expected to cost: once they are costed
        there may be room, so this is a "not yet", not a refusal."""
        b = self.blocking
        return b is not None and b.pending > 0 and b.spent_usd < b.limit_usd


def limits_for(session: Session, client: str, settings: Settings) -> list[tuple[str, str, Decimal]]:
    """(scope, "day"|"month", USD) for every limit that applies to a client's fal job."""
    rows = {b.scope: b for b in session.scalars(
        select(FalBudget).where(FalBudget.scope.in_([ALL_CLIENTS, client])))}
    out: list[tuple[str, str, Decimal]] = []
    everyone = rows.get(ALL_CLIENTS)
    daily = everyone.daily_usd if everyone is not None else settings.budgets.daily_usd
    monthly = everyone.monthly_usd if everyone is not None else settings.budgets.monthly_usd
    if daily is not None:
        out.append((ALL_CLIENTS, "day", daily))
    if monthly is not None:
        out.append((ALL_CLIENTS, "month", monthly))
    own = rows.get(client) if client != ALL_CLIENTS else None
    if own is not None:
        if own.daily_usd is not None:
            out.append((client, "day", own.daily_usd))
        if own.monthly_usd is not None:
            out.append((client, "month", own.monthly_usd))
    return out


def _period(period: str, now: datetime) -> tuple[datetime, datetime, str]:
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1), day.strftime("%Y-%m-%d")
    start = day.replace(day=1)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end, start.strftime("%Y-%m")


def cost_estimate(session: Session, settings: Settings) -> Decimal:
    """What a fal attempt in flight is counted at (see the module's docstring)."""
    recent = (
        select(Attempt.cost_usd)
        .where(Attempt.backend == backends.BUDGETED, Attempt.cost_usd > 0)
        .order_by(Attempt.started_at.desc())
        .limit(RECENT_ATTEMPTS)
    )
    costs = sorted(c for c in session.scalars(recent) if c is not None)
    if len(costs) < MIN_MEASURED:
        return max([settings.budgets.job_cost_estimate_usd, *costs])
    return high_percentile(costs, PERCENTILE)


def high_percentile(ordered: list[Decimal], percent: int) -> Decimal:
    """Nearest rank: the smallest value with at least ``percent`` % of ``ordered`` at or below it
    (never an interpolation below a real cost)."""
    rank = max(1, -(-len(ordered) * percent // 100))
    return ordered[rank - 1]


def measure(session: Session, scope: str, period: str, limit: Decimal, estimate: Decimal,
            now: datetime) -> Spend:
    """One aggregate over the period's fal attempts (the report's day index narrows it)."""
    start, end, label = _period(period, now)
    day = utc_bucket("day", Attempt.started_at)
    stmt = select(
        func.coalesce(func.sum(Attempt.cost_usd), literal_column("0")),
        func.count().filter(Attempt.cost_usd.is_(None)),
    ).where(
        Attempt.backend == backends.BUDGETED, Attempt.started_at >= start, Attempt.started_at < end,
        day >= utc_day_value(start.replace(tzinfo=None)), day < utc_day_value(end.replace(tzinfo=None)),
    )
    if scope != ALL_CLIENTS:
        stmt = stmt.join(Job, and_(Job.id == Attempt.job_id, Job.client == scope))
    spent, pending = session.execute(stmt).one()
    return Spend(scope, period, label, limit, Decimal(spent or 0), int(pending), estimate)


def admit(session: Session, client: str, settings: Settings, *, now: datetime | None = None
          ) -> Verdict | None:
    """May a new paid fal submission for ``client`` go? None when no limit applies.

    Call inside the transaction that then inserts the attempt (see the module's docstring);
    crossed thresholds are announced after that transaction commits."""
    limits = limits_for(session, client, settings)
    if not limits:
        return None
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    now = now or datetime.now(UTC)
    estimate = cost_estimate(session, settings)
    spends = [measure(session, scope, period, limit, estimate, now)
              for scope, period, limit in limits]
    blocking = next((s for s in spends if s.used_usd >= s.limit_usd), None)
    crossed: list[tuple[Spend, int, Decimal]] = []
    for spend in spends:
        # With this submission counted (or, if it is refused, as things stand).
        after = spend.used_usd + (estimate if blocking is None else 0)
        for threshold in THRESHOLDS:
            if after * 100 >= spend.limit_usd * threshold:
                crossed.append((spend, threshold, after))
    _record_alerts(session, crossed, settings)
    return Verdict(spends, blocking)


def _record_alerts(session: Session, crossed: list[tuple[Spend, int, Decimal]],
                   settings: Settings) -> None:
    new: list[dict[str, Any]] = []
    # INSERT … ON CONFLICT DO NOTHING RETURNING: Postgres, and SQLite in the embedded mode.
    insert = sqlite.insert if session.get_bind().dialect.name == "sqlite" else postgresql.insert
    for spend, threshold, after in crossed:
        inserted = session.execute(
            insert(FalBudgetAlert)
            .values(scope=spend.scope, period=spend.period_label, threshold=threshold,
                    spent_usd=after, limit_usd=spend.limit_usd)
            .on_conflict_do_nothing()
            .returning(FalBudgetAlert.threshold)
        ).first()
        if inserted is not None:
            new.append({
                "event": "fal_budget_threshold", "threshold_percent": threshold,
                "scope": spend.scope, "period": spend.period, "period_label": spend.period_label,
                "limit_usd": str(spend.limit_usd), "used_usd": str(after),
                "spent_usd": str(spend.spent_usd), "in_flight": spend.pending,
            })
    if new:
        event.listen(session, "after_commit", lambda _: announce(new, settings), once=True)


def announce(alerts: list[dict[str, Any]], settings: Settings) -> None:
    """Log each alert; POST them to the alert webhook, if set, without holding the caller."""
    for alert in alerts:
        log.warning(
            "fal budget: %s%% of the %s limit of $%s for %s reached (%s): $%s used",
            alert["threshold_percent"], "daily" if alert["period"] == "day" else "monthly",
            alert["limit_usd"], "all clients" if alert["scope"] == ALL_CLIENTS else alert["scope"],
            alert["period_label"], alert["used_usd"],
        )
    url = settings.budgets.alert_webhook_url
    if url:
        threading.Thread(target=_post, args=(url, alerts), daemon=True).start()


def _post(url: str, alerts: list[dict[str, Any]]) -> None:
    for alert in alerts:
        for attempt in range(3):
            try:
                httpx.post(url, json=alert, timeout=5).raise_for_status()
                break
            except httpx.HTTPError as exc:
                log.warning("budget alert webhook failed (try %d of 3): %s", attempt + 1, exc)


def set_budget(session: Session, scope: str, *, daily: Decimal | None, monthly: Decimal | None
               ) -> FalBudget:
    for value in (daily, monthly):
        if value is not None and (not value.is_finite() or value < 0):
            raise BudgetError("a budget is an amount of USD, 0 or more")
    row = session.get(FalBudget, scope) or FalBudget(scope=scope)
    row.daily_usd, row.monthly_usd = daily, monthly
    session.add(row)
    session.flush()
    return row


def clear_budget(session: Session, scope: str) -> bool:
    row = session.get(FalBudget, scope)
    if row is None:
        return False
    session.delete(row)
    return True


def status(session: Session, settings: Settings, *, now: datetime | None = None) -> list[Spend]:
    """Every limit in force and where it stands (for ``orchestrator budget show``)."""
    now = now or datetime.now(UTC)
    estimate = cost_estimate(session, settings)
    scopes = [ALL_CLIENTS, *sorted(s for s in session.scalars(select(FalBudget.scope))
                                   if s != ALL_CLIENTS)]
    out: list[Spend] = []
    seen: set[tuple[str, str]] = set()
    for scope in scopes:
        for owner, period, limit in limits_for(session, scope, settings):
            if (owner, period) not in seen:
                seen.add((owner, period))
                out.append(measure(session, owner, period, limit, estimate, now))
    return out


def status_in(settings: Settings) -> list[Spend]:
    """:func:`status` in a transaction of its own."""
    from orchestrator.db.session import session_scope

    with session_scope(settings.database.url.get_secret_value()) as session:
        return status(session, settings)
