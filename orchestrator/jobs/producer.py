"""The producer: record jobs in Postgres, then publish them to their backend's queue.

A job row (and its input bytes) is committed before its message is published, so a broker
failure can delay a job but never lose one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import secrets
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from orchestrator.backends import backend_class
from orchestrator.db.models import Job, JobInput, Result
from orchestrator.db.session import session_scope
from orchestrator.errors import BackendUnavailable, InputError, OrchestratorError, PermanentJobError
from orchestrator.images.decode import check_size
from orchestrator.jobs.service import utcnow
from orchestrator.jobs.states import JobState
from orchestrator.queue.celery_app import publish_run
from orchestrator.settings import Settings

log = logging.getLogger("orchestrator.producer")

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
)


class IdempotencyConflict(OrchestratorError):
    """The idempotency key was already used for a different request."""


@dataclass(frozen=True)
class Source:
    """One input: bytes read from a file, or a URL the worker fetches."""

    name: str  # the output is saved as <name>.png
    data: bytes | None = None
    url: str | None = None
    origin: str = ""  # the path or URL as given, for messages

    @property
    def kind(self) -> str:
        return "url" if self.url is not None else "file"


@dataclass(frozen=True)
class Submitted:
    job_id: uuid.UUID
    source: Source
    created: bool  # False when an idempotency key or dedup returned an existing job
    state: JobState
    backend: str = ""


def _is_url(text: str) -> bool:
    return urlsplit(text).scheme in ("http", "https")


def _url_name(url: str, index: int) -> str:
    stem = Path(urlsplit(url).path).stem
    return stem or f"url-{index}"


def expand_sources(items: Iterable[str | Path]) -> Iterator[Source]:
    """Files, folders (their image files, recursively, sorted) and http(s) URLs."""
    for index, item in enumerate(items):
        text = str(item)
        if _is_url(text):
            yield Source(name=_url_name(text, index), url=text, origin=text)
            continue
        path = Path(text)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES:
                    rel = child.relative_to(path).with_suffix("")
                    yield Source(name="__".join(rel.parts), data=child.read_bytes(), origin=str(child))
        elif path.is_file():
            yield Source(name=path.stem, data=path.read_bytes(), origin=str(path))
        else:
            raise FileNotFoundError(f"no such file, folder or http(s) URL: {text}")


def _fingerprint(source: Source) -> str:
    if source.data is not None:
        return hashlib.sha256(source.data).hexdigest()
    return "url:" + str(source.url)


def submit(
    sources: Iterable[Source],
    *,
    settings: Settings,
    backend: str | None = None,
    crop_to_bbox: bool = False,
    idempotency_key: str | None = None,
    client: str = "default",
    sync_mode: bool = False,
    webhook_url: str | None = None,
    requested_backend: str | None = None,
    routing: dict[str, Any] | None = None,
) -> list[Submitted]:
    """Record and enqueue one job per source. Oversized files become failed jobs at once.
    ``backend="auto"`` lets orchestrator.routing choose per job (and record why)."""
    backend_name = backend or settings.default_backend
    if backend_name == "auto":
        from orchestrator.routing import submit_auto

        return submit_auto(sources, settings=settings, client=client,
                           idempotency_key=idempotency_key, crop_to_bbox=crop_to_bbox,
                           sync_mode=sync_mode, webhook_url=webhook_url)
    backend_cls = backend_class(backend_name)
    model = backend_cls.model_label(settings)
    options = {"crop_to_bbox": bool(crop_to_bbox)}
    if sync_mode:
        options["sync_mode"] = True
    items = list(sources)
    # A remote backend that cannot run (no FAL_KEY) fails its jobs at once, with the reason.
    unavailable = backend_cls.unavailable_reason(settings) if backend_cls.remote else None
    submitted: list[Submitted] = []
    for source in items:
        key = idempotency_key
        if key is not None and len(items) > 1:
            key = f"{idempotency_key}:{source.name}"
        submitted.append(
            _record(source, settings, backend_name, model, options, key, client, unavailable,
                    webhook_url, requested_backend, routing)
        )
    for item in submitted:
        if item.created and item.state is JobState.QUEUED:
            _publish(settings, item.job_id, backend_name)
    return [dataclasses.replace(item, backend=backend_name) for item in submitted]


def _record(
    source: Source,
    settings: Settings,
    backend: str,
    model: str,
    options: dict[str, bool],
    key: str | None,
    client: str,
    unavailable: str | None = None,
    webhook_url: str | None = None,
    requested_backend: str | None = None,
    routing: dict[str, Any] | None = None,
) -> Submitted:
    fingerprint = _fingerprint(source)
    rejection: PermanentJobError | None = BackendUnavailable(unavailable) if unavailable else None
    if source.data is not None and rejection is None:
        try:
            check_size(len(source.data), settings.max_input_bytes)
        except InputError as exc:
            rejection = exc
    job = Job(
        id=uuid.uuid4(),
        state=JobState.QUEUED,
        backend=backend,
        model=model,
        options=options,
        client=client,
        idempotency_key=key,
        source_kind=source.kind,
        source_name=source.name[:500],
        source_url=source.url,
        input_sha256=fingerprint if source.data is not None else None,
        max_attempts=settings.max_attempts,
        # When the message is published, right after this row commits (not updated afterwards:
        # a second transaction per submit costs more than the timestamp is worth).
        enqueued_at=utcnow(),
        webhook_url=webhook_url,
        result_token=secrets.token_urlsafe(24),
        requested_backend=requested_backend,
        routing=routing,
    )
    # Dedup never applies to keyed or webhook requests: each must get its own answer.
    if rejection is None and key is None and webhook_url is None and source.data is not None:
        reused = _deduplicate(job, settings)
        if reused is not None:
            return Submitted(reused[0], source, reused[1], reused[2])
    if rejection is not None:
        job.state = JobState.FAILED
        job.error_type = type(rejection).__name__
        job.error_message = str(rejection)
        job.finished_at = utcnow()
    try:
        with session_scope(settings.database_url) as session:
            session.add(job)
            session.flush()
            if source.data is not None and rejection is None:
                session.add(JobInput(job_id=job.id, data=source.data, size_bytes=len(source.data)))
        return Submitted(job.id, source, True, job.state)
    except IntegrityError:
        if key is None:
            raise
    with session_scope(settings.database_url) as session:
        existing = session.scalars(
            select(Job).where(Job.client == client, Job.idempotency_key == key)
        ).one()
        same_input = (
            existing.source_url == source.url
            if source.kind == "url"
            else existing.input_sha256 == fingerprint
        )
        same = (
            same_input
            and existing.source_kind == source.kind
            and existing.backend == backend
            and existing.options == options
        )
        if not same:
            raise IdempotencyConflict(
                f"idempotency key {key!r} was already used for a different request "
                f"(job {existing.id})"
            )
        return Submitted(existing.id, source, False, existing.state)


def _deduplicate(job: Job, settings: Settings) -> tuple[uuid.UUID, bool, JobState] | None:
    """Reuse an identical recent job: a copy of its stored result at zero cost (a new job,
    recorded as deduplicated), or the job itself while it is still in flight (counted on it)."""
    if settings.dedup_window_seconds <= 0:
        return None
    since = utcnow() - timedelta(seconds=settings.dedup_window_seconds)
    with session_scope(settings.database_url) as session:
        original = session.scalars(
            select(Job)
            .where(
                Job.client == job.client,
                Job.input_sha256 == job.input_sha256,
                Job.backend == job.backend,
                Job.model == job.model,
                Job.created_at >= since,
                Job.state.in_([JobState.QUEUED, JobState.RUNNING, JobState.RETRYING, JobState.SUCCEEDED]),
            )
            .order_by(Job.created_at.desc())
            .limit(5)
            .with_for_update()
        ).all()
        original = [o for o in original if o.options == job.options][:1]
        if not original:
            return None
        source = original[0]
        if source.state is not JobState.SUCCEEDED:
            source.dedup_attached += 1
            return source.id, False, source.state
        result = source.result
        if result is None:
            return None
        now = utcnow()
        job.state = JobState.SUCCEEDED
        job.deduplicated_from = source.id
        job.started_at = job.finished_at = now
        session.add(job)
        session.flush()
        session.add(Result(
            job_id=job.id, attempt_id=result.attempt_id, content_type=result.content_type,
            sha256=result.sha256, size_bytes=result.size_bytes, width=result.width,
            height=result.height, store=result.store, location=result.location, data=result.data,
            cropped=result.cropped,
        ))
        return job.id, True, JobState.SUCCEEDED


def _publish(settings: Settings, job_id: uuid.UUID, backend: str) -> None:
    try:
        publish_run(settings, job_id, backend)
    except Exception:
        # The row is committed; the reconciler re-publishes queued jobs that never started.
        log.exception("job %s recorded but not published; it stays queued", job_id)


def wait_for(
    job_ids: list[uuid.UUID],
    *,
    settings: Settings,
    timeout: float | None = None,
    poll_seconds: float = 0.5,
    on_progress: object = None,
) -> dict[uuid.UUID, JobState]:
    """Poll Postgres until every job is final; returns their states."""
    deadline = None if timeout is None else time.monotonic() + timeout
    states: dict[uuid.UUID, JobState] = {}
    while True:
        with session_scope(settings.database_url) as session:
            rows = session.execute(select(Job.id, Job.state).where(Job.id.in_(job_ids))).all()
        states = {row[0]: row[1] for row in rows}
        if callable(on_progress):
            on_progress(states)
        if all(state.is_final for state in states.values()) and len(states) == len(job_ids):
            return states
        if deadline is not None and time.monotonic() > deadline:
            return states
        time.sleep(poll_seconds)
