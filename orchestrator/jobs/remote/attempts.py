"""Bookkeeping of remote attempts, each one transaction holding the job's row lock.

A remote attempt makes one paid submission: the attempt row (``submit_state=sending``) is
committed before the POST and the request id the moment the provider answers. From then on the
attempt is polled from the database (``next_poll_at``) by any worker's poller, so nothing waits
in memory. Every change of the job's own state goes through ``orchestrator.jobs.transitions``.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import DateTime, bindparam, case, func, or_, select, update
from sqlalchemy.orm import Session

from orchestrator import backends
from orchestrator.backends.base import BackendOutput, RemotePolicy
from orchestrator.db.models import Attempt, Job
from orchestrator.errors import ErrorCode, error_code
from orchestrator.jobs import transitions
from orchestrator.jobs.states import AttemptOutcome, ComputeBasis, JobState, SubmitState
from orchestrator.jobs.transitions import (
    Busy,
    Claim,
    Cost,
    Pricing,
    Skip,
    backoff_seconds,
    count_crash,
    end_job,
    lease_is_live,
    lock_job,
    open_attempt,
    record_cost,
    retry_later,
    running_attempts,
    set_state,
    take_delivery,
    utcnow,
    wait_or_exhausted,
)
from orchestrator.results.base import StoredBytes
from orchestrator.settings import Settings

# Attempts the poller asks the provider about: the job's current one, and a lost submit whose request
# was found again after the job had been bought once more (polled only for its cost).
POLLED_OUTCOMES = (AttemptOutcome.RUNNING, AttemptOutcome.LOST)
ALREADY_SUBMITTED = "already submitted; polling resumed"
# The provider_status column keeps the words of fal's queue API for every remote backend (the
# API's fal-compatible surface reports them as they are).
IN_QUEUE, IN_PROGRESS, COMPLETED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED"


@dataclass(frozen=True)
class NotSubmitted:
    """The job may not be paid for now: it was moved to ``rerouted_to`` (an auto job, while the
    budget is used up or the backend's circuit is open), waits ``wait_seconds`` (an explicit job
    over budget, ORCH_FAL_OVER_BUDGET=wait), or failed (=fail)."""

    reason: str
    rerouted_to: str | None = None
    wait_seconds: float | None = None


def _before_paying(session: Session, job: Job, settings: Settings) -> NotSubmitted | None:
    """The checks before a paid submission: the backend's circuit (auto jobs) and the budget.
    The budget check holds its lock until this transaction, which inserts the attempt, commits
    (orchestrator/costs/budgets.py)."""
    from orchestrator import routing
    from orchestrator.costs import budgets
    from orchestrator.routing.signals import breaker

    auto = job.requested_backend == routing.AUTO
    fallback = backends.AUTO_INLINE
    if auto:
        circuit = breaker(session, job.backend, settings, utcnow())
        if circuit.open:
            reason = (f"{job.backend}'s circuit is open: {circuit.failures_in_a_row} failures "
                      f"in a row, the last at {circuit.last_failure_at}")
            routing.reroute(job, fallback, reason, settings)
            return NotSubmitted(reason, rerouted_to=fallback)
    if job.backend != backends.BUDGETED:
        return None
    verdict = budgets.admit(session, job.client, settings)
    if verdict is None or verdict.blocking is None:
        if job.error_code == ErrorCode.BUDGET_EXCEEDED:  # it waited; now it goes
            job.error_code = job.error_message = None
        return None
    reason = verdict.blocking.describe()
    if auto:
        routing.reroute(job, fallback, reason, settings)
        return NotSubmitted(reason, rerouted_to=fallback)
    if verdict.waits_for_in_flight:  # may fit once the jobs in flight are costed
        job.error_code = ErrorCode.BUDGET_EXCEEDED
        job.error_message = f"waiting for {job.backend} jobs in flight to be costed: {reason}"
        return NotSubmitted(reason, wait_seconds=budgets.IN_FLIGHT_RECHECK_SECONDS)
    if settings.budgets.over_budget == "fail":
        end_job(job, JobState.FAILED, code=ErrorCode.BUDGET_EXCEEDED,
                message=f"not submitted to {job.backend}: {reason} (ORCH_FAL_OVER_BUDGET=fail)")
        return NotSubmitted(reason)
    job.error_code = ErrorCode.BUDGET_EXCEEDED
    job.error_message = (f"waiting: {reason}; checked again every "
                         f"{settings.budgets.wait_seconds:g} s")
    return NotSubmitted(reason, wait_seconds=settings.budgets.wait_seconds)


def claim_submit(
    session: Session, job_id: uuid.UUID, settings: Settings, policy: RemotePolicy,
    backend: str | None = None,
) -> Claim | Busy | Skip | NotSubmitted:
    """Open a new remote attempt, or explain why this delivery must not submit. A job that is
    not ``backend``'s (delivered on its queue before a reroute) goes on to its own queue."""
    job = take_delivery(session, job_id)
    if isinstance(job, Skip):
        return job
    if backend is not None and job.backend != backend:
        return NotSubmitted(f"the job is for {job.backend}, not {backend}", rerouted_to=job.backend)
    now = utcnow()
    # Attempt rows are only made by open_attempt, which counts them: a job never attempted
    # (most deliveries) has none to look for, which saves two queries under the job's lock.
    attempted = job.attempt_count > 0

    for current in running_attempts(session, job.id) if attempted else []:
        if current.submit_state is SubmitState.ACCEPTED:
            # Delivered again after the provider accepted it: never pay twice, poll it now.
            current.next_poll_at = now
            return Skip(ALREADY_SUBMITTED)
        if lease_is_live(job, now):
            assert job.lease_expires_at is not None
            return Busy((job.lease_expires_at - now).total_seconds())
        # The delivery that was submitting died between sending and recording the reply.
        transitions.close_stale_attempt(
            current, now, outcome=AttemptOutcome.LOST,
            message=(f"the worker stopped while submitting to {job.backend}; it may have "
                     "accepted (and billed) it"), cost_known=False)
        current.submit_state = SubmitState.UNKNOWN
        if count_crash(job, settings, doing="submitting"):
            return Skip("poison job failed")
        if policy.callback_url:
            # The provider's callback for that request names its id: give it time to arrive
            # and be adopted (adopt_request) before buying the job again.
            wait = policy.adopt_wait_seconds
            retry_later(job, wait, code=job.error_code, message=job.error_message)
            return Busy(wait)

    waiting = wait_or_exhausted(job, now)
    if waiting is not None:
        return waiting
    with session.no_autoflush:  # the job's changes go in the one UPDATE that opens the attempt
        held = _before_paying(session, job, settings)
    if held is not None:
        return held
    lost_before = attempted and session.scalar(
        select(Attempt.id)
        .where(Attempt.job_id == job.id, Attempt.outcome == AttemptOutcome.LOST)
        .limit(1)
    ) is not None
    if lost_before:
        job.possible_duplicate = True
    return open_attempt(
        session, job, now,
        lease_seconds=policy.submit_timeout_seconds + settings.retries.lease_seconds,
        submit_state=SubmitState.SENDING,
    )


def record_accepted(
    session: Session, claim: Claim, request_id: str, status: str, position: int | None,
    policy: RemotePolicy,
) -> bool:
    """Store the request id; False if the job was cancelled meanwhile (the caller cancels it
    at the provider). Two statements, no rows read into the session: it runs once per paid
    submit."""
    now = utcnow()
    ours = Job.lease_owner == str(claim.owner)
    # The job's row first, as every writer takes it before its attempts': the lease this
    # delivery held is let go, and the state it returns says whether the job is still wanted.
    state = session.execute(
        update(Job)
        .where(Job.id == claim.job_id)
        .values(lease_owner=case((ours, None), else_=Job.lease_owner),
                lease_expires_at=case((ours, None), else_=Job.lease_expires_at))
        .returning(Job.state)
        .execution_options(synchronize_session=False)).scalar_one()
    updated = session.execute(
        update(Attempt)
        .where(Attempt.id == claim.attempt_id)
        .values(provider_request_id=request_id, submit_state=SubmitState.ACCEPTED,
                submitted_at=now, provider_status=status, queue_position=position,
                next_poll_at=now + timedelta(seconds=policy.poll_initial_seconds),
                **({"first_in_progress_at": now} if status == IN_PROGRESS else {}))
        .execution_options(synchronize_session=False))
    assert updated.rowcount == 1  # type: ignore[attr-defined]
    return bool(state is JobState.RUNNING)


def record_refused(
    session: Session, claim: Claim, exc: Exception, *, retryable: bool, pricing: Pricing,
    settings: Settings,
) -> float | None:
    """The provider did not accept it: nothing was bought. Retry later, or fail; the retry
    delay or None."""
    attempt = session.get(Attempt, claim.attempt_id)
    if attempt is not None:
        attempt.submit_state = SubmitState.REJECTED
    cost = Cost(Decimal(0), ComputeBasis.MEASURED)
    if retryable:
        return transitions.schedule_retry(session, claim, exc, cost, pricing, settings)
    transitions.fail(session, claim, exc, cost, pricing)
    return None


def record_unknown(
    session: Session, claim: Claim, exc: Exception, policy: RemotePolicy
) -> float | None:
    """The reply to a sent submit was lost: the attempt is LOST (the provider may run and bill
    it); the job is submitted again after the policy's delay and flagged a possible duplicate."""
    job = lock_job(session, claim.job_id)
    attempt = session.get(Attempt, claim.attempt_id, populate_existing=True)
    assert job is not None and attempt is not None
    transitions.close_stale_attempt(attempt, utcnow(), outcome=AttemptOutcome.LOST,
                                    message=str(exc))
    attempt.error_code = error_code(exc)
    attempt.submit_state = SubmitState.UNKNOWN
    attempt.compute_basis = ComputeBasis.MEASURED
    if job.state is not JobState.RUNNING or job.lease_owner != str(claim.owner):
        return None
    if claim.attempt_number >= claim.max_attempts:
        end_job(job, JobState.FAILED, code=error_code(exc),
                message=f"{exc} (no attempts left; {job.backend} may have run it)")
        return None
    delay = resubmit_delay(policy)
    retry_later(job, delay, code=error_code(exc), message=str(exc))
    return delay


def resubmit_delay(policy: RemotePolicy) -> float:
    """How long a submit whose outcome is unknown waits before the job is bought again: with
    callbacks, long enough for the provider's callback to arrive and the request be adopted."""
    if policy.callback_url:
        return max(policy.adopt_wait_seconds, policy.resubmit_after_seconds)
    return policy.resubmit_after_seconds


def callback_url(policy: RemotePolicy, attempt_id: int) -> str | None:
    """Where the provider calls back when an attempt's request ends (names the attempt)."""
    if not policy.callback_url:
        return None
    sep = "&" if "?" in policy.callback_url else "?"
    return f"{policy.callback_url}{sep}attempt={attempt_id}"


def adopt_request(session: Session, attempt_id: int, request_id: str) -> str:
    """The provider's (verified) callback says ``request_id`` belongs to this attempt.

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
    job = lock_job(session, attempt.job_id)
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
        attempt.error_code = attempt.error_message = None
        if job.state is JobState.RETRYING:
            set_state(job, JobState.RUNNING)
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
    session: Session, backend: str, *, limit: int, lease_seconds: float,
    due_before: datetime | None = None,
) -> list[PollItem]:
    """Take up to ``limit`` of the backend's attempts due for a poll (by ``due_before``, default
    now); other pollers skip them (SKIP LOCKED)."""
    now = utcnow()
    due = (
        select(Attempt.id)
        .where(
            Attempt.backend == backend,
            Attempt.outcome.in_(POLLED_OUTCOMES),
            Attempt.submit_state == SubmitState.ACCEPTED,
            Attempt.next_poll_at <= (due_before or now),
        )
        .order_by(Attempt.next_poll_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    # One statement, no ORM objects: the rows are taken (if this poller dies, they are due
    # again after the lease) and read in the same UPDATE.
    rows = session.execute(
        update(Attempt)
        .where(Attempt.id.in_(due.scalar_subquery()))
        .values(next_poll_at=now + timedelta(seconds=lease_seconds))
        .returning(Attempt.id, Attempt.job_id, Attempt.provider_request_id, Attempt.polls,
                   Attempt.poll_errors, Attempt.submitted_at, Attempt.first_in_progress_at,
                   Attempt.number)
        .execution_options(synchronize_session=False)
    ).all()
    items = []
    for r in rows:
        assert r.provider_request_id is not None
        items.append(PollItem(r.id, r.job_id, r.provider_request_id, r.polls, r.poll_errors,
                              r.submitted_at, r.first_in_progress_at, r.number))
    return items


def poll_interval(polls: int, position: int | None, policy: RemotePolicy) -> float:
    """Grows ×1.5 per poll; a request deep in the provider's queue is asked less often."""
    interval = policy.poll_initial_seconds * (1.5 ** min(polls, 30))
    if position:
        interval = max(interval, 0.25 * position)
    return min(interval, policy.poll_max_seconds)


@dataclass(frozen=True)
class PollAnswer:
    """A poll's answer that the request is not finished yet, to be written with the poller's
    next claim (``record_statuses``)."""

    attempt_id: int
    polls: int  # the count the attempt was claimed with
    status: str  # IN_QUEUE or IN_PROGRESS
    position: int | None
    answered_at: datetime


_RECORD_STATUS = (
    update(Attempt)
    .where(Attempt.id == bindparam("b_id"), Attempt.polls == bindparam("b_polls"),
           # not IN (...): an expanding parameter cannot be used with executemany
           or_(*(Attempt.outcome == outcome for outcome in POLLED_OUTCOMES)))
    .values(polls=bindparam("b_polls") + 1, provider_status=bindparam("b_status"),
            queue_position=bindparam("b_position"),
            # NULL for a request still queued: the column keeps what it had.
            first_in_progress_at=func.coalesce(Attempt.first_in_progress_at,
                                               bindparam("b_started", type_=DateTime(timezone=True))),
            next_poll_at=bindparam("b_next", type_=DateTime(timezone=True)))
)


def record_statuses(session: Session, answers: Sequence[PollAnswer], policy: RemotePolicy) -> None:
    """Poll answers and each attempt's next poll time, in one statement (the most frequent
    write of a poller, made once per tick rather than once per poll). An answer about an
    attempt whose poll count has moved on (its lease ran out and another poller asked
    since) or that has ended is dropped: the later write wins."""
    if not answers:
        return
    session.connection().execute(_RECORD_STATUS, [
        {"b_id": a.attempt_id, "b_polls": a.polls, "b_status": a.status, "b_position": a.position,
         "b_started": a.answered_at if a.status == IN_PROGRESS else None,
         "b_next": a.answered_at + timedelta(seconds=poll_interval(a.polls + 1, a.position, policy))}
        for a in answers])


def record_poll_error(
    session: Session, attempt_id: int, message: str, policy: RemotePolicy
) -> None:
    """A status/result/download call failed in a way that asking again can fix: back off."""
    attempt = session.get(Attempt, attempt_id)
    if attempt is None or attempt.outcome not in POLLED_OUTCOMES:
        return
    attempt.poll_errors += 1
    attempt.error_message = message
    ceiling = min(policy.poll_max_seconds * 3,
                  policy.poll_initial_seconds * 2 ** min(attempt.poll_errors, 20))
    attempt.next_poll_at = utcnow() + timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def _current(job: Job | None, attempt: Attempt | None) -> bool:
    return (job is not None and attempt is not None and job.state is JobState.RUNNING
            and attempt.outcome is AttemptOutcome.RUNNING and job.attempt_count == attempt.number)


def complete_remote(
    session: Session, attempt_id: int, output: BackendOutput, stored: StoredBytes, sha256: str,
    pricing: Pricing, *, job_id: uuid.UUID,
) -> bool:
    """The provider finished it: store the result once and end the job succeeded. The job
    (the attempt's ``job_id``) is locked first and the attempt read once under the lock."""
    job = lock_job(session, job_id)
    attempt = session.get(Attempt, attempt_id, populate_existing=True)
    if attempt is None or attempt.job_id != job_id:
        return False
    if attempt.outcome not in POLLED_OUTCOMES:  # another poll of it finished first
        return False
    record_cost(attempt, Cost(output.compute_seconds, output.compute_basis), pricing)
    attempt.provider_status = COMPLETED
    if attempt.outcome is AttemptOutcome.LOST:  # an adopted duplicate: its cost, not its result
        attempt.outcome = AttemptOutcome.SUPERSEDED
        return False
    if not _current(job, attempt):
        transitions.close_superseded(job, attempt)
        return False
    assert job is not None
    transitions.store_result(session, job, attempt, output, stored, sha256)
    return True


def fail_remote(
    session: Session, attempt_id: int, exc: Exception, cost: Cost, pricing: Pricing, *,
    retryable: bool, settings: Settings,
) -> tuple[uuid.UUID, float] | None:
    """The provider ran it and it failed (a cost too). Returns (job id, delay) when a retry was
    scheduled."""
    attempt = session.get(Attempt, attempt_id, populate_existing=True)
    if attempt is None or attempt.outcome not in POLLED_OUTCOMES:
        return None
    job = lock_job(session, attempt.job_id)
    session.refresh(attempt)
    if attempt.outcome not in POLLED_OUTCOMES:  # another poll of it finished first
        return None
    record_cost(attempt, cost, pricing)
    attempt.provider_status = COMPLETED
    attempt.error_code = error_code(exc)
    attempt.error_message = str(exc)
    if attempt.outcome is AttemptOutcome.LOST:  # an adopted duplicate: its cost, nothing else
        attempt.outcome = AttemptOutcome.SUPERSEDED
        return None
    if not _current(job, attempt):
        transitions.close_superseded(job, attempt)
        return None
    assert job is not None
    if retryable and attempt.number < job.max_attempts:
        attempt.outcome = AttemptOutcome.RETRY
        delay = backoff_seconds(attempt.number, settings)
        retry_later(job, delay, code=error_code(exc), message=str(exc))
        return job.id, delay
    attempt.outcome = AttemptOutcome.FAILED
    end_job(job, JobState.FAILED, code=error_code(exc), message=str(exc))
    return None


__all__ = [
    "POLLED_OUTCOMES",
    "PollAnswer",
    "PollItem",
    "adopt_request",
    "claim_due_polls",
    "claim_submit",
    "complete_remote",
    "fail_remote",
    "callback_url",
    "poll_interval",
    "record_accepted",
    "record_poll_error",
    "record_refused",
    "record_statuses",
    "record_unknown",
    "resubmit_delay",
]
