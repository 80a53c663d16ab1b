"""Request dependencies: settings, the authenticated caller, its rate limit, job lookup."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from sqlalchemy.orm import Session

from orchestrator.auth.keys import Principal, authenticate
from orchestrator.backends.fal.limits import redis_client
from orchestrator.db.models import Job
from orchestrator.db.session import session_scope
from orchestrator.queue.broker import is_redis
from orchestrator.settings import Settings


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def _key_from(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() in ("key", "bearer") and value.strip():
        return value.strip()
    return None


def authenticated(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header(description="`Key <api key>`")] = None,
) -> Principal:
    key = _key_from(authorization)
    if key is None:
        raise HTTPException(401, "missing API key: send `Authorization: Key <key>`")
    with session_scope(settings.database_url) as session:
        principal = authenticate(session, key)
    if principal is None:
        raise HTTPException(401, "invalid or revoked API key")
    _rate_limit(settings, principal)
    return principal


def _rate_limit(settings: Settings, principal: Principal) -> None:
    limit = settings.api_requests_per_second
    window = int(time.time())
    if is_redis(settings.broker_url):
        count = _count_in_redis(settings.broker_url, principal.key_id, window)
        if count is None:  # the limiter must not turn a Redis blip into an outage
            return
    else:
        # No Redis (the embedded mode): the count is per API process.
        count = _local_windows.hit(principal.key_id, window)
    if count > limit:
        raise HTTPException(
            429,
            f"rate limit of {limit:g} requests per second for this key exceeded",
            headers={"Retry-After": "1"},
        )


def _count_in_redis(broker_url: str, key_id: int, window: int) -> int | None:
    key = f"orchestrator:api:rate:{key_id}:{window}"
    client = redis_client(broker_url)
    try:
        pipe = client.pipeline()
        pipe.incr(key)
        pipe.expire(key, 2)
        return int(pipe.execute()[0])
    except Exception:
        return None


class _LocalWindows:
    """Requests per key in the current one-second window, in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._window = 0
        self._counts: dict[int, int] = {}

    def hit(self, key_id: int, window: int) -> int:
        with self._lock:
            if window != self._window:
                self._window, self._counts = window, {}
            self._counts[key_id] = self._counts.get(key_id, 0) + 1
            return self._counts[key_id]


_local_windows = _LocalWindows()


PrincipalDep = Annotated[Principal, Depends(authenticated)]


def require_admin(principal: PrincipalDep) -> Principal:
    if not principal.admin:
        raise HTTPException(403, "this needs an admin key")
    return principal


def visible_job(session: Session, job_id: str, principal: Principal) -> Job:
    """The job, if this caller may see it; another tenant's job is a 404, not a 403."""
    try:
        key = uuid.UUID(job_id)
    except ValueError:
        raise HTTPException(404, f"no request with id {job_id}") from None
    job = session.get(Job, key)
    if job is None or (not principal.admin and job.client != principal.client):
        raise HTTPException(404, f"no request with id {job_id}")
    return job
