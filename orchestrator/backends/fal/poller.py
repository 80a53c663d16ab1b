"""The fal poller: a thread in each fal worker process that polls every accepted request.

It claims due attempts from Postgres (``FOR UPDATE SKIP LOCKED``, so pollers on many hosts
share the work), asks fal for their status concurrently on one asyncio loop, and on
completion fetches the output, downloads the file, stores it and ends the job. The worker's
task slots stay free for submissions: waiting on fal costs no slot.
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

import httpx
from fal_client.client import Completed, FalClientHTTPError, InProgress, Queued
from PIL import Image

from orchestrator.backends.base import BackendOutput
from orchestrator.backends.fal import FalBackend
from orchestrator.backends.fal.client import async_client, download, key_fingerprint
from orchestrator.backends.fal.limits import FalLimits, mark_key_refused
from orchestrator.db.retry import retry_db
from orchestrator.db.session import session_scope
from orchestrator.errors import BackendRejected, CredentialsRefused, RemoteRunFailed, StoreError
from orchestrator.jobs import remote, service
from orchestrator.jobs.remote import PollItem
from orchestrator.jobs.service import Cost, Pricing, utcnow
from orchestrator.jobs.states import ComputeBasis
from orchestrator.observability.logs import log_context
from orchestrator.settings import Settings
from orchestrator.storage.results import put_result

log = logging.getLogger("orchestrator.fal.poller")

Publish = Callable[[uuid.UUID, str, float], None]

# Failures fal reports for the input itself: retrying cannot help.
VALIDATION_ERROR_TYPES = frozenset({
    "image_too_small", "image_too_large", "image_load_error", "file_download_error",
    "face_detection_error", "file_too_large", "content_policy_violation", "greater_than",
    "greater_than_equal", "less_than", "less_than_equal", "multiple_of", "sequence_too_short",
    "sequence_too_long", "one_of", "feature_not_supported", "invalid_archive",
    "archive_file_count_below_minimum", "value_error.missing", "bad_request",
})
MAX_POLL_ERRORS = 8
BEAT_SECONDS = 5.0


class _RetryLater(Exception):
    """A call that asking again can fix (network, 5xx, 429, a result not there yet)."""


class FalPoller(threading.Thread):
    def __init__(self, settings: Settings, publish: Publish, *, tick: float = 0.1,
                 concurrency: int | None = None,
                 on_beat: Callable[[], None] | None = None) -> None:
        super().__init__(name="fal-poller", daemon=True)
        self.settings = settings
        self.publish = publish
        self.tick = tick
        self.concurrency = concurrency or settings.fal_poll_batch
        self.backend = FalBackend(settings)
        self.limits = FalLimits(settings.broker_url, max_in_flight=settings.fal_max_in_flight,
                                max_per_second=settings.fal_max_submits_per_second)
        self.pricing = Pricing(settings.fal_price_per_second, settings.fal_price_per_second)
        self._stopping = threading.Event()
        self._active: set[int] = set()
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
                log.exception("the fal poller failed; restarting it in 1 s")
                self._stopping.wait(1.0)

    def poll_now(self, items: list[PollItem]) -> None:
        """Poll these (already claimed) attempts once each, on a loop of their own."""

        async def run_all() -> None:
            client = async_client(self.backend.key())
            await asyncio.gather(*(self._poll(client, item) for item in items))

        asyncio.run(run_all())

    async def _main(self) -> None:
        client = async_client(self.backend.key())
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
            if capacity > 0:
                try:
                    items = await asyncio.to_thread(self._claim, capacity)
                except Exception as exc:  # noqa: BLE001 - the database may be away: next second
                    log.warning("claiming due fal polls failed: %s", str(exc).splitlines()[0][:200])
                    await asyncio.sleep(1.0)
                    continue
            for item in items:
                task = asyncio.create_task(self._poll(client, item))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if len(items) < max(capacity, 1):
                await asyncio.sleep(self.tick)
        if tasks:
            await asyncio.wait(tasks, timeout=10)

    def _claim(self, limit: int) -> list[PollItem]:
        with session_scope(self.settings.database_url) as session:
            return remote.claim_due_polls(session, limit=limit,
                                          lease_seconds=self.settings.lease_seconds)

    def _in_transaction(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def once() -> Any:
            with session_scope(self.settings.database_url) as session:
                return fn(session, *args, **kwargs)

        return retry_db(once, budget_seconds=self.settings.db_retry_seconds, what=what)

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self._in_transaction, fn.__name__, fn, *args, **kwargs)

    async def _poll(self, client: Any, item: PollItem) -> None:
        # Each poll runs as its own asyncio task, so this context is the poll's alone.
        with log_context(job_id=str(item.job_id), attempt=item.attempt_number or None,
                         backend=FalBackend.name, request_id=item.request_id):
            await self._poll_once(client, item)

    async def _poll_once(self, client: Any, item: PollItem) -> None:
        endpoint = self.settings.fal_endpoint
        try:
            try:
                status = await client.status(endpoint, item.request_id, with_logs=False)
            except FalClientHTTPError as exc:
                await self._on_http_error(item, exc, "status")
                return
            if isinstance(status, Completed):
                await self._finish(client, item, status)
            elif self._past_deadline(item):
                await self._cancel_at_deadline(client, item)
            elif isinstance(status, Queued):
                await self._db(remote.record_status, item.attempt_id, "IN_QUEUE", status.position,
                               self.settings)
            elif isinstance(status, InProgress):
                await self._db(remote.record_status, item.attempt_id, "IN_PROGRESS", None,
                               self.settings)
        except _RetryLater as exc:
            await self._retry_later(item, str(exc))
        except (httpx.HTTPError, OSError, ValueError) as exc:
            await self._retry_later(item, f"talking to fal failed: {exc!r}")
        except StoreError as exc:  # the object store is away: fetch and store it again later
            await self._retry_later(item, str(exc))
        except Exception:
            log.exception("polling fal request %s failed", item.request_id)
            await self._retry_later(item, "unexpected error while polling")

    def _past_deadline(self, item: PollItem) -> bool:
        if item.submitted_at is None:
            return False
        age = (utcnow() - item.submitted_at).total_seconds()
        return age > self.settings.fal_request_timeout_seconds

    async def _cancel_at_deadline(self, client: Any, item: PollItem) -> None:
        """Not completed within ``fal_request_timeout_seconds``: cancel it at fal and count the
        attempt failed (a new attempt follows if the job has any left)."""
        limit = self.settings.fal_request_timeout_seconds
        try:
            await client.cancel(self.settings.fal_endpoint, item.request_id)
        except FalClientHTTPError as exc:
            if exc.status_code == 400 and "ALREADY_COMPLETED" in exc.response.text:
                raise _RetryLater("completed while being cancelled at its deadline") from None
            if exc.status_code != 404:
                raise _RetryLater(f"cancelling at the deadline failed with HTTP {exc.status_code}") from None
        log.warning("fal request %s of job %s not completed within %g s: cancelled",
                    item.request_id, item.job_id, limit)
        start = item.first_in_progress_at or item.submitted_at
        ran = (utcnow() - start).total_seconds() if start else 0.0
        # fal bills inference time, and a cancelled run may have used some: count what we saw.
        cost = Cost(Decimal(f"{max(ran, 0.0):.6f}") if item.first_in_progress_at else Decimal(0),
                    ComputeBasis.MEASURED)
        await self._end_failed(item, RemoteRunFailed(
            f"fal request {item.request_id} did not complete within {limit:g} s "
            "(ORCH_FAL_REQUEST_TIMEOUT_SECONDS); it was cancelled at fal"), cost, retryable=True)

    async def _retry_later(self, item: PollItem, message: str) -> None:
        if item.poll_errors + 1 >= MAX_POLL_ERRORS:
            await self._end_failed(item, RemoteRunFailed(
                f"gave up on fal request {item.request_id} after {MAX_POLL_ERRORS} failed calls: {message}"
            ), Cost(Decimal(0), ComputeBasis.MEASURED), retryable=True)
            return
        await self._db(remote.record_poll_error, item.attempt_id, message, self.settings)

    async def _on_http_error(self, item: PollItem, exc: FalClientHTTPError, call: str) -> None:
        code = exc.status_code
        if code in (401, 403):
            key = self.backend.key()
            message = f"fal refused the credentials in FAL_KEY (HTTP {code}: {exc.message})"
            mark_key_refused(self.settings.broker_url, key_fingerprint(key), message)
            await self._end_failed(item, CredentialsRefused(message),
                                   Cost(Decimal(0), ComputeBasis.MEASURED), retryable=False)
        elif code == 404 and call == "status":
            await self._end_failed(item, RemoteRunFailed(
                f"fal does not know request {item.request_id} (HTTP 404)"),
                Cost(Decimal(0), ComputeBasis.MEASURED), retryable=True)
        else:
            raise _RetryLater(f"fal {call} call failed with HTTP {code}: {exc.message}")

    def _cost(self, item: PollItem, status: Completed) -> Cost:
        seconds = (status.metrics or {}).get("inference_time")
        if isinstance(seconds, (int, float)) and seconds >= 0:
            return Cost(Decimal(f"{seconds:.6f}"), ComputeBasis.FAL_INFERENCE_TIME)
        start = item.first_in_progress_at or item.submitted_at
        measured = (utcnow() - start).total_seconds() if start else 0.0
        return Cost(Decimal(f"{max(measured, 0.0):.6f}"), ComputeBasis.MEASURED)

    async def _finish(self, client: Any, item: PollItem, status: Completed) -> None:
        cost = self._cost(item, status)
        endpoint = self.settings.fal_endpoint
        if status.error is not None or status.error_type is not None:
            await self._finish_failed(client, item, status, cost)
            return
        try:
            output = await client.result(endpoint, item.request_id)
        except FalClientHTTPError as exc:
            if exc.status_code == 422:
                await self._end_failed(item, BackendRejected(f"fal rejected the input: {exc.message}"),
                                       cost, retryable=False)
                return
            raise _RetryLater(f"fetching fal's result failed with HTTP {exc.status_code}") from None
        image = output.get("image") if isinstance(output, dict) else None
        if not isinstance(image, dict) or not image.get("url"):
            await self._end_failed(item, RemoteRunFailed("fal's output has no image.url"), cost,
                                   retryable=True)
            return
        try:
            data, content_type = await download(str(image["url"]),
                                                max_bytes=self.settings.fal_max_result_bytes)
        except httpx.HTTPStatusError as exc:
            raise _RetryLater(f"downloading fal's result failed with HTTP {exc.response.status_code}") from None
        content_type = content_type or str(image.get("content_type") or "")
        if not content_type.startswith("image/"):
            await self._end_failed(item, RemoteRunFailed(
                f"fal's result is {content_type or 'untyped'}, not an image"), cost, retryable=True)
            return
        await asyncio.to_thread(self._store, item, data, content_type, cost)

    def _store(self, item: PollItem, data: bytes, content_type: str, cost: Cost) -> None:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
        output = BackendOutput(data=data, content_type=content_type, width=width, height=height,
                               compute_seconds=cost.compute_seconds, compute_basis=cost.basis)
        store, stored = put_result(self.settings, item.job_id, item.attempt_id, data, content_type)
        digest = hashlib.sha256(data).hexdigest()

        def store_result(session: Any) -> bool:
            # A retry after a commit whose reply was lost finds its own result already there.
            return (remote.complete_remote(session, item.attempt_id, output, stored, digest,
                                           self.pricing)
                    or service.result_attempt_id(session, item.job_id) == item.attempt_id)

        try:
            # The bytes stay in memory until Postgres has them, however long it is away.
            done = self._in_transaction("storing a fal result", store_result)
        except BaseException:
            store.discard(stored)
            raise
        if not done:
            store.discard(stored)
        self.limits.release(str(item.job_id))
        log.info("fal request %s done: job %s %s", item.request_id, item.job_id,
                 "succeeded" if done else "was no longer waiting for it")

    async def _finish_failed(self, client: Any, item: PollItem, status: Completed, cost: Cost) -> None:
        code: int | None = None
        message = status.error or status.error_type or "fal reported an error"
        try:
            await client.result(self.settings.fal_endpoint, item.request_id)
        except FalClientHTTPError as exc:
            code = exc.status_code
            message = str(exc.message) if exc.message else message
        except httpx.HTTPError:
            pass
        if code == 422 or status.error_type in VALIDATION_ERROR_TYPES:
            await self._end_failed(item, BackendRejected(f"fal rejected the input: {message}"),
                                   cost, retryable=False)
        else:
            kind = status.error_type or (f"HTTP {code}" if code else "error")
            await self._end_failed(item, RemoteRunFailed(f"fal's run failed ({kind}): {message}"),
                                   cost, retryable=True)

    async def _end_failed(self, item: PollItem, exc: Exception, cost: Cost, *, retryable: bool) -> None:
        scheduled = await self._db(remote.fail_remote, item.attempt_id, exc, cost, self.pricing,
                                   retryable=retryable, settings=self.settings)
        self.limits.release(str(item.job_id))
        if scheduled is not None:
            job_id, delay = scheduled
            await asyncio.to_thread(self.publish, job_id, FalBackend.name, delay)
