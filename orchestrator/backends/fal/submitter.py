"""One delivery of a fal job: at most one paid submission, then hand over to the poller."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable

from orchestrator.backends.fal import FalBackend
from orchestrator.backends.fal.client import (
    SubmitOutcomeUnknown,
    SubmitRefused,
    cancel_once,
    key_fingerprint,
    submit_once,
)
from orchestrator.backends.fal.limits import FalLimits, mark_key_refused
from orchestrator.errors import (
    BackendBusy,
    BackendRejected,
    CredentialsRefused,
    PermanentJobError,
    StoreError,
    SubmitReplyLost,
)
from orchestrator.jobs import remote, service
from orchestrator.jobs.runner import RunReport, in_transaction
from orchestrator.jobs.service import Busy, Claim, Cost, Pricing, Skip
from orchestrator.observability.logs import bind, log_context
from orchestrator.settings import Settings
from orchestrator.storage.inputs import load_input

log = logging.getLogger("orchestrator.fal")

Publish = Callable[[uuid.UUID, str, float], None]


def _input_bytes(claim: Claim, settings: Settings) -> bytes | None:
    if claim.source_kind == "url":
        return None
    return load_input(settings, claim.job_id)


def _fail(claim: Claim, exc: Exception, settings: Settings) -> None:
    pricing = Pricing(settings.fal_price_per_second, settings.fal_price_per_second)
    in_transaction(settings, "failing a job",
                   lambda session: service.fail(session, claim, exc, Cost(), pricing))


def submit_delivery(
    job_id: uuid.UUID, *, settings: Settings, backend: FalBackend, publish: Publish
) -> RunReport:
    with log_context(job_id=str(job_id), backend=FalBackend.name):
        return _submit_delivery(job_id, settings=settings, backend=backend, publish=publish)


def _submit_delivery(
    job_id: uuid.UUID, *, settings: Settings, backend: FalBackend, publish: Publish
) -> RunReport:
    limits = FalLimits(settings.broker_url, max_in_flight=settings.fal_max_in_flight,
                       max_per_second=settings.fal_max_submits_per_second)
    slot = str(job_id)
    if not limits.try_acquire(slot):
        # Over a shared limit: hand the message back for a little later; no slot is held.
        publish(job_id, FalBackend.name, random.uniform(0.5, 1.5))
        return RunReport("busy", "fal limit reached; re-published")

    decision = in_transaction(settings, "claiming a fal job",
                              lambda session: remote.claim_submit(session, job_id, settings))
    if isinstance(decision, Skip):
        if decision.reason != "already submitted; polling resumed":
            limits.release(slot)
        return RunReport("skipped", decision.reason)
    if isinstance(decision, remote.NotSubmitted):
        limits.release(slot)
        if decision.rerouted_to is not None:
            publish(job_id, decision.rerouted_to, 0)
            return RunReport("rerouted", f"to {decision.rerouted_to}: {decision.reason}")
        if decision.wait_seconds is not None:
            publish(job_id, FalBackend.name, min(decision.wait_seconds, settings.retry_countdown_cap()))
            return RunReport("waiting", decision.reason)
        return RunReport("failed", decision.reason)
    if isinstance(decision, Busy):
        delay = min(max(decision.retry_after + 1.0, 1.0), settings.retry_countdown_cap())
        publish(job_id, FalBackend.name, delay)
        return RunReport("busy", f"re-published with a {delay:.1f} s countdown")

    claim = decision
    bind(attempt=claim.attempt_number)
    try:
        key = backend.key()
        arguments = backend.arguments(url=claim.source_url, data=_input_bytes(claim, settings),
                                      options=claim.options)
    except PermanentJobError as exc:
        limits.release(slot)
        _fail(claim, exc, settings)
        return RunReport("failed", str(exc))
    except StoreError as exc:  # the input's store is away: retry with backoff, nothing paid
        limits.release(slot)
        store_error = exc
        retry_in = in_transaction(settings, "recording a store fault", lambda session: (
            remote.record_refused(session, claim, store_error, retryable=True, settings=settings)))
        if retry_in is not None:
            publish(job_id, FalBackend.name, retry_in)
        return RunReport("retry", str(exc))

    try:
        accepted = submit_once(key, settings.fal_endpoint, arguments,
                               timeout=settings.fal_submit_timeout_seconds,
                               webhook_url=remote.webhook_url(settings, claim.attempt_id))
    except SubmitRefused as exc:
        limits.release(slot)
        if exc.credentials:
            mark_key_refused(settings.broker_url, key_fingerprint(key), str(exc))
            _fail(claim, CredentialsRefused(str(exc)), settings)
            return RunReport("failed", str(exc))
        if not exc.retryable:
            _fail(claim, BackendRejected(str(exc)), settings)
            return RunReport("failed", str(exc))
        busy = BackendBusy(str(exc))
        retry_in = in_transaction(settings, "recording a refused submit", lambda session: (
            remote.record_refused(session, claim, busy, retryable=True, settings=settings)))
        if retry_in is not None:
            publish(job_id, FalBackend.name, retry_in)
        return RunReport("retry", str(exc))
    except SubmitOutcomeUnknown as exc:
        limits.release(slot)
        log.warning("job %s: submit outcome unknown: %s", job_id, exc)
        lost = SubmitReplyLost(str(exc))
        resubmit_in = in_transaction(settings, "recording a lost submit reply", lambda session: (
            remote.record_unknown(session, claim, lost, settings)))
        if resubmit_in is not None:
            publish(job_id, FalBackend.name, resubmit_in)
        return RunReport("retry", str(exc))

    # fal has accepted (and will bill) it: the request id must reach Postgres, however long
    # the database is away (record_accepted is idempotent, so a retry after a lost commit is safe).
    wanted = in_transaction(settings, "storing fal's request id", lambda session: (
        remote.record_accepted(session, claim, accepted.request_id, accepted.status,
                               accepted.queue_position, settings)))
    bind(request_id=accepted.request_id)
    log.info("job %s submitted to fal as request %s", job_id, accepted.request_id)
    if not wanted:  # cancelled while the submit was in the air
        cancel_once(key, settings.fal_endpoint, accepted.request_id)
    return RunReport("submitted", accepted.request_id)
