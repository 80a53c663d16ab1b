"""What the auto policy knows, read from Postgres (the source of truth) at submit time."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator import backends
from orchestrator.costs import budgets
from orchestrator.db.models import Attempt, Job
from orchestrator.db.portable import seconds_between
from orchestrator.errors import (
    BackendRejected,
    BudgetExceeded,
    FetchFailed,
    InputError,
    OrchestratorError,
)
from orchestrator.jobs.states import AttemptOutcome, JobState
from orchestrator.settings import Settings

RECENT = 20
ERROR_WINDOW = timedelta(minutes=10)
FAILED_OUTCOMES = (AttemptOutcome.RETRY, AttemptOutcome.FAILED, AttemptOutcome.LOST,
                   AttemptOutcome.CRASHED)


def _subclass_codes(*roots: type[OrchestratorError]) -> frozenset[str]:
    codes: set[str] = set()
    todo: list[type[OrchestratorError]] = list(roots)
    while todo:
        cls = todo.pop()
        codes.add(cls.code)
        todo.extend(cls.__subclasses__())
    return frozenset(codes)


#: Failures that say nothing about the backend's health: the input's or the caller's fault.
NOT_BACKEND_FAULTS = _subclass_codes(InputError, BackendRejected, FetchFailed, BudgetExceeded)


@dataclass(frozen=True)
class Breaker:
    """A backend's circuit: open after ``breaker_failures`` backend failures in a row, until
    ``breaker_cooldown_seconds`` after the last; then half-open (work flows; a success closes
    it, a failure opens it again)."""

    open: bool
    failures_in_a_row: int
    last_failure_at: str | None


@dataclass(frozen=True)
class Signals:
    local_depth: int  # local jobs queued, running or waiting to retry
    local_seconds_per_job: float  # mean wall time of recent local attempts that succeeded
    local_parallelism: int
    local_breaker: Breaker
    fal_unavailable: str | None  # why fal cannot run at all, or None
    fal_error_rate: float | None  # share of recent fal attempts that failed on fal's side
    fal_recent_attempts: int
    fal_breaker: Breaker
    fal_budget_blocked: str | None  # the budget that is used up, or None
    fal_budget_left_usd: str | None  # the least left of the limits that apply, or None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_fault(outcome: AttemptOutcome, error_code: str | None) -> bool:
    return outcome in FAILED_OUTCOMES and (error_code or "") not in NOT_BACKEND_FAULTS


def breaker(session: Session, backend: str, settings: Settings, now: datetime) -> Breaker:
    rows = session.execute(
        select(Attempt.outcome, Attempt.error_code, Attempt.finished_at)
        .where(Attempt.backend == backend, Attempt.finished_at.is_not(None),
               Attempt.outcome != AttemptOutcome.SUPERSEDED,
               Attempt.outcome != AttemptOutcome.CANCELLED)
        .order_by(Attempt.finished_at.desc())
        .limit(settings.routing.breaker_failures * 4)
    ).all()
    streak = 0
    last: datetime | None = None
    for outcome, error_code, finished_at in rows:
        if outcome in FAILED_OUTCOMES and not _is_fault(outcome, error_code):
            continue  # the input's fault: says nothing about the backend
        if not _is_fault(outcome, error_code) or streak == settings.routing.breaker_failures:
            break
        streak += 1
        last = last or finished_at
    cooling = last is not None and (now - last).total_seconds() < settings.routing.breaker_cooldown_seconds
    return Breaker(open=streak >= settings.routing.breaker_failures and cooling, failures_in_a_row=streak,
                   last_failure_at=last.isoformat() if last is not None else None)


def gather(session: Session, settings: Settings, client: str, *,
           now: datetime | None = None) -> Signals:
    from orchestrator.jobs.availability import unavailable_reason

    inline, remote = backends.AUTO_INLINE, backends.AUTO_REMOTE
    now = now or datetime.now(UTC)
    depth = session.scalar(
        select(func.count()).select_from(Job).where(
            Job.backend == inline,
            Job.state.in_([JobState.QUEUED, JobState.RUNNING, JobState.RETRYING]))
    ) or 0
    recent_local = (
        select(seconds_between(Attempt.started_at, Attempt.finished_at).label("s"))
        .where(Attempt.backend == inline, Attempt.outcome == AttemptOutcome.SUCCEEDED)
        .order_by(Attempt.finished_at.desc())
        .limit(RECENT)
        .subquery()
    )
    mean = session.scalar(select(func.avg(recent_local.c.s)))
    fal_rows = session.execute(
        select(Attempt.outcome, Attempt.error_code)
        .where(Attempt.backend == remote, Attempt.finished_at.is_not(None),
               Attempt.finished_at >= now - ERROR_WINDOW,
               Attempt.outcome != AttemptOutcome.CANCELLED)
        .order_by(Attempt.finished_at.desc())
        .limit(RECENT)
    ).all()
    faults = sum(1 for outcome, error_code in fal_rows if _is_fault(outcome, error_code))
    spends = [budgets.measure(session, scope, period, limit,
                              budgets.cost_estimate(session, settings), now)
              for scope, period, limit in budgets.limits_for(session, client, settings)]
    blocked = next((s for s in spends if s.used_usd >= s.limit_usd), None)
    left = min((s.limit_usd - s.used_usd for s in spends), default=None)
    return Signals(
        local_depth=int(depth),
        local_seconds_per_job=float(mean) if mean is not None else settings.routing.auto_local_seconds_per_job,
        local_parallelism=settings.routing.auto_local_parallelism or settings.inference_slots(),
        local_breaker=breaker(session, inline, settings, now),
        fal_unavailable=unavailable_reason(remote, settings),
        fal_error_rate=faults / len(fal_rows) if fal_rows else None,
        fal_recent_attempts=len(fal_rows),
        fal_breaker=breaker(session, remote, settings, now),
        fal_budget_blocked=blocked.describe() if blocked is not None else None,
        fal_budget_left_usd=str(max(left, 0)) if left is not None else None,
    )
