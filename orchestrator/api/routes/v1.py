"""``/v1``: what fal's queue API has no words for — uploads, batches, listing, retrying."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from orchestrator.api.deps import PrincipalDep, SettingsDep, caller_unless_token, visible_job
from orchestrator.api.inputs import source_from_image_url
from orchestrator.api.responses import AUTH, QueueStatusBody, errors
from orchestrator.api.routes.fal_queue import request_cancel
from orchestrator.auth.keys import Principal
from orchestrator.backends import backend_class
from orchestrator.db.models import Job
from orchestrator.db.session import session_scope
from orchestrator.errors import InputError, InputTooLarge
from orchestrator.jobs import service
from orchestrator.jobs.producer import JobRequest, Source, Submitted, submit, submit_requests
from orchestrator.jobs.serialize import job_dict
from orchestrator.jobs.states import JobState
from orchestrator.queue.celery_app import publish_run
from orchestrator.routing import AUTO
from orchestrator.storage.results import presigned_url, read_result

router = APIRouter(prefix="/v1", tags=["v1"])

MAX_BATCH = 500


class JobSummary(BaseModel):
    id: str
    state: str
    input: str
    created: bool
    error: str | None = None


class BatchItem(BaseModel):
    image_url: str = Field(min_length=1, max_length=50_000_000)
    crop_to_bbox: bool = False
    sync_mode: bool = False


class BatchRequest(BaseModel):
    items: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH)
    backend: str | None = Field(default=None, description="local, fal or auto (default from settings)")


def _summaries(items: list[Submitted]) -> list[JobSummary]:
    return [JobSummary(id=str(i.job_id), state=i.state.value, input=i.source.origin,
                       created=i.created) for i in items]


@router.post("/uploads", response_model=list[JobSummary], responses=errors(*AUTH, 400, 413, 422))
def upload(
    principal: PrincipalDep,
    settings: SettingsDep,
    files: Annotated[list[UploadFile], File(description="image files")],
    backend: Annotated[str | None, Form()] = None,
    crop_to_bbox: Annotated[bool, Form()] = False,
) -> list[JobSummary]:
    """Queue one job per uploaded image file."""
    sources = []
    for index, upload_ in enumerate(files):
        data = upload_.file.read(settings.max_input_bytes + 1)
        if len(data) > settings.max_input_bytes:
            raise InputTooLarge(f"{upload_.filename} is over the limit of {settings.max_input_bytes:,} bytes")
        name = (upload_.filename or f"upload-{index}").replace("\x00", "").rsplit("/", 1)[-1].rsplit(".", 1)[0] or f"upload-{index}"
        sources.append(Source(name=name, data=data, origin=upload_.filename or name))
    return _summaries(submit(sources, settings=settings, backend=backend,
                             crop_to_bbox=crop_to_bbox, client=principal.client))


@router.post("/batches", response_model=list[JobSummary], responses=errors(*AUTH, 400, 413, 422))
def batch(body: BatchRequest, principal: PrincipalDep, settings: SettingsDep) -> list[JobSummary]:
    """Queue many images at once (one transaction); an item that can never work is reported,
    not queued."""
    backend = body.backend or settings.default_backend
    if backend != AUTO:
        backend_class(backend)
    out: list[JobSummary | None] = []
    requests: list[JobRequest] = []
    for index, item in enumerate(body.items):
        try:
            source = source_from_image_url(item.image_url, settings, name=f"item-{index}")
        except InputError as exc:
            out.append(JobSummary(id="", state="rejected", input=item.image_url[:200], created=False,
                                  error=str(exc)))
            continue
        out.append(None)
        requests.append(JobRequest(source, backend, crop_to_bbox=item.crop_to_bbox,
                                   sync_mode=item.sync_mode, client=principal.client))
    if backend == AUTO:  # the routing policy decides each job, and records why
        submitted = [item for r in requests for item in submit(
            [r.source], settings=settings, backend=AUTO, crop_to_bbox=r.crop_to_bbox,
            sync_mode=r.sync_mode, client=r.client)]
    else:
        submitted = submit_requests(requests, settings=settings)
    accepted = iter(_summaries(submitted))
    return [summary if summary is not None else next(accepted) for summary in out]


@router.get("/jobs", responses=errors(*AUTH, 422))
def list_jobs(
    principal: PrincipalDep,
    settings: SettingsDep,
    state: JobState | None = None,
    backend: str | None = None,
    client: Annotated[str | None, Query(description="admin only: another tenant's jobs")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict[str, Any]]:
    """Jobs, newest first. A key sees its own; an admin key sees all, or one client's."""
    stmt = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
    if not principal.admin:
        stmt = stmt.where(Job.client == principal.client)
    elif client is not None:
        stmt = stmt.where(Job.client == client)
    if state is not None:
        stmt = stmt.where(Job.state == state)
    if backend is not None:
        stmt = stmt.where(Job.backend == backend)
    with session_scope(settings.database_url) as session:
        return [job_dict(job, with_attempts=False) for job in session.scalars(stmt)]


@router.get("/jobs/{job_id}", responses=errors(*AUTH, 404, 422))
def get_job(job_id: str, principal: PrincipalDep, settings: SettingsDep) -> dict[str, Any]:
    with session_scope(settings.database_url) as session:
        job = visible_job(session, job_id, principal)
        out = job_dict(job)
        if job.result is not None and job.result.expired_at is None:
            url = presigned_url(settings, job)
            if url is not None:
                out["result"]["url"] = url
        return out


@router.post("/jobs/{job_id}/retry", responses=errors(*AUTH, 404, 409, 422))
def retry_job(job_id: str, principal: PrincipalDep, settings: SettingsDep) -> dict[str, Any]:
    """Send a failed or cancelled job round again."""
    with session_scope(settings.database_url) as session:
        job = visible_job(session, job_id, principal)
        job = service.requeue(session, job.id, settings)
        backend, key = job.backend, job.id
    publish_run(settings, key, backend)
    with session_scope(settings.database_url) as session:
        return job_dict(service.get_job(session, key), with_attempts=False)


@router.post("/jobs/{job_id}/cancel", status_code=202, responses={
    **errors(*AUTH, 404, 422), 400: {"model": QueueStatusBody, "description": "ALREADY_COMPLETED"},
    202: {"model": QueueStatusBody, "description": "CANCELLATION_REQUESTED"}})
def cancel_job(job_id: str, principal: PrincipalDep, settings: SettingsDep) -> Response:
    return request_cancel(job_id, principal, settings)


@router.get("/jobs/{job_id}/result",
            responses={200: {"content": {"image/png": {}}}, **errors(*AUTH, 404, 422)})
def job_result(
    job_id: str,
    settings: SettingsDep,
    principal: Annotated[Principal | None, Depends(caller_unless_token)],
    token: Annotated[str | None, Query(description="the token in image.url")] = None,
) -> Response:
    """The result file. ``image.url`` carries a per-job token, so it works without a key."""
    with session_scope(settings.database_url) as session:
        if principal is not None:
            job = visible_job(session, job_id, principal)
        else:
            job = _job_by_token(session, job_id, token or "")
        if job.result is None:
            raise HTTPException(404, f"request {job_id} has no result (it is {job.state.value})")
        presigned = presigned_url(settings, job)  # an expired result raises: 410
        if presigned is not None:  # the object store serves the bytes, not the API
            return RedirectResponse(presigned, status_code=307)
        data = read_result(settings, job.result)
        content_type = job.result.content_type
    return Response(data, media_type=content_type,
                    headers={"Content-Disposition": f'inline; filename="{job_id}.png"'})


def _job_by_token(session: Any, job_id: str, token: str) -> Job:
    try:
        job = service.get_job(session, job_id)
    except Exception:
        raise HTTPException(404, f"no request with id {job_id}") from None
    # Bytes, not str: compare_digest refuses non-ASCII strings (a 500 the fuzz run found).
    if not job.result_token or not hmac.compare_digest(job.result_token.encode(), token.encode()):
        raise HTTPException(404, f"no request with id {job_id}")
    return job
