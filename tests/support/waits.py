"""Waiting on conditions, never on the clock alone."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], *, timeout: float, interval: float = 0.05,
               what: str = "the condition") -> T:
    """Call ``predicate`` until it returns something truthy (returned); fail after ``timeout``
    seconds naming what was awaited and the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; "
                                 f"last saw {value!r}")
        time.sleep(interval)
