"""fal's webhooks, received: verify the Ed25519 signature (fal-queue-protocol.md §8) against
fal's JWKS, so a request whose id never reached Postgres can be adopted, not bought again.

Message = request_id + "\\n" + user_id + "\\n" + timestamp + "\\n" + hex(sha256(raw body));
timestamps more than 300 s off are refused; the JWKS is cached for at most 24 h (and fetched
again, at most once a minute, when no cached key verifies: keys rotate). Fetches are one at a
time and failures back off (JwksCache), so a hanging JWKS host cannot tie up the API.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from orchestrator.errors import CallbackKeysUnavailable, WebhookRejected

log = logging.getLogger("orchestrator.backends.fal.webhook")

TOLERANCE_SECONDS = 300
JWKS_MAX_AGE = 24 * 3600
JWKS_REFETCH_AFTER = 60
JWKS_FETCH_TIMEOUT = 5.0
# After a failed fetch, no other is tried for this long, doubling per failure up to the cap.
JWKS_BACKOFF_FIRST = 5.0
JWKS_BACKOFF_MAX = 300.0


def _fetch_keys(url: str) -> list[bytes]:
    response = httpx.get(url, timeout=JWKS_FETCH_TIMEOUT)
    response.raise_for_status()
    keys = []
    for jwk in response.json().get("keys", []):
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and jwk.get("x"):
            text = str(jwk["x"])
            keys.append(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    return keys


class JwksCache:
    """fal's keys for one JWKS URL. One fetch at a time: while one runs, other callers use the
    cached keys or, with none, are refused at once (no thread waits on a hanging host). A failed
    fetch is remembered: none is tried again before its backoff has passed."""

    def __init__(self, url: str, fetch: Callable[[str], list[bytes]] = _fetch_keys,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()  # guards the fields below, never held during a fetch
        self._keys: list[bytes] | None = None
        self._fetched_at = 0.0
        self._fetching = False
        self._failures = 0
        self._retry_at = 0.0

    def keys(self, *, refresh: bool) -> list[bytes]:
        now = self._clock()
        with self._lock:
            cached = self._keys
            if cached is not None:
                age = now - self._fetched_at
                if age < JWKS_MAX_AGE and not (refresh and age > JWKS_REFETCH_AFTER):
                    return cached
            if self._fetching or now < self._retry_at:
                if cached is not None:
                    return cached
                wait = max(self._retry_at - now, 1.0)
                raise CallbackKeysUnavailable("fal's signing keys are unavailable; retry later", wait)
            self._fetching = True
        try:
            keys = self._fetch(self.url)
        except Exception as exc:
            with self._lock:
                self._fetching = False
                self._failures += 1
                backoff = min(JWKS_BACKOFF_MAX, JWKS_BACKOFF_FIRST * 2 ** (self._failures - 1))
                self._retry_at = self._clock() + backoff
            log.warning("fetching fal's JWKS failed (%s); next try in %.0f s",
                        type(exc).__name__, backoff)
            if cached is not None:
                return cached
            raise CallbackKeysUnavailable("fal's signing keys are unavailable; retry later",
                                  backoff) from None
        with self._lock:
            self._fetching = False
            self._failures = 0
            self._retry_at = 0.0
            self._keys, self._fetched_at = keys, self._clock()
        return keys


_caches_lock = threading.Lock()
_caches: dict[str, JwksCache] = {}


def jwks_cache(url: str) -> JwksCache:
    with _caches_lock:
        return _caches.setdefault(url, JwksCache(url))


def _keys(url: str, *, refresh: bool) -> list[bytes]:
    return jwks_cache(url).keys(refresh=refresh)


def _signed_by(keys: list[bytes], signature: bytes, message: bytes) -> bool:
    for raw in keys:
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(signature, message)
        except (InvalidSignature, ValueError):
            continue
        return True
    return False


def verify(headers: Mapping[str, str], body: bytes, jwks_url: str,
           now: float | None = None) -> str:
    """The webhook's request id, if fal signed it; raises WebhookRejected otherwise."""
    names = ("request-id", "user-id", "timestamp", "signature")
    values = [headers.get(f"x-fal-webhook-{name}") for name in names]
    if any(not v for v in values):
        raise WebhookRejected("missing X-Fal-Webhook-* signature headers")
    request_id, user_id, timestamp, signature_hex = (str(v) for v in values)
    try:
        skew = abs((time.time() if now is None else now) - int(timestamp))
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        raise WebhookRejected("malformed timestamp or signature") from None
    if skew > TOLERANCE_SECONDS:
        raise WebhookRejected(f"timestamp is {skew:.0f} s off (more than {TOLERANCE_SECONDS})")
    message = "\n".join([request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()])
    if not (_signed_by(_keys(jwks_url, refresh=False), signature, message.encode())
            or _signed_by(_keys(jwks_url, refresh=True), signature, message.encode())):
        raise WebhookRejected("the signature does not verify with fal's keys")
    try:
        named = json.loads(body).get("request_id")
    except (ValueError, AttributeError):
        named = None
    if named is not None and named != request_id:
        raise WebhookRejected("the body names another request than the signed header")
    return request_id
