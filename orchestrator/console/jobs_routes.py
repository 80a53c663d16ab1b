"""The jobs list (filters, keyset pages, bulk retry/cancel) and one job's page."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from orchestrator import backends, commands
from orchestrator.commands.caller import Caller
from orchestrator.commands.inputs import has_input, input_file
from orchestrator.console.filters import job_filter
from orchestrator.console.session import PATH, Viewer
from orchestrator.console.web import (
    Message,
    checked_form,
    redirect,
    render,
    secure,
    settings_of,
    viewer,
)
from orchestrator.errors import JobNotFound, OrchestratorError
from orchestrator.jobs.states import JobState
from orchestrator.settings import Settings

router = APIRouter()
PAGE = 50
MAX_SELECTED = 500
ViewerDep = Annotated[Viewer, Depends(viewer)]


def _jobs_context(request: Request, who: Viewer) -> tuple[dict[str, object], list[Message]]:
    settings = settings_of(request)
    offered = backends.offered(settings)
    params = {k: v for k, v in request.query_params.items()}
    filters, parsed = job_filter(params, who.caller, offered)
    messages = [Message(text, "error") for text in parsed.errors]
    page = None
    try:
        page = commands.list_jobs(settings, who.caller, filters, limit=PAGE,
                                  after=parsed.values.get("after"))
    except OrchestratorError as exc:
        messages.append(Message(f"{exc}; showing the first page.", "error"))
        parsed.values.pop("after", None)
        page = commands.list_jobs(settings, who.caller, filters, limit=PAGE)
    base = parsed.query(after="")
    return {"title": "Jobs", "page": page, "form": parsed.values, "states": list(JobState),
            "offered": offered, "base_query": base, "here": f"{PATH}/jobs?{parsed.query()}"}, \
        messages


@router.get("/jobs")
def jobs_page(request: Request, who: ViewerDep) -> Response:
    context, messages = _jobs_context(request, who)
    return render(request, "jobs.html", context, viewer=who, messages=messages)


@router.get("/jobs/rows")
def jobs_rows(request: Request, who: ViewerDep) -> Response:
    """The next page's rows and a new "Load more" row (htmx click-to-load)."""
    context, messages = _jobs_context(request, who)
    return render(request, "job_rows.html", context, viewer=who, messages=messages)


def _act(settings: Settings, caller: Caller, action: str, ids: list[str]) -> Message:
    done: list[str] = []
    refused: list[str] = []
    for job_id in ids:
        try:
            if action == "retry":
                commands.retry(settings, caller, job_id)
            else:
                commands.cancel(settings, caller, job_id)
            done.append(job_id[:8])
        except OrchestratorError as exc:
            refused.append(f"{job_id[:8]}: {exc}")
    verb = "Retried" if action == "retry" else "Cancelled"
    text = f"{verb} {len(done)} job(s)" + (f": {', '.join(done)}" if done else "") + "."
    if refused:
        text += f" {len(refused)} could not be: " + "; ".join(refused[:10]) + "."
    return Message(text, "error" if refused else "info")


@router.post("/jobs/actions")
async def jobs_actions(request: Request, who: ViewerDep) -> Response:
    form = await checked_form(request, who)
    back = str(form.get("back") or f"{PATH}/jobs")
    if not back.startswith(f"{PATH}/jobs"):
        back = f"{PATH}/jobs"
    action = form.get("action")
    ids = [v for v in form.getlist("job") if isinstance(v, str)]
    if action not in ("retry", "cancel"):
        return redirect(request, back, Message("Choose retry or cancel.", "error"))
    if not ids:
        return redirect(request, back, Message("Select at least one job first.", "error"))
    if len(ids) > MAX_SELECTED:
        return redirect(request, back, Message(f"Select at most {MAX_SELECTED} jobs.", "error"))
    message = await run_in_threadpool(_act, settings_of(request), who.caller, str(action), ids)
    return redirect(request, back, message)


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, who: ViewerDep) -> Response:
    settings = settings_of(request)
    try:
        job = commands.show(settings, who.caller, job_id)
    except JobNotFound:
        return render(request, "not_found.html",
                      {"title": "Job not found", "what": f"job {job_id[:100]}"},
                      viewer=who, status=404)
    stored = has_input(settings, who.caller, job.id)
    return render(request, "job.html", {"title": f"Job {str(job.id)[:8]}", "job": job,
                                        "has_input": stored, "final": JobState(job.state)
                                        .is_final}, viewer=who)


@router.post("/jobs/{job_id}/{action}")
async def job_action(request: Request, job_id: str, action: str, who: ViewerDep) -> Response:
    await checked_form(request, who)
    here = f"{PATH}/jobs/{_safe_id(job_id)}"
    if action not in ("retry", "cancel"):
        return redirect(request, here, Message(f"There is no action {action[:30]!r}.", "error"))
    message = await run_in_threadpool(_act, settings_of(request), who.caller, action, [job_id])
    return redirect(request, here, message)


def _safe_id(job_id: str) -> str:
    try:
        return str(uuid.UUID(job_id))
    except ValueError:
        return "unknown"


def _image(request: Request, who: Viewer, job_id: str, which: str,
           download: bool) -> Response:
    settings = settings_of(request)
    try:
        file = (input_file(settings, who.caller, job_id) if which == "input"
                else commands.result(settings, who.caller, job_id))
    except JobNotFound:
        return render(request, "not_found.html", {"title": "Not found", "what": "that image"},
                      viewer=who, status=404)
    except OrchestratorError as exc:
        return render(request, "not_found.html", {"title": "No image", "what": str(exc)},
                      viewer=who, status=409)
    response = Response(file.data, media_type=file.content_type)
    if download:
        extension = file.content_type.rpartition("/")[2].replace("jpeg", "jpg")
        response.headers["Content-Disposition"] = (
            f'attachment; filename="{file.job_id}-{which}.{extension}"')
    return secure(response)


@router.get("/jobs/{job_id}/input")
def job_input(request: Request, job_id: str, who: ViewerDep, download: str = "") -> Response:
    return _image(request, who, job_id, "input", download in ("true", "1", "yes"))


@router.get("/jobs/{job_id}/result")
def job_result(request: Request, job_id: str, who: ViewerDep, download: str = "") -> Response:
    return _image(request, who, job_id, "result", download in ("true", "1", "yes"))
