"""Result bytes: write them before the row, read them back, and hand out download URLs."""

from __future__ import annotations

import base64
import uuid

from orchestrator.db.models import Job, Result
from orchestrator.errors import ObjectMissing, ResultExpired
from orchestrator.results.links import result_url
from orchestrator.settings import Settings
from orchestrator.storage import BlobStore, StoredBytes, store_for_new, store_named
from orchestrator.storage.keys import result_key


def put_result(settings: Settings, job_id: uuid.UUID, attempt_id: int,
               data: bytes, content_type: str = "image/png") -> tuple[BlobStore, StoredBytes]:
    """Write a result's bytes (before its row commits); the store, to discard them on failure."""
    store = store_for_new(settings)
    return store, store.put(result_key(job_id, attempt_id), data, content_type)


def _stored(result: Result) -> StoredBytes:
    return StoredBytes(store=result.store, location=result.location, data=result.data)


def expired_message(result: Result) -> str:
    when = result.expired_at.strftime("%Y-%m-%d %H:%M UTC") if result.expired_at else "?"
    return (f"the result of job {result.job_id} has expired: its bytes were deleted on {when} "
            f"by retention (ORCH_RESULT_RETENTION_DAYS); the job and its costs are kept")


def check_not_expired(result: Result) -> None:
    if result.expired_at is not None:
        raise ResultExpired(expired_message(result))


def read_result(settings: Settings, result: Result) -> bytes:
    """The bytes of a stored result, from whichever store holds them."""
    check_not_expired(result)
    try:
        return store_named(settings, result.store).get(_stored(result))
    except ObjectMissing:
        # Deleted behind our back (a bucket lifecycle rule, an operator): as good as expired.
        raise ResultExpired(f"the result of job {result.job_id} is no longer in its store "
                            f"({result.store}); the job and its costs are kept") from None


def file_name(job: Job) -> str:
    return f"{job.source_name or job.id}.png"


def presigned_url(settings: Settings, job: Job) -> str | None:
    """A presigned GET URL for the job's result when an object store holds it, else None."""
    result = job.result
    if result is None:
        return None
    check_not_expired(result)
    if result.store != "s3":
        return None
    return store_named(settings, "s3").presign(
        _stored(result), ttl_seconds=settings.storage.result_url_ttl_seconds, file_name=file_name(job),
        content_type=result.content_type)


def download_url(settings: Settings, job: Job, api_base: str | None) -> str:
    """Where a caller downloads the result: presigned from the object store, else the API's
    token URL (``api_base``), else the bytes themselves as a data URI."""
    result = job.result
    assert result is not None
    url = presigned_url(settings, job)
    if url is not None:
        return url
    if api_base:  # an expiring link, signed under the job's secret (issue 14.1)
        return result_url(api_base, job.id, job.result_token, settings.results.link_ttl_seconds)
    data = read_result(settings, result)
    return f"data:{result.content_type};base64," + base64.b64encode(data).decode()
