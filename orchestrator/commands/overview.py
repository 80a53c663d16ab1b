"""The figures of the console's overview, scoped to the caller (a tenant: its own jobs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from orchestrator import backends
from orchestrator.commands.caller import Caller
from orchestrator.costs import budgets
from orchestrator.costs.budgets import Spend
from orchestrator.db.models import Attempt, Job
from orchestrator.db.session import session_scope
from orchestrator.jobs.states import AttemptOutcome, JobState
from orchestrator.routing.signals import Breaker, breaker
from orchestrator.settings import Settings

ACTIVE = (JobState.QUEUED, JobState.RUNNING, JobState.RETRYING)
LATENCY_SAMPLE = 2000  # the latest finished jobs of the last hour the percentiles are taken over


@dataclass(frozen=True)
class Overview:
    at: datetime
    last_hour: dict[str, int]  # state -> jobs created in the last hour
    last_day: dict[str, int]
    queue_depth: dict[str, dict[str, int]]  # backend -> {state: jobs} for unfinished jobs
    running: int
    fal_in_flight: int  # fal attempts submitted and not yet answered
    p50_seconds: float | None  # submit to finish, succeeded jobs of the last hour
    p95_seconds: float | None
    latency_jobs: int
    fal_spend_today: Decimal
    fal_spend_month: Decimal
    budgets: list[Spend]
    breakers: dict[str, Breaker] = field(default_factory=dict)  # admins only


def percentile(values: list[float], share: float) -> float | None:
    """Linear interpolation between closest ranks (as Postgres's percentile_cont)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = share * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _own(caller: Caller) -> list[ColumnElement[bool]]:
    """The condition that keeps a tenant to its own jobs (none for an admin)."""
    return [] if caller.is_admin else [Job.client == caller.client]


def _by_state(session: Session, caller: Caller, since: datetime) -> dict[str, int]:
    stmt = (select(Job.state, func.count()).where(Job.created_at >= since, *_own(caller))
            .group_by(Job.state))
    return {state.value: int(n) for state, n in session.execute(stmt)}


def _latencies(session: Session, caller: Caller, now: datetime) -> list[float]:
    # created_at bounds the scan by its index; a job of the last hour was created in the last day
    # or counts as an outlier not worth a full scan.
    stmt = (select(Job.created_at, Job.finished_at)
            .where(Job.created_at >= now - timedelta(days=1), Job.state == JobState.SUCCEEDED,
                   Job.finished_at >= now - timedelta(hours=1), *_own(caller))
            .order_by(Job.finished_at.desc()).limit(LATENCY_SAMPLE))
    return [(done - created).total_seconds() for created, done in session.execute(stmt)
            if done is not None]


def overview(settings: Settings, caller: Caller, *, now: datetime | None = None) -> Overview:
    now = now or datetime.now(UTC)
    with session_scope(settings.database.url.get_secret_value()) as session:
        depth: dict[str, dict[str, int]] = {}
        stmt = (select(Job.backend, Job.state, func.count())
                .where(Job.state.in_(ACTIVE), *_own(caller)).group_by(Job.backend, Job.state))
        for backend, state, n in session.execute(stmt):
            depth.setdefault(backend, {})[state.value] = int(n)
        running = sum(states.get(JobState.RUNNING.value, 0) for states in depth.values())
        flight = select(func.count()).select_from(Attempt).where(
            Attempt.backend == backends.AUTO_REMOTE, Attempt.outcome == AttemptOutcome.RUNNING,
            Attempt.provider_request_id.is_not(None))
        if not caller.is_admin:
            flight = flight.join(Job, Job.id == Attempt.job_id).where(Job.client == caller.client)
        latencies = _latencies(session, caller, now)
        scope = budgets.ALL_CLIENTS if caller.is_admin else caller.submits_as
        estimate = budgets.cost_estimate(session, settings)
        today = budgets.measure(session, scope, "day", Decimal(0), estimate, now).spent_usd
        month = budgets.measure(session, scope, "month", Decimal(0), estimate, now).spent_usd
        if caller.is_admin:
            spends = budgets.status(session, settings, now=now)
        else:
            spends = [budgets.measure(session, owner, period, limit, estimate, now)
                      for owner, period, limit in budgets.limits_for(session, scope, settings)]
        breakers = ({name: breaker(session, name, settings, now)
                     for name in (backends.AUTO_INLINE, backends.AUTO_REMOTE)}
                    if caller.is_admin else {})
        return Overview(
            at=now, last_hour=_by_state(session, caller, now - timedelta(hours=1)),
            last_day=_by_state(session, caller, now - timedelta(days=1)), queue_depth=depth,
            running=running, fal_in_flight=int(session.scalar(flight) or 0),
            p50_seconds=percentile(latencies, 0.5), p95_seconds=percentile(latencies, 0.95),
            latency_jobs=len(latencies), fal_spend_today=today, fal_spend_month=month,
            budgets=spends, breakers=breakers,
        )
