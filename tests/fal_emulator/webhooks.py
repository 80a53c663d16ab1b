"""Webhook delivery (spec §8): Ed25519-signed POSTs, retried, plus the JWKS that verifies them."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

USER_ID = "fal-emulator-user"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class WebhookSigner:
    """Signs ``request_id\\nuser_id\\ntimestamp\\nsha256_hex(body)`` with an Ed25519 key."""

    def __init__(self) -> None:
        self._key = Ed25519PrivateKey.generate()
        raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key_raw = raw
        self.kid = hashlib.sha256(raw).hexdigest()[:16]

    def jwks(self) -> dict[str, Any]:
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": _b64url(self.public_key_raw),
                    "kid": self.kid,
                    "use": "sig",
                    "alg": "EdDSA",
                }
            ]
        }

    def headers(self, request_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        message = "\n".join([request_id, USER_ID, ts, hashlib.sha256(body).hexdigest()])
        return {
            "Content-Type": "application/json",
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": USER_ID,
            "X-Fal-Webhook-Timestamp": ts,
            "X-Fal-Webhook-Signature": self._key.sign(message.encode()).hex(),
        }


@dataclass
class Delivery:
    """One webhook: every attempt's outcome (HTTP status, or the error text)."""

    request_id: str
    url: str
    body: bytes
    attempts: list[int | str] = field(default_factory=list)
    delivered: bool = False


class WebhookSender:
    """Delivers on a small pool; retries non-2xx and transport errors with doubling delays."""

    def __init__(
        self,
        signer: WebhookSigner,
        *,
        attempts: int = 10,
        first_delay: float = 0.2,
        max_delay: float = 5.0,
        timeout: float = 10.0,
    ) -> None:
        self.signer = signer
        self.max_attempts = attempts
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.timeout = timeout
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="fal-emu-webhook")

    def send(self, request_id: str, url: str, body: bytes) -> None:
        delivery = Delivery(request_id, url, body)
        with self._lock:
            self.deliveries.append(delivery)
        self._pool.submit(self._deliver, delivery)

    def _deliver(self, delivery: Delivery) -> None:
        delay = self.first_delay
        with httpx.Client(timeout=self.timeout) as client:
            for attempt in range(self.max_attempts):
                if attempt and self._stop.wait(delay):
                    return
                delay = min(delay * 2, self.max_delay)
                headers = self.signer.headers(delivery.request_id, delivery.body)
                try:
                    response = client.post(delivery.url, content=delivery.body, headers=headers)
                except httpx.HTTPError as exc:
                    delivery.attempts.append(f"{type(exc).__name__}: {exc}")
                    continue
                delivery.attempts.append(response.status_code)
                if 200 <= response.status_code < 300:
                    delivery.delivered = True
                    return

    def clear(self) -> None:
        with self._lock:
            self.deliveries.clear()

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


def webhook_body(
    request_id: str, status_code: int, payload: Any
) -> dict[str, Any]:
    """The §8 body for a finished request whose result had ``status_code`` and ``payload``."""
    body: dict[str, Any] = {"request_id": request_id, "gateway_request_id": request_id}
    if 200 <= status_code < 300:
        body.update(status="OK", payload=payload)
    else:
        body.update(status="ERROR", error=f"Invalid status code: {status_code}", payload=payload)
    return body


def verify(jwks: dict[str, Any], headers: Any, body: bytes, max_skew: float = 300.0) -> bool:
    """A reference verifier (what a receiver does); used by the emulator's own tests."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        rid = headers["X-Fal-Webhook-Request-Id"]
        uid = headers["X-Fal-Webhook-User-Id"]
        ts = headers["X-Fal-Webhook-Timestamp"]
        sig = bytes.fromhex(headers["X-Fal-Webhook-Signature"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - int(ts)) > max_skew:
        return False
    message = "\n".join([rid, uid, ts, hashlib.sha256(body).hexdigest()]).encode()
    for key in jwks.get("keys", []):
        raw = base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4))
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(sig, message)
            return True
        except (InvalidSignature, ValueError):
            continue
    return False
