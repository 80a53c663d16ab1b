"""The remote poller: a thread in each worker process serving a remote backend's queue that
polls every accepted request of that backend.

It claims due attempts from the database (``FOR UPDATE SKIP LOCKED``, so pollers on many hosts
share the work), asks the provider for their status concurrently on one asyncio loop, and on
completion fetches the output, stores it and ends the job. The worker's task slots stay free
for submissions: waiting on the provider costs no slot.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from PIL import Image

from orchestrator.backends.base import BackendOutput, Finished, Queued, RemoteBackend, Running
from orchestrator.db.retry import retry_db
from orchestrator.db.session import session_scope
from orchestrator.errors import (
    CredentialsRefused,
    PermanentJobError,
    ProviderCallFailed,
    RemoteRunFailed,
    StoreError,
)
from orchestrator.jobs import transitions
from orchestrator.jobs.remote import attempts
from orchestrator.jobs.remote.attempts import PollAnswer, PollItem
from orchestrator.jobs.remote.limits import mark_key_refused
from orchestrator.jobs.remote.submit import limits_for, pricing_for
from orchestrator.jobs.states import ComputeBasis
from orchestrator.jobs.transitions import Cost, utcnow
from orchestrator.observability.logs import log_context
from orchestrator.settings import Settings
from orchestrator.storage.results import put_result

log = logging.getLogger("orchestrator.remote.poller")

Publish = Callable[[uuid.UUID, str, float], None]

MAX_POLL_ERRORS = 8
BEAT_SECONDS = 5.0
NO_COST = Cost(Decimal(0), ComputeBasis.MEASURED)


class RemotePoller(threading.Thread):
    def __init__(self, settings: Settings, backend: RemoteBackend, publish: Publish, *,
                 tick: float = 0.1, concurrency: int | None = None,
                 on_beat: Callable[[], None] | None = None) -> None:
        super().__init__(name=f"{backend.name}-poller", daemon=True)
        self.settings = settings
        self.backend = backend
        self.policy = backend.policy()
        self.publish = publish
        self.tick = tick
        self.concurrency = concurrency or self.policy.poll_batch
        self.limits = limits_for(backend, settings)
        self.pricing = pricing_for(backend, settings)
        self._stopping = threading.Event()
        # "Not finished yet" answers, written with the next claim (one transaction a tick).
        self._answers: list[PollAnswer] = []
        self.on_beat = on_beat  # called every BEAT_SECONDS while the loop runs (worker health)

    def stop(self, timeout: float = 10) -> None:
        self._stopping.set()
        self.join(timeout)

    def run(self) -> None:
        # A poller that died would strand every request it was meant to poll: start it again.
        while not self._stopping.is_set():
            try:
                asyncio.run(self._main())
            except Exception:
                log.exception("the %s poller failed; restarting it in 1 s", self.backend.name)
                self._stopping.wait(1.0)

    def poll_now(self, items: list[PollItem]) -> None:
        """Poll these (already claimed) attempts once each, on a loop of their own."""

        async def run_all() -> None:
            try:
                await asyncio.gather(*(self._poll(item) for item in items))
                answers, self._answers = self._answers, []
                if answers:  # none when every poll finished its request
                    await self._db(attempts.record_statuses, answers, self.policy)
            finally:
                await self.backend.aclose()

        asyncio.run(run_all())

    async def _main(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        last_beat = 0.0
        while not self._stopping.is_set():
            if self.on_beat is not None and time.monotonic() - last_beat >= BEAT_SECONDS:
                last_beat = time.monotonic()
                try:
                    await asyncio.to_thread(self.on_beat)
                except Exception:
                    log.warning("recording the poller's heartbeat failed", exc_info=True)
            capacity = self.concurrency - len(tasks)
            items: list[PollItem] = []
            answers, self._answers = self._answers, []
            if capacity > 0 or answers:
                try:
                    items = await asyncio.to_thread(self._claim, max(capacity, 0), answers)
                except Exception as exc:  # noqa: BLE001 - the database may be away: next second
                    # The answers are kept for the next try (their attempts stay leased to this
                    # poller until written), at most a few batches' worth: the oldest dropped
                    # are polled again once their lease runs out.
                    self._answers = (answers + self._answers)[-4 * self.concurrency:]
                    log.warning("claiming due %s polls failed: %s", self.backend.name,
                                str(exc).splitlines()[0][:200])
                    await asyncio.sleep(1.0)
                    continue
            for item in items:
                task = asyncio.create_task(self._poll(item))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if len(items) < max(capacity, 1):
                await asyncio.sleep(self.tick)
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        if self._answers:
            try:
                await asyncio.to_thread(self._claim, 0, self._answers)
            except Exception:  # noqa: BLE001 - their leases run out and they are polled again
                log.warning("writing the last %s poll answers failed", self.backend.name)
        await self.backend.aclose()

    def _claim(self, limit: int, answers: list[PollAnswer]) -> list[PollItem]:
        """Write the answers gathered since the last claim, then take up to ``limit`` due
        attempts, in one transaction."""
        with session_scope(self.settings.database.url.get_secret_value()) as session:
            attempts.record_statuses(session, answers, self.policy)
            if limit <= 0:
                return []
            return attempts.claim_due_polls(session, self.backend.name, limit=limit,
                                            lease_seconds=self.settings.retries.lease_seconds)

    def _in_transaction(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def once() -> Any:
            with session_scope(self.settings.database.url.get_secret_value()) as session:
                return fn(session, *args, **kwargs)

        return retry_db(once, budget_seconds=self.settings.database.retry_seconds, what=what)

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self._in_transaction, fn.__name__, fn, *args, **kwargs)

    async def _poll(self, item: PollItem) -> None:
        # Each poll runs as its own asyncio task, so this context is the poll's alone.
        with log_context(job_id=str(item.job_id), attempt=item.attempt_number or None,
                         backend=self.backend.name, request_id=item.request_id):
            await self._poll_once(item)

    async def _poll_once(self, item: PollItem) -> None:
        try:
            status = await self.backend.status(item.request_id)
            if isinstance(status, Finished):
                await self._finish(item, status)
            elif self._past_deadline(item):
                await self._cancel_at_deadline(item)
            elif isinstance(status, Queued):
                self._answers.append(PollAnswer(item.attempt_id, item.polls, attempts.IN_QUEUE,
                                                status.position, utcnow()))
            elif isinstance(status, Running):
                self._answers.append(PollAnswer(item.attempt_id, item.polls,
                                                attempts.IN_PROGRESS, None, utcnow()))
        except ProviderCallFailed as exc:
            await self._retry_later(item, str(exc))
        except CredentialsRefused as exc:
            mark_key_refused(self.settings.broker.url.get_secret_value(), self.backend.name,
                             self.backend.credentials_fingerprint(), str(exc))
            await self._end_failed(item, exc, NO_COST, retryable=False)
        except RemoteRunFailed as exc:  # the provider no longer knows the request
            await self._end_failed(item, exc, NO_COST, retryable=True)
        except StoreError as exc:  # the object store is away: fetch and store it again later
            await self._retry_later(item, str(exc))
        except (OSError, ValueError) as exc:
            await self._retry_later(item, f"talking to {self.backend.name} failed: {exc!r}")
        except Exception:
            log.exception("polling %s request %s failed", self.backend.name, item.request_id)
            await self._retry_later(item, "unexpected error while polling")

    def _past_deadline(self, item: PollItem) -> bool:
        if item.submitted_at is None:
            return False
        age = (utcnow() - item.submitted_at).total_seconds()
        return age > self.policy.request_timeout_seconds

    async def _cancel_at_deadline(self, item: PollItem) -> None:
        """Not completed within the policy's request timeout: cancel it at the provider and
        count the attempt failed (a new attempt follows if the job has any left)."""
        limit = self.policy.request_timeout_seconds
        outcome = await self.backend.cancel_async(item.request_id)
        if outcome == "already_completed":
            raise ProviderCallFailed("completed while being cancelled at its deadline")
        log.warning("%s request %s of job %s not completed within %g s: cancelled",
                    self.backend.name, item.request_id, item.job_id, limit)
        start = item.first_in_progress_at or item.submitted_at
        ran = (utcnow() - start).total_seconds() if start else 0.0
        # Providers bill inference time, and a cancelled run may have used some: count what we saw.
        cost = Cost(Decimal(f"{max(ran, 0.0):.6f}") if item.first_in_progress_at else Decimal(0),
                    ComputeBasis.MEASURED)
        await self._end_failed(item, RemoteRunFailed(
            f"{self.backend.name} request {item.request_id} did not complete within {limit:g} s "
            "(ORCH_FAL_REQUEST_TIMEOUT_SECONDS); it was cancelled there"), cost, retryable=True)

    async def _retry_later(self, item: PollItem, message: str) -> None:
        if item.poll_errors + 1 >= MAX_POLL_ERRORS:
            await self._end_failed(item, RemoteRunFailed(
                f"gave up on {self.backend.name} request {item.request_id} after "
                f"{MAX_POLL_ERRORS} failed calls: {message}"), NO_COST, retryable=True)
            return
        await self._db(attempts.record_poll_error, item.attempt_id, message, self.policy)

    def _cost(self, item: PollItem, status: Finished) -> Cost:
        if status.compute_seconds is not None:
            return Cost(status.compute_seconds, ComputeBasis.FAL_INFERENCE_TIME)
        start = item.first_in_progress_at or item.submitted_at
        measured = (utcnow() - start).total_seconds() if start else 0.0
        return Cost(Decimal(f"{max(measured, 0.0):.6f}"), ComputeBasis.MEASURED)

    async def _finish(self, item: PollItem, status: Finished) -> None:
        cost = self._cost(item, status)
        if status.failure is not None:
            await self._end_failed(item, status.failure, cost,
                                   retryable=not isinstance(status.failure, PermanentJobError))
            return
        try:
            output = await self.backend.result(item.request_id)
        except (PermanentJobError, RemoteRunFailed) as exc:
            await self._end_failed(item, exc, cost, retryable=not isinstance(exc, PermanentJobError))
            return
        await asyncio.to_thread(self._store, item, output.data, output.content_type, cost)

    def _store(self, item: PollItem, data: bytes, content_type: str, cost: Cost) -> None:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
        output = BackendOutput(data=data, content_type=content_type, width=width, height=height,
                               compute_seconds=cost.compute_seconds, compute_basis=cost.basis)
        store, stored = put_result(self.settings, item.job_id, item.attempt_id, data, content_type)
        digest = hashlib.sha256(data).hexdigest()

        def store_result(session: Any) -> bool:
            # A retry after a commit whose reply was lost finds its own result already there.
            return (attempts.complete_remote(session, item.attempt_id, output, stored, digest,
                                             self.pricing, job_id=item.job_id)
                    or transitions.result_attempt_id(session, item.job_id) == item.attempt_id)

        try:
            # The bytes stay in memory until Postgres has them, however long it is away.
            done = self._in_transaction("storing a remote result", store_result)
        except BaseException:
            store.discard(stored)
            raise
        if not done:
            store.discard(stored)
        self.limits.release(str(item.job_id))
        log.info("%s request %s done: job %s %s", self.backend.name, item.request_id, item.job_id,
                 "succeeded" if done else "was no longer waiting for it")

    async def _end_failed(self, item: PollItem, exc: Exception, cost: Cost, *,
                          retryable: bool) -> None:
        scheduled = await self._db(attempts.fail_remote, item.attempt_id, exc, cost,
                                   self.pricing, retryable=retryable, settings=self.settings)
        self.limits.release(str(item.job_id))
        if scheduled is not None:
            job_id, delay = scheduled
            await asyncio.to_thread(self.publish, job_id, self.backend.name, delay)
