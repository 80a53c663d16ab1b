"""A job's input image as it was stored (files and uploads; URL inputs are not kept)."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from orchestrator.commands.caller import Caller, visible_job
from orchestrator.commands.views import ResultFile
from orchestrator.db.models import JobInput
from orchestrator.db.session import session_scope
from orchestrator.errors import JobStateError
from orchestrator.settings import Settings
from orchestrator.storage.inputs import load_input

# Magic numbers of the formats the decoder accepts, for the Content-Type of the download.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


def content_type_of(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in _SIGNATURES if data.startswith(magic)),
                "application/octet-stream")


def input_file(settings: Settings, caller: Caller, job_id: uuid.UUID | str) -> ResultFile:
    """The bytes the job was submitted with. JobStateError for a URL input (not stored)."""
    with session_scope(settings.database.url.get_secret_value()) as session:
        job = visible_job(session, caller, job_id)
        key = job.id
        if session.get(JobInput, key) is None:
            raise JobStateError(f"job {key}'s input was a URL; its bytes are not kept")
    # From whichever store holds them (the database, a directory, the object store); an input
    # deleted by retention raises InputExpired.
    data = load_input(settings, key)
    return ResultFile(key, data, content_type_of(data))


def has_input(settings: Settings, caller: Caller, job_id: uuid.UUID | str) -> bool:
    """Whether the job's input bytes are kept (without reading them)."""
    with session_scope(settings.database.url.get_secret_value()) as session:
        job = visible_job(session, caller, job_id)
        return session.scalar(select(JobInput.job_id).where(JobInput.job_id == job.id)) is not None
