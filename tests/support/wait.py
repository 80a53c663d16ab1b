"""Waiting on a condition instead of sleeping and hoping it happened by then."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition a test waited for did not come true in time."""


def wait_until(
    predicate: Callable[[], T], *, timeout: float, interval: float = 0.1, what: str
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy; return it.

    Fails after ``timeout`` seconds with a message naming ``what`` was awaited and the last value
    the predicate returned. An exception from the predicate fails the wait at once (an assertion
    inside it is a test failure, not a reason to keep polling).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}; last seen: {value!r}")
        time.sleep(interval)


class _LoggingProcess(Protocol):
    proc: Any

    def text(self) -> str: ...


def wait_for_log(
    worker: _LoggingProcess, *needles: str, times: int = 1, timeout: float = 60,
    what: str | None = None,
) -> str:
    """Wait until the worker's log holds each of ``needles`` at least ``times`` times and Celery's
    `` ready.`` banner; fail at once, with the log, if the worker exits first."""

    def seen() -> str | None:
        text = worker.text()
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker exited with {worker.proc.returncode}:\n{text}")
        if " ready." in text and all(text.count(n) >= times for n in needles):
            return text
        return None

    try:
        return wait_until(seen, timeout=timeout, what=what or f"{needles!r} ×{times} in the worker log")
    except WaitTimeout as exc:
        raise WaitTimeout(f"{exc}\n--- worker log ---\n{worker.text()}") from None
