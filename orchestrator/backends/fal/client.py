"""Calls to fal's queue API through ``fal_client``.

The submit is sent exactly once: fal has no idempotency key, and fal_client's own request
helper re-sends a POST whose reply was lost (timeouts, dropped connections, 409, ingress 5xx),
which would buy the same job twice. So the submit goes through fal_client's configured HTTP
client (its auth, host and TLS settings) but not through its retry loop, and every failure is
classified as *not accepted* (safe to try again) or *outcome unknown*. Status, result and
cancel are safe to repeat and use fal_client's public API, retries included.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from dataclasses import dataclass
from typing import Any

import fal_client
import httpx
from fal_client import client as fal_queue

_lock = threading.Lock()
_sync_clients: dict[str, fal_client.SyncClient] = {}


def key_fingerprint(key: str) -> str:
    """A short, non-reversible name for a key, safe for logs and Redis keys."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Accepted:
    request_id: str
    status: str
    queue_position: int | None


class SubmitRefused(Exception):
    """fal did not accept the submission (or it never left): nothing was bought."""

    def __init__(self, message: str, *, retryable: bool, status_code: int | None = None,
                 credentials: bool = False, validation: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status_code = status_code
        self.credentials = credentials
        self.validation = validation


class SubmitOutcomeUnknown(Exception):
    """The submission may have reached fal, but no usable reply came back."""


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


def submit_once(key: str, endpoint: str, arguments: dict[str, Any], *, timeout: float,
                webhook_url: str | None = None) -> Accepted:
    """POST the submission once. Raises SubmitRefused or SubmitOutcomeUnknown."""
    http: httpx.Client = _sync_client(key, timeout)._client
    url = fal_queue.QUEUE_URL_FORMAT + endpoint
    params = {"fal_webhook": webhook_url} if webhook_url else None
    try:
        response = http.post(url, json=arguments, params=params, timeout=timeout)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol) as exc:
        raise SubmitRefused(f"could not connect to fal: {exc!r}", retryable=True) from None
    except (httpx.TimeoutException, httpx.TransportError) as exc:
        raise SubmitOutcomeUnknown(f"the connection failed after the submit was sent: {exc!r}") from None

    code = response.status_code
    if code < 300:
        try:
            data = response.json()
            return Accepted(
                request_id=str(data["request_id"]),
                status=str(data.get("status", "IN_QUEUE")),
                queue_position=data.get("queue_position"),
            )
        except (ValueError, KeyError, TypeError):
            raise SubmitOutcomeUnknown(f"fal answered {code} without a request id") from None
    detail = _detail(response)
    if code in (401, 403):
        raise SubmitRefused(
            f"fal refused the credentials in FAL_KEY (HTTP {code}: {detail})",
            retryable=False, status_code=code, credentials=True,
        )
    if code == 504 and _is_ingress(response):
        # A gateway timeout in front of fal: the request may have been queued behind it.
        raise SubmitOutcomeUnknown("fal's gateway timed out (HTTP 504) after the submit was sent")
    if code == 429 or code >= 500:
        raise SubmitRefused(f"fal did not accept the submit (HTTP {code}: {detail})",
                            retryable=True, status_code=code)
    raise SubmitRefused(f"fal rejected the input (HTTP {code}: {detail})",
                        retryable=False, status_code=code, validation=True)


def async_client(key: str) -> fal_client.AsyncClient:
    return fal_client.AsyncClient(key=key)


def cancel_once(key: str, endpoint: str, request_id: str) -> str:
    """Ask fal to cancel; returns 'cancelled', 'already_completed' or 'not_found'."""
    client = _sync_client(key, 30.0)
    try:
        client.cancel(endpoint, request_id)
    except fal_client.client.FalClientHTTPError as exc:
        if exc.status_code == 400 and "ALREADY_COMPLETED" in exc.response.text:
            return "already_completed"
        if exc.status_code == 404:
            return "not_found"
        raise
    return "cancelled"


async def download(url: str, *, max_bytes: int, timeout: float = 60.0) -> tuple[bytes, str]:
    """The result file, byte for byte, and its content type."""
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        content_type = header[5:].split(";")[0] or "application/octet-stream"
        data = base64.b64decode(payload) if ";base64" in header else payload.encode()
        if len(data) > max_bytes:
            raise ValueError(f"the result is {len(data)} bytes, over the limit of {max_bytes}")
        return data, content_type
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as http:
        async with http.stream("GET", url) as response:
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > max_bytes:
                    raise ValueError(f"the result is over the limit of {max_bytes} bytes")
            return bytes(body), response.headers.get("content-type", "").split(";")[0].strip()
