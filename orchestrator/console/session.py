"""Console sign-in: an API key becomes a signed session cookie, checked on every request.

The cookie holds the key's row id, the SHA-256 of the key (never the key) and the session's CSRF
token, signed with itsdangerous and stamped with its issue time. Every request looks the key row
up again — cached for the API's key cache time, so a revoked key is locked out of the console as
soon as out of the API.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import select

from orchestrator.auth import keys
from orchestrator.commands.caller import Caller
from orchestrator.db.models import ApiKey
from orchestrator.db.session import session_scope
from orchestrator.errors import SignInRequired
from orchestrator.settings import Settings

COOKIE = "orch_console"
FLASH_COOKIE = "orch_console_flash"
PATH = "/console"
_SALT = "orchestrator.console.session"


@dataclass(frozen=True)
class Viewer:
    """Who is signed in: the tenant (key name), whether admin, and the session's CSRF token."""

    name: str
    admin: bool
    csrf: str

    @property
    def caller(self) -> Caller:
        return Caller(client=self.name, is_admin=self.admin)


REASONS = {
    "expired": "Your session has expired: sign in again.",
    "revoked": "That key has been revoked: sign in with another.",
    "signed-out": "You are signed out.",
    "required": "Sign in with an API key to use the console.",
}


def _secret(settings: Settings) -> bytes:
    configured = settings.api.console_session_secret
    if configured is not None:
        return configured.get_secret_value().encode()
    # Same on every API process that shares the database, without another setting to keep.
    return hmac.new(settings.database.url.get_secret_value().encode(), b"console-session",
                    hashlib.sha256).digest()


def serializer(settings: Settings, salt: str = _SALT) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_secret(settings), salt=salt)


def max_age(settings: Settings) -> int:
    return int(settings.api.console_session_hours * 3600)


def sign_in(settings: Settings, key: str) -> tuple[str, Viewer] | None:
    """The cookie value and viewer for a live key, or None."""
    with session_scope(settings.database.url.get_secret_value()) as session:
        principal = keys.authenticate(session, key.strip())
    if principal is None:
        return None
    csrf = secrets.token_urlsafe(32)
    value = serializer(settings).dumps([principal.key_id, keys.hash_key(key.strip()), csrf])
    return value, Viewer(principal.client, principal.admin, csrf)


_cache: dict[tuple[int, str], tuple[float, tuple[str, bool] | None]] = {}


def _key_row(settings: Settings, key_id: int, key_hash: str) -> tuple[str, bool] | None:
    hit = _cache.get((key_id, key_hash))
    if hit is not None and time.monotonic() - hit[0] < keys.CACHE_SECONDS:
        return hit[1]
    with session_scope(settings.database.url.get_secret_value()) as session:
        row = session.scalars(select(ApiKey).where(ApiKey.id == key_id,
                                                   ApiKey.revoked_at.is_(None))).first()
        found = (row.name, row.admin) if row is not None and hmac.compare_digest(
            row.key_hash, key_hash) else None
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[(key_id, key_hash)] = (time.monotonic(), found)
    return found


def viewer_of(settings: Settings, cookie: str | None) -> Viewer:
    """The signed-in viewer, or SignInRequired."""
    if not cookie:
        raise SignInRequired("required")
    try:
        key_id, key_hash, csrf = serializer(settings).loads(cookie, max_age=max_age(settings))
    except SignatureExpired:
        raise SignInRequired("expired") from None
    except (BadSignature, ValueError, TypeError):
        raise SignInRequired("required") from None
    if not (isinstance(key_id, int) and isinstance(key_hash, str) and isinstance(csrf, str)):
        raise SignInRequired("required")
    found = _key_row(settings, key_id, key_hash)
    if found is None:
        raise SignInRequired("revoked")
    return Viewer(found[0], found[1], csrf)


def csrf_ok(viewer: Viewer, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(viewer.csrf.encode(), str(token).encode())
