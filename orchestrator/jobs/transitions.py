"""Every state change of a job, as public functions; each runs inside the caller's
transaction, which holds the job's row lock (:func:`lock_job`).

The building blocks — :func:`end_job`, :func:`retry_later`, :func:`record_cost`,
:func:`store_result`, :func:`close_superseded`, :func:`close_stale_attempt` — are what every
caller (inline runner, remote engine, reconciler, command layer) uses, so one change is written
once. On top of them, an inline delivery calls :func:`claim` when a message arrives, then exactly
one of :func:`complete`, :func:`fail` or :func:`schedule_retry`; each checks that the caller still
holds the lease, so a stale delivery can never overwrite the outcome of a newer one. Remote
attempts' bookkeeping (submit, polls, adoption) is in ``orchestrator.jobs.remote.attempts``.
"""

from __future__ import annotations

import logging
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, object_session

from orchestrator.costs.pricing import cost_or_unknown, cost_usd
from orchestrator.db.models import Attempt, Job, JobInput, Result
from orchestrator.errors import CorruptImage, ErrorCode, JobNotFound, JobStateError, error_code
from orchestrator.jobs.leases import LeaseOwner
from orchestrator.jobs.states import AttemptOutcome, ComputeBasis, JobState, can_transition
from orchestrator.results.base import StoredBytes
from orchestrator.settings import Settings

if TYPE_CHECKING:
    from orchestrator.backends.base import BackendOutput

log = logging.getLogger("orchestrator.jobs")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Claim:
    job_id: uuid.UUID
    attempt_id: int
    attempt_number: int
    max_attempts: int
    owner: LeaseOwner
    backend: str
    options: dict[str, Any]
    source_kind: str
    source_url: str | None


@dataclass(frozen=True)
class Busy:
    """Another live delivery holds the job, or it is waiting for its retry time."""

    retry_after: float


@dataclass(frozen=True)
class Skip:
    reason: str


@dataclass(frozen=True)
class Pricing:
    price_per_second: Decimal | None  # None: not set, so the cost is unknown (not $0)
    fal_price_per_second: Decimal


@dataclass
class Cost:
    compute_seconds: Decimal = Decimal(0)
    basis: ComputeBasis = ComputeBasis.LOCAL_MEASURED
    extra: dict[str, Any] = field(default_factory=dict)


def set_state(job: Job, new: JobState) -> None:
    if not can_transition(job.state, new):
        raise JobStateError(f"job {job.id} cannot go from {job.state.value} to {new.value}")
    job.state = new


def lock_job(session: Session, job_id: uuid.UUID) -> Job | None:
    return session.get(Job, job_id, with_for_update=True, populate_existing=True)


def running_attempts(session: Session, job_id: uuid.UUID) -> list[Attempt]:
    stmt = select(Attempt).where(
        Attempt.job_id == job_id, Attempt.outcome == AttemptOutcome.RUNNING
    )
    return list(session.scalars(stmt))


def webhook_after_commit(job: Job) -> None:
    """Publish the job's webhook once the transaction that ended it has committed."""
    session = object_session(job)
    if session is None or not job.webhook_url:
        return
    job_id, queue = job.id, job.backend

    def publish(_: Session) -> None:
        from orchestrator.queue.celery_app import publish_webhook
        from orchestrator.settings import get_settings

        try:
            publish_webhook(get_settings(), job_id, queue)
        except Exception:  # the job's outcome stands; the webhook is best effort from here
            log.exception("could not queue the webhook of job %s", job_id)

    event.listen(session, "after_commit", publish, once=True)


def end_job(job: Job, state: JobState, *, code: str | None, message: str | None) -> None:
    """The job is final: its outcome, its webhook queued once this transaction commits."""
    webhook_after_commit(job)
    set_state(job, state)
    job.error_code = code
    job.error_message = message
    job.finished_at = utcnow()
    job.lease_owner = None
    job.lease_expires_at = None
    job.next_attempt_at = None


def lease_is_live(job: Job, now: datetime) -> bool:
    """Another delivery, alive as far as we can tell, holds the job."""
    holder = LeaseOwner.parse(job.lease_owner or "")
    expired = job.lease_expires_at is None or job.lease_expires_at <= now
    return (
        holder is not None
        and not expired
        and not holder.is_known_dead()
        and not holder.is_this_process()
    )


def count_crash(job: Job, settings: Settings, *, doing: str) -> bool:
    """Count a delivery whose worker died; True (and the job failed) once it reached the cap."""
    holder = LeaseOwner.parse(job.lease_owner or "")
    if holder is None or not holder.is_this_process():  # our own abandoned run is no crash
        job.crashes += 1
    if job.crashes < settings.retries.max_deliveries:
        return False
    end_job(
        job,
        JobState.FAILED,
        code=ErrorCode.WORKER_LOST,
        message=(
            f"the worker process died {job.crashes} times while {doing} this job, "
            "so it was not run again (the input may crash the model)"
        ),
    )
    return True


def wait_or_exhausted(job: Job, now: datetime) -> Busy | Skip | None:
    """A retry that is not due yet waits; a job without attempts left fails."""
    if job.state is JobState.RETRYING and job.next_attempt_at is not None:
        wait = (job.next_attempt_at - now).total_seconds()
        if wait > 0.5:
            return Busy(wait)
    if job.attempt_count >= job.max_attempts:
        end_job(
            job,
            JobState.FAILED,
            code=job.error_code or ErrorCode.ATTEMPTS_EXHAUSTED,
            message=job.error_message or f"no attempts left ({job.max_attempts} allowed)",
        )
        return Skip("attempts exhausted")
    return None


def open_attempt(
    session: Session, job: Job, now: datetime, *, lease_seconds: float, **fields: Any
) -> Claim:
    """Start the job's next attempt under a fresh lease held by this delivery."""
    owner = LeaseOwner.new()
    job.attempt_count += 1
    attempt = Attempt(
        job_id=job.id,
        number=job.attempt_count,
        backend=job.backend,
        worker=f"{owner.host}:{owner.pid}",
        outcome=AttemptOutcome.RUNNING,
        started_at=now,
        **fields,
    )
    session.add(attempt)
    set_state(job, JobState.RUNNING)
    job.lease_owner = str(owner)
    job.lease_expires_at = now + timedelta(seconds=lease_seconds)
    job.started_at = job.started_at or now
    job.next_attempt_at = None
    session.flush()
    return Claim(
        job_id=job.id,
        attempt_id=attempt.id,
        attempt_number=attempt.number,
        max_attempts=job.max_attempts,
        owner=owner,
        backend=job.backend,
        options=dict(job.options or {}),
        source_kind=job.source_kind,
        source_url=job.source_url,
    )


def take_delivery(session: Session, job_id: uuid.UUID) -> Job | Skip:
    """Lock the delivered job and count the delivery; Skip when there is nothing to run."""
    job = lock_job(session, job_id)
    if job is None:
        return Skip(f"no job {job_id}")
    job.deliveries += 1
    if job.state.is_final:
        return Skip(f"job is already {job.state.value}")
    return job


def claim(session: Session, job_id: uuid.UUID, settings: Settings) -> Claim | Busy | Skip:
    """Take a delivered job: a new attempt, or why this delivery must not run it."""
    job = take_delivery(session, job_id)
    if isinstance(job, Skip):
        return job
    now = utcnow()

    if job.state is JobState.RUNNING:
        if lease_is_live(job, now):
            assert job.lease_expires_at is not None
            return Busy((job.lease_expires_at - now).total_seconds())
        for attempt in running_attempts(session, job.id):
            close_stale_attempt(attempt, now)
        if count_crash(job, settings, doing="running"):
            return Skip("poison job failed")

    return wait_or_exhausted(job, now) or open_attempt(
        session, job, now, lease_seconds=settings.retries.lease_seconds
    )


def renew_lease(session: Session, claim_: Claim, settings: Settings) -> bool:
    """Heartbeat: push the lease forward while the attempt is still ours."""
    result = session.execute(
        update(Job)
        .where(Job.id == claim_.job_id, Job.lease_owner == str(claim_.owner))
        .values(lease_expires_at=utcnow() + timedelta(seconds=settings.retries.lease_seconds))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def holds_lease(job: Job | None, attempt: Attempt, claim_: Claim) -> bool:
    return (
        job is not None
        and job.state is JobState.RUNNING
        and job.lease_owner == str(claim_.owner)
        and attempt.outcome is AttemptOutcome.RUNNING
    )


def record_cost(attempt: Attempt, cost: Cost, pricing: Pricing) -> None:
    attempt.compute_seconds = cost.compute_seconds
    attempt.compute_basis = cost.basis
    attempt.price_per_second = pricing.price_per_second
    attempt.cost_usd = cost_or_unknown(cost.compute_seconds, pricing.price_per_second)
    attempt.fal_equivalent_usd = cost_usd(cost.compute_seconds, pricing.fal_price_per_second)
    attempt.finished_at = utcnow()


def close_stale_attempt(
    attempt: Attempt,
    now: datetime,
    *,
    outcome: AttemptOutcome = AttemptOutcome.CRASHED,
    message: str = "the worker process running this attempt stopped without finishing it",
    cost_known: bool = True,
) -> None:
    """An attempt whose worker stopped without recording its outcome: closed at no cost, or
    (``cost_known=False``: a paid submission that may have been accepted) with its cost left
    unknown until the provider's request is found and polled."""
    attempt.outcome = outcome
    attempt.finished_at = now
    attempt.error_code = ErrorCode.WORKER_LOST
    attempt.error_message = message
    if cost_known:
        attempt.compute_seconds = Decimal(0)
        attempt.cost_usd = Decimal(0)


def retry_later(job: Job, delay: float, *, code: str | None, message: str | None) -> None:
    """The job waits ``delay`` seconds for its next attempt; no delivery holds it meanwhile."""
    set_state(job, JobState.RETRYING)
    job.error_code = code
    job.error_message = message
    job.lease_owner = None
    job.lease_expires_at = None
    job.next_attempt_at = utcnow() + timedelta(seconds=delay)


def store_result(
    session: Session, job: Job, attempt: Attempt, output: BackendOutput, stored: StoredBytes,
    sha256: str,
) -> None:
    """The attempt produced the job's result: one results row, the job succeeded."""
    attempt.outcome = AttemptOutcome.SUCCEEDED
    session.add(
        Result(
            job_id=job.id,
            attempt_id=attempt.id,
            content_type=output.content_type,
            sha256=sha256,
            size_bytes=len(output.data),
            width=output.width,
            height=output.height,
            store=stored.store,
            location=stored.location,
            data=stored.data,
            cropped=output.cropped,
        )
    )
    end_job(job, JobState.SUCCEEDED, code=None, message=None)


def succeed_with_a_copy(session: Session, job: Job, original: Job) -> None:
    """A new job (deduplicated: same client, bytes, backend and options as ``original``)
    succeeds at once, at zero cost, with a copy of the original's stored result row."""
    result = original.result
    assert result is not None
    now = utcnow()
    job.state = JobState.SUCCEEDED
    job.deduplicated_from = original.id
    job.started_at = job.finished_at = now
    session.add(job)
    session.flush()
    session.add(Result(
        job_id=job.id, attempt_id=result.attempt_id, content_type=result.content_type,
        sha256=result.sha256, size_bytes=result.size_bytes, width=result.width,
        height=result.height, store=result.store, location=result.location, data=result.data,
        cropped=result.cropped,
    ))


def close_superseded(job: Job | None, attempt: Attempt) -> None:
    """The attempt is no longer the job's current one (its lease was lost, the job cancelled or
    run again): keep the cost of the work it did, but not its outcome."""
    if attempt.outcome is AttemptOutcome.RUNNING:
        cancelled = job is not None and job.state is JobState.CANCELLED
        attempt.outcome = AttemptOutcome.CANCELLED if cancelled else AttemptOutcome.SUPERSEDED


def complete(
    session: Session,
    claim_: Claim,
    output: BackendOutput,
    stored: StoredBytes,
    sha256: str,
    pricing: Pricing,
) -> bool:
    """Store the result and end the job succeeded; False if the lease was lost meanwhile."""
    job = lock_job(session, claim_.job_id)
    attempt = session.get(Attempt, claim_.attempt_id, populate_existing=True)
    assert attempt is not None
    record_cost(attempt, Cost(output.compute_seconds, output.compute_basis), pricing)
    if not holds_lease(job, attempt, claim_):
        close_superseded(job, attempt)
        return False
    assert job is not None
    store_result(session, job, attempt, output, stored, sha256)
    return True


def _attempt_ended_by(
    session: Session, claim_: Claim, exc: BaseException, cost: Cost, pricing: Pricing
) -> tuple[Job, Attempt] | None:
    """Record the attempt's cost and error; the job and attempt while this delivery still
    holds the lease, else None (the attempt is closed as superseded or cancelled)."""
    job = lock_job(session, claim_.job_id)
    attempt = session.get(Attempt, claim_.attempt_id, populate_existing=True)
    assert attempt is not None
    record_cost(attempt, cost, pricing)
    attempt.error_code = error_code(exc)
    attempt.error_message = str(exc)
    if not holds_lease(job, attempt, claim_):
        close_superseded(job, attempt)
        return None
    assert job is not None
    return job, attempt


def fail(
    session: Session, claim_: Claim, exc: BaseException, cost: Cost, pricing: Pricing
) -> bool:
    """End the job failed with this attempt's error."""
    held = _attempt_ended_by(session, claim_, exc, cost, pricing)
    if held is None:
        return False
    job, attempt = held
    attempt.outcome = AttemptOutcome.FAILED
    end_job(job, JobState.FAILED, code=error_code(exc), message=str(exc))
    return True


def backoff_seconds(attempt_number: int, settings: Settings) -> float:
    """Exponential backoff with jitter: uniform in [d/2, d], d = base × 2^(n-1), capped."""
    ceiling = min(
        settings.retry_countdown_cap(),
        settings.retries.backoff_base_seconds * (2 ** (attempt_number - 1)),
    )
    return random.uniform(ceiling / 2, ceiling)


def schedule_retry(
    session: Session,
    claim_: Claim,
    exc: BaseException,
    cost: Cost,
    pricing: Pricing,
    settings: Settings,
) -> float | None:
    """Mark the job retrying; the delay in seconds, or None when no attempt is left (failed)."""
    if claim_.attempt_number >= claim_.max_attempts:
        fail(session, claim_, exc, cost, pricing)
        return None
    held = _attempt_ended_by(session, claim_, exc, cost, pricing)
    if held is None:
        return None
    job, attempt = held
    attempt.outcome = AttemptOutcome.RETRY
    delay = backoff_seconds(claim_.attempt_number, settings)
    retry_later(job, delay, code=error_code(exc), message=str(exc))
    return delay


def result_attempt_id(session: Session, job_id: uuid.UUID) -> int | None:
    """The attempt whose output is the job's stored result, if there is one."""
    return session.scalar(select(Result.attempt_id).where(Result.job_id == job_id))


def stored_input(session: Session, job_id: uuid.UUID) -> bytes:
    """The bytes of a file or upload job, as the producer stored them."""
    row = session.get(JobInput, job_id)
    if row is None or row.data is None:  # elsewhere: orchestrator.storage.inputs.load_input
        raise CorruptImage("the job's stored input is missing")
    return row.data


def get_job(session: Session, job_id: uuid.UUID | str) -> Job:
    try:
        key = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    except ValueError:
        raise JobNotFound(str(job_id)) from None
    job = session.get(Job, key)
    if job is None:
        raise JobNotFound(str(job_id))
    return job


def cancel(session: Session, job_id: uuid.UUID | str) -> Job:
    job = get_job(session, job_id)
    job = lock_job(session, job.id) or job
    if job.state.is_final:
        raise JobStateError(f"job {job.id} is already {job.state.value}; nothing to cancel")
    end_job(job, JobState.CANCELLED, code=ErrorCode.CANCELLED, message="cancelled on request")
    return job


def requeue(session: Session, job_id: uuid.UUID | str, settings: Settings) -> Job:
    """Send a failed or cancelled job round again with a fresh attempt budget."""
    job = get_job(session, job_id)
    job = lock_job(session, job.id) or job
    if job.state not in (JobState.FAILED, JobState.CANCELLED):
        raise JobStateError(
            f"job {job.id} is {job.state.value}; only failed or cancelled jobs can be retried"
        )
    set_state(job, JobState.QUEUED)
    job.max_attempts = job.attempt_count + settings.retries.max_attempts
    job.crashes = 0
    job.error_code = None
    job.error_message = None
    job.finished_at = None
    job.enqueued_at = utcnow()
    return job
