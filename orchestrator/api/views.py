"""Jobs as fal's queue API shows requests: status bodies, result bodies and error shapes."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.db.models import Job
from orchestrator.errors import INPUT_ERROR_CODES, ErrorCode
from orchestrator.jobs.states import AttemptOutcome, JobState
from orchestrator.settings import Settings
from orchestrator.storage.results import download_url, read_result

REQUESTS_PATH = "/fal-ai/imageutils/requests"

# Our error codes → fal's error_type vocabulary (fal-queue-protocol.md §9).
FAL_ERROR_TYPES: dict[str, str] = {
    ErrorCode.CORRUPT_IMAGE: "image_load_error",
    ErrorCode.UNSUPPORTED_FORMAT: "image_load_error",
    ErrorCode.INPUT_INVALID: "image_load_error",
    ErrorCode.INPUT_TOO_LARGE: "image_too_large",
    ErrorCode.INPUT_UNREACHABLE: "file_download_error",
    ErrorCode.BACKEND_REJECTED: "image_load_error",
    ErrorCode.CANCELLED: "client_cancelled",
}


def fal_status_name(state: JobState) -> str:
    if state is JobState.QUEUED:
        return "IN_QUEUE"
    if state in (JobState.RUNNING, JobState.RETRYING):
        return "IN_PROGRESS"
    return "COMPLETED"


def request_urls(base: str, job: Job | uuid.UUID) -> dict[str, str]:
    root = f"{base}{REQUESTS_PATH}/{job.id if isinstance(job, Job) else job}"
    return {"response_url": root, "status_url": f"{root}/status", "cancel_url": f"{root}/cancel"}


def queue_position(session: Session, job: Job) -> int:
    return int(session.scalar(
        select(func.count()).select_from(Job).where(
            Job.state == JobState.QUEUED, Job.backend == job.backend, Job.created_at < job.created_at
        )
    ) or 0)


def _logs(job: Job) -> list[dict[str, Any]]:
    lines = []
    for a in job.attempts:
        lines.append({"message": f"attempt {a.number} started on {a.backend} ({a.worker})",
                      "level": "INFO", "source": "orchestrator", "timestamp": a.started_at.isoformat()})
        if a.finished_at is not None:
            text = f"attempt {a.number} {a.outcome.value}"
            if a.error_message:
                text += f": {a.error_message}"
            level = "INFO" if a.outcome is AttemptOutcome.SUCCEEDED else "ERROR"
            lines.append({"message": text, "level": level, "source": "orchestrator",
                          "timestamp": a.finished_at.isoformat()})
    return lines


def _inference_time(job: Job) -> float | None:
    for a in reversed(job.attempts):
        if a.compute_seconds is not None and a.outcome in (AttemptOutcome.SUCCEEDED, AttemptOutcome.FAILED):
            return float(a.compute_seconds)
    return None


def status_body(session: Session, job: Job, base: str, *, with_logs: bool) -> tuple[int, dict[str, Any]]:
    status = fal_status_name(job.state)
    body: dict[str, Any] = {"status": status, "request_id": str(job.id), **request_urls(base, job),
                            "logs": _logs(job) if with_logs else None, "metrics": {}}
    if status == "IN_QUEUE":
        body["queue_position"] = queue_position(session, job)
    if status == "COMPLETED":
        seconds = _inference_time(job)
        if seconds is not None:
            body["metrics"] = {"inference_time": seconds}
        if job.state is not JobState.SUCCEEDED:
            body["error"] = job.error_message or job.state.value
            body["error_type"] = FAL_ERROR_TYPES.get(job.error_code or "", "runner_server_error")
    return (200 if status == "COMPLETED" else 202), body


def result_body(job: Job, base: str, settings: Settings) -> tuple[int, dict[str, Any]]:
    if not job.state.is_final:
        return 400, {"detail": "Request is still in progress"}
    if job.state is JobState.SUCCEEDED and job.result is not None:
        r = job.result
        if job.options.get("sync_mode"):
            url = f"data:{r.content_type};base64," + base64.b64encode(read_result(settings, r)).decode()
        else:  # presigned when an object store holds it, else the API's token URL
            url = download_url(settings, job, base)
        return 200, {"image": {"url": url, "content_type": r.content_type,
                               "file_name": f"{job.source_name or job.id}.png",
                               "file_size": r.size_bytes, "width": r.width, "height": r.height}}
    message = job.error_message or f"the request {job.state.value}"
    if job.state is JobState.CANCELLED:
        return 499, {"detail": message, "error_type": "client_cancelled"}
    if job.error_code in INPUT_ERROR_CODES:
        return 422, {"detail": [{"loc": ["body", "image_url"], "msg": message,
                                 "type": FAL_ERROR_TYPES.get(job.error_code or "", "image_load_error")}]}
    return 500, {"detail": message, "error_type": "runner_server_error"}
