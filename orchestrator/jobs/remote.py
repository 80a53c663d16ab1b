"""State changes of remote (fal) attempts, each one transaction holding the job's row lock.

A remote attempt makes one paid submission: the attempt row (``submit_state=sending``) is
committed before the POST and the request id the moment fal answers. From then on the attempt
is polled from Postgres (``next_poll_at``) by any worker's poller, so nothing waits in memory.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.backends.base import BackendOutput
from orchestrator.db.models import Attempt, Job, Result
from orchestrator.errors import error_type
from orchestrator.jobs.service import (
    Busy,
    Claim,
    Cost,
    Pricing,
    Skip,
    _end_job,
    _lock,
    _record_cost,
    _running_attempts,
    _set_state,
    backoff_seconds,
    count_crash,
    lease_is_live,
    open_attempt,
    take_delivery,
    utcnow,
    wait_or_exhausted,
)
from orchestrator.jobs.states import AttemptOutcome, ComputeBasis, JobState, SubmitState
from orchestrator.results.base import StoredBytes
from orchestrator.settings import Settings

# Attempts the poller asks fal about: the job's current one, and a lost submit whose request
# was found again after the job had been bought once more (polled only for its cost).
POLLED_OUTCOMES = (AttemptOutcome.RUNNING, AttemptOutcome.LOST)


@dataclass(frozen=True)
class NotSubmitted:
    """The job may not be paid for now: it was moved to ``rerouted_to`` (an auto job, while
    fal's budget is used up or its circuit is open), waits ``wait_seconds`` (an explicit fal job
    over budget, ORCH_FAL_OVER_BUDGET=wait), or failed (=fail)."""

    reason: str
    rerouted_to: str | None = None
    wait_seconds: float | None = None


def _before_paying(session: Session, job: Job, settings: Settings) -> NotSubmitted | None:
    """The checks before a paid submission: fal's circuit (auto jobs) and the budget. The budget
    check holds its lock until this transaction, which inserts the attempt, commits
    (orchestrator/costs/budgets.py)."""
    from orchestrator import routing
    from orchestrator.costs import budgets
    from orchestrator.routing.signals import breaker

    auto = job.requested_backend == routing.AUTO
    if auto:
        circuit = breaker(session, "fal", settings, utcnow())
        if circuit.open:
            reason = (f"fal's circuit is open: {circuit.failures_in_a_row} failures in a row, "
                      f"the last at {circuit.last_failure_at}")
            routing.reroute(job, "local", reason, settings)
            return NotSubmitted(reason, rerouted_to="local")
    verdict = budgets.admit(session, job.client, settings)
    if verdict is None or verdict.blocking is None:
        if job.error_type == "BudgetExceeded":  # it waited; now it goes
            job.error_type = job.error_message = None
        return None
    reason = verdict.blocking.describe()
    if auto:
        routing.reroute(job, "local", reason, settings)
        return NotSubmitted(reason, rerouted_to="local")
    if verdict.waits_for_in_flight:  # may fit once the jobs in flight are costed
        job.error_type = "BudgetExceeded"
        job.error_message = f"waiting for fal jobs in flight to be costed: {reason}"
        return NotSubmitted(reason, wait_seconds=budgets.IN_FLIGHT_RECHECK_SECONDS)
    if settings.fal_over_budget == "fail":
        _end_job(job, JobState.FAILED, err_type="BudgetExceeded",
                 message=f"not submitted to fal: {reason} (ORCH_FAL_OVER_BUDGET=fail)")
        return NotSubmitted(reason)
    job.error_type = "BudgetExceeded"
    job.error_message = (f"waiting: {reason}; checked again every "
                         f"{settings.fal_budget_wait_seconds:g} s")
    return NotSubmitted(reason, wait_seconds=settings.fal_budget_wait_seconds)


def claim_submit(
    session: Session, job_id: uuid.UUID, settings: Settings
) -> Claim | Busy | Skip | NotSubmitted:
    """Open a new remote attempt, or explain why this delivery must not submit."""
    job = take_delivery(session, job_id)
    if isinstance(job, Skip):
        return job
    now = utcnow()

    for current in _running_attempts(session, job.id):
        if current.submit_state is SubmitState.ACCEPTED:
            # Delivered again after fal accepted it: never pay twice, poll that request now.
            current.next_poll_at = now
            return Skip("already submitted; polling resumed")
        if lease_is_live(job, now):
            assert job.lease_expires_at is not None
            return Busy((job.lease_expires_at - now).total_seconds())
        # The delivery that was submitting died between sending and recording the reply.
        current.outcome = AttemptOutcome.LOST
        current.submit_state = SubmitState.UNKNOWN
        current.finished_at = now
        current.error_type = "WorkerLost"
        current.error_message = (
            "the worker stopped while submitting to fal; fal may have accepted (and billed) it"
        )
        if count_crash(job, settings, doing="submitting"):
            return Skip("poison job failed")
        if settings.fal_webhook_url:
            # fal's webhook for that request names its id: give it time to arrive and be
            # adopted (adopt_request) before buying the job again.
            wait = settings.fal_adopt_wait_seconds
            _set_state(job, JobState.RETRYING)
            job.lease_owner = None
            job.lease_expires_at = None
            job.next_attempt_at = now + timedelta(seconds=wait)
            return Busy(wait)

    waiting = wait_or_exhausted(job, now)
    if waiting is not None:
        return waiting
    held = _before_paying(session, job, settings)
    if held is not None:
        return held
    lost_before = session.scalar(
        select(Attempt.id)
        .where(Attempt.job_id == job.id, Attempt.outcome == AttemptOutcome.LOST)
        .limit(1)
    )
    if lost_before is not None:
        job.possible_duplicate = True
    return open_attempt(
        session, job, now,
        lease_seconds=settings.fal_submit_timeout_seconds + settings.lease_seconds,
        submit_state=SubmitState.SENDING,
    )


def record_accepted(
    session: Session, claim: Claim, request_id: str, status: str, position: int | None,
    settings: Settings,
) -> bool:
    """Store fal's request id; False if the job was cancelled meanwhile (the caller cancels at fal)."""
    job = _lock(session, claim.job_id)
    attempt = session.get(Attempt, claim.attempt_id, populate_existing=True)
    assert job is not None and attempt is not None
    now = utcnow()
    attempt.provider_request_id = request_id
    attempt.submit_state = SubmitState.ACCEPTED
    attempt.submitted_at = now
    attempt.provider_status = status
    attempt.queue_position = position
    if status == "IN_PROGRESS":
        attempt.first_in_progress_at = now
    attempt.next_poll_at = now + timedelta(seconds=settings.fal_poll_initial_seconds)
    if job.lease_owner == str(claim.owner):
        job.lease_owner = None
        job.lease_expires_at = None
    return job.state is JobState.RUNNING


def record_refused(
    session: Session, claim: Claim, exc: Exception, *, retryable: bool, settings: Settings,
) -> float | None:
    """fal did not accept it: nothing was bought. Retry later, or fail; the retry delay or None."""
    from orchestrator.jobs import service

    attempt = session.get(Attempt, claim.attempt_id)
    if attempt is not None:
        attempt.submit_state = SubmitState.REJECTED
    pricing = Pricing(settings.fal_price_per_second, settings.fal_price_per_second)
    cost = Cost(Decimal(0), ComputeBasis.MEASURED)
    if retryable:
        return service.schedule_retry(session, claim, exc, cost, pricing, settings)
    service.fail(session, claim, exc, cost, pricing)
    return None


def record_unknown(session: Session, claim: Claim, exc: Exception, settings: Settings) -> float | None:
    """The reply to a sent submit was lost: the attempt is LOST (fal may run and bill it); the
    job is submitted again after ``fal_resubmit_after_seconds`` and flagged a possible duplicate."""
    job = _lock(session, claim.job_id)
    attempt = session.get(Attempt, claim.attempt_id, populate_existing=True)
    assert job is not None and attempt is not None
    now = utcnow()
    attempt.submit_state = SubmitState.UNKNOWN
    attempt.outcome = AttemptOutcome.LOST
    attempt.finished_at = now
    attempt.error_type = error_type(exc)
    attempt.error_message = str(exc)
    attempt.compute_seconds = Decimal(0)
    attempt.compute_basis = ComputeBasis.MEASURED
    attempt.cost_usd = Decimal(0)
    if job.state is not JobState.RUNNING or job.lease_owner != str(claim.owner):
        return None
    if claim.attempt_number >= claim.max_attempts:
        _end_job(job, JobState.FAILED, err_type=error_type(exc),
                 message=f"{exc} (no attempts left; fal may have run it)")
        return None
    _set_state(job, JobState.RETRYING)
    job.error_type = error_type(exc)
    job.error_message = str(exc)
    job.lease_owner = None
    job.lease_expires_at = None
    delay = resubmit_delay(settings)
    job.next_attempt_at = now + timedelta(seconds=delay)
    return delay


def resubmit_delay(settings: Settings) -> float:
    """How long a submit whose outcome is unknown waits before the job is bought again: with
    a webhook, long enough for fal's webhook to arrive and the request to be adopted."""
    if settings.fal_webhook_url:
        return max(settings.fal_adopt_wait_seconds, settings.fal_resubmit_after_seconds)
    return settings.fal_resubmit_after_seconds


def webhook_url(settings: Settings, attempt_id: int) -> str | None:
    """The ``fal_webhook`` of an attempt's submit: fal POSTs there when the request ends."""
    if not settings.fal_webhook_url:
        return None
    sep = "&" if "?" in settings.fal_webhook_url else "?"
    return f"{settings.fal_webhook_url}{sep}attempt={attempt_id}"


def adopt_request(session: Session, attempt_id: int, request_id: str) -> str:
    """fal's (verified) webhook says ``request_id`` belongs to this attempt.

    - its id is on record: poll it now (the webhook rings the bell early) -> "known";
    - the id never reached Postgres (the worker died, or the reply was lost) and the attempt
      is still the job's latest: adopt it, the job polls that request instead of paying
      again -> "adopted";
    - the job was submitted again meanwhile: a real second payment, recorded on the lost
      attempt (it is polled for its cost) and flagged on the job -> "duplicate".
    """
    attempt = session.get(Attempt, attempt_id)
    if attempt is None:
        return "unknown attempt"
    job = _lock(session, attempt.job_id)
    session.refresh(attempt)
    assert job is not None
    now = utcnow()
    if attempt.provider_request_id == request_id:
        if attempt.outcome in POLLED_OUTCOMES:
            attempt.next_poll_at = now
        return "known"
    if attempt.provider_request_id is not None or attempt.submit_state is SubmitState.REJECTED:
        return "ignored"
    taken = session.scalar(select(Attempt.id).where(Attempt.provider_request_id == request_id))
    if taken is not None:
        return "ignored"
    attempt.provider_request_id = request_id
    attempt.submit_state = SubmitState.ACCEPTED
    attempt.submitted_at = attempt.submitted_at or attempt.started_at
    attempt.next_poll_at = now
    latest = job.attempt_count == attempt.number
    if latest and job.state in (JobState.RUNNING, JobState.RETRYING):
        attempt.outcome = AttemptOutcome.RUNNING
        attempt.finished_at = None
        attempt.error_type = attempt.error_message = None
        if job.state is JobState.RETRYING:
            _set_state(job, JobState.RUNNING)
        job.next_attempt_at = None
        job.lease_owner = None  # the submit is resolved; polling needs no lease
        job.lease_expires_at = None
        return "adopted"
    attempt.outcome = AttemptOutcome.LOST
    job.possible_duplicate = True
    return "duplicate"


@dataclass(frozen=True)
class PollItem:
    attempt_id: int
    job_id: uuid.UUID
    request_id: str
    polls: int
    poll_errors: int
    submitted_at: datetime | None
    first_in_progress_at: datetime | None
    attempt_number: int = 0


def claim_due_polls(
    session: Session, *, limit: int, lease_seconds: float, due_before: datetime | None = None
) -> list[PollItem]:
    """Take up to ``limit`` attempts due for a poll (by ``due_before``, default now); other
    pollers skip them (SKIP LOCKED)."""
    now = utcnow()
    rows = session.scalars(
        select(Attempt)
        .where(
            Attempt.outcome.in_(POLLED_OUTCOMES),
            Attempt.submit_state == SubmitState.ACCEPTED,
            Attempt.next_poll_at <= (due_before or now),
        )
        .order_by(Attempt.next_poll_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    items = []
    for a in rows:
        assert a.provider_request_id is not None
        a.next_poll_at = now + timedelta(seconds=lease_seconds)  # if this poller dies, due again
        items.append(PollItem(a.id, a.job_id, a.provider_request_id, a.polls, a.poll_errors,
                              a.submitted_at, a.first_in_progress_at, a.number))
    return items


def poll_interval(polls: int, position: int | None, settings: Settings) -> float:
    """Grows ×1.5 per poll; a request deep in fal's queue is asked less often."""
    interval = settings.fal_poll_initial_seconds * (1.5 ** min(polls, 30))
    if position:
        interval = max(interval, 0.25 * position)
    return min(interval, settings.fal_poll_max_seconds)


def record_status(
    session: Session, attempt_id: int, status: str, position: int | None, settings: Settings,
) -> None:
    attempt = session.get(Attempt, attempt_id)
    if attempt is None or attempt.outcome not in POLLED_OUTCOMES:
        return
    now = utcnow()
    attempt.polls += 1
    attempt.provider_status = status
    attempt.queue_position = position
    if status == "IN_PROGRESS" and attempt.first_in_progress_at is None:
        attempt.first_in_progress_at = now
    attempt.next_poll_at = now + timedelta(seconds=poll_interval(attempt.polls, position, settings))


def record_poll_error(session: Session, attempt_id: int, message: str, settings: Settings) -> None:
    """A status/result/download call failed in a way that asking again can fix: back off."""
    attempt = session.get(Attempt, attempt_id)
    if attempt is None or attempt.outcome not in POLLED_OUTCOMES:
        return
    attempt.poll_errors += 1
    attempt.error_message = message
    ceiling = min(settings.fal_poll_max_seconds * 3,
                  settings.fal_poll_initial_seconds * 2 ** min(attempt.poll_errors, 20))
    attempt.next_poll_at = utcnow() + timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def _current(job: Job | None, attempt: Attempt | None) -> bool:
    return (job is not None and attempt is not None and job.state is JobState.RUNNING
            and attempt.outcome is AttemptOutcome.RUNNING and job.attempt_count == attempt.number)


def complete_remote(
    session: Session, attempt_id: int, output: BackendOutput, stored: StoredBytes, sha256: str,
    pricing: Pricing,
) -> bool:
    """fal finished it: store the result once and end the job succeeded."""
    attempt = session.get(Attempt, attempt_id, populate_existing=True)
    if attempt is None or attempt.outcome not in POLLED_OUTCOMES:
        return False
    job = _lock(session, attempt.job_id)
    session.refresh(attempt)
    if attempt.outcome not in POLLED_OUTCOMES:  # another poll of it finished first
        return False
    _record_cost(attempt, Cost(output.compute_seconds, output.compute_basis), pricing)
    if attempt.outcome is AttemptOutcome.LOST:  # an adopted duplicate: its cost, not its result
        attempt.outcome = AttemptOutcome.SUPERSEDED
        attempt.provider_status = "COMPLETED"
        return False
    if not _current(job, attempt):
        attempt.outcome = (AttemptOutcome.CANCELLED if job is not None and job.state is JobState.CANCELLED
                           else AttemptOutcome.SUPERSEDED)
        return False
    assert job is not None
    attempt.outcome = AttemptOutcome.SUCCEEDED
    attempt.provider_status = "COMPLETED"
    session.add(Result(job_id=job.id, attempt_id=attempt.id, content_type=output.content_type,
                       sha256=sha256, size_bytes=len(output.data), width=output.width,
                       height=output.height, store=stored.store, location=stored.location,
                       data=stored.data, cropped=output.cropped))
    _end_job(job, JobState.SUCCEEDED, err_type=None, message=None)
    return True


def fail_remote(
    session: Session, attempt_id: int, exc: Exception, cost: Cost, pricing: Pricing, *,
    retryable: bool, settings: Settings,
) -> tuple[uuid.UUID, float] | None:
    """fal ran it and it failed (a cost too). Returns (job id, delay) when a retry was scheduled."""
    attempt = session.get(Attempt, attempt_id, populate_existing=True)
    if attempt is None or attempt.outcome not in POLLED_OUTCOMES:
        return None
    job = _lock(session, attempt.job_id)
    session.refresh(attempt)
    if attempt.outcome not in POLLED_OUTCOMES:  # another poll of it finished first
        return None
    _record_cost(attempt, cost, pricing)
    attempt.provider_status = "COMPLETED"
    attempt.error_type = error_type(exc)
    attempt.error_message = str(exc)
    if attempt.outcome is AttemptOutcome.LOST:  # an adopted duplicate: its cost, nothing else
        attempt.outcome = AttemptOutcome.SUPERSEDED
        return None
    if not _current(job, attempt):
        attempt.outcome = (AttemptOutcome.CANCELLED if job is not None and job.state is JobState.CANCELLED
                           else AttemptOutcome.SUPERSEDED)
        return None
    assert job is not None
    if retryable and attempt.number < job.max_attempts:
        attempt.outcome = AttemptOutcome.RETRY
        delay = backoff_seconds(attempt.number, settings)
        _set_state(job, JobState.RETRYING)
        job.error_type = error_type(exc)
        job.error_message = str(exc)
        job.next_attempt_at = utcnow() + timedelta(seconds=delay)
        return job.id, delay
    attempt.outcome = AttemptOutcome.FAILED
    _end_job(job, JobState.FAILED, err_type=error_type(exc), message=str(exc))
    return None


__all__ = [
    "POLLED_OUTCOMES",
    "PollItem",
    "adopt_request",
    "claim_due_polls",
    "claim_submit",
    "complete_remote",
    "fail_remote",
    "poll_interval",
    "record_accepted",
    "record_poll_error",
    "record_refused",
    "record_status",
    "record_unknown",
    "resubmit_delay",
    "webhook_url",
]
