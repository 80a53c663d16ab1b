"""Request dependencies: settings, the authenticated caller, its rate limit, job lookup."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Query, Request
from sqlalchemy.orm import Session

from orchestrator.api.gate import FailedAuthLimiter, client_address, key_from, lookup_principal
from orchestrator.api.ratelimit import RateLimiter, allow_key_and_tenant
from orchestrator.auth.keys import Principal
from orchestrator.commands.caller import Caller
from orchestrator.commands.caller import visible_job as commands_visible_job
from orchestrator.db.models import Job
from orchestrator.settings import Settings


def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_app_settings(request: Request) -> Settings:
    return app_settings(request)


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


# Dependencies are coroutines: FastAPI runs a plain function in a worker thread, and a thread
# hop per dependency per request cost more than the work most of them do.
# (FastAPI solves each dependency node on every request, so the hot ones take the request
# itself rather than a settings dependency.)
async def authenticated(
    request: Request,
    authorization: Annotated[str | None, Header(description="`Key <api key>`")] = None,
) -> Principal:
    return await principal_for(request, authorization)


async def principal_for(request: Request, authorization: str | None) -> Principal:
    """The caller of a request with this Authorization header, within its rate limits; else
    401 or 429 (as HTTPException)."""
    settings = app_settings(request)
    failures: FailedAuthLimiter = request.app.state.auth_failures
    address = client_address(request.scope)
    if failures.blocked(address):
        raise HTTPException(429, "too many failed authentications from this address",
                            headers={"Retry-After": "10"})
    key = key_from(authorization)
    if key is None:
        failures.failed(address)
        raise HTTPException(401, "missing API key: send `Authorization: Key <key>`")
    principal = await lookup_principal(settings, key)
    if principal is None:
        failures.failed(address)
        raise HTTPException(401, "invalid or revoked API key")
    limiter: RateLimiter = request.app.state.rate_limiter
    tenant_limiter: RateLimiter = request.app.state.tenant_rate_limiter
    key_ok, tenant_ok = await allow_key_and_tenant(limiter, tenant_limiter, principal.key_id,
                                                   principal.client)
    if not key_ok:
        raise HTTPException(
            429,
            f"rate limit of {limiter.per_second:g} requests per second for this key exceeded",
            headers={"Retry-After": "1"},
        )
    if not tenant_ok:
        raise HTTPException(
            429,
            f"rate limit of {tenant_limiter.per_second:g} requests per second for this tenant's "
            "keys together exceeded (ORCH_API_TENANT_REQUESTS_PER_SECOND)",
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


async def metrics_caller(
    request: Request,
    authorization: Annotated[str | None, Header(description="`Bearer <metrics key>`")] = None,
) -> None:
    """/metrics shows every tenant's spend: the metrics key (ORCH_METRICS_KEY) or an admin key."""
    settings = app_settings(request)
    key = key_from(authorization)
    if key is not None and settings.api.metrics_key is not None and hmac.compare_digest(
            key.encode(), settings.api.metrics_key.get_secret_value().encode()):
        return
    principal = await authenticated(request, authorization)
    if not principal.admin:
        raise HTTPException(403, "/metrics needs the metrics key or an admin key")


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
