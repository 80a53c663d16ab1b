"""``POST /v1/fal/webhook``: fal's webhook for a request this orchestrator submitted.

Mounted only when ORCH_FAL_WEBHOOK_URL is set. No API key: fal cannot send one. The request is trusted only if fal's Ed25519 signature
verifies; the ``attempt`` query parameter (set by the submit) says whose request it is.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool

from orchestrator.api.deps import SettingsDep
from orchestrator.backends.fal.webhook import JwksUnavailable, WebhookRejected, verify
from orchestrator.db.session import session_scope
from orchestrator.jobs import remote

router = APIRouter()


@router.post("/v1/fal/webhook", responses={
    401: {"description": "not signed by fal"}, 404: {"description": "no such attempt"},
    503: {"description": "fal's signing keys cannot be fetched now"}})
async def fal_webhook(
    request: Request,
    settings: SettingsDep,
    attempt: Annotated[int, Query(ge=1, le=2**62, description="the attempt that submitted it")],
) -> dict[str, Any]:
    """Adopt the request id of a submit whose reply was lost, or poll a known one now."""
    body = await request.body()
    try:
        request_id = await run_in_threadpool(verify, request.headers, body, settings.fal_jwks_url)
    except WebhookRejected as exc:
        raise HTTPException(401, str(exc)) from None
    except JwksUnavailable as exc:
        raise HTTPException(503, str(exc),
                            headers={"Retry-After": str(max(1, round(exc.retry_after)))}) from None

    def adopt() -> str:
        with session_scope(settings.database_url) as session:
            return remote.adopt_request(session, attempt, request_id)

    outcome = await run_in_threadpool(adopt)
    if outcome == "unknown attempt":
        raise HTTPException(404, f"no attempt {attempt}")
    return {"request_id": request_id, "outcome": outcome}
