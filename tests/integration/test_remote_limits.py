"""The shared limits of a remote backend, in the real Redis: a submit that finds every slot
taken waits for one and is woken by its release, as a semaphore's waiter is."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from orchestrator.jobs.remote import limits as limits_module
from orchestrator.jobs.remote.limits import RemoteLimits


def _limits(broker_url: str, *, max_in_flight: int = 1, per_second: float = 1000) -> RemoteLimits:
    return RemoteLimits(broker_url, f"test-{uuid.uuid4().hex[:8]}", max_in_flight=max_in_flight,
                        max_per_second=per_second)


def test_a_waiting_submit_takes_the_slot_another_releases(
    broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits_module, "_WAKE_SECONDS", 30.0)  # only a release can wake it
    limits = _limits(broker_url)
    assert limits.try_acquire("a")
    assert not limits.try_acquire("b")  # no wait: refused at once
    releaser = threading.Timer(0.3, limits.release, args=("a",))
    releaser.start()
    started = time.monotonic()
    try:
        assert limits.try_acquire("b", wait_seconds=10)
    finally:
        releaser.cancel()
    assert time.monotonic() - started < 5  # woken by the release, not by its own deadline
    assert limits.in_flight() == 1


def test_a_wait_ends_at_its_deadline_when_nothing_is_released(broker_url: str) -> None:
    limits = _limits(broker_url)
    assert limits.try_acquire("a")
    started = time.monotonic()
    assert not limits.try_acquire("b", wait_seconds=0.3)
    assert time.monotonic() - started >= 0.3
    assert limits.in_flight() == 1


def test_a_release_with_nobody_waiting_leaves_at_most_the_limit_of_tokens(broker_url: str) -> None:
    limits = _limits(broker_url, max_in_flight=3)
    for round_ in range(5):
        for key in "abc":
            assert limits.try_acquire(f"{key}{round_}")
        for key in "abc":
            limits.release(f"{key}{round_}")
    limits.release("never-held")  # no slot, no token
    assert limits.redis.llen(limits.released_key) == 3
    assert 0 < limits.redis.ttl(limits.released_key) <= 60


def test_over_the_submit_rate_does_not_wait(broker_url: str) -> None:
    limits = _limits(broker_url, max_in_flight=100, per_second=1)
    while time.time() % 1 > 0.2:  # both calls inside one one-second window
        time.sleep(0.02)
    assert limits.try_acquire("first")
    started = time.monotonic()
    assert not limits.try_acquire("second", wait_seconds=10)
    assert time.monotonic() - started < 1
    assert limits.in_flight() == 1
