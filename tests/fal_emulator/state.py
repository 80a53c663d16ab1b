"""Request state and the queue: time-driven, computed lazily from timestamps.

No thread per request. Every read (status, result, cancel, ``emulator.requests[...]``) first
calls :meth:`Store.advance`, which replays the queue's events (start, finish, start-timeout) in
time order up to "now". A runner slot is busy from a request's start until it finishes, so with
``runners=N`` at most N requests are IN_PROGRESS and the rest wait IN_QUEUE, first come first
served. Times are ``time.monotonic()`` seconds.

The model itself (decode, mask, PNG) runs on a small thread pool as soon as a submission is
accepted. A request finishes at ``max(started_at + latency, model finished)``.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import math
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from tests.fal_emulator import model

OUTCOMES = frozenset({"ok", "validation_error", "runner_error", "stuck"})

IN_QUEUE, IN_PROGRESS, COMPLETED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED"

VALIDATION_DETAIL = [
    {
        "loc": ["body", "image_url"],
        "msg": "Failed to load the image. Please ensure the image file is not corrupted "
        "and is in a supported format.",
        "type": "image_load_error",
    }
]


def new_request_id() -> str:
    """A UUIDv7-shaped id (48-bit ms timestamp, version 7, random), like fal's recent ids."""
    ms = int(time.time() * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64
    value |= (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


@dataclass
class Result:
    """What ``GET {response_url}`` returns once the request is completed."""

    status_code: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class RequestState:
    """One accepted request. Times are monotonic seconds; ``*_wall`` helpers give epoch time."""

    request_id: str
    endpoint: str  # the full endpoint id, e.g. "fal-ai/imageutils/rembg"
    base: str  # owner/app (or namespace/owner/app): the prefix of the request URLs
    input: Any
    auth: str | None
    outcome: str
    seq: int
    submitted_at: float
    eligible_at: float  # submitted_at + queue_time
    webhook_url: str | None = None
    start_deadline: float | None = None  # from X-Fal-Request-Timeout
    status: str = IN_QUEUE
    started_at: float | None = None
    completed_at: float | None = None
    nominal_end: float | None = None
    error: str | None = None
    error_type: str | None = None
    cancelled: bool = False
    timed_out: bool = False
    inference_time: float | None = None
    # model work
    model_done_at: float | None = None
    output: model.ModelOutput | None = None
    model_error: model.ModelValidationError | None = None
    media_name: str | None = None
    result: Result | None = None
    webhook_sent: bool = False

    @property
    def gateway_request_id(self) -> str:
        return self.request_id

    @property
    def ran(self) -> bool:
        """Whether a runner picked it up (what fal bills for)."""
        return self.started_at is not None

    @property
    def run_seconds(self) -> float | None:
        if self.started_at is None or self.completed_at is None:
            return None
        return self.completed_at - self.started_at


class Store:
    """All requests, the waiting line and the runner slots. Thread-safe (one lock)."""

    def __init__(
        self,
        *,
        latency: float,
        queue_time: float,
        inference_time: float | None,
        runners: int | None,
        public_host: Callable[[], str],
        model_threads: int = 4,
    ) -> None:
        self.latency = latency
        self.queue_time = queue_time
        self.inference_time = inference_time
        self.runners = runners
        self.report_metrics = True
        self._public_host = public_host
        self.lock = threading.RLock()
        self._pool = ThreadPoolExecutor(model_threads, thread_name_prefix="fal-emu-model")
        self._seq = itertools.count()
        self.wall_offset = time.time() - time.monotonic()
        self.on_complete: Callable[[RequestState], None] | None = None
        self._reset_locked()

    # -- bookkeeping -------------------------------------------------------------------------

    def _reset_locked(self) -> None:
        self.requests: dict[str, RequestState] = {}
        self.ledger: list[dict[str, Any]] = []
        self.outcomes: deque[str] = deque()
        self.media: dict[str, str] = {}  # media file name → request id
        self._waiting: list[RequestState] = []  # by seq; live part starts at _head
        self._head = 0
        self._running: list[tuple[float, int, RequestState]] = []  # heap of (end, seq, req)
        self._awaiting_model: dict[str, RequestState] = {}
        self._deadlines: list[tuple[float, int, RequestState]] = []
        self._busy = 0
        self._clock = 0.0
        self.webhooks_pending = 0  # accepted requests with a webhook, not yet completed

    def reset(self) -> None:
        with self.lock:
            self._reset_locked()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def set_runners(self, runners: int | None) -> None:
        """Change the runner count from now on (the replay never starts work in the past)."""
        now = time.monotonic()
        with self.lock:
            self.advance(now)
            self.runners = runners
            self._clock = max(self._clock, now)

    def wall(self, t: float | None) -> float | None:
        return None if t is None else t + self.wall_offset

    # -- submit ------------------------------------------------------------------------------

    def waiting_count(self) -> int:
        with self.lock:
            self.advance()
            return len(self._waiting) - self._head

    def accept(
        self,
        *,
        endpoint: str,
        base: str,
        arguments: Any,
        auth: str | None,
        webhook_url: str | None,
        start_timeout: float | None,
    ) -> tuple[RequestState, int]:
        """Create a billable request; returns it and its queue position."""
        now = time.monotonic()
        with self.lock:
            self.advance(now)
            outcome = self.outcomes.popleft() if self.outcomes else "ok"
            if outcome not in OUTCOMES:
                raise ValueError(f"unknown outcome {outcome!r}")
            req = RequestState(
                request_id=new_request_id(),
                endpoint=endpoint,
                base=base,
                input=arguments,
                auth=auth,
                outcome=outcome,
                seq=next(self._seq),
                submitted_at=now,
                eligible_at=now + self.queue_time,
                webhook_url=webhook_url,
                start_deadline=None if start_timeout is None else now + start_timeout,
            )
            self.requests[req.request_id] = req
            self.ledger.append(
                {
                    "request_id": req.request_id,
                    "endpoint": endpoint,
                    "input": arguments,
                    "auth": auth,
                    "accepted_at": now + self.wall_offset,
                }
            )
            self._waiting.append(req)
            if webhook_url:
                self.webhooks_pending += 1
            if req.start_deadline is not None:
                heapq.heappush(self._deadlines, (req.start_deadline, req.seq, req))
            position = len(self._waiting) - self._head - 1
            if outcome == "ok":
                self._pool.submit(self._run_model, req)
            else:
                req.model_done_at = now
            self.advance(now)
            return req, position

    def _run_model(self, req: RequestState) -> None:
        output: model.ModelOutput | None = None
        error: model.ModelValidationError | None = None
        try:
            output = model.run(req.input)
        except model.ModelValidationError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - a model bug must not wedge the request
            error = model.ModelValidationError(f"Failed to process the image: {exc}", "image_load_error")
        with self.lock:
            req.output, req.model_error = output, error
            if output is not None:
                req.media_name = f"{uuid.uuid4().hex[:12]}.png"
                self.media[req.media_name] = req.request_id
            req.model_done_at = time.monotonic()
            if self._awaiting_model.pop(req.request_id, None) is not None:
                assert req.nominal_end is not None
                end = max(req.nominal_end, req.model_done_at)
                heapq.heappush(self._running, (end, req.seq, req))

    # -- the event replay --------------------------------------------------------------------

    def _head_waiting(self) -> RequestState | None:
        return self._waiting[self._head] if self._head < len(self._waiting) else None

    def _pop_head(self) -> None:
        self._head += 1
        if self._head > 1024 and self._head * 2 > len(self._waiting):
            del self._waiting[: self._head]
            self._head = 0

    def _remove_waiting(self, req: RequestState) -> None:
        seqs = _SeqView(self._waiting)
        i = bisect.bisect_left(seqs, req.seq, lo=self._head)
        if i < len(self._waiting) and self._waiting[i] is req:
            del self._waiting[i]

    def queue_position(self, req: RequestState) -> int:
        return bisect.bisect_left(_SeqView(self._waiting), req.seq, lo=self._head) - self._head

    def advance(self, now: float | None = None) -> None:
        """Replay start/finish/deadline events up to ``now`` in time order."""
        if now is None:
            now = time.monotonic()
        with self.lock:
            while True:
                while self._deadlines and self._deadlines[0][2].status != IN_QUEUE:
                    heapq.heappop(self._deadlines)
                t_finish = self._running[0][0] if self._running else math.inf
                t_deadline = self._deadlines[0][0] if self._deadlines else math.inf
                head = self._head_waiting()
                t_start = math.inf
                if head is not None and (self.runners is None or self._busy < self.runners):
                    t_start = max(head.eligible_at, self._clock)
                t = min(t_finish, t_start, t_deadline)
                if t > now:
                    return
                self._clock = max(self._clock, t)
                if t == t_finish:
                    self._on_finish_event(t)
                elif t == t_start:
                    assert head is not None
                    self._start(head, t)
                else:
                    _, _, req = heapq.heappop(self._deadlines)
                    self._remove_waiting(req)
                    req.timed_out = True
                    self._complete(req, t)

    def _start(self, req: RequestState, t: float) -> None:
        self._pop_head()
        req.status = IN_PROGRESS
        req.started_at = t
        self._busy += 1
        if req.outcome == "stuck":
            return  # holds its runner until cancelled
        req.nominal_end = t + self.latency
        heapq.heappush(self._running, (req.nominal_end, req.seq, req))

    def _on_finish_event(self, t: float) -> None:
        _, _, req = heapq.heappop(self._running)
        if req.status != IN_PROGRESS:
            return  # cancelled meanwhile; its runner was released then
        if req.model_done_at is None:
            self._awaiting_model[req.request_id] = req  # re-queued by _run_model
            return
        if req.model_done_at > t:
            heapq.heappush(self._running, (req.model_done_at, req.seq, req))
            return
        self._busy -= 1
        self._complete(req, t)

    def _complete(self, req: RequestState, t: float) -> None:
        req.status = COMPLETED
        req.completed_at = t
        if req.started_at is not None:
            req.inference_time = (
                self.inference_time if self.inference_time is not None else t - req.started_at
            )
        req.result = self._make_result(req)
        if req.webhook_url:
            self.webhooks_pending -= 1
        if self.on_complete is not None:
            self.on_complete(req)

    def _make_result(self, req: RequestState) -> Result:
        if req.cancelled:
            req.error, req.error_type = "Request was cancelled by the client", "client_cancelled"
            return _infra_error(499, req.error, req.error_type)
        if req.timed_out:
            req.error, req.error_type = "Request timed out before it started", "request_timeout"
            res = _infra_error(504, req.error, req.error_type)
            res.headers["X-Fal-Request-Timeout-Type"] = "user"
            return res
        if req.outcome == "runner_error":
            req.error, req.error_type = "Internal server error from the runner", "runner_server_error"
            return _infra_error(500, req.error, req.error_type)
        if req.outcome == "validation_error" or req.model_error is not None:
            detail = req.model_error.detail() if req.model_error is not None else VALIDATION_DETAIL
            # A model error: the status shows `error`, but no infrastructure error_type.
            req.error = "Invalid status code: 422"
            return Result(422, {"detail": detail})
        assert req.output is not None and req.media_name is not None
        out = req.output
        if isinstance(req.input, dict) and req.input.get("sync_mode"):
            import base64

            url = "data:image/png;base64," + base64.b64encode(out.png).decode("ascii")
        else:
            url = f"https://{self._public_host()}/media/{req.media_name}"
        image = {
            "url": url,
            "content_type": "image/png",
            "file_name": req.media_name,
            "file_size": len(out.png),
            "width": out.width,
            "height": out.height,
        }
        return Result(200, {"image": image})

    # -- cancel ------------------------------------------------------------------------------

    def cancel(self, req: RequestState) -> bool:
        """False if already completed; otherwise the request is now COMPLETED (cancelled)."""
        now = time.monotonic()
        with self.lock:
            self.advance(now)
            if req.status == COMPLETED:
                return False
            req.cancelled = True
            if req.status == IN_QUEUE:
                self._remove_waiting(req)
            else:
                self._busy -= 1
                self._awaiting_model.pop(req.request_id, None)
            self._complete(req, max(now, self._clock))
            return True

    # -- reads -------------------------------------------------------------------------------

    def get(self, request_id: str) -> RequestState | None:
        with self.lock:
            self.advance()
            return self.requests.get(request_id)

    def status_body(self, req: RequestState, logs: bool) -> dict[str, Any]:
        with self.lock:
            self.advance()
            body: dict[str, Any] = {"status": req.status, "request_id": req.request_id}
            body.update(self.urls(req))
            if req.status == IN_QUEUE:
                body["queue_position"] = self.queue_position(req)
            body["logs"] = self._logs(req) if logs else None
            body["metrics"] = {}
            if req.status == COMPLETED:
                if self.report_metrics and req.inference_time is not None:
                    body["metrics"] = {"inference_time": req.inference_time}
                if req.error is not None:
                    body["error"] = req.error
                if req.error_type is not None:
                    body["error_type"] = req.error_type
            return body

    def urls(self, req: RequestState) -> dict[str, str]:
        base = f"https://{self._public_host()}/{req.base}/requests/{req.request_id}"
        return {"response_url": base, "status_url": base + "/status", "cancel_url": base + "/cancel"}

    def _logs(self, req: RequestState) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []

        def add(t: float, message: str, level: str = "INFO") -> None:
            stamp = datetime.fromtimestamp(t + self.wall_offset, timezone.utc).replace(tzinfo=None)
            entries.append(
                {"message": message, "level": level, "source": "USER", "timestamp": stamp.isoformat()}
            )

        if req.started_at is not None:
            add(req.started_at, "Loading image and removing background")
        if req.completed_at is not None:
            if req.error is not None:
                add(req.completed_at, f"Request failed: {req.error}", "ERROR")
            else:
                add(req.completed_at, f"Done in {req.run_seconds or 0:.3f}s")
        return entries

    def by_media(self, name: str) -> RequestState | None:
        with self.lock:
            rid = self.media.get(name)
            return None if rid is None else self.requests.get(rid)


def _infra_error(code: int, detail: str, error_type: str) -> Result:
    return Result(code, {"detail": detail, "error_type": error_type}, {"X-Fal-Error-Type": error_type})


class _SeqView:
    """A read-only sequence of the waiting requests' ``seq`` numbers, for bisect."""

    __slots__ = ("_reqs",)

    def __init__(self, reqs: list[RequestState]) -> None:
        self._reqs = reqs

    def __len__(self) -> int:
        return len(self._reqs)

    def __getitem__(self, i: int) -> int:
        return self._reqs[i].seq


class RequestsView(Mapping[str, RequestState]):
    """``emulator.requests``: a live mapping; every lookup first brings states up to date."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getitem__(self, request_id: str) -> RequestState:
        req = self._store.get(request_id)
        if req is None:
            raise KeyError(request_id)
        return req

    def __iter__(self) -> Iterator[str]:
        with self._store.lock:
            return iter(list(self._store.requests))

    def __len__(self) -> int:
        return len(self._store.requests)

    def __repr__(self) -> str:
        return f"RequestsView({len(self)} requests)"


def dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
