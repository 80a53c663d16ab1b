"""Per-tenant caps checked when jobs are recorded: jobs in flight and stored input bytes.

``admit`` runs inside the transaction that records the jobs (``jobs.producer`` calls it before
writing), so the CLI, the API and the console get the same caps, and a refused submit records
nothing. On Postgres a transaction-scoped advisory lock per tenant serialises the check with
the insert, so two concurrent submits cannot both pass a cap that only one fits under.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.db.models import Job, JobInput
from orchestrator.errors import QuotaExceeded
from orchestrator.jobs.states import JobState
from orchestrator.settings import Settings

IN_FLIGHT = (JobState.QUEUED, JobState.RUNNING, JobState.RETRYING)


def _lock_tenants(session: Session, clients: list[str]) -> None:
    if session.get_bind().dialect.name != "postgresql":
        return  # SQLite (embedded mode) has one writer at a time anyway
    for client in sorted(clients):  # one order everywhere: no deadlock between two submits
        session.execute(select(func.pg_advisory_xact_lock(
            func.hashtextextended("orchestrator.quota:" + client, 0))))


def in_flight(session: Session, client: str) -> int:
    return int(session.scalar(select(func.count()).select_from(Job).where(
        Job.client == client, Job.state.in_(IN_FLIGHT))) or 0)


def stored_input_bytes(session: Session, client: str) -> int:
    """Bytes of the tenant's inputs still stored (retention has not removed them)."""
    return int(session.scalar(
        select(func.coalesce(func.sum(JobInput.size_bytes), 0))
        .join(Job, Job.id == JobInput.job_id)
        .where(Job.client == client, JobInput.expired_at.is_(None))) or 0)


def admit(session: Session, settings: Settings, new: list[tuple[Job, int]]) -> None:
    """Refuse the whole submit (QuotaExceeded) if any tenant would pass a cap."""
    max_jobs = settings.inputs.tenant_max_jobs_in_flight
    max_bytes = settings.inputs.tenant_max_stored_input_bytes
    if not max_jobs and not max_bytes:
        return
    jobs: dict[str, int] = defaultdict(int)
    sizes: dict[str, int] = defaultdict(int)
    for job, size in new:
        if job.state is JobState.QUEUED:
            jobs[job.client] += 1
            sizes[job.client] += size
    clients = [c for c in jobs if (max_jobs and jobs[c]) or (max_bytes and sizes[c])]
    if not clients:
        return
    _lock_tenants(session, clients)
    for client in clients:
        if max_jobs and jobs[client]:
            now = in_flight(session, client)
            if now + jobs[client] > max_jobs:
                raise QuotaExceeded(
                    f"quota exceeded: tenant {client!r} has {now:,} jobs in flight and this "
                    f"submit adds {jobs[client]:,}, over the cap of {max_jobs:,} "
                    "(ORCH_TENANT_MAX_JOBS_IN_FLIGHT); nothing was recorded")
        if max_bytes and sizes[client]:
            stored = stored_input_bytes(session, client)
            if stored + sizes[client] > max_bytes:
                raise QuotaExceeded(
                    f"quota exceeded: tenant {client!r} stores {stored:,} bytes of inputs and "
                    f"this submit adds {sizes[client]:,}, over the cap of {max_bytes:,} "
                    "(ORCH_TENANT_MAX_STORED_INPUT_BYTES); nothing was recorded")
