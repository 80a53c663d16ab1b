"""``/v1``: what fal's queue API has no words for — uploads, batches, listing, retrying."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from orchestrator import commands
from orchestrator.api.deps import PrincipalDep, SettingsDep, caller_of, caller_unless_token
from orchestrator.api.inputs import sources_from_image_urls
from orchestrator.api.responses import AUTH, QUOTA, QueueStatusBody, errors
from orchestrator.api.routes.fal_queue import request_cancel
from orchestrator.auth.keys import Principal
from orchestrator.commands import BatchEntry, JobFilter, SubmitOptions
from orchestrator.errors import InputTooLarge, JobStateError
from orchestrator.jobs.producer import Source, Submitted
from orchestrator.jobs.states import JobState

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


@router.post("/uploads", response_model=list[JobSummary],
             responses=errors(*AUTH, 400, 409, 413, 422, d409=QUOTA))
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
        data = upload_.file.read(settings.inputs.max_bytes + 1)
        if len(data) > settings.inputs.max_bytes:
            raise InputTooLarge(f"{upload_.filename} is over the limit of {settings.inputs.max_bytes:,} bytes")
        name = (upload_.filename or f"upload-{index}").replace("\x00", "").rsplit("/", 1)[-1].rsplit(".", 1)[0] or f"upload-{index}"
        sources.append(Source(name=name, data=data, origin=upload_.filename or name))
    return _summaries(commands.submit(settings, caller_of(principal), sources,
                                      SubmitOptions(backend=backend, crop_to_bbox=crop_to_bbox)))


@router.post("/batches", response_model=list[JobSummary],
             responses=errors(*AUTH, 400, 409, 413, 422, d409=QUOTA))
def batch(body: BatchRequest, principal: PrincipalDep, settings: SettingsDep) -> list[JobSummary]:
    """Queue many images at once (one transaction); an item that can never work is reported,
    not queued."""
    options = SubmitOptions(backend=body.backend)
    commands.resolve_backend(settings, options)  # a bad backend is refused before any fetch
    sources = sources_from_image_urls([item.image_url for item in body.items], settings,
                                      [f"item-{index}" for index in range(len(body.items))])
    entries = [BatchEntry(source, item.image_url[:200], item.crop_to_bbox, item.sync_mode)
               for item, source in zip(body.items, sources, strict=True)]
    out = commands.submit_batch(settings, caller_of(principal), entries, options)
    return [_summaries([o.submitted])[0] if o.submitted is not None else
            JobSummary(id="", state="rejected", input=o.origin, created=False, error=o.error)
            for o in out]


@router.get("/jobs", responses=errors(*AUTH, 400, 403, 422))
def list_jobs(
    principal: PrincipalDep,
    settings: SettingsDep,
    state: JobState | None = None,
    backend: str | None = None,
    client: Annotated[str | None, Query(description="admin only: another tenant's jobs")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: Annotated[str | None, Query(max_length=200, description=(
        "continue a listing: the X-Next-Cursor header of the previous page"))] = None,
) -> Response:
    """Jobs, newest first. A key sees its own; an admin key sees all, or one client's. A full
    page carries ``X-Next-Cursor``: pass it as ``after`` for the next one."""
    page = commands.list_jobs(settings, caller_of(principal),
                              JobFilter(state=state, backend=backend, client=client),
                              limit=limit, after=after)
    headers = {"X-Next-Cursor": page.next_cursor} if page.next_cursor else None
    return JSONResponse(jsonable_encoder([job.to_dict() for job in page.jobs]), headers=headers)


@router.get("/jobs/{job_id}", responses=errors(*AUTH, 404, 422))
def get_job(job_id: str, principal: PrincipalDep, settings: SettingsDep) -> dict[str, Any]:
    return commands.show(settings, caller_of(principal), job_id).to_dict()


@router.post("/jobs/{job_id}/retry", responses=errors(*AUTH, 404, 409, 422))
def retry_job(job_id: str, principal: PrincipalDep, settings: SettingsDep) -> dict[str, Any]:
    """Send a failed or cancelled job round again."""
    return commands.retry(settings, caller_of(principal), job_id).to_dict()


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
    try:
        if principal is not None:
            found = commands.result(settings, caller_of(principal), job_id, presign=True)
        else:
            found = commands.result_by_token(settings, job_id, token or "", presign=True)
    except JobStateError as exc:
        raise HTTPException(404, str(exc)) from None
    if found.url is not None:  # the object store serves the bytes, not the API
        return RedirectResponse(found.url, status_code=307)
    return Response(found.data, media_type=found.content_type,
                    headers={"Content-Disposition": f'inline; filename="{found.job_id}.png"'})
