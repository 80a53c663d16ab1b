"""API keys: created once (shown once), stored only as SHA-256 hashes, revocable.

Keys are 256-bit random tokens, so a fast hash is the right tool (a password hash would only
slow every request down without adding safety to a key nobody can guess).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.db.models import ApiKey
from orchestrator.errors import KeyError_
from orchestrator.jobs.transitions import utcnow

KEY_PREFIX = "orch_"



@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant name jobs are recorded under, and whether it is an admin."""

    client: str
    admin: bool
    key_id: int


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str, *, admin: bool = False) -> str:
    """A new key for tenant ``name``; the only time the key itself is ever available."""
    if not name or len(name) > 100:
        raise KeyError_("a key name is 1 to 100 characters")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(name=name, key_hash=hash_key(key), prefix=key[:12], admin=admin))
    session.flush()
    return key


def revoke_key(session: Session, name_or_prefix: str) -> int:
    """Revoke every live key of that name, or the one key with that prefix; how many."""
    rows = session.scalars(
        select(ApiKey).where(
            ApiKey.revoked_at.is_(None),
            (ApiKey.name == name_or_prefix) | (ApiKey.prefix == name_or_prefix),
        )
    ).all()
    if not rows:
        raise KeyError_(f"no live key named or starting with {name_or_prefix!r}")
    for row in rows:
        row.revoked_at = utcnow()
    return len(rows)


_cache: dict[str, tuple[float, Principal]] = {}
CACHE_SECONDS = 5.0  # a revoked key stops working within this long on every API process


def cached_principal(key: str) -> Principal | None:
    """The key's principal if this process looked it up less than CACHE_SECONDS ago."""
    hit = _cache.get(hash_key(key))
    if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
        return hit[1]
    return None


def authenticate(session: Session, key: str) -> Principal | None:
    digest = hash_key(key)
    hit = cached_principal(key)
    if hit is not None:
        return hit
    principal = _lookup(session, key)
    if principal is not None:
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[digest] = (time.monotonic(), principal)
    return principal


def _lookup(session: Session, key: str) -> Principal | None:
    row = session.scalars(
        select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    return Principal(client=row.name, admin=row.admin, key_id=row.id)


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))
