"""Limits of a remote backend shared by every worker, kept in Redis (Celery's rate_limit is
per worker), and the mark that its provider refused the credentials in use.

- requests in flight at the provider: a sorted set of job ids, added atomically below the limit
  and removed when the attempt ends; entries older than a day are dropped as leaks;
- submissions per second: a counter per one-second window.

A submit that finds every slot taken waits a little for one, as a semaphore's waiter would:
each release pushes a token on a list that waiters block on (``BLPOP``, longest waiter first).
A token only wakes a waiter, which then tries the atomic acquire again; tokens nobody takes are
trimmed to the limit's length and expire.
"""

from __future__ import annotations

import logging
import time

import redis

from orchestrator.queue.broker import redis_client

# Both limits in one script, one round trip: 1 taken, 0 every slot in use, -1 over the submit
# rate. A refusal by the submit rate drops the slot, held before or not (as a release would).
_ACQUIRE = """
local key, window = KEYS[1], KEYS[2]
local limit, now, member, stale = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local per_second = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - stale)
local held = redis.call('ZSCORE', key, member)
if not held and redis.call('ZCARD', key) >= limit then return 0 end
local n = redis.call('INCR', window)
if n == 1 then redis.call('EXPIRE', window, 2) end
if n > per_second then
  redis.call('ZREM', key, member)
  return -1
end
if not held then redis.call('ZADD', key, now, member) end
return 1
"""

_RELEASE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], '1')
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
  redis.call('EXPIRE', KEYS[2], 60)
end
return 1
"""

log = logging.getLogger("orchestrator.remote.limits")

# Per backend name (fal's keys are those of the first releases: no migration needed).
IN_FLIGHT_KEY = "orchestrator:{backend}:in_flight"
RELEASED_KEY = "orchestrator:{backend}:released"
RATE_KEY = "orchestrator:{backend}:submits:{second}"
UNAVAILABLE_KEY = "orchestrator:{backend}:unavailable:{fingerprint}"

# Each BLPOP waits at most this long (Redis takes fractional seconds; the client's socket
# timeout is 5 s), so a waiter notices its own deadline.
_WAKE_SECONDS = 1.0


class RemoteLimits:
    def __init__(self, broker_url: str, backend: str, *, max_in_flight: int,
                 max_per_second: float) -> None:
        self.redis = redis_client(broker_url)
        self.backend = backend
        self.key = IN_FLIGHT_KEY.format(backend=backend)
        self.released_key = RELEASED_KEY.format(backend=backend)
        self.max_in_flight = max_in_flight
        self.max_per_second = max_per_second
        self._acquire = self.redis.register_script(_ACQUIRE)  # EVALSHA: the body is sent once
        self._release = self.redis.register_script(_RELEASE)

    def _try(self, attempt_key: str) -> int:
        now = time.time()
        window = RATE_KEY.format(backend=self.backend, second=int(now))
        return int(self._acquire(keys=[self.key, window],
                                 args=[self.max_in_flight, now, attempt_key, 86400,
                                       max(1, int(self.max_per_second))]))

    def try_acquire(self, attempt_key: str, *, wait_seconds: float = 0.0) -> bool:
        """Reserve an in-flight slot and a submit in this second; False when over a limit.
        While every slot is in use, wait up to ``wait_seconds`` for one to be released (a
        refusal by the submit rate returns at once)."""
        deadline = time.monotonic() + wait_seconds
        while True:
            verdict = self._try(attempt_key)
            if verdict > 0:
                return True
            left = deadline - time.monotonic()
            if verdict < 0 or left <= 0:
                return False
            # At least 10 ms: Redis reads a timeout that rounds to 0 ms as "block forever".
            self.redis.blpop([self.released_key], timeout=max(0.01, min(left, _WAKE_SECONDS)))

    def release(self, attempt_key: str) -> None:
        try:
            self._release(keys=[self.key, self.released_key],
                          args=[attempt_key, max(1, self.max_in_flight)])
        except redis.RedisError as exc:  # the job's outcome is stored; the slot ages out
            log.warning("could not release %s slot %s (Redis: %s)", self.backend, attempt_key, exc)

    def in_flight(self) -> int:
        return int(self.redis.zcard(self.key))


def mark_key_refused(broker_url: str, backend: str, fingerprint: str, message: str) -> None:
    """The provider refused these credentials: report the backend unavailable until they change."""
    key = UNAVAILABLE_KEY.format(backend=backend, fingerprint=fingerprint)
    redis_client(broker_url).set(key, message, ex=7 * 86400)


def key_refusal(broker_url: str, backend: str, fingerprint: str) -> str | None:
    try:
        value = redis_client(broker_url).get(
            UNAVAILABLE_KEY.format(backend=backend, fingerprint=fingerprint))
    except redis.RedisError:
        return None
    if not value:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
