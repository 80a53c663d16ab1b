"""The per-key and per-tenant rate limits count concurrent requests in shared Redis round trips
(orchestrator.api.ratelimit): the outcomes must be those of one count per request, in order."""

from __future__ import annotations

import asyncio

import redis

from orchestrator.api.ratelimit import RateLimiter, allow_key_and_tenant


async def _burst(url: str, key_limit: float, tenant_limit: float,
                 calls: list[tuple[int, str]]) -> list[tuple[bool, bool]]:
    keys, tenants = RateLimiter(url, key_limit), RateLimiter(url, tenant_limit, scope="tenant")
    await keys.start()
    await tenants.start()
    try:
        return list(await asyncio.gather(*(allow_key_and_tenant(keys, tenants, key, tenant)
                                           for key, tenant in calls)))
    finally:
        await keys.stop()
        await tenants.stop()


def _sequential(key_limit: float, tenant_limit: float,
                calls: list[tuple[int, str]]) -> list[tuple[bool, bool]]:
    """One request after the other, as the unbatched limiter counts them."""
    per_key: dict[int, int] = {}
    per_tenant: dict[str, int] = {}
    out = []
    for key, tenant in calls:
        per_key[key] = per_key.get(key, 0) + 1
        if per_key[key] > key_limit:
            out.append((False, True))
            continue
        per_tenant[tenant] = per_tenant.get(tenant, 0) + 1
        out.append((True, per_tenant[tenant] <= tenant_limit))
    return out


def test_a_burst_is_counted_as_one_request_after_another(broker_url: str) -> None:
    # Two keys of tenant a, one of tenant b. Which of a tenant's concurrent requests come last
    # is a race (with or without batching): per key the outcomes are those of the sequence,
    # per tenant their numbers are.
    calls = [(1, "a"), (2, "a"), (1, "a"), (3, "b"), (1, "a"), (1, "a"), (2, "a"), (1, "a"),
             (2, "a"), (3, "b"), (2, "a"), (2, "a"), (3, "b")] * 3
    client = redis.Redis.from_url(broker_url)
    for _ in range(3):  # a window boundary may split the burst: then the counts are lower
        client.delete(*client.keys("orchestrator:api:rate:*") or ["none"])
        got = asyncio.run(_burst(broker_url, 5, 7.5, calls))
        if sorted(got) == sorted(_sequential(5, 7.5, calls)):
            break
    want = _sequential(5, 7.5, calls)
    assert sorted(got) == sorted(want)
    assert [ok for (key, _), (ok, _) in zip(calls, got, strict=True) if key == 1] == \
        [True] * 5 + [False] * 10
    for tenant in "ab":
        mine = [i for i, (_, t) in enumerate(calls) if t == tenant]
        assert sorted(got[i] for i in mine) == sorted(want[i] for i in mine)
    assert got.count((False, True)) > 0 and got.count((True, False)) > 0
    # The windows expire like the unbatched counts' (2 s).
    assert all(0 < client.ttl(k) <= 2 for k in client.keys("orchestrator:api:rate:*"))


def test_requests_arriving_during_a_count_share_the_next(broker_url: str) -> None:
    async def run() -> tuple[list[tuple[bool, bool]], int]:
        keys, tenants = RateLimiter(broker_url, 1000), RateLimiter(broker_url, 1000, "tenant")
        await keys.start()
        await tenants.start()
        assert keys._async is not None
        evals = 0
        original = keys._async.eval

        async def counting_eval(*args: object) -> object:
            nonlocal evals
            evals += 1
            return await original(*args)  # type: ignore[arg-type]

        keys._async.eval = counting_eval  # type: ignore[method-assign]
        try:
            got = await asyncio.gather(*(allow_key_and_tenant(keys, tenants, 9, "t")
                                         for _ in range(50)))
            return list(got), evals
        finally:
            await keys.stop()
            await tenants.stop()

    got, evals = asyncio.run(run())
    assert got == [(True, True)] * 50
    assert evals <= 2  # the first request's count, then everyone who arrived meanwhile
