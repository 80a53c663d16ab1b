"""fal's JWKS for webhooks (issue 14.3): one fetch at a time, failures cached with backoff."""

from __future__ import annotations

import threading

import pytest

from orchestrator.backends.fal.webhook import JwksCache
from orchestrator.errors import CallbackKeysUnavailable as JwksUnavailable

KEY = b"k" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_failure_is_cached_and_backs_off() -> None:
    clock, calls = Clock(), []

    def failing(url: str) -> list[bytes]:
        calls.append(url)
        raise OSError("unreachable")

    cache = JwksCache("https://jwks", failing, clock)
    for _ in range(10):
        with pytest.raises(JwksUnavailable) as refused:
            cache.keys(refresh=False)
    assert len(calls) == 1 and refused.value.retry_after == pytest.approx(5)
    clock.now += 5
    with pytest.raises(JwksUnavailable) as refused:
        cache.keys(refresh=False)
    assert len(calls) == 2 and refused.value.retry_after == pytest.approx(10)  # doubled
    clock.now += 4
    with pytest.raises(JwksUnavailable):
        cache.keys(refresh=False)
    assert len(calls) == 2


def test_keys_are_cached_and_a_failed_refresh_keeps_them() -> None:
    clock, calls = Clock(), []
    answers: list[object] = [[KEY], OSError("down")]

    def fetch(url: str) -> list[bytes]:
        calls.append(url)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    cache = JwksCache("https://jwks", fetch, clock)
    assert cache.keys(refresh=False) == [KEY]
    assert cache.keys(refresh=True) == [KEY] and len(calls) == 1  # refetch at most once a minute
    clock.now += 61
    assert cache.keys(refresh=True) == [KEY] and len(calls) == 2  # failed: the cached keys
    assert cache.keys(refresh=True) == [KEY] and len(calls) == 2  # backing off


def test_concurrent_callers_make_one_fetch_and_do_not_wait() -> None:
    started, release, calls = threading.Event(), threading.Event(), []

    def hanging(url: str) -> list[bytes]:
        calls.append(url)
        started.set()
        release.wait(10)
        return [KEY]

    cache = JwksCache("https://jwks", hanging)
    first = threading.Thread(target=cache.keys, kwargs={"refresh": False})
    first.start()
    assert started.wait(5)
    for _ in range(45):
        with pytest.raises(JwksUnavailable):
            cache.keys(refresh=False)  # refused at once while the one fetch hangs
    release.set()
    first.join(5)
    assert len(calls) == 1
    assert cache.keys(refresh=False) == [KEY]
