"""Per-tenant caps checked when jobs are recorded: jobs in flight and stored input bytes.

``admit`` runs inside the transaction that records the jobs (``jobs.producer`` calls it before
writing the rows), so the CLI, the API and the console get the same caps, and a refused submit
records nothing. Neither check can be passed by two concurrent submits that only one fits
under: for jobs in flight, a transaction-scoped advisory lock per tenant (on Postgres)
serialises the count with the insert; stored bytes are the tenant's running total
(``storage.usage``), to which the producer has already added this submit's inputs, its row
locked until commit: no sum over the tenant's inputs.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.db.models import Job
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


def admit(session: Session, settings: Settings, new: list[tuple[Job, int]],
          stored: dict[str, int]) -> None:
    """Refuse the whole submit (QuotaExceeded) if any tenant would pass a cap. ``stored`` is
    each storing tenant's stored input bytes including this submit's."""
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
    counted = [c for c in clients if max_jobs and jobs[c]]
    if counted:
        _lock_tenants(session, counted)
    for client in clients:
        if max_jobs and jobs[client]:
            now = in_flight(session, client)
            if now + jobs[client] > max_jobs:
                raise QuotaExceeded(
                    f"quota exceeded: tenant {client!r} has {now:,} jobs in flight and this "
                    f"submit adds {jobs[client]:,}, over the cap of {max_jobs:,} "
                    "(ORCH_TENANT_MAX_JOBS_IN_FLIGHT); nothing was recorded")
        if max_bytes and sizes[client] and stored[client] > max_bytes:
            raise QuotaExceeded(
                f"quota exceeded: tenant {client!r} stores {stored[client] - sizes[client]:,} "
                f"bytes of inputs and this submit adds {sizes[client]:,}, over the cap of "
                f"{max_bytes:,} (ORCH_TENANT_MAX_STORED_INPUT_BYTES); nothing was recorded")
