"""``POST /v1/{backend}/webhook`` (``/v1/fal/webhook`` for fal): a remote backend's callback
for a request this orchestrator submitted.

Mounted only when a callback URL is configured (ORCH_FAL_WEBHOOK_URL), and answers only for a
remote backend whose policy has one. No API key: the provider cannot send one. The request is
trusted only if the backend verifies its signature (fal: Ed25519 against fal's JWKS); the
``attempt`` query parameter (set by the submit) says whose request it is.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool

from orchestrator import backends
from orchestrator.api.deps import SettingsDep
from orchestrator.db.session import session_scope
from orchestrator.errors import CallbackKeysUnavailable, WebhookRejected
from orchestrator.jobs.remote import attempts

router = APIRouter()


@router.post("/v1/{backend_name}/webhook", responses={
    401: {"description": "not signed by the provider"},
    404: {"description": "no such backend or attempt"},
    503: {"description": "the provider's signing keys cannot be fetched now"}})
async def provider_webhook(
    request: Request,
    settings: SettingsDep,
    backend_name: str,
    attempt: Annotated[int, Query(ge=1, le=2**62, description="the attempt that submitted it")],
) -> dict[str, Any]:
    """Adopt the request id of a submit whose reply was lost, or poll a known one now."""
    if backend_name not in backends.NAMES or not backends.is_remote(backend_name):
        raise HTTPException(404, f"no remote backend {backend_name!r}")
    backend = backends.get_remote(backend_name, settings)
    if not backend.policy().callback_url:
        raise HTTPException(404, f"the {backend_name} backend takes no callbacks here")
    body = await request.body()
    try:
        request_id = await run_in_threadpool(backend.verify_callback, request.headers, body)
    except WebhookRejected as exc:
        raise HTTPException(401, str(exc)) from None
    except CallbackKeysUnavailable as exc:
        raise HTTPException(503, str(exc),
                            headers={"Retry-After": str(max(1, round(exc.retry_after)))}) from None

    def adopt() -> str:
        with session_scope(settings.database.url.get_secret_value()) as session:
            return attempts.adopt_request(session, attempt, request_id)

    outcome = await run_in_threadpool(adopt)
    if outcome == "unknown attempt":
        raise HTTPException(404, f"no attempt {attempt}")
    return {"request_id": request_id, "outcome": outcome}
