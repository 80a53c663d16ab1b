"""Limits shared by every worker, kept in Redis (Celery's rate_limit is per worker).

- requests in flight at fal: a sorted set of attempt ids, added atomically below the limit and
  removed when the attempt ends; entries older than a day are dropped as leaks;
- submissions per second: a counter per one-second window.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache

import redis

_ACQUIRE = """
local key, limit, now, member, stale = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - stale)
if redis.call('ZSCORE', key, member) then return 1 end
if redis.call('ZCARD', key) >= limit then return 0 end
redis.call('ZADD', key, now, member)
return 1
"""

_RATE = """
local key, limit = KEYS[1], tonumber(ARGV[1])
local n = redis.call('INCR', key)
if n == 1 then redis.call('EXPIRE', key, 2) end
if n > limit then return 0 end
return 1
"""

log = logging.getLogger("orchestrator.fal.limits")

IN_FLIGHT_KEY = "orchestrator:fal:in_flight"
RATE_KEY = "orchestrator:fal:submits:{}"
UNAVAILABLE_KEY = "orchestrator:fal:unavailable:{}"


@lru_cache(maxsize=4)
def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


class FalLimits:
    def __init__(self, broker_url: str, *, max_in_flight: int, max_per_second: float) -> None:
        self.redis = redis_client(broker_url)
        self.max_in_flight = max_in_flight
        self.max_per_second = max_per_second

    def try_acquire(self, attempt_key: str) -> bool:
        """Reserve an in-flight slot and a submit in this second; False when over a limit."""
        if not self.redis.eval(_ACQUIRE, 1, IN_FLIGHT_KEY, self.max_in_flight, time.time(),
                               attempt_key, 86400):
            return False
        window = RATE_KEY.format(int(time.time()))
        if not self.redis.eval(_RATE, 1, window, max(1, int(self.max_per_second))):
            self.release(attempt_key)
            return False
        return True

    def release(self, attempt_key: str) -> None:
        try:
            self.redis.zrem(IN_FLIGHT_KEY, attempt_key)
        except redis.RedisError as exc:  # the job's outcome is stored; the slot ages out
            log.warning("could not release fal slot %s (Redis: %s)", attempt_key, exc)

    def in_flight(self) -> int:
        return int(self.redis.zcard(IN_FLIGHT_KEY))


def mark_key_refused(broker_url: str, fingerprint: str, message: str) -> None:
    """fal refused this key: report the backend unavailable until the key changes."""
    redis_client(broker_url).set(UNAVAILABLE_KEY.format(fingerprint), message, ex=7 * 86400)


def key_refusal(broker_url: str, fingerprint: str) -> str | None:
    try:
        value = redis_client(broker_url).get(UNAVAILABLE_KEY.format(fingerprint))
    except redis.RedisError:
        return None
    if not value:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
