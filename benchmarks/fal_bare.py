"""The bare baseline of the fal benchmark: what a competent user writes without the orchestrator.

    python benchmarks/fal_bare.py -n 500 --limit 64 --poll-initial 0.5 --poll-max 10

One asyncio loop over ``fal_client.AsyncClient``: an ``asyncio.Semaphore`` of ``--limit``
requests in flight (held from the submit to the end of the download, as the pipeline holds its
slot), the pipeline's poll schedule (first poll ``--poll-initial`` s after the submit, then
×1.5 per poll up to ``--poll-max``, less often for a request deep in the queue), the result
fetched once COMPLETED is seen (as the pipeline does: fal_client's ``result()`` would ask for the
status once more) and its file downloaded through one shared ``httpx.AsyncClient``. fal_client builds its
own httpx client with httpx's default pool (100 connections, 20 kept alive); here both pools are
sized to the limit, so no request waits for a connection and none is re-handshaken for want of a
kept-alive one. Nothing is persisted. Needs ``FAL_KEY``, ``FAL_QUEUE_RUN_HOST`` and
``SSL_CERT_FILE`` when aimed at the emulator. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import time
from dataclasses import dataclass

import fal_client
import httpx
from asyncstdlib import cached_property as async_cached_property
from fal_client.client import USER_AGENT, AsyncBackupDomainTransport, Completed
from PIL import Image

ENDPOINT = "fal-ai/imageutils/rembg"


def images(n: int) -> list[bytes]:
    """``n`` distinct small PNGs (distinct bytes: the pipeline would merge equal inputs)."""
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (64 + i % 32, 48), (i % 255, 120, 200)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


@dataclass(unsafe_hash=True)
class PooledAsyncClient(fal_client.AsyncClient):
    """fal_client's AsyncClient with its connection pool sized to the requests in flight."""

    max_connections: int = 100

    @async_cached_property(asyncio.Lock)
    async def _client(self) -> httpx.AsyncClient:
        auth = await self._auth
        pool = httpx.Limits(max_connections=self.max_connections,
                            max_keepalive_connections=self.max_connections)
        return httpx.AsyncClient(
            transport=AsyncBackupDomainTransport(transport=httpx.AsyncHTTPTransport(limits=pool)),
            headers={"Authorization": auth.header_value, "User-Agent": USER_AGENT},
            timeout=self.default_timeout,
        )


class Loop:
    def __init__(self, limit: int, poll_initial: float, poll_max: float, connections: int) -> None:
        self.limit = asyncio.Semaphore(limit)
        self.connections = connections
        self.poll_initial = poll_initial
        self.poll_max = poll_max
        self.in_flight = 0
        self.peak = 0
        self.polls = 0

    def interval(self, polls: int, position: int | None) -> float:
        interval = self.poll_initial * (1.5 ** min(polls, 30))
        if position:
            interval = max(interval, 0.25 * position)
        return min(interval, self.poll_max)

    async def one(self, fal: fal_client.AsyncClient, http: httpx.AsyncClient, png: bytes) -> int:
        async with self.limit:
            uri = "data:image/png;base64," + base64.b64encode(png).decode()
            handle = await fal.submit(ENDPOINT, {"image_url": uri, "crop_to_bbox": False,
                                                 "sync_mode": False})
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                await asyncio.sleep(self.poll_initial)
                polls = 0
                while True:
                    status = await fal.status(ENDPOINT, handle.request_id, with_logs=False)
                    if isinstance(status, Completed):
                        break
                    polls += 1
                    self.polls += 1  # counted as the pipeline's attempts.polls: not COMPLETED
                    await asyncio.sleep(self.interval(polls, getattr(status, "position", None)))
                if status.error:
                    raise RuntimeError(f"request {handle.request_id} failed: {status.error}")
                # fal_client's result() would ask for the status once more: fetch it directly.
                reply = await handle.client.get(handle.response_url)
                reply.raise_for_status()
                response = await http.get(reply.json()["image"]["url"])
                response.raise_for_status()
                return len(response.content)
            finally:
                self.in_flight -= 1

    async def run(self, blobs: list[bytes], key: str) -> dict[str, float]:
        fal = PooledAsyncClient(key=key, max_connections=self.connections)
        pool = httpx.Limits(max_connections=self.connections,
                            max_keepalive_connections=self.connections)
        async with httpx.AsyncClient(timeout=60, limits=pool) as http:
            started = time.perf_counter()
            sizes = await asyncio.gather(*(self.one(fal, http, b) for b in blobs))
            seconds = time.perf_counter() - started
        await (await fal._client).aclose()
        done = sum(1 for s in sizes if s > 0)
        return {"seconds": seconds, "done": done, "cps": done / seconds, "peak_in_flight": self.peak,
                "polls_per_job": self.polls / max(done, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--limit", type=int, default=64, help="requests in flight")
    parser.add_argument("--poll-initial", type=float, default=0.5)
    parser.add_argument("--poll-max", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=None,
                        help="size of each connection pool (default: the limit)")
    args = parser.parse_args()
    loop = Loop(args.limit, args.poll_initial, args.poll_max, args.connections or args.limit)
    result = asyncio.run(loop.run(images(args.n), os.environ["FAL_KEY"]))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
