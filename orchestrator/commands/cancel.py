"""Cancel: at the provider first (a remote job may be running there), then in Postgres."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from orchestrator.commands.caller import Caller, visible_job
from orchestrator.db.session import session_scope
from orchestrator.errors import JobStateError
from orchestrator.jobs import service
from orchestrator.jobs.states import AttemptOutcome, JobState
from orchestrator.settings import Settings


class ProviderAnswer(enum.Enum):
    CANCELLED = "cancelled"  # the provider stops it (or never started it)
    ALREADY_COMPLETED = "already_completed"  # too late: its result is being collected


class CancelOutcome(enum.Enum):
    CANCELLED = "cancelled"
    COMPLETED_AT_PROVIDER = "completed_at_provider"  # kept; the poller collects the result
    ENDED_MEANWHILE = "ended_meanwhile"  # failed or was cancelled while we asked the provider


@dataclass(frozen=True)
class CancelResult:
    job_id: uuid.UUID
    outcome: CancelOutcome
    provider_request_id: str | None
    state: JobState


def cancel_at_provider(settings: Settings, provider_request_id: str) -> ProviderAnswer:
    """Ask the remote backend to drop a request. The one place a cancel reaches a provider."""
    from orchestrator.backends.fal import FalBackend
    from orchestrator.backends.fal.client import cancel_once

    answer = cancel_once(FalBackend(settings).key(), settings.fal_endpoint, provider_request_id)
    return (ProviderAnswer.ALREADY_COMPLETED if answer == "already_completed"
            else ProviderAnswer.CANCELLED)


def cancel(settings: Settings, caller: Caller, job_id: uuid.UUID | str) -> CancelResult:
    """Cancel a job that has not finished. Raises JobStateError if it has (succeeded
    included, even if it finished while the provider was asked)."""
    with session_scope(settings.database_url) as session:
        job = visible_job(session, caller, job_id)
        if job.state.is_final:
            raise JobStateError(f"job {job.id} is already {job.state.value}; nothing to cancel")
        key, state = job.id, job.state
        request_id = next((a.provider_request_id for a in job.attempts
                           if a.outcome is AttemptOutcome.RUNNING and a.provider_request_id),
                          None)
    if request_id is not None and (cancel_at_provider(settings, request_id)
                                   is ProviderAnswer.ALREADY_COMPLETED):
        return CancelResult(key, CancelOutcome.COMPLETED_AT_PROVIDER, request_id, state)
    with session_scope(settings.database_url) as session:
        job = visible_job(session, caller, key, lock=True)
        if job.state is JobState.SUCCEEDED:
            raise JobStateError(f"job {job.id} is already succeeded; nothing to cancel")
        if job.state.is_final:
            return CancelResult(key, CancelOutcome.ENDED_MEANWHILE, request_id, job.state)
        job = service.cancel(session, key)
        return CancelResult(key, CancelOutcome.CANCELLED, request_id, job.state)
