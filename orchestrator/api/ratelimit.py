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

# ARGV[2] requests of one key and then of its tenant, in one round trip. They take the next
# ARGV[2] places in the key's window; only those within the key's limit (ARGV[1]) are counted
# in the tenant's window, as that many separate checks would. Returns both totals and how many
# went on to the tenant.
_COUNT_BOTH = """
local k = tonumber(ARGV[2])
local n = redis.call('INCRBY', KEYS[1], k)
if n == k then redis.call('EXPIRE', KEYS[1], 2) end
local through = math.max(0, math.min(k, math.floor(tonumber(ARGV[1])) - (n - k)))
if through == 0 then return {n, 0, 0} end
local m = redis.call('INCRBY', KEYS[2], through)
if m == through then redis.call('EXPIRE', KEYS[2], 2) end
return {n, m, through}
"""

# Most requests counted in one round trip (a batch is the requests that arrived during the
# previous round trip of the same key and tenant).
MAX_BATCH = 1000


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
        self._pairs = _PairCounter()  # used on the key limiter: see allow_key_and_tenant

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


Outcome = tuple[bool, bool]
_Group = tuple[str, str, float, float]  # the key's window, the tenant's, their limits


class _PairCounter:
    """Counts a key's requests and its tenant's in Redis, the requests that arrive while a
    count of the same key and tenant is under way together in the next one (no timer: a lone
    request is counted at once)."""

    def __init__(self) -> None:
        self._waiting: dict[_Group, list[asyncio.Future[Outcome]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # referenced while they run

    async def count(self, client: redis.asyncio.Redis, group: _Group) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.get(group)
        if waiting is None:
            self._waiting[group] = [future]
            task = asyncio.get_running_loop().create_task(self._drain(client, group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            waiting.append(future)
        return await future

    async def _drain(self, client: redis.asyncio.Redis, group: _Group) -> None:
        """Count the group's waiting requests, batch after batch, until none wait; while a
        batch is counted, the group's entry collects the next one."""
        batch: list[asyncio.Future[Outcome]] = []
        try:
            while waiting := self._waiting[group]:
                batch, self._waiting[group] = waiting[:MAX_BATCH], waiting[MAX_BATCH:]
                outcomes = await self._counted(client, group, len(batch))
                for future, outcome in zip(batch, outcomes, strict=True):
                    if not future.done():
                        future.set_result(outcome)
        except BaseException as exc:  # cancelled, or a bug: no caller is left waiting
            for future in [*batch, *self._waiting.get(group, [])]:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            raise
        finally:
            self._waiting.pop(group, None)

    @staticmethod
    async def _counted(client: redis.asyncio.Redis, group: _Group, size: int) -> list[Outcome]:
        key, tenant, key_limit, tenant_limit = group
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                n, m, through = await client.eval(_COUNT_BOTH, 2, key, tenant, repr(key_limit),
                                                  str(size))
        except (redis.RedisError, OSError, TimeoutError) as exc:
            # The limiter must not turn a Redis blip into an outage.
            log.warning("rate limit not checked, Redis unavailable: %s", type(exc).__name__)
            return [(True, True)] * size
        # This batch's places in the key's window, and (for those within the key's limit, the
        # first ``through`` of them) in the tenant's.
        first_key, first_tenant = int(n) - size + 1, int(m) - int(through) + 1
        return [(True, first_tenant + i <= tenant_limit) if first_key + i <= key_limit
                else (False, True) for i in range(size)]


async def allow_key_and_tenant(keys: RateLimiter, tenants: RateLimiter, key_id: int | str,
                               tenant: str) -> Outcome:
    """(within the key's limit, within the tenant's limit): the tenant is counted only when the
    key is within its own. One Redis round trip where both count in the same Redis, shared by
    the requests of the same key that arrive meanwhile."""
    client = keys._async
    if client is None or tenants._async is None or keys.redis_url != tenants.redis_url:
        if not await keys.allow(key_id):
            return False, True
        return True, await tenants.allow(tenant)
    window = int(time.time())
    return await keys._pairs.count(client, (keys._key(key_id, window), tenants._key(tenant, window),
                                       float(keys.per_second), float(tenants.per_second)))
