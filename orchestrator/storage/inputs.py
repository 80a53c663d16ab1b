"""Input bytes (files and uploads): written before the job rows commit, read by the workers."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.orm import Session

from orchestrator.db.models import JobInput
from orchestrator.db.retry import retry_db
from orchestrator.db.session import session_scope
from orchestrator.errors import CorruptImage, InputExpired, ObjectMissing
from orchestrator.settings import Settings
from orchestrator.storage import StoredBytes, store_for_new, store_named
from orchestrator.storage.keys import input_key

PUT_THREADS = 8


def put_inputs(settings: Settings, items: Sequence[tuple[uuid.UUID, bytes]]
               ) -> dict[uuid.UUID, StoredBytes]:
    """Write every input (in parallel for external stores); all or nothing: on an error the
    ones written are discarded and the error raised (an API submit answers 503)."""
    store = store_for_new(settings)
    if not items:
        return {}
    if store.name == "database" or len(items) == 1:
        pairs = [(job_id, store.put(input_key(job_id), data, "application/octet-stream"))
                 for job_id, data in items]
        return dict(pairs)
    out: dict[uuid.UUID, StoredBytes] = {}
    with ThreadPoolExecutor(max_workers=min(PUT_THREADS, len(items))) as pool:
        futures = {job_id: pool.submit(store.put, input_key(job_id), data,
                                       "application/octet-stream") for job_id, data in items}
        error: BaseException | None = None
        for job_id, future in futures.items():
            try:
                out[job_id] = future.result()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after cleanup
                error = error or exc
    if error is not None:
        discard_inputs(settings, list(out.values()))
        raise error
    return out


def discard_inputs(settings: Settings, stored: Sequence[StoredBytes]) -> None:
    """Remove inputs whose rows did not commit (best effort; the orphan sweep is the backstop)."""
    for item in stored:
        store_named(settings, item.store).discard(item)


def input_row(job_id: uuid.UUID, stored: StoredBytes, size: int) -> dict[str, object]:
    """The job_inputs row for stored bytes."""
    return {"job_id": job_id, "data": stored.data, "size_bytes": size, "store": stored.store,
            "location": stored.location}


def input_ref(session: Session, job_id: uuid.UUID) -> StoredBytes:
    """Where a file or upload job's input is, as its row says."""
    row = session.get(JobInput, job_id)
    if row is None:
        raise CorruptImage("the job's stored input is missing")
    if row.expired_at is not None:
        raise InputExpired(
            f"the job's input was deleted by retention on {row.expired_at:%Y-%m-%d %H:%M} UTC "
            f"(ORCH_INPUT_RETENTION_SECONDS); submit the image again")
    return StoredBytes(store=row.store, location=row.location, data=row.data)


def load_input(settings: Settings, job_id: uuid.UUID) -> bytes:
    """The bytes of a file or upload job, from whichever store holds them. The row is read in
    its own short transaction; the store is not called while it is open."""

    def read_row() -> StoredBytes:
        with session_scope(settings.database.url.get_secret_value()) as session:
            return input_ref(session, job_id)

    stored = retry_db(read_row, budget_seconds=settings.database.retry_seconds, what="reading the input")
    return read_input(settings, stored)


def read_input(settings: Settings, stored: StoredBytes) -> bytes:
    """The bytes an input row (``input_ref``) points at, from whichever store holds them."""
    try:
        return store_named(settings, stored.store).get(stored)
    except ObjectMissing:
        raise CorruptImage("the job's stored input is missing from its store") from None
