"""Cancel a job's request at its provider, before the job is cancelled in the database."""

from __future__ import annotations

from orchestrator import backends
from orchestrator.backends.base import CancelOutcome
from orchestrator.db.models import Job
from orchestrator.jobs.states import AttemptOutcome
from orchestrator.settings import Settings


def running_request(job: Job) -> str | None:
    """The provider's request id of the job's running attempt, if it has one."""
    return next((a.provider_request_id for a in job.attempts
                 if a.outcome is AttemptOutcome.RUNNING and a.provider_request_id), None)


def cancel_at_provider(backend_name: str, request_id: str, settings: Settings) -> CancelOutcome:
    """Ask the job's remote backend to cancel the request (ALREADY_COMPLETED: it finished
    first; its result is being collected and kept)."""
    return backends.get_remote(backend_name, settings).cancel(request_id)
