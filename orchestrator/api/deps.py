"""Request dependencies: settings, the authenticated caller, its rate limit, job lookup."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Query, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from orchestrator.api.ratelimit import RateLimiter
from orchestrator.auth.keys import Principal, authenticate, cached_principal
from orchestrator.commands.caller import Caller
from orchestrator.commands.caller import visible_job as commands_visible_job
from orchestrator.db.models import Job
from orchestrator.db.session import session_scope
from orchestrator.settings import Settings


def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_app_settings(request: Request) -> Settings:
    return app_settings(request)


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def _key_from(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() in ("key", "bearer") and value.strip():
        return value.strip()
    return None


def _lookup(settings: Settings, key: str) -> Principal | None:
    with session_scope(settings.database.url.get_secret_value()) as session:
        return authenticate(session, key)


# Dependencies are coroutines: FastAPI runs a plain function in a worker thread, and a thread
# hop per dependency per request cost more than the work most of them do.
# (FastAPI solves each dependency node on every request, so the hot ones take the request
# itself rather than a settings dependency.)
async def authenticated(
    request: Request,
    authorization: Annotated[str | None, Header(description="`Key <api key>`")] = None,
) -> Principal:
    settings = app_settings(request)
    key = _key_from(authorization)
    if key is None:
        raise HTTPException(401, "missing API key: send `Authorization: Key <key>`")
    principal = cached_principal(key)
    if principal is None:
        principal = await run_in_threadpool(_lookup, settings, key)
    if principal is None:
        raise HTTPException(401, "invalid or revoked API key")
    limiter: RateLimiter = request.app.state.rate_limiter
    if not await limiter.allow(principal.key_id):
        raise HTTPException(
            429,
            f"rate limit of {limiter.per_second:g} requests per second for this key exceeded",
            headers={"Retry-After": "1"},
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticated)]


async def caller_unless_token(
    request: Request,
    token: Annotated[str | None, Query(description="the token in image.url")] = None,
    authorization: Annotated[str | None, Header(description="`Key <api key>`")] = None,
) -> Principal | None:
    """For links handed out with a per-job token: the key is needed only without the token."""
    if token is not None:
        return None
    return await authenticated(request, authorization)


def require_admin(principal: PrincipalDep) -> Principal:
    if not principal.admin:
        raise HTTPException(403, "this needs an admin key")
    return principal


def caller_of(principal: Principal) -> Caller:
    """The command layer's view of an API key: its tenant, and whether it is an admin's."""
    return Caller(client=principal.client, is_admin=principal.admin)


def visible_job(session: Session, job_id: str, principal: Principal) -> Job:
    """The job, if this caller may see it; another tenant's job is a 404, not a 403."""
    return commands_visible_job(session, caller_of(principal), job_id)
