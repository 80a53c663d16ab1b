"""An in-memory remote backend for tests and demos: a provider's queue inside the process.

It behaves like a provider's queue API, with the faults that make a remote engine hard:
``latency`` (seconds from submit to done; the first ``queue_seconds`` of it queued), failing
submits (``busy_submits``: refused, nothing bought), ``lost_replies`` (accepted and billed, but
the reply is lost: SubmitReplyLost), ``failed_runs`` (accepted, then the run fails), and
``rejected`` (the input is refused as invalid). Each count is used up in order of submission.
Everything it accepted is in ``accepted`` — the ledger a test checks for second payments.

Requests live in the process (``FakeProvider``), so a submit and its polls must run in one
process: the engine's unit tests, or a worker with one pool process.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

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
from orchestrator.backends.fake_inline import encode_png, fake_cutout
from orchestrator.errors import (
    BackendBusy,
    BackendRejected,
    ProviderCallFailed,
    RemoteRunFailed,
    SubmitReplyLost,
)
from orchestrator.images.decode import open_image
from orchestrator.settings import Settings


@dataclass
class FakeRequest:
    request_id: str
    data: bytes
    options: dict[str, Any]
    submitted_at: float
    fails: bool = False
    cancelled: bool = False


@dataclass
class FakeProvider:
    """The provider's side: its queue and its faults."""

    latency: float = 0.05
    queue_seconds: float = 0.0
    busy_submits: int = 0
    lost_replies: int = 0
    failed_runs: int = 0
    status_errors: int = 0
    requests: dict[str, FakeRequest] = field(default_factory=dict)
    accepted: list[str] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, counter: str) -> bool:
        """Use up one of a fault counter; True if there was one."""
        with self._lock:
            left = getattr(self, counter)
            if left > 0:
                setattr(self, counter, left - 1)
                return True
            return False


class FakeRemoteBackend(RemoteBackend):
    name: ClassVar[str] = "fake-remote"
    credentials_setting: ClassVar[str] = "its (fake) key"

    def __init__(self, settings: Settings, *, provider: FakeProvider | None = None,
                 policy: RemotePolicy | None = None,
                 price_per_second: Decimal = Decimal("0.00111")) -> None:
        super().__init__(settings)
        self.provider = provider or FakeProvider()
        self._policy = policy or RemotePolicy(
            max_in_flight=1000, max_submits_per_second=1000, submit_timeout_seconds=5,
            poll_initial_seconds=0.05, poll_max_seconds=0.5, poll_batch=100,
            request_timeout_seconds=60, resubmit_after_seconds=0.2, adopt_wait_seconds=1,
            max_result_bytes=settings.fal.max_result_bytes)
        self._price = price_per_second

    @classmethod
    def model_label(cls, settings: Settings) -> str:
        return "fake-remote-threshold"

    @classmethod
    def unavailable_reason(cls, settings: Settings) -> str | None:
        return None

    def price_per_second(self) -> Decimal:
        return self._price

    def policy(self) -> RemotePolicy:
        return self._policy

    def credentials_fingerprint(self) -> str:
        return hashlib.sha256(b"fake").hexdigest()[:16]

    def prepare(self, job_input: RemoteInput) -> dict[str, Any]:
        if job_input.data is None:
            raise BackendRejected("the fake remote backend takes file inputs only")
        open_image(job_input.data, max_bytes=self.settings.inputs.max_bytes,
                   max_pixels=self.settings.inputs.max_pixels)
        return {"data": job_input.data, "options": dict(job_input.options)}

    def submit(self, payload: Any, *, callback_url: str | None) -> Accepted:
        provider = self.provider
        if provider.take("busy_submits"):
            raise BackendBusy("the fake provider is busy (HTTP 503)")
        with provider._lock:
            request_id = f"fake-{next(provider._ids)}"
            provider.requests[request_id] = FakeRequest(
                request_id, payload["data"], payload["options"], time.monotonic())
            provider.accepted.append(request_id)
        provider.requests[request_id].fails = provider.take("failed_runs")
        if provider.take("lost_replies"):
            raise SubmitReplyLost("the fake provider's reply was lost after it accepted")
        return Accepted(request_id, Queued(0))

    def _request(self, request_id: str) -> FakeRequest:
        request = self.provider.requests.get(request_id)
        if request is None:
            raise RemoteRunFailed(f"the fake provider does not know request {request_id}")
        return request

    async def status(self, request_id: str) -> RemoteStatus:
        await asyncio.sleep(0)
        if self.provider.take("status_errors"):
            raise ProviderCallFailed("the fake provider's status call failed (HTTP 502)")
        request = self._request(request_id)
        age = time.monotonic() - request.submitted_at
        if request.cancelled:
            return Finished(Decimal(0), RemoteRunFailed("cancelled at the fake provider"))
        if age < self.provider.queue_seconds:
            return Queued(0)
        if age < self.provider.latency:
            return Running()
        ran = Decimal(f"{max(self.provider.latency - self.provider.queue_seconds, 0):.6f}")
        if request.fails:
            return Finished(ran, RemoteRunFailed("the fake provider's run failed"))
        return Finished(ran)

    async def result(self, request_id: str) -> RemoteOutput:
        await asyncio.sleep(0)
        request = self._request(request_id)
        image = open_image(request.data, max_bytes=self.settings.inputs.max_bytes,
                           max_pixels=self.settings.inputs.max_pixels)
        crop = bool(request.options.get("crop_to_bbox", False))
        return RemoteOutput(encode_png(fake_cutout(image, crop_to_bbox=crop)), "image/png")

    def cancel(self, request_id: str) -> CancelOutcome:
        request = self.provider.requests.get(request_id)
        if request is None:
            return CancelOutcome.NOT_FOUND
        if time.monotonic() - request.submitted_at >= self.provider.latency:
            return CancelOutcome.ALREADY_COMPLETED
        request.cancelled = True
        return CancelOutcome.CANCELLED

    async def cancel_async(self, request_id: str) -> CancelOutcome:
        return self.cancel(request_id)
