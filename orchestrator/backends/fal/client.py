"""Calls to fal's queue API through ``fal_client``, with every HTTP failure translated into the
orchestrator's error tree here, in one place.

The submit is sent exactly once: fal has no idempotency key, and fal_client's own request
helper re-sends a POST whose reply was lost (timeouts, dropped connections, 409, ingress 5xx),
which would buy the same job twice. So the submit goes through fal_client's configured HTTP
client (its auth, host and TLS settings) but not through its retry loop, and every failure is
classified as *not accepted* (safe to try again) or *outcome unknown*. Status, result and
cancel are safe to repeat and use fal_client's public API, retries included.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
from dataclasses import dataclass
from typing import Any, NoReturn

import fal_client
import httpx
from asyncstdlib import cached_property as async_cached_property
from fal_client import client as fal_queue

from orchestrator.errors import (
    BackendBusy,
    BackendRejected,
    CredentialsRefused,
    ProviderCallFailed,
    RemoteRunFailed,
    SubmitReplyLost,
)

_lock = threading.Lock()
_sync_clients: dict[str, fal_client.SyncClient] = {}

# fal's queue statuses (fal-queue-protocol.md §4).
IN_QUEUE, IN_PROGRESS, COMPLETED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED"

# Failures fal reports for the input itself: retrying cannot help.
VALIDATION_ERROR_TYPES = frozenset({
    "image_too_small", "image_too_large", "image_load_error", "file_download_error",
    "face_detection_error", "file_too_large", "content_policy_violation", "greater_than",
    "greater_than_equal", "less_than", "less_than_equal", "multiple_of", "sequence_too_short",
    "sequence_too_long", "one_of", "feature_not_supported", "invalid_archive",
    "archive_file_count_below_minimum", "value_error.missing", "bad_request",
})


def key_fingerprint(key: str) -> str:
    """A short, non-reversible name for a key, safe for logs and Redis keys."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _sync_client(key: str, timeout: float) -> fal_client.SyncClient:
    cache_key = f"{key_fingerprint(key)}:{timeout}"
    with _lock:
        client = _sync_clients.get(cache_key)
        if client is None:
            client = fal_client.SyncClient(key=key, default_timeout=timeout)
            _sync_clients[cache_key] = client
        return client


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list):
            return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        if detail:
            return str(detail)
    return str(body)[:300]


def _is_ingress(response: httpx.Response) -> bool:
    return "x-fal-request-id" not in response.headers


def credentials_refused(code: int, detail: object) -> CredentialsRefused:
    return CredentialsRefused(f"fal refused the credentials in FAL_KEY (HTTP {code}: {detail})")


def submit_once(key: str, endpoint: str, arguments: dict[str, Any], *, timeout: float,
                webhook_url: str | None = None) -> tuple[str, str, int | None]:
    """POST the submission once; (request id, status, queue position). Raises BackendBusy,
    BackendRejected, CredentialsRefused or SubmitReplyLost."""
    http: httpx.Client = _sync_client(key, timeout)._client
    url = fal_queue.QUEUE_URL_FORMAT + endpoint
    params = {"fal_webhook": webhook_url} if webhook_url else None
    try:
        response = http.post(url, json=arguments, params=params, timeout=timeout)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol) as exc:
        raise BackendBusy(f"could not connect to fal: {exc!r}") from None
    except (httpx.TimeoutException, httpx.TransportError) as exc:
        raise SubmitReplyLost(f"the connection failed after the submit was sent: {exc!r}") from None

    code = response.status_code
    if code < 300:
        try:
            data = response.json()
            return (str(data["request_id"]), str(data.get("status", IN_QUEUE)),
                    data.get("queue_position"))
        except (ValueError, KeyError, TypeError):
            raise SubmitReplyLost(f"fal answered {code} without a request id") from None
    detail = _detail(response)
    if code in (401, 403):
        raise credentials_refused(code, detail)
    if code == 504 and _is_ingress(response):
        # A gateway timeout in front of fal: the request may have been queued behind it.
        raise SubmitReplyLost("fal's gateway timed out (HTTP 504) after the submit was sent")
    if code == 429 or code >= 500:
        raise BackendBusy(f"fal did not accept the submit (HTTP {code}: {detail})")
    raise BackendRejected(f"fal rejected the input (HTTP {code}: {detail})")


@dataclass(unsafe_hash=True)
class PooledAsyncClient(fal_client.AsyncClient):
    """fal_client's AsyncClient with a connection pool of ``connections``, all kept alive.

    fal_client builds its httpx client with httpx's default pool (100 connections, 20 kept
    alive): a poller with more polls at once than that waits for connections, and opens (and
    TLS-handshakes) a new one for most calls."""

    connections: int = 100

    @async_cached_property(asyncio.Lock)
    async def _client(self) -> httpx.AsyncClient:
        auth = await self._auth
        pool = httpx.Limits(max_connections=self.connections,
                            max_keepalive_connections=self.connections)
        return httpx.AsyncClient(
            transport=fal_queue.AsyncBackupDomainTransport(
                transport=httpx.AsyncHTTPTransport(limits=pool)),
            headers={"Authorization": auth.header_value, "User-Agent": fal_queue.USER_AGENT},
            timeout=self.default_timeout,
        )


def async_client(key: str, *, connections: int = 100) -> fal_client.AsyncClient:
    return PooledAsyncClient(key=key, connections=connections)


def download_client(connections: int, timeout: float = 60.0) -> httpx.AsyncClient:
    """One client for every result download of a loop (a new client per file would build a
    TLS context and open a connection for each)."""
    pool = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(timeout=timeout, follow_redirects=True, limits=pool)


def raise_call_failed(exc: Exception, call: str, request_id: str) -> NoReturn:
    """A status/result/cancel call failed: translate it (the one place fal's HTTP errors of
    these calls become the orchestrator's)."""
    if isinstance(exc, fal_queue.FalClientHTTPError):
        code = exc.status_code
        if code in (401, 403):
            raise credentials_refused(code, exc.message) from None
        if code == 404 and call == "status":
            raise RemoteRunFailed(f"fal does not know request {request_id} (HTTP 404)") from None
        if code == 422 and call == "result":
            raise BackendRejected(f"fal rejected the input: {exc.message}") from None
        raise ProviderCallFailed(f"fal {call} call failed with HTTP {code}: {exc.message}") from None
    raise ProviderCallFailed(f"talking to fal failed: {exc!r}") from None


def is_already_completed(exc: fal_queue.FalClientHTTPError) -> bool:
    return exc.status_code == 400 and "ALREADY_COMPLETED" in exc.response.text


def cancel_once(key: str, endpoint: str, request_id: str) -> str:
    """Ask fal to cancel; returns 'cancelled', 'already_completed' or 'not_found'."""
    client = _sync_client(key, 30.0)
    try:
        client.cancel(endpoint, request_id)
    except fal_queue.FalClientHTTPError as exc:
        if is_already_completed(exc):
            return "already_completed"
        if exc.status_code == 404:
            return "not_found"
        raise_call_failed(exc, "cancel", request_id)
    except httpx.HTTPError as exc:
        raise_call_failed(exc, "cancel", request_id)
    return "cancelled"


async def download(url: str, *, max_bytes: int, timeout: float = 60.0,
                   http: httpx.AsyncClient | None = None) -> tuple[bytes, str]:
    """The result file, byte for byte, and its content type, through ``http`` (or a client of
    its own). Raises ProviderCallFailed."""
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        content_type = header[5:].split(";")[0] or "application/octet-stream"
        data = base64.b64decode(payload) if ";base64" in header else payload.encode()
        if len(data) > max_bytes:
            raise ProviderCallFailed(f"the result is {len(data)} bytes, over the limit of {max_bytes}")
        return data, content_type
    if http is None:
        async with download_client(1, timeout) as own:
            return await download(url, max_bytes=max_bytes, timeout=timeout, http=own)
    try:
        async with http.stream("GET", url, timeout=timeout) as response:
            if response.status_code >= 400:
                raise ProviderCallFailed(
                    f"downloading fal's result failed with HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > max_bytes:
                    raise ProviderCallFailed(f"the result is over the limit of {max_bytes} bytes")
            return bytes(body), response.headers.get("content-type", "").split(";")[0].strip()
    except httpx.HTTPError as exc:
        raise ProviderCallFailed(f"downloading fal's result failed: {exc!r}") from None
