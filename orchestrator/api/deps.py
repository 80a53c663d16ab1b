"""Request dependencies: settings, the authenticated caller, its rate limit, job lookup."""

from __future__ import annotations

import time
import uuid
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from sqlalchemy.orm import Session

from orchestrator.auth.keys import Principal, authenticate
from orchestrator.backends.fal.limits import redis_client
from orchestrator.db.models import Job
from orchestrator.db.session import session_scope
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
    key = f"orchestrator:api:rate:{principal.key_id}:{window}"
    client = redis_client(settings.broker_url)
    try:
        pipe = client.pipeline()
        pipe.incr(key)
        pipe.expire(key, 2)
        count = int(pipe.execute()[0])
    except Exception:  # the limiter must not turn a Redis blip into an outage
        return
    if count > limit:
        raise HTTPException(
            429,
            f"rate limit of {limit:g} requests per second for this key exceeded",
            headers={"Retry-After": "1"},
        )


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
