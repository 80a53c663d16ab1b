"""Ed25519 webhook signatures in fal's scheme (fal-queue-protocol.md §8), so a receiver that
verifies fal's webhooks verifies ours with the orchestrator's JWKS instead of fal's.

Message = request_id + "\\n" + user_id + "\\n" + timestamp + "\\n" + hex(sha256(raw body)),
sent in ``X-Fal-Webhook-{Request-Id,User-Id,Timestamp,Signature}`` (signature in hex).
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from orchestrator.errors import ConfigError
from orchestrator.settings import Settings


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_signing_key() -> str:
    """A fresh key for ORCH_WEBHOOK_SIGNING_KEY (base64url of a 32-byte Ed25519 seed)."""
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    raw = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return _b64url(raw)


def signing_key(settings: Settings) -> Ed25519PrivateKey:
    if settings.api.webhook_signing_key is None:
        raise ConfigError("webhooks need ORCH_WEBHOOK_SIGNING_KEY (make one with "
                          "`orchestrator keys signing-key`)")
    text = settings.api.webhook_signing_key.get_secret_value()
    try:
        seed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return Ed25519PrivateKey.from_private_bytes(seed)
    except ValueError:
        raise ConfigError("ORCH_WEBHOOK_SIGNING_KEY is not a base64url 32-byte Ed25519 key") from None


def jwks(settings: Settings) -> dict[str, Any]:
    """The public key as a JWKS document, like fal's ``/.well-known/jwks.json``."""
    if settings.api.webhook_signing_key is None:
        return {"keys": []}
    public = signing_key(settings).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": _b64url(public), "use": "sig",
                      "alg": "EdDSA", "kid": hashlib.sha256(public).hexdigest()[:16]}]}


def signed_headers(settings: Settings, *, request_id: str, user_id: str, body: bytes,
                   now: float | None = None) -> dict[str, str]:
    timestamp = str(int(now if now is not None else time.time()))
    message = "\n".join([request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()])
    signature = signing_key(settings).sign(message.encode())
    return {
        "Content-Type": "application/json",
        "X-Fal-Webhook-Request-Id": request_id,
        "X-Fal-Webhook-User-Id": user_id,
        "X-Fal-Webhook-Timestamp": timestamp,
        "X-Fal-Webhook-Signature": signature.hex(),
    }
