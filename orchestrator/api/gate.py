"""Refuse unauthenticated work before it costs anything (issue 14.2).

* A request that carries a body (POST, PUT, PATCH) to an endpoint that needs a key is refused
  with 401 on its headers alone, before a byte of the body is read or parsed: a 30 MB JSON body
  without a valid key costs the event loop nothing.
* Failed authentication is rate-limited per client address (a token bucket in each API
  process): past the limit, 429 without a key lookup.
* Bodies are bounded per endpoint: only the endpoints that take images (data URIs, uploads)
  get the large limit; every other body gets a small one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator import backends
from orchestrator.auth.keys import Principal, authenticate, cached_principal, hash_key
from orchestrator.db.session import session_scope
from orchestrator.settings import Settings

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Signed by the provider, not by an API key: its own check (the signature) guards it.
KEYLESS_BODY_PATHS = frozenset(f"/v1/{name}/webhook" for name in backends.NAMES
                               if name not in backends.FAKES)
# The web console authenticates its forms itself (a signed session and a CSRF token; sign-in
# failures count against the same per-address limit); its bodies get the small limit.
CONSOLE_PREFIX = "/console/"
# Endpoints whose bodies carry images (data URIs or files): the large body limit.
IMAGE_BODY_PATHS = frozenset({"/fal-ai/imageutils/rembg", "/v1/batches", "/v1/uploads"})


def key_from(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() in ("key", "bearer") and value.strip():
        return value.strip()
    return None


class FailedAuthLimiter:
    """Failed authentications per client address: a bucket of ``burst`` that refills at
    ``per_minute``. In-process and on the event loop only (no lock)."""

    MAX_ADDRESSES = 100_000

    def __init__(self, per_minute: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def _tokens(self, address: str) -> float:
        tokens, at = self._buckets.get(address, (self.burst, self._clock()))
        return min(self.burst, tokens + (self._clock() - at) * self.rate)

    def blocked(self, address: str) -> bool:
        return self._tokens(address) < 1.0

    def failed(self, address: str) -> None:
        if len(self._buckets) >= self.MAX_ADDRESSES:
            self._buckets.clear()  # crude, but bounded: an attacker with many addresses resets it
        self._buckets[address] = (max(0.0, self._tokens(address) - 1.0), self._clock())


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


# Lookups under way, per event loop and key hash: when a key's cache entry expires, the
# requests that arrive before its lookup returns share that one lookup instead of each taking
# a worker thread and a database session (a burst every CACHE_SECONDS under load).
_lookups: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Future[Principal | None]] = {}


async def lookup_principal(settings: Settings, key: str) -> Principal | None:
    principal = cached_principal(key)
    if principal is not None:
        return principal

    def lookup() -> Principal | None:
        with session_scope(settings.database.url.get_secret_value()) as session:
            return authenticate(session, key)

    loop = asyncio.get_running_loop()
    slot = (loop, hash_key(key))
    pending = _lookups.get(slot)
    if pending is None:
        pending = _lookups[slot] = asyncio.ensure_future(run_in_threadpool(lookup))
        pending.add_done_callback(lambda _: _lookups.pop(slot, None))
    # A caller that goes away (a disconnect) does not cancel the others' lookup.
    return await asyncio.shield(pending)


async def _reply(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = ('{"detail":"%s"}' % detail).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


class AuthGate:
    """Authenticates body-bearing requests on their headers, before the body is read."""

    def __init__(self, app: ASGIApp, settings: Settings, failures: FailedAuthLimiter) -> None:
        self.app = app
        self.settings = settings
        self.failures = failures

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope.get("method") not in BODY_METHODS
                or scope.get("path") in KEYLESS_BODY_PATHS
                or str(scope.get("path", "")).startswith(CONSOLE_PREFIX)):
            await self.app(scope, receive, send)
            return
        address = client_address(scope)
        if self.failures.blocked(address):
            await _reply(send, 429, "too many failed authentications from this address",
                         [(b"retry-after", b"10")])
            return
        authorization = _header(scope, b"authorization")
        key = key_from(authorization.decode("latin-1") if authorization is not None else None)
        if key is None:
            self.failures.failed(address)
            await _reply(send, 401, "missing API key: send `Authorization: Key <key>`", [])
            return
        try:
            principal = await lookup_principal(self.settings, key)
        except (OperationalError, InterfaceError):
            # As the app answers it (a submit refused here was not accepted): retry later.
            await _reply(send, 503, "the database is unavailable; retry later",
                         [(b"retry-after", b"5")])
            return
        if principal is None:
            self.failures.failed(address)
            await _reply(send, 401, "invalid or revoked API key", [])
            return
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return bytes(value)
    return None


def body_limit_for(path: str, large: int, small: int) -> int:
    return large if path in IMAGE_BODY_PATHS else small


class BodyLimit:
    """Refuse bodies over the limit with 413, whether or not they declare their length; the
    limit is large only where images travel in the body."""

    def __init__(self, app: ASGIApp, large: int, small: int) -> None:
        self.app = app
        self.large = large
        self.small = small

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit_for(str(scope.get("path")), self.large, self.small)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(limit, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await _too_large(limit, send)


class _BodyTooLarge(Exception):
    pass


async def _too_large(limit: int, send: Send) -> None:
    await _reply(send, 413, f"the request body is over the limit of {limit} bytes", [])
