"""Result links that work without an API key, for a limited time.

A link's token is ``<expiry, unix seconds>.<HMAC-SHA256(job's secret, "<job id>.<expiry>")>``.
The job's secret (``jobs.result_token``) never leaves the server: a link copied out of a log,
a browser history or a webhook receiver opens the result only until its expiry, and each status
or result request hands out a fresh link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid


def _mac(secret: str, job_id: uuid.UUID | str, expires: int) -> str:
    digest = hmac.new(secret.encode(), f"{job_id}.{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def link_token(secret: str, job_id: uuid.UUID | str, ttl_seconds: int,
               now: float | None = None) -> str:
    expires = int(now if now is not None else time.time()) + ttl_seconds
    return f"{expires}.{_mac(secret, job_id, expires)}"


def token_valid(secret: str | None, job_id: uuid.UUID | str, token: str,
                now: float | None = None) -> bool:
    """True if ``token`` was made by :func:`link_token` for this job and has not expired."""
    if not secret:
        return False
    expires_text, dot, mac = token.partition(".")
    if not dot or not expires_text.isdigit() or len(expires_text) > 12:
        return False
    expires = int(expires_text)
    if expires < (now if now is not None else time.time()):
        return False
    # Bytes, not str: compare_digest refuses non-ASCII strings.
    return hmac.compare_digest(_mac(secret, job_id, expires).encode(), mac.encode())


def result_url(base: str, job_id: uuid.UUID | str, secret: str | None, ttl_seconds: int) -> str:
    return f"{base.rstrip('/')}/v1/jobs/{job_id}/result?token={link_token(secret or '', job_id, ttl_seconds)}"
