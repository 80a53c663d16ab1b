"""Run one delivery of a job: claim it, run its backend, and record exactly one outcome."""

from __future__ import annotations

import contextvars
import hashlib
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.orm import Session

from orchestrator.backends.base import BackendInput, InlineBackend
from orchestrator.db.retry import retry_db
from orchestrator.db.session import session_scope
from orchestrator.errors import PermanentJobError
from orchestrator.images.fetch import fetch_url
from orchestrator.jobs import transitions
from orchestrator.jobs.transitions import Busy, Claim, Cost, Pricing, Skip
from orchestrator.observability.logs import bind, log_context
from orchestrator.settings import Settings
from orchestrator.storage.inputs import load_input
from orchestrator.storage.results import put_result

log = logging.getLogger("orchestrator.runner")

Publish = Callable[[uuid.UUID, str, float], None]  # job id, backend (queue), countdown
T = TypeVar("T")


def in_transaction(settings: Settings, what: str, fn: Callable[[Session], T]) -> T:
    """``fn`` in one transaction, retried with backoff while the database is unreachable."""

    def once() -> T:
        with session_scope(settings.database.url.get_secret_value()) as session:
            return fn(session)

    return retry_db(once, budget_seconds=settings.database.retry_seconds, what=what)


@dataclass(frozen=True)
class RunReport:
    outcome: str  # succeeded | failed | retry | busy | skipped | superseded
    detail: str = ""


class _Heartbeat(threading.Thread):
    """Renews the lease every third of its length until stopped."""

    def __init__(self, claim: Claim, settings: Settings) -> None:
        super().__init__(name=f"lease-{claim.job_id}", daemon=True)
        self.claim = claim
        self.settings = settings
        self.stopped = threading.Event()
        self._log_context = contextvars.copy_context()  # threads do not inherit it

    def run(self) -> None:
        self._log_context.run(self._beat)

    def _beat(self) -> None:
        interval = self.settings.retries.lease_seconds / 3
        while not self.stopped.wait(interval):
            try:
                with session_scope(self.settings.database.url.get_secret_value()) as session:
                    if not transitions.renew_lease(session, self.claim, self.settings):
                        return
            except Exception:  # the database may be briefly away; the next beat tries again
                log.warning("lease renewal failed for job %s", self.claim.job_id, exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


def _load_input(claim: Claim, settings: Settings) -> bytes:
    if claim.source_kind == "url":
        assert claim.source_url is not None
        data = fetch_url(
            claim.source_url,
            max_bytes=settings.inputs.max_bytes,
            timeout=settings.inputs.fetch_timeout_seconds,
            max_redirects=settings.inputs.fetch_max_redirects,
            allow_hosts=frozenset(settings.inputs.fetch_allow_hosts),
        )
        digest = hashlib.sha256(data).hexdigest()

        def record_digest(session: Session) -> None:
            transitions.get_job(session, claim.job_id).input_sha256 = digest

        in_transaction(settings, "recording the input digest", record_digest)
        return data
    return load_input(settings, claim.job_id)


def run_delivery(
    job_id: uuid.UUID,
    *,
    settings: Settings,
    backend: InlineBackend,
    publish: Publish,
) -> RunReport:
    with log_context(job_id=str(job_id), backend=backend.name):
        return _run_delivery(job_id, settings=settings, backend=backend, publish=publish)


def _run_delivery(
    job_id: uuid.UUID,
    *,
    settings: Settings,
    backend: InlineBackend,
    publish: Publish,
) -> RunReport:
    decision = in_transaction(settings, "claiming a job",
                              lambda session: transitions.claim(session, job_id, settings))
    if isinstance(decision, Skip):
        log.info("job %s skipped: %s", job_id, decision.reason)
        return RunReport("skipped", decision.reason)
    if isinstance(decision, Busy):
        # Hand the message back for later instead of dropping it: the holder may yet die.
        delay = min(max(decision.retry_after + 1.0, 1.0), settings.retry_countdown_cap())
        backend_name = in_transaction(settings, "reading a job",
                                      lambda session: transitions.get_job(session, job_id).backend)
        publish(job_id, backend_name, delay)
        return RunReport("busy", f"re-published with a {delay:.1f} s countdown")

    claim = decision
    bind(attempt=claim.attempt_number)
    pricing = Pricing(backend.price_per_second(), settings.fal.price_per_second)
    heartbeat = _Heartbeat(claim, settings)
    heartbeat.start()
    ran = Cost()  # the compute spent, kept on the attempt if storing the result fails
    try:
        try:
            data = _load_input(claim, settings)
            output = backend.run(BackendInput(data=data, options=claim.options))
            ran = Cost(output.compute_seconds, output.compute_basis)
            # Before the row: a store fault is transient (retried with backoff below).
            store, stored = put_result(settings, claim.job_id, claim.attempt_id, output.data,
                                       output.content_type)
        except PermanentJobError as exc:
            permanent = exc
            in_transaction(settings, "failing a job", lambda session: (
                transitions.fail(session, claim, permanent, Cost(), pricing)))
            log.info("job %s failed permanently: %s", job_id, exc)
            return RunReport("failed", str(exc))
        except Exception as exc:
            log.warning("job %s attempt %d failed: %r", job_id, claim.attempt_number, exc)
            transient = exc
            retry_in = in_transaction(settings, "scheduling a retry", lambda session: (
                transitions.schedule_retry(session, claim, transient, ran, pricing, settings)))
            if retry_in is None:
                return RunReport("failed", str(exc))
            publish(job_id, claim.backend, retry_in)
            return RunReport("retry", f"retry in {retry_in:.1f} s")

        sha256 = hashlib.sha256(output.data).hexdigest()

        def store_result(session: Session) -> bool:
            # A retry after a commit whose reply was lost finds its own result already there.
            return (transitions.complete(session, claim, output, stored, sha256, pricing)
                    or transitions.result_attempt_id(session, claim.job_id) == claim.attempt_id)

        try:
            done = in_transaction(settings, "storing a result", store_result)
        except BaseException:
            store.discard(stored)
            raise
        if not done:
            store.discard(stored)
            return RunReport("superseded", "the lease was lost before the result was stored")
        log.info(
            "job %s succeeded in %s s (%d bytes)", job_id, output.compute_seconds, len(output.data)
        )
        return RunReport("succeeded")
    finally:
        heartbeat.stop()


__all__ = ["RunReport", "run_delivery"]
