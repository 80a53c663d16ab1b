"""One delivery of a remote job: at most one paid submission, then hand over to the poller."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable

from sqlalchemy.orm import Session

from orchestrator.backends.base import Queued, RemoteBackend, RemoteInput, RemotePolicy, Running
from orchestrator.errors import (
    BackendBusy,
    CredentialsRefused,
    PermanentJobError,
    StoreError,
    SubmitReplyLost,
)
from orchestrator.jobs import transitions
from orchestrator.jobs.remote import attempts
from orchestrator.jobs.remote.limits import RemoteLimits, mark_key_refused
from orchestrator.jobs.runner import RunReport, in_transaction
from orchestrator.jobs.transitions import Busy, Claim, Cost, Pricing, Skip
from orchestrator.observability.logs import bind, log_context
from orchestrator.settings import Settings
from orchestrator.storage import StoredBytes
from orchestrator.storage.inputs import input_ref, load_input, read_input

log = logging.getLogger("orchestrator.remote")

Publish = Callable[[uuid.UUID, str, float], None]


def limits_for(backend: RemoteBackend, settings: Settings) -> RemoteLimits:
    policy = backend.policy()
    return RemoteLimits(settings.broker.url.get_secret_value(), backend.name, max_in_flight=policy.max_in_flight,
                        max_per_second=policy.max_submits_per_second)


def pricing_for(backend: RemoteBackend, settings: Settings) -> Pricing:
    return Pricing(backend.price_per_second(), settings.fal.price_per_second)


Located = StoredBytes | PermanentJobError | None


def _claim_and_locate(session: Session, job_id: uuid.UUID, settings: Settings,
                      policy: RemotePolicy, backend: str,
                      ) -> tuple[Claim | Busy | Skip | attempts.NotSubmitted, Located]:
    """Open the attempt and, in the same transaction, read where a file job's input is (one
    transaction less per submit). A missing or expired input is returned, not raised: the
    attempt stays open and the job fails on it, as when the input is read afterwards."""
    decision = attempts.claim_submit(session, job_id, settings, policy, backend)
    if not isinstance(decision, Claim) or decision.source_kind == "url":
        return decision, None
    try:
        return decision, input_ref(session, job_id)
    except PermanentJobError as exc:
        return decision, exc


def _input(claim: Claim, settings: Settings, located: Located) -> RemoteInput:
    if claim.source_kind == "url":
        return RemoteInput(url=claim.source_url, data=None, options=claim.options)
    if isinstance(located, PermanentJobError):
        raise located
    data = read_input(settings, located) if located is not None else load_input(settings, claim.job_id)
    return RemoteInput(url=None, data=data, options=claim.options)


def _fail(claim: Claim, exc: Exception, pricing: Pricing, settings: Settings) -> None:
    in_transaction(settings, "failing a job",
                   lambda session: transitions.fail(session, claim, exc, Cost(), pricing))


def submit_delivery(
    job_id: uuid.UUID, *, settings: Settings, backend: RemoteBackend, publish: Publish
) -> RunReport:
    with log_context(job_id=str(job_id), backend=backend.name):
        return _submit_delivery(job_id, settings=settings, backend=backend, publish=publish)


def _submit_delivery(
    job_id: uuid.UUID, *, settings: Settings, backend: RemoteBackend, publish: Publish
) -> RunReport:
    policy = backend.policy()
    limits = limits_for(backend, settings)
    pricing = pricing_for(backend, settings)
    slot = str(job_id)
    if not limits.try_acquire(slot, wait_seconds=policy.slot_wait_seconds):
        # Still over a shared limit: hand the message back for a little later; no slot is held.
        publish(job_id, backend.name, random.uniform(0.5, 1.5))
        return RunReport("busy", f"{backend.name} limit reached; re-published")

    decision, located = in_transaction(
        settings, f"claiming a {backend.name} job",
        lambda session: _claim_and_locate(session, job_id, settings, policy, backend.name))
    if isinstance(decision, Skip):
        if decision.reason != attempts.ALREADY_SUBMITTED:
            limits.release(slot)
        return RunReport("skipped", decision.reason)
    if isinstance(decision, attempts.NotSubmitted):
        limits.release(slot)
        if decision.rerouted_to is not None:
            publish(job_id, decision.rerouted_to, 0)
            return RunReport("rerouted", f"to {decision.rerouted_to}: {decision.reason}")
        if decision.wait_seconds is not None:
            publish(job_id, backend.name, min(decision.wait_seconds, settings.retry_countdown_cap()))
            return RunReport("waiting", decision.reason)
        return RunReport("failed", decision.reason)
    if isinstance(decision, Busy):
        delay = min(max(decision.retry_after + 1.0, 1.0), settings.retry_countdown_cap())
        publish(job_id, backend.name, delay)
        return RunReport("busy", f"re-published with a {delay:.1f} s countdown")

    claim = decision
    bind(attempt=claim.attempt_number)
    try:
        payload = backend.prepare(_input(claim, settings, located))
    except PermanentJobError as exc:
        limits.release(slot)
        _fail(claim, exc, pricing, settings)
        return RunReport("failed", str(exc))
    except StoreError as exc:  # the input's store is away: retry with backoff, nothing paid
        limits.release(slot)
        store_error = exc
        retry_in = in_transaction(settings, "recording a store fault", lambda session: (
            attempts.record_refused(session, claim, store_error, retryable=True, pricing=pricing,
                                    settings=settings)))
        if retry_in is not None:
            publish(job_id, backend.name, retry_in)
        return RunReport("retry", str(exc))

    try:
        accepted = backend.submit(payload,
                                  callback_url=attempts.callback_url(policy, claim.attempt_id))
    except CredentialsRefused as exc:
        limits.release(slot)
        mark_key_refused(settings.broker.url.get_secret_value(), backend.name, backend.credentials_fingerprint(),
                         str(exc))
        _fail(claim, exc, pricing, settings)
        return RunReport("failed", str(exc))
    except PermanentJobError as exc:  # BackendRejected, BackendUnavailable
        limits.release(slot)
        _fail(claim, exc, pricing, settings)
        return RunReport("failed", str(exc))
    except BackendBusy as exc:
        limits.release(slot)
        busy = exc
        retry_in = in_transaction(settings, "recording a refused submit", lambda session: (
            attempts.record_refused(session, claim, busy, retryable=True, pricing=pricing,
                                    settings=settings)))
        if retry_in is not None:
            publish(job_id, backend.name, retry_in)
        return RunReport("retry", str(exc))
    except SubmitReplyLost as exc:
        limits.release(slot)
        log.warning("job %s: submit outcome unknown: %s", job_id, exc)
        lost = exc
        resubmit_in = in_transaction(settings, "recording a lost submit reply", lambda session: (
            attempts.record_unknown(session, claim, lost, policy)))
        if resubmit_in is not None:
            publish(job_id, backend.name, resubmit_in)
        return RunReport("retry", str(exc))

    # The provider has accepted (and will bill) it: the request id must reach the database,
    # however long it is away (record_accepted is idempotent, so a retry after a lost commit
    # is safe).
    status = attempts.IN_PROGRESS if isinstance(accepted.status, Running) else attempts.IN_QUEUE
    position = accepted.status.position if isinstance(accepted.status, Queued) else None
    wanted = in_transaction(settings, "storing the request id", lambda session: (
        attempts.record_accepted(session, claim, accepted.request_id, status, position, policy)))
    bind(request_id=accepted.request_id)
    log.info("job %s submitted to %s as request %s", job_id, backend.name, accepted.request_id)
    if not wanted:  # cancelled while the submit was in the air
        backend.cancel(accepted.request_id)
    return RunReport("submitted", accepted.request_id)
