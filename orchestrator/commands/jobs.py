"""Show, list, retry and download: every read and the retry, scoped to the caller."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, or_, select, tuple_
from sqlalchemy.orm import selectinload

from orchestrator.commands.caller import Caller, parse_job_id, visible_job
from orchestrator.commands.views import JobPage, JobView, ResultFile
from orchestrator.db.models import Job
from orchestrator.db.session import session_scope
from orchestrator.errors import JobNotFound, JobStateError, RequestError
from orchestrator.jobs import transitions
from orchestrator.jobs.states import JobState
from orchestrator.queue.celery_app import publish_run
from orchestrator.results import read_result
from orchestrator.results.links import token_valid
from orchestrator.settings import Settings
from orchestrator.storage.results import presigned_url

MAX_PAGE = 500


def show(settings: Settings, caller: Caller, job_id: uuid.UUID | str) -> JobView:
    """A job with its attempts, costs, result metadata and routing decision."""
    with session_scope(settings.database.url.get_secret_value()) as session:
        job = visible_job(session, caller, job_id)
        url = None
        if job.result is not None and job.result.expired_at is None:
            url = presigned_url(settings, job)
        return JobView.of(job, detailed=True, result_url=url)


@dataclass(frozen=True)
class JobFilter:
    state: JobState | None = None
    backend: str | None = None
    client: str | None = None  # admins only: a tenant always lists its own
    created_since: datetime | None = None  # inclusive
    created_until: datetime | None = None  # exclusive
    # A job id, an idempotency key (both exact), or part of an input's name or URL.
    search: str | None = None


def encode_cursor(created_at: datetime, job_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, key = raw.partition("|")
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None:
            raise ValueError("naive timestamp")
        return created_at, uuid.UUID(key)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise RequestError("the cursor is not one this listing handed out") from None


def list_jobs(settings: Settings, caller: Caller, filters: JobFilter = JobFilter(), *,
              limit: int = 50, after: str | None = None) -> JobPage:
    """Jobs newest first, a page at a time. Keyset pagination on (created_at, id): each page
    is an index range scan however deep, never an OFFSET."""
    if not 1 <= limit <= MAX_PAGE:
        raise RequestError(f"limit must be between 1 and {MAX_PAGE}")
    stmt = select(Job).options(selectinload(Job.result)).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    # A tenant lists its own jobs whatever client it names (an admin's filter, ignored).
    client = filters.client if caller.is_admin else caller.client
    if client is not None:
        stmt = stmt.where(Job.client == client)
    if filters.state is not None:
        stmt = stmt.where(Job.state == filters.state)
    if filters.backend is not None:
        stmt = stmt.where(Job.backend == filters.backend)
    if filters.created_since is not None:
        stmt = stmt.where(Job.created_at >= filters.created_since)
    if filters.created_until is not None:
        stmt = stmt.where(Job.created_at < filters.created_until)
    if filters.search:
        stmt = stmt.where(_matches(filters.search))
    if after is not None:
        created_at, key = decode_cursor(after)
        # The plain bound lets the (client,) created_at index start the scan at the cursor;
        # the row comparison then settles ties on created_at by id.
        stmt = stmt.where(Job.created_at <= created_at,
                          tuple_(Job.created_at, Job.id) < tuple_(created_at, key))
    with session_scope(settings.database.url.get_secret_value()) as session:
        views = [JobView.of(job) for job in session.scalars(stmt)]
    page = views[:limit]
    more = len(views) > limit
    return JobPage(page, encode_cursor(page[-1].created_at, page[-1].id) if more else None)


def _matches(term: str) -> ColumnElement[bool]:
    term = term.strip()
    try:
        return Job.id == uuid.UUID(term)
    except ValueError:
        pass
    pattern = "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return or_(Job.idempotency_key == term, Job.source_name.ilike(pattern, escape="\\"),
               Job.source_url.ilike(pattern, escape="\\"))


def retry(settings: Settings, caller: Caller, job_id: uuid.UUID | str) -> JobView:
    """Send a failed or cancelled job round again (a fresh attempt budget)."""
    with session_scope(settings.database.url.get_secret_value()) as session:
        job = visible_job(session, caller, job_id)
        job = transitions.requeue(session, job.id, settings)
        key, backend = job.id, job.backend
    publish_run(settings, key, backend)
    with session_scope(settings.database.url.get_secret_value()) as session:
        return JobView.of(transitions.get_job(session, key))


def _result_of(settings: Settings, job: Job, *, presign: bool = False) -> ResultFile:
    """Raises ResultExpired when retention deleted the bytes (the API's 410)."""
    if job.result is None:
        raise JobStateError(f"job {job.id} has no result (it is {job.state.value})")
    url = presigned_url(settings, job) if presign else None  # checks the expiry too
    if url is not None:  # the object store serves the bytes, not us
        return ResultFile(job.id, b"", job.result.content_type, url=url)
    return ResultFile(job.id, read_result(settings, job.result), job.result.content_type)


def result(settings: Settings, caller: Caller, job_id: uuid.UUID | str, *,
           presign: bool = False) -> ResultFile:
    """A succeeded job's cut-out (``presign``: a URL of the object store where it has one)."""
    with session_scope(settings.database.url.get_secret_value()) as session:
        return _result_of(settings, visible_job(session, caller, job_id), presign=presign)


def result_by_token(settings: Settings, job_id: uuid.UUID | str, token: str, *,
                    presign: bool = False) -> ResultFile:
    """The cut-out behind a link handed out with a per-job token (no key needed). A wrong
    token is indistinguishable from a missing job."""
    key = parse_job_id(job_id)
    with session_scope(settings.database.url.get_secret_value()) as session:
        job = session.get(Job, key)
        # A link carries an expiry and an HMAC of it under the job's stored secret, never the
        # secret itself; an expired or forged one is indistinguishable from a missing job.
        if job is None or not token_valid(job.result_token, job.id, token):
            raise JobNotFound(str(key))
        return _result_of(settings, job, presign=presign)
