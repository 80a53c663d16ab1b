"""Requests per second per key, and per tenant, counted in Redis so every API process shares
one limit."""

from __future__ import annotations

import asyncio
import logging
import time

import redis
import redis.asyncio
from starlette.concurrency import run_in_threadpool

from orchestrator.queue.broker import is_redis, redis_client

log = logging.getLogger("orchestrator.api.ratelimit")

# How long a count may take before the request goes through uncounted.
TIMEOUT_SECONDS = 2.0

# One round trip: count this request in the key's current one-second window.
_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], 2) end
return n
"""

# A key's request and then its tenant's, in one round trip; the tenant's window counts only
# requests its key's limit let through (as two separate checks would).
_COUNT_BOTH = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], 2) end
if n > tonumber(ARGV[1]) then return {n, 0} end
local m = redis.call('INCR', KEYS[2])
if m == 1 then redis.call('EXPIRE', KEYS[2], 2) end
return {n, m}
"""


class _LocalWindows:
    """Requests per bucket in the current one-second window, in this process."""

    def __init__(self) -> None:
        self._window = 0
        self._counts: dict[str, int] = {}

    def hit(self, key_id: str, window: int) -> int:
        # Called on the event loop only: no lock needed.
        if window != self._window:
            self._window, self._counts = window, {}
        self._counts[key_id] = self._counts.get(key_id, 0) + 1
        return self._counts[key_id]


class RateLimiter:
    """Counts on an asyncio Redis client while the app's lifespan holds one open (the server's
    case), else on the blocking client in a worker thread (an app driven without a lifespan).
    Without Redis (the embedded mode) the count is per API process."""

    def __init__(self, redis_url: str, per_second: float, scope: str = "") -> None:
        self.redis_url = redis_url
        self.per_second = per_second
        self.scope = scope  # "" for API keys (the key names kept from before), "tenant" ...
        self._async: redis.asyncio.Redis | None = None
        self._local = None if is_redis(redis_url) else _LocalWindows()

    async def start(self) -> None:
        if self._local is not None:
            return
        # No socket_timeout: redis-py would wrap every write in asyncio.wait_for (a task per
        # command, a sixth of a submit's CPU); each count has its own deadline instead.
        self._async = redis.asyncio.Redis.from_url(self.redis_url, socket_connect_timeout=2)

    async def stop(self) -> None:
        client, self._async = self._async, None
        if client is not None:
            await client.aclose()

    def _key(self, bucket: int | str, window: int) -> str:
        scope = f"{self.scope}:" if self.scope else ""
        return f"orchestrator:api:rate:{scope}{bucket}:{window}"

    async def allow(self, bucket: int | str) -> bool:
        """Count one request of ``bucket`` (a key's id, or a tenant's name)."""
        window = int(time.time())
        if self._local is not None:
            return self._local.hit(str(bucket), window) <= self.per_second
        key = self._key(bucket, window)
        try:
            if self._async is not None:
                async with asyncio.timeout(TIMEOUT_SECONDS):
                    count = await self._async.eval(_COUNT, 1, key)
            else:
                count = await run_in_threadpool(redis_client(self.redis_url).eval, _COUNT, 1, key)
        except (redis.RedisError, OSError, TimeoutError) as exc:
            # The limiter must not turn a Redis blip into an outage.
            log.warning("rate limit not checked, Redis unavailable: %s", type(exc).__name__)
            return True
        return int(count) <= self.per_second


async def allow_key_and_tenant(keys: RateLimiter, tenants: RateLimiter, key_id: int | str,
                               tenant: str) -> tuple[bool, bool]:
    """(within the key's limit, within the tenant's limit): the tenant is counted only when the
    key is within its own. One Redis round trip where both count in the same Redis."""
    client = keys._async
    if client is None or tenants._async is None or keys.redis_url != tenants.redis_url:
        if not await keys.allow(key_id):
            return False, True
        return True, await tenants.allow(tenant)
    window = int(time.time())
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            key_count, tenant_count = await client.eval(
                _COUNT_BOTH, 2, keys._key(key_id, window), tenants._key(tenant, window),
                repr(float(keys.per_second)))
    except (redis.RedisError, OSError, TimeoutError) as exc:
        log.warning("rate limit not checked, Redis unavailable: %s", type(exc).__name__)
        return True, True
    if int(key_count) > keys.per_second:
        return False, True
    return True, int(tenant_count) <= tenants.per_second
