"""The producer: record jobs in Postgres, then publish them to their backend's queue.

A job row (and its input bytes) is committed before its message is published, so a broker
failure can delay a job but never lose one.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import psycopg
from sqlalchemy import (
    ColumnElement,
    Connection,
    String,
    Table,
    bindparam,
    insert,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from orchestrator import backends
from orchestrator.backends import backend_class
from orchestrator.db.models import Job, JobInput
from orchestrator.db.session import session_scope
from orchestrator.db.types import UTCDateTime
from orchestrator.errors import (
    BackendUnavailable,
    IdempotencyConflict,
    InputError,
    PermanentJobError,
    RequestError,
    error_code,
)
from orchestrator.images.decode import check_size
from orchestrator.jobs import transitions
from orchestrator.jobs.availability import unavailable_reason
from orchestrator.jobs.states import JobState
from orchestrator.jobs.transitions import utcnow
from orchestrator.queue.celery_app import publish_many
from orchestrator.settings import Settings
from orchestrator.storage import StoredBytes
from orchestrator.storage.inputs import discard_inputs, input_row, put_inputs
from orchestrator.storage.usage import add_stored_inputs

log = logging.getLogger("orchestrator.producer")

JOBS = cast(Table, Job.__table__)
JOB_INPUTS = cast(Table, JobInput.__table__)

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
)



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


@dataclass(frozen=True)
class JobRequest:
    """One job to record: its input and everything that makes it a different job."""

    source: Source
    backend: str
    crop_to_bbox: bool = False
    sync_mode: bool = False
    client: str = "default"
    idempotency_key: str | None = None
    webhook_url: str | None = None
    # Set when orchestrator.routing chose ``backend`` for an ``auto`` request: what was asked
    # for, and the decision with its inputs.
    requested_backend: str | None = None
    routing: dict[str, Any] | None = None

    @property
    def options(self) -> dict[str, bool]:
        options = {"crop_to_bbox": bool(self.crop_to_bbox)}
        if self.sync_mode:
            options["sync_mode"] = True
        return options


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
    """Record and enqueue one job per source on a named backend. Oversized files become failed
    jobs at once. ``auto`` is decided by orchestrator.routing, through orchestrator.commands."""
    backend_name = backend or settings.routing.default_backend
    if backend_name == "auto":
        raise RequestError("backend auto is chosen per job: submit through orchestrator.submit "
                           "or orchestrator.commands")
    # an unknown backend is refused before anything is recorded
    backends.check_offered(backend_name, settings)
    items = list(sources)
    requests = []
    for source in items:
        key = idempotency_key
        if key is not None and len(items) > 1:
            key = f"{idempotency_key}:{source.name}"
        requests.append(JobRequest(source, backend_name, crop_to_bbox, sync_mode, client, key,
                                   webhook_url, requested_backend, routing))
    return submit_requests(requests, settings=settings)


# Called in the recording transaction before the rows are written, with the new jobs that will
# run, the sizes of the inputs they store, and each storing tenant's stored input bytes with
# them (orchestrator.storage.usage); raises to refuse them all (quotas).
Admit = Callable[[Session, Settings, list[tuple[Job, int]], dict[str, int]], None]


def submit_requests(requests: list[JobRequest], *, settings: Settings,
                    admit: Admit | None = None) -> list[Submitted]:
    """Record many jobs in one transaction, then publish them on one broker connection."""
    submitted = record_requests(requests, settings=settings, admit=admit)
    publish_submitted(settings, submitted)
    return submitted


def publish_submitted(settings: Settings, submitted: list[Submitted]) -> None:
    """Publish the run messages of the jobs a ``record_requests`` call created and queued."""
    publish_runs(settings, [(item.job_id, item.backend) for item in submitted
                            if item.created and item.state is JobState.QUEUED])


def record_requests(requests: list[JobRequest], *, settings: Settings,
                    admit: Admit | None = None) -> list[Submitted]:
    """Record many jobs in one transaction, publishing nothing (``publish_submitted`` does).

    Requests with an idempotency key are recorded one by one (a key already used is a unique
    violation, which would roll back everyone else's jobs in a shared transaction). The result
    is in the order of ``requests``.
    """
    jobs: list[tuple[JobRequest, Job]] = []
    out: dict[int, Submitted] = {}
    keyed: list[tuple[int, JobRequest, Job]] = []
    # Asked once per backend, not per job (for fal it is a Redis round trip).
    unavailable = {name: _unavailable_reason(name, settings)
                   for name in {request.backend for request in requests}}
    for index, request in enumerate(requests):
        job = _new_job(request, settings, unavailable[request.backend])
        if request.idempotency_key is None:
            jobs.append((request, job))
        else:
            keyed.append((index, request, job))
    if jobs:
        batch = _record_batch(jobs, settings, admit)
        unkeyed = iter(batch)
        for index, request in enumerate(requests):
            if request.idempotency_key is None:
                out[index] = next(unkeyed)
    for index, request, job in keyed:
        out[index] = _record_keyed(request, job, settings, admit)
    return [out[i] for i in range(len(requests))]


def _unavailable_reason(backend: str, settings: Settings) -> str | None:
    # A remote backend that cannot run (no FAL_KEY) fails its jobs at once, with the reason.
    return unavailable_reason(backend, settings) if backends.is_remote(backend) else None


def _new_job(request: JobRequest, settings: Settings, unavailable: str | None) -> Job:
    """The job row for a request: queued, or failed at once if it can never run."""
    backend_cls = backend_class(request.backend)
    source = request.source
    rejection: PermanentJobError | None = BackendUnavailable(unavailable) if unavailable else None
    if source.data is not None and rejection is None:
        try:
            check_size(len(source.data), settings.inputs.max_bytes)
        except InputError as exc:
            rejection = exc
    job = Job(
        id=uuid.uuid4(),
        state=JobState.QUEUED,
        backend=request.backend,
        model=backend_cls.model_label(settings),
        options=request.options,
        client=request.client,
        idempotency_key=request.idempotency_key,
        source_kind=source.kind,
        source_name=source.name[:500],
        source_url=source.url,
        input_sha256=_fingerprint(source) if source.data is not None else None,
        max_attempts=settings.retries.max_attempts,
        # When the message is published, right after this row commits (not updated afterwards:
        # a second write per submit costs more than the timestamp is worth).
        enqueued_at=utcnow(),
        webhook_url=request.webhook_url,
        result_token=secrets.token_urlsafe(24),
        dedup_attached=0,
        requested_backend=request.requested_backend,
        routing=request.routing,
        # Set on every new job, failed or not, so a batch's rows all have the same columns.
        error_code=error_code(rejection) if rejection else None,
        error_message=str(rejection) if rejection else None,
        finished_at=utcnow() if rejection else None,
    )
    if rejection is not None:
        job.state = JobState.FAILED
    return job


def _input_data(request: JobRequest, job: Job) -> bytes | None:
    data = request.source.data
    if data is None or job.state is JobState.FAILED:
        return None
    return data


def _dedupable(request: JobRequest, job: Job, settings: Settings) -> bool:
    # Dedup never applies to keyed or webhook requests: each must get its own answer.
    return (settings.inputs.dedup_window_seconds > 0 and job.state is JobState.QUEUED
            and request.idempotency_key is None and request.webhook_url is None
            and request.source.data is not None)


DedupKey = tuple[str, str | None, str, str, str]


def _dedup_key(job: Job) -> DedupKey:
    options = ",".join(f"{k}={v}" for k, v in sorted(job.options.items()))
    return (job.client, job.input_sha256, job.backend, job.model, options)


def _admitted(job: Job, data: bytes | None) -> tuple[Job, int]:
    return job, len(data) if data is not None else 0


def _count_stored(session: Session, admitted: list[tuple[Job, int]]) -> dict[str, int]:
    """Add the inputs about to be stored to their tenants' running totals (in this
    transaction, so they count exactly when it commits); the totals with them."""
    sizes: dict[str, int] = {}
    for job, size in admitted:
        sizes[job.client] = sizes.get(job.client, 0) + size
    return add_stored_inputs(session, sizes)


def _record_batch(jobs: list[tuple[JobRequest, Job]], settings: Settings,
                  admit: Admit | None = None) -> list[Submitted]:
    """One transaction for every job of the batch, deduplicated against recent jobs and
    against each other."""
    out: list[Submitted] = []
    new_jobs: list[Job] = []
    pending: list[tuple[uuid.UUID, bytes]] = []
    written: dict[uuid.UUID, StoredBytes] = {}
    with _discard_on_error(settings, written), session_scope(settings.database.url.get_secret_value()) as session:
        wanted = [job for request, job in jobs if _dedupable(request, job, settings)]
        originals = _dedup_candidates(session, wanted, settings)
        for request, job in jobs:
            key = _dedup_key(job)
            original = originals.get(key) if _dedupable(request, job, settings) else None
            if original is not None and original.state is not JobState.SUCCEEDED:
                original.dedup_attached += 1
                out.append(Submitted(original.id, request.source, False, original.state,
                                     original.backend))
                continue
            if original is not None and original.result is not None:
                transitions.succeed_with_a_copy(session, job, original)
                out.append(Submitted(job.id, request.source, True, job.state, job.backend))
                continue
            new_jobs.append(job)
            data = _input_data(request, job)
            if data is not None:
                pending.append((job.id, data))
            if _dedupable(request, job, settings):
                originals[key] = job  # later identical requests of this batch attach to it
            out.append(Submitted(job.id, request.source, True, job.state, job.backend))
        data_of = dict(pending)
        admitted = [_admitted(job, data_of.get(job.id)) for job in new_jobs]
        stored = _count_stored(session, admitted)
        if admit is not None:
            admit(session, settings, admitted, stored)
        connection = session.connection()
        # The bytes are stored before their rows commit (a store fault refuses the batch).
        written.update(put_inputs(settings, pending))
        # Bulk INSERTs without RETURNING: one executemany each, both in one pipeline, instead
        # of a unit-of-work flush or one huge multi-VALUES statement that psycopg re-parses.
        with _one_round_trip(connection):
            if new_jobs:
                connection.execute(insert(JOBS), [_job_row(job) for job in new_jobs])
            if pending:
                connection.execute(insert(JOB_INPUTS), [
                    input_row(job_id, written[job_id], len(data)) for job_id, data in pending])
    return out


@contextmanager
def _one_round_trip(connection: Connection) -> Iterator[None]:
    """On psycopg, the block's statements (no results read) go out in one pipeline: one round
    trip for the batch's inserts instead of one per table."""
    driver = connection.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        yield
        return
    try:
        with driver.pipeline():
            yield
    except psycopg.Error as exc:
        # Raised at the pipeline's sync, outside SQLAlchemy: as its execute would raise it.
        raise DBAPIError.instance(None, None, exc, psycopg.Error,
                                  dialect=connection.dialect) from exc


# The states of a job that can be an original: in flight or succeeded.
_ORIGINAL_STATES = (JobState.QUEUED, JobState.RUNNING, JobState.RETRYING, JobState.SUCCEEDED)


def _window(since: datetime) -> tuple[ColumnElement[bool], ...]:
    """Jobs that can be an original: recent (created at or after ``since``), in flight or
    succeeded, and not copies themselves (following copies would lock ever more rows)."""
    return (
        Job.created_at >= since,
        Job.deduplicated_from.is_(None),
        Job.state.in_(_ORIGINAL_STATES),
    )


_TEXT_ARRAY = postgresql.ARRAY(String)

# PostgreSQL's probe: one index lookup per (client, input hash) pair, through a LATERAL join
# over two array parameters. With ``client IN (…) AND input_sha256 IN (…)``, a table without
# statistics yet (a new database, or autovacuum off) got a plan through
# ``ix_jobs_client_created_at`` that filtered every job of the tenant's window — 15-25 ms per
# batch at 40,000 jobs in the API benchmark, against ~0.2 ms here, whatever the statistics.
# SQL text, not a construct: SQLAlchemy walks a construct for its cache key on every execution,
# which for this one cost more than the query (it runs once per submitted batch).
_PAIR_PROBE = text(
    "SELECT hit.id FROM unnest(CAST(:clients AS VARCHAR[]), CAST(:hashes AS VARCHAR[])) AS k(client, sha) "
    "JOIN LATERAL (SELECT jobs.id FROM jobs WHERE jobs.client = k.client AND jobs.input_sha256 = k.sha "
    "AND jobs.created_at >= :since AND jobs.deduplicated_from IS NULL AND jobs.state IN ("
    + ", ".join(f"'{state.value}'" for state in _ORIGINAL_STATES)
    + ") LIMIT 1) AS hit ON true LIMIT 1"
).bindparams(bindparam("clients", type_=_TEXT_ARRAY), bindparam("hashes", type_=_TEXT_ARRAY),
             bindparam("since", type_=UTCDateTime()))


def _any_original(session: Session, jobs: list[Job], since: datetime) -> bool:
    """Whether any job of the batch has an original created at or after ``since``."""
    pairs = sorted({(job.client, job.input_sha256 or "") for job in jobs})
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        clients, hashes = {c for c, _ in pairs}, {h for _, h in pairs}
        probe = select(Job.id).where(Job.client.in_(clients), Job.input_sha256.in_(hashes),
                                     *_window(since))
        return connection.execute(probe.limit(1)).first() is not None
    return connection.execute(_PAIR_PROBE, {
        "clients": [c for c, _ in pairs], "hashes": [h for _, h in pairs], "since": since,
    }).first() is not None


@contextmanager
def _discard_on_error(settings: Settings, written: dict[uuid.UUID, StoredBytes]) -> Iterator[None]:
    """Inputs stored for rows that then did not commit are removed again."""
    try:
        yield
    except BaseException:
        discard_inputs(settings, list(written.values()))
        raise


def _job_row(job: Job) -> dict[str, object]:
    """The column values a new (transient) job was given."""
    return {column.key: job.__dict__[column.key] for column in JOBS.columns
            if column.key in job.__dict__}


def _dedup_candidates(session: Session, jobs: list[Job], settings: Settings) -> dict[DedupKey, Job]:
    """The newest recent original (in flight or succeeded) for each job's dedup key, locked."""
    if not jobs:
        return {}
    since = utcnow() - timedelta(seconds=settings.inputs.dedup_window_seconds)
    # Most batches have no duplicate: a plain read says so without loading or locking rows.
    if not _any_original(session, jobs, since):
        return {}
    where = (Job.client.in_(sorted({job.client for job in jobs})),
             Job.input_sha256.in_(sorted({job.input_sha256 or '' for job in jobs})),
             *_window(since))
    rows = session.scalars(
        select(Job).where(*where).order_by(Job.created_at.desc()).with_for_update()).all()
    found: dict[DedupKey, Job] = {}
    for row in rows:
        found.setdefault(_dedup_key(row), row)
    return found


def _record_keyed(request: JobRequest, job: Job, settings: Settings,
                  admit: Admit | None = None) -> Submitted:
    """Record a job under its idempotency key, or return the job the key already names."""
    source, key = request.source, request.idempotency_key
    written: dict[uuid.UUID, StoredBytes] = {}
    try:
        with _discard_on_error(settings, written), session_scope(settings.database.url.get_secret_value()) as session:
            data = _input_data(request, job)
            admitted = [_admitted(job, data)]
            stored = _count_stored(session, admitted)
            if admit is not None:
                admit(session, settings, admitted, stored)
            session.add(job)
            session.flush()
            if data is not None:
                written.update(put_inputs(settings, [(job.id, data)]))
                session.add(JobInput(**input_row(job.id, written[job.id], len(data))))
        return Submitted(job.id, source, True, job.state, job.backend)
    except IntegrityError:
        pass
    with session_scope(settings.database.url.get_secret_value()) as session:
        existing = session.scalars(
            select(Job).where(Job.client == request.client, Job.idempotency_key == key)
        ).one()
        same_input = (
            existing.source_url == source.url
            if source.kind == "url"
            else existing.input_sha256 == _fingerprint(source)
        )
        same = (
            same_input
            and existing.source_kind == source.kind
            and existing.backend == request.backend
            and existing.options == request.options
        )
        if not same:
            raise IdempotencyConflict(
                f"idempotency key {key!r} was already used for a different request "
                f"(job {existing.id})"
            )
        return Submitted(existing.id, source, False, existing.state, existing.backend)


def publish_runs(settings: Settings, jobs: list[tuple[uuid.UUID, str]]) -> None:
    try:
        publish_many(settings, jobs)
    except Exception:
        # The rows are committed; the reconciler re-publishes queued jobs that never started.
        log.exception("%d job(s) recorded but not published; they stay queued", len(jobs))


def wait_for(
    job_ids: list[uuid.UUID],
    *,
    settings: Settings,
    timeout: float | None = None,
    poll_seconds: float = 0.5,
    on_progress: object = None,
) -> dict[uuid.UUID, JobState]:
    """Poll Postgres until every job is final; returns their states. An id may repeat (inputs
    with the same bytes share a job): each distinct job is waited for once."""
    job_ids = list(dict.fromkeys(job_ids))
    deadline = None if timeout is None else time.monotonic() + timeout
    states: dict[uuid.UUID, JobState] = {}
    while True:
        with session_scope(settings.database.url.get_secret_value()) as session:
            rows = session.execute(select(Job.id, Job.state).where(Job.id.in_(job_ids))).all()
        states = {row[0]: row[1] for row in rows}
        if callable(on_progress):
            on_progress(states)
        if all(state.is_final for state in states.values()) and len(states) == len(job_ids):
            return states
        if deadline is not None and time.monotonic() > deadline:
            return states
        time.sleep(poll_seconds)
