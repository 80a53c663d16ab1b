"""Succeeded jobs with a result row, written straight to the database (for storage tests that
need many rows but no inference)."""

from __future__ import annotations

import hashlib
import os
import secrets
import uuid

from orchestrator.db.models import Attempt, Job, JobInput, Result
from orchestrator.db.session import session_scope
from orchestrator.jobs.states import AttemptOutcome, JobState
from orchestrator.jobs.transitions import utcnow
from orchestrator.storage.usage import add_stored_inputs


def insert_succeeded_jobs(database_url: str, n: int, *, size: int = 2048,
                          input_size: int | None = None) -> dict[uuid.UUID, bytes]:
    """``n`` succeeded jobs whose input and result bytes are in the database; job id → result."""
    out: dict[uuid.UUID, bytes] = {}
    now = utcnow()
    with session_scope(database_url) as session:
        for i in range(n):
            job_id = uuid.uuid4()
            data = os.urandom(size)
            source = os.urandom(size // 2 if input_size is None else input_size)
            job = Job(id=job_id, state=JobState.SUCCEEDED, backend="local", model="tiny",
                      options={}, client="default", source_kind="file", source_name=f"img{i}",
                      input_sha256=hashlib.sha256(source).hexdigest(), max_attempts=4,
                      attempt_count=1, result_token=secrets.token_urlsafe(24),
                      started_at=now, finished_at=now)
            attempt = Attempt(job_id=job_id, number=1, backend="local", worker="test",
                              outcome=AttemptOutcome.SUCCEEDED, finished_at=now)
            session.add_all([job, attempt])
            session.flush()
            session.add(JobInput(job_id=job_id, data=source, size_bytes=len(source),
                                 store="database"))
            session.add(Result(job_id=job_id, attempt_id=attempt.id, content_type="image/png",
                               sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data),
                               width=1, height=1, store="database", data=data))
            out[job_id] = data
            add_stored_inputs(session, {"default": len(source)})  # as the producer does
    return out
