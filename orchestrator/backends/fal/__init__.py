"""The fal backend: ``fal-ai/imageutils/rembg`` through fal's queue API.

An adapter only: it builds fal's input, submits it once, asks after it, downloads the output,
cancels, verifies fal's webhooks, and translates fal's answers (its statuses, its HTTP errors)
into the orchestrator's values and error tree. The job engine around it —
exactly-once submit, polling that holds no worker, adoption of lost requests, deadlines, limits
shared in Redis — is ``orchestrator.jobs.remote``.
"""

from __future__ import annotations

import asyncio
import base64
import weakref
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar

import httpx
from fal_client import client as fal_queue
from fal_client.client import Completed, FalClientHTTPError, InProgress
from fal_client.client import Queued as FalQueued

from orchestrator.backends.base import (
    Accepted,
    CancelOutcome,
    Finished,
    Queued,
    RemoteBackend,
    RemoteInput,
    RemoteOutput,
    RemotePolicy,
    RemoteStatus,
    Running,
)
from orchestrator.backends.fal import client as fal_http
from orchestrator.backends.fal.webhook import verify
from orchestrator.errors import (
    BackendRejected,
    BackendUnavailable,
    InputTooLarge,
    ProviderCallFailed,
    RemoteRunFailed,
)
from orchestrator.images.decode import image_mime, open_image
from orchestrator.queue.broker import is_redis
from orchestrator.settings import Settings

# fal's toolkit accepts data URIs up to 10 MiB (fal-queue-protocol.md §10).
MAX_DATA_URI_CHARS = 10 * 1024 * 1024


class FalBackend(RemoteBackend):
    name: ClassVar[str] = "fal"
    credentials_setting: ClassVar[str] = "FAL_KEY"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        # fal_client.AsyncClient keeps an httpx client bound to the loop it was first used on.
        self._async_clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._downloaders: weakref.WeakKeyDictionary[Any, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary())

    @classmethod
    def model_label(cls, settings: Settings) -> str:
        return settings.fal.endpoint

    @classmethod
    def unavailable_reason(cls, settings: Settings) -> str | None:
        if settings.fal.key is None or not settings.fal.key.get_secret_value():
            return "FAL_KEY is not set, so the fal backend is unavailable"
        if not is_redis(settings.broker.url.get_secret_value()):
            return ("the fal backend keeps its limits shared by all workers in Redis: "
                    "set ORCH_BROKER_URL to a redis:// URL to use it")
        return None

    def key(self) -> str:
        reason = self.unavailable_reason(self.settings)
        if reason:
            raise BackendUnavailable(reason)
        assert self.settings.fal.key is not None
        return self.settings.fal.key.get_secret_value()

    def credentials_fingerprint(self) -> str:
        key = self.settings.fal.key
        return fal_http.key_fingerprint(key.get_secret_value() if key is not None else "")

    def price_per_second(self) -> Decimal:
        return self.settings.fal.price_per_second

    def policy(self) -> RemotePolicy:
        s = self.settings
        return RemotePolicy(
            max_in_flight=s.fal.max_in_flight,
            max_submits_per_second=s.fal.max_submits_per_second,
            submit_timeout_seconds=s.fal.submit_timeout_seconds,
            poll_initial_seconds=s.fal.poll_initial_seconds,
            poll_max_seconds=s.fal.poll_max_seconds,
            poll_batch=s.fal.poll_batch,
            request_timeout_seconds=s.fal.request_timeout_seconds,
            resubmit_after_seconds=s.fal.resubmit_after_seconds,
            adopt_wait_seconds=s.fal.adopt_wait_seconds,
            max_result_bytes=s.fal.max_result_bytes,
            callback_url=s.fal.webhook_url,
            slot_wait_seconds=s.fal.slot_wait_seconds,
        )

    def prepare(self, job_input: RemoteInput) -> dict[str, Any]:
        """fal's input: URLs pass through; file bytes go as a data URI within fal's limit."""
        if job_input.url is not None:
            image_url = job_input.url
        else:
            data = job_input.data
            assert data is not None
            # Fail fast (and free) on what is not an image, before paying fal to say so.
            open_image(data, max_bytes=self.settings.inputs.max_bytes,
                       max_pixels=self.settings.inputs.max_pixels)
            image_url = f"data:{image_mime(data)};base64,{base64.b64encode(data).decode()}"
            if len(image_url) > MAX_DATA_URI_CHARS:
                raise InputTooLarge(
                    f"the file is {len(data):,} bytes: as a data URI that exceeds fal's 10 MiB "
                    "limit; submit it as an http(s) URL instead"
                )
        return {"image_url": image_url,
                "crop_to_bbox": bool(job_input.options.get("crop_to_bbox", False)),
                "sync_mode": False}

    def submit(self, payload: Any, *, callback_url: str | None) -> Accepted:
        request_id, status, position = fal_http.submit_once(
            self.key(), self.settings.fal.endpoint, payload,
            timeout=self.settings.fal.submit_timeout_seconds, webhook_url=callback_url)
        return Accepted(request_id, Running() if status == fal_http.IN_PROGRESS else Queued(position))

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            # A pool as large as the polls one poller makes at once.
            client = fal_http.async_client(self.key(), connections=self.settings.fal.poll_batch)
            self._async_clients[loop] = client
        return client

    def _downloader(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        http = self._downloaders.get(loop)
        if http is None:
            http = fal_http.download_client(self.settings.fal.poll_batch)
            self._downloaders[loop] = http
        return http

    async def aclose(self) -> None:
        downloader = self._downloaders.pop(asyncio.get_running_loop(), None)
        if downloader is not None:
            await downloader.aclose()
        client = self._async_clients.pop(asyncio.get_running_loop(), None)
        # fal_client builds its httpx client on first use and caches it in the instance's
        # __dict__; it never closes it itself.
        if client is not None and "_client" in client.__dict__:
            http = await client._client
            await http.aclose()

    async def status(self, request_id: str) -> RemoteStatus:
        try:
            status = await self._client().status(self.settings.fal.endpoint, request_id,
                                                 with_logs=False)
        except Exception as exc:  # noqa: BLE001 - translated in one place
            fal_http.raise_call_failed(exc, "status", request_id)
        if isinstance(status, FalQueued):
            return Queued(status.position)
        if isinstance(status, InProgress):
            return Running()
        if isinstance(status, Completed):
            return Finished(self._billed_seconds(status), await self._failure(request_id, status))
        raise ProviderCallFailed(f"fal answered an unknown status for request {request_id}")

    @staticmethod
    def _billed_seconds(status: Completed) -> Decimal | None:
        seconds = (status.metrics or {}).get("inference_time")
        if isinstance(seconds, (int, float)) and seconds >= 0:
            return Decimal(f"{seconds:.6f}")
        return None

    async def _failure(self, request_id: str, status: Completed) -> Exception | None:
        """A completed request that failed: fal's input-validation failures (422 and its types)
        are permanent, a runner error may pass on a new attempt."""
        if status.error is None and status.error_type is None:
            return None
        code: int | None = None
        message = status.error or status.error_type or "fal reported an error"
        try:
            await self._completed_output(request_id)
        except FalClientHTTPError as exc:
            code = exc.status_code
            message = str(exc.message) if exc.message else message
        except Exception:  # noqa: BLE001 - the status alone says enough
            pass
        if code == 422 or status.error_type in fal_http.VALIDATION_ERROR_TYPES:
            return BackendRejected(f"fal rejected the input: {message}")
        kind = status.error_type or (f"HTTP {code}" if code else "error")
        return RemoteRunFailed(f"fal's run failed ({kind}): {message}")

    async def _completed_output(self, request_id: str) -> Any:
        """The output of a request whose status was just COMPLETED. fal_client's ``result()``
        asks for the status once more before fetching it; the poller has just seen it."""
        handle = await self._client().get_handle(self.settings.fal.endpoint, request_id)
        response = await fal_queue._async_maybe_retry_request(
            handle.client, "GET", handle.response_url, timeout=fal_queue.QUEUE_POLL_TIMEOUT)
        return response.json()

    async def result(self, request_id: str) -> RemoteOutput:
        try:
            output = await self._completed_output(request_id)
        except Exception as exc:  # noqa: BLE001 - translated in one place
            fal_http.raise_call_failed(exc, "result", request_id)
        image = output.get("image") if isinstance(output, dict) else None
        if not isinstance(image, dict) or not image.get("url"):
            raise RemoteRunFailed("fal's output has no image.url")
        data, content_type = await fal_http.download(
            str(image["url"]), max_bytes=self.settings.fal.max_result_bytes,
            http=self._downloader())
        content_type = content_type or str(image.get("content_type") or "")
        if not content_type.startswith("image/"):
            raise RemoteRunFailed(f"fal's result is {content_type or 'untyped'}, not an image")
        return RemoteOutput(data, content_type)

    async def cancel_async(self, request_id: str) -> CancelOutcome:
        try:
            await self._client().cancel(self.settings.fal.endpoint, request_id)
        except FalClientHTTPError as exc:
            if fal_http.is_already_completed(exc):
                return CancelOutcome.ALREADY_COMPLETED
            if exc.status_code == 404:
                return CancelOutcome.NOT_FOUND
            fal_http.raise_call_failed(exc, "cancel", request_id)
        except Exception as exc:  # noqa: BLE001 - translated in one place
            fal_http.raise_call_failed(exc, "cancel", request_id)
        return CancelOutcome.CANCELLED

    def cancel(self, request_id: str) -> CancelOutcome:
        return CancelOutcome(fal_http.cancel_once(self.key(), self.settings.fal.endpoint,
                                                  request_id))

    def verify_callback(self, headers: Mapping[str, str], body: bytes) -> str:
        return verify(headers, body, self.settings.fal.jwks_url)
