"""fal's queue API for ``fal-ai/imageutils/rembg``, so fal_client and @fal-ai/client work
unchanged against the orchestrator (``FAL_QUEUE_RUN_HOST=host:port``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from orchestrator import commands
from orchestrator.api.deps import PrincipalDep, SettingsDep, app_settings, caller_of, visible_job
from orchestrator.api.inputs import check_webhook_url, source_from_image_url
from orchestrator.api.responses import AUTH, QUOTA, QueueStatusBody, errors
from orchestrator.api.submissions import SubmitBatcher
from orchestrator.api.views import (
    REQUESTS_PATH,
    request_urls,
    result_body,
    status_body,
)
from orchestrator.auth.keys import Principal
from orchestrator.commands import CancelOutcome, SubmitOptions
from orchestrator.db.session import session_scope
from orchestrator.errors import JobStateError

router = APIRouter(tags=["fal-compatible queue"])

# Data URIs up to this many characters are checked on the event loop (microseconds).
INLINE_CHECK_MAX = 64 * 1024

BackendHeader = Annotated[
    str | None,
    Header(alias="X-Orchestrator-Backend", description="local, fal or auto (default from settings)"),
]


class RembgInput(BaseModel):
    """fal's input for fal-ai/imageutils/rembg."""

    model_config = ConfigDict(extra="ignore")
    image_url: str = Field(description="http(s) URL or data: URI of the image", min_length=1,
                           max_length=50_000_000)
    sync_mode: bool = Field(default=False, description="return the result as a data URI")
    crop_to_bbox: bool = Field(default=False, description="crop the result to the subject")


class SubmitReply(BaseModel):
    status: str
    request_id: str
    response_url: str
    status_url: str
    cancel_url: str
    queue_position: int
    gateway_request_id: str


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _reply(code: int, body: dict[str, Any], request_id: str) -> JSONResponse:
    headers = {"x-fal-request-id": request_id}
    if code >= 500 and isinstance(body.get("error_type"), str):
        headers["X-Fal-Error-Type"] = body["error_type"]
    return JSONResponse(body, status_code=code, headers=headers)


@router.post("/fal-ai/imageutils/rembg", response_model=SubmitReply,
             responses=errors(*AUTH, 400, 409, 413, 422, 503, d409=QUOTA))
async def submit_request(
    body: RembgInput,
    request: Request,
    principal: PrincipalDep,
    backend: BackendHeader = None,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    fal_webhook: Annotated[str | None, Query(max_length=2048)] = None,
) -> JSONResponse:
    """Queue a background removal; reply as fal's queue does."""
    return await queue_rembg(request, principal, body.image_url, sync_mode=body.sync_mode,
                             crop_to_bbox=body.crop_to_bbox, backend=backend,
                             idempotency_key=idempotency_key, fal_webhook=fal_webhook)


async def queue_rembg(request: Request, principal: Principal, image_url: str, *, sync_mode: bool,
                      crop_to_bbox: bool, backend: str | None, idempotency_key: str | None,
                      fal_webhook: str | None) -> JSONResponse:
    """The submit endpoint's work once its request is parsed (by the route, or by
    orchestrator.api.fast_submit for the common case)."""
    settings = app_settings(request)
    if len(image_url) < INLINE_CHECK_MAX and image_url.startswith("data:"):
        source = source_from_image_url(image_url, settings, name="image")
    else:  # a URL's host is resolved, a big data URI decoded: not on the event loop
        source = await run_in_threadpool(source_from_image_url, image_url, settings, name="image")
    if fal_webhook is not None:
        await run_in_threadpool(check_webhook_url, fal_webhook, settings)
    submitter: SubmitBatcher = request.app.state.submitter
    accepted = await submitter.submit_for(caller_of(principal), source, SubmitOptions(
        backend=backend, crop_to_bbox=crop_to_bbox, sync_mode=sync_mode,
        idempotency_key=idempotency_key, webhook_url=fal_webhook))
    job_id = accepted.submitted.job_id
    # The submit reply is the hot path: no extra database round trip. The position is the
    # backend queue's depth in Redis (the status call counts it exactly in Postgres).
    reply = SubmitReply(
        status="IN_QUEUE", request_id=str(job_id), **request_urls(_base(request), job_id),
        queue_position=accepted.queue_position, gateway_request_id=str(job_id),
    )
    return _reply(200, reply.model_dump(), reply.request_id)


@router.get(REQUESTS_PATH + "/{request_id}/status", responses={
    **errors(*AUTH, 404, 422), 202: {"description": "IN_QUEUE or IN_PROGRESS"}})
def request_status(
    request_id: str,
    request: Request,
    principal: PrincipalDep,
    settings: SettingsDep,
    logs: Annotated[str | None, Query(description="1/0 or true/false")] = None,
) -> JSONResponse:
    with_logs = (logs or "").lower() in ("1", "true", "yes")
    with session_scope(settings.database.url.get_secret_value()) as session:
        job = visible_job(session, request_id, principal)
        code, body = status_body(session, job, _base(request), with_logs=with_logs)
    return _reply(code, body, request_id)


@router.get(REQUESTS_PATH + "/{request_id}", responses=errors(
    *AUTH, 404, 422, 499, 500, 400, d400="the request is still in progress"))
def request_result(
    request_id: str, request: Request, principal: PrincipalDep, settings: SettingsDep
) -> JSONResponse:
    with session_scope(settings.database.url.get_secret_value()) as session:
        job = visible_job(session, request_id, principal)
        code, body = result_body(job, _base(request), settings)
    return _reply(code, body, request_id)


@router.put(REQUESTS_PATH + "/{request_id}/cancel", status_code=202, responses={
    **errors(*AUTH, 404, 422), 400: {"model": QueueStatusBody, "description": "ALREADY_COMPLETED"},
    202: {"model": QueueStatusBody, "description": "CANCELLATION_REQUESTED"}})
def request_cancel(request_id: str, principal: PrincipalDep, settings: SettingsDep) -> JSONResponse:
    try:
        done = commands.cancel(settings, caller_of(principal), request_id)
    except JobStateError:
        return _reply(400, {"status": "ALREADY_COMPLETED"}, request_id)
    if done.outcome is CancelOutcome.COMPLETED_AT_PROVIDER:
        return _reply(400, {"status": "ALREADY_COMPLETED"}, request_id)
    return _reply(202, {"status": "CANCELLATION_REQUESTED"}, request_id)
