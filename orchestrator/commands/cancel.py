"""Cancel: at the provider first (a remote job may be running there), then in Postgres."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from orchestrator import backends
from orchestrator.backends.base import CancelOutcome as ProviderOutcome
from orchestrator.commands.caller import Caller, visible_job
from orchestrator.db.session import session_scope
from orchestrator.errors import JobStateError
from orchestrator.jobs import transitions
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


def cancel_at_provider(settings: Settings, backend_name: str,
                       provider_request_id: str) -> ProviderAnswer:
    """Ask the job's remote backend to drop a request. The one place a cancel reaches a
    provider (a request the provider no longer knows counts as cancelled)."""
    answer = backends.get_remote(backend_name, settings).cancel(provider_request_id)
    return (ProviderAnswer.ALREADY_COMPLETED if answer is ProviderOutcome.ALREADY_COMPLETED
            else ProviderAnswer.CANCELLED)


def cancel(settings: Settings, caller: Caller, job_id: uuid.UUID | str) -> CancelResult:
    """Cancel a job that has not finished. Raises JobStateError if it has (succeeded
    included, even if it finished while the provider was asked)."""
    with session_scope(settings.database.url.get_secret_value()) as session:
        job = visible_job(session, caller, job_id)
        if job.state.is_final:
            raise JobStateError(f"job {job.id} is already {job.state.value}; nothing to cancel")
        key, state, backend_name = job.id, job.state, job.backend
        request_id = next((a.provider_request_id for a in job.attempts
                           if a.outcome is AttemptOutcome.RUNNING and a.provider_request_id),
                          None)
    if request_id is not None and (cancel_at_provider(settings, backend_name, request_id)
                                   is ProviderAnswer.ALREADY_COMPLETED):
        return CancelResult(key, CancelOutcome.COMPLETED_AT_PROVIDER, request_id, state)
    with session_scope(settings.database.url.get_secret_value()) as session:
        job = visible_job(session, caller, key, lock=True)
        if job.state is JobState.SUCCEEDED:
            raise JobStateError(f"job {job.id} is already succeeded; nothing to cancel")
        if job.state.is_final:
            return CancelResult(key, CancelOutcome.ENDED_MEANWHILE, request_id, job.state)
        job = transitions.cancel(session, key)
        return CancelResult(key, CancelOutcome.CANCELLED, request_id, job.state)
