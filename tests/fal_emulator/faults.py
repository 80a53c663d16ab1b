"""Fault injection: a FIFO of faults per operation, each consumed by one matching call."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

OPS = frozenset({"submit", "status", "result", "cancel", "media"})

#: Every fault kind the emulator knows, and what it does.
KINDS: dict[str, str] = {
    "http_429": "429 JSON from fal (x-fal-request-id set): fal_client retries it",
    "http_500": "500 JSON from fal (x-fal-request-id set): fal_client does not retry it",
    "http_503": "503 JSON from fal (x-fal-request-id set): fal_client does not retry it",
    "ingress_502": "502 HTML 'nginx' page without x-fal-request-id: fal_client retries it",
    "ingress_503": "503 HTML 'nginx' page without x-fal-request-id: fal_client retries it",
    "ingress_504": "504 HTML 'nginx' page without x-fal-request-id: fal_client retries it",
    "drop": "read the request, then close the connection without a reply; no side effect",
    "drop_after_accept": "handle the call normally (a submit is accepted and billed), then close "
    "the connection without a reply",
    "slow": "sleep `delay` seconds (default 1.0), then handle the call normally",
    "not_found": "404 (result: the result is gone; media: the file is gone)",
}

HTTP_FAULT_STATUS = {
    "http_429": 429,
    "http_500": 500,
    "http_503": 503,
    "ingress_502": 502,
    "ingress_503": 503,
    "ingress_504": 504,
    "not_found": 404,
}


class Fault:
    """One injected fault, e.g. ``Fault("slow", delay=2.0)``."""

    __slots__ = ("kind", "params")

    def __init__(self, kind: str, **params: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(KINDS)}")
        self.kind = kind
        self.params: dict[str, Any] = params

    @property
    def delay(self) -> float:
        return float(self.params.get("delay", 1.0))

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"Fault({self.kind!r}{args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fault) and (self.kind, self.params) == (other.kind, other.params)

    def __hash__(self) -> int:
        return hash((self.kind, tuple(sorted(self.params.items()))))


class FaultQueue:
    """Thread-safe FIFO of pending faults per operation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Fault]] = {op: deque() for op in OPS}
        #: (op, fault) for every fault consumed, in order.
        self.fired: list[tuple[str, Fault]] = []

    def add(self, op: str, fault: Fault, times: int = 1) -> None:
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; known: {sorted(OPS)}")
        with self._lock:
            self._queues[op].extend([fault] * times)

    def take(self, op: str) -> Fault | None:
        with self._lock:
            queue = self._queues.get(op)
            if not queue:
                return None
            fault = queue.popleft()
            self.fired.append((op, fault))
            return fault

    def pending(self, op: str | None = None) -> int:
        with self._lock:
            if op is not None:
                return len(self._queues[op])
            return sum(len(q) for q in self._queues.values())

    def clear(self) -> None:
        with self._lock:
            for queue in self._queues.values():
                queue.clear()
            self.fired.clear()
