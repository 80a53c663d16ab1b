"""Who is asking: tenant isolation for every command lives here, not in the front ends."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from orchestrator.db.models import Job
from orchestrator.errors import JobNotFound, RequestError

DEFAULT_CLIENT = "default"


@dataclass(frozen=True)
class Caller:
    """A tenant (``client``) or an operator. ``client=None`` is the local operator (the CLI):
    it submits as the default client and, being admin, sees every job."""

    client: str | None
    is_admin: bool = False

    @classmethod
    def operator(cls) -> Caller:
        return cls(client=None, is_admin=True)

    @property
    def submits_as(self) -> str:
        return self.client or DEFAULT_CLIENT

    def may_see(self, job: Job) -> bool:
        return self.is_admin or job.client == self.client

    def client_filter(self, requested: str | None) -> str | None:
        """The client a report covers: a tenant only its own (naming another is forbidden); an
        admin everyone (None) or the one asked for."""
        if self.is_admin:
            return requested
        if requested is not None and requested != self.client:
            raise RequestError("a non-admin key sees only its own client's data", forbidden=True)
        return self.client


def parse_job_id(job_id: uuid.UUID | str) -> uuid.UUID:
    if isinstance(job_id, uuid.UUID):
        return job_id
    try:
        return uuid.UUID(str(job_id))
    except ValueError:
        raise JobNotFound(str(job_id)[:100]) from None


def visible_job(session: Session, caller: Caller, job_id: uuid.UUID | str, *,
                lock: bool = False) -> Job:
    """The job, if this caller may see it. Another tenant's job does not exist for them."""
    key = parse_job_id(job_id)
    job = session.get(Job, key, with_for_update=lock)
    if job is None or not caller.may_see(job):
        raise JobNotFound(str(key))
    return job
