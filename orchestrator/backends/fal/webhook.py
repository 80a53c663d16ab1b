"""fal's webhooks, received: verify the Ed25519 signature (fal-queue-protocol.md §8) against
fal's JWKS, so a request whose id never reached Postgres can be adopted, not bought again.

Message = request_id + "\\n" + user_id + "\\n" + timestamp + "\\n" + hex(sha256(raw body));
timestamps more than 300 s off are refused; the JWKS is cached for at most 24 h (and fetched
again, at most once a minute, when no cached key verifies: keys rotate).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Mapping

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from orchestrator.errors import WebhookRejected

TOLERANCE_SECONDS = 300
JWKS_MAX_AGE = 24 * 3600
JWKS_REFETCH_AFTER = 60

_lock = threading.Lock()
_jwks: dict[str, tuple[float, list[bytes]]] = {}


def _fetch_keys(url: str) -> list[bytes]:
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    keys = []
    for jwk in response.json().get("keys", []):
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and jwk.get("x"):
            text = str(jwk["x"])
            keys.append(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    return keys


def _keys(url: str, *, refresh: bool) -> list[bytes]:
    now = time.monotonic()
    with _lock:
        cached = _jwks.get(url)
    if cached is not None:
        age = now - cached[0]
        if age < JWKS_MAX_AGE and not (refresh and age > JWKS_REFETCH_AFTER):
            return cached[1]
    keys = _fetch_keys(url)
    with _lock:
        _jwks[url] = (now, keys)
    return keys


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
