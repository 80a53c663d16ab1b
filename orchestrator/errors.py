"""The orchestrator's exceptions.

OrchestratorError
├── ConfigError            a setting is missing or invalid; start-up stops
├── JobNotFound            no job with that id
├── JobStateError          the action does not fit the job's current state
├── ReportError            a report was asked for with options that do not fit
└── JobError               raised while running a job; its type decides retry or not
    ├── PermanentJobError  retrying cannot help: the job fails at once
    │   ├── InputError             the input is not a usable image (message is for people)
    │   │   ├── InputTooLarge
    │   │   ├── UnsupportedFormat
    │   │   ├── CorruptImage
    │   │   └── InputUnreachable   a URL that cannot be fetched, for a reason that will not change
    │   ├── BudgetExceeded         a fal budget is used up and the job may not wait for it
    │   ├── BackendUnavailable     the backend cannot run here (no model, no credentials)
    │   │   └── CredentialsRefused fal answered 401/403 to FAL_KEY
    │   └── BackendRejected        the backend refused the input (fal's 422 and its types)
    └── TransientJobError  may succeed later: retried with exponential backoff and jitter
        ├── FetchFailed            a URL fetch that timed out or got a 5xx
        ├── BackendBusy            the backend refused for now (429, 5xx before accepting)
        └── RemoteRunFailed        the backend accepted and ran it, then failed (runner error)
RequestError (OrchestratorError)  the caller's request is wrong (a missing file, a bad option)

Errors not derived from JobError are treated as transient (a database hiccup, a bug that a
redeploy fixes) and retried up to the attempt limit.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Something went wrong in the orchestrator."""


class ConfigError(OrchestratorError):
    """A setting is missing or invalid."""


class JobNotFound(OrchestratorError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id}")
        self.job_id = job_id


class JobStateError(OrchestratorError):
    """The action does not fit the job's state."""


class ReportError(OrchestratorError):
    """A report's options do not fit (a bad date, an unknown grouping); a message for people."""


class JobError(OrchestratorError):
    """Raised while running a job."""

    retryable = True


class PermanentJobError(JobError):
    retryable = False


class TransientJobError(JobError):
    retryable = True


class InputError(PermanentJobError):
    """The input is not an image the orchestrator can process."""


class InputTooLarge(InputError):
    pass


class UnsupportedFormat(InputError):
    pass


class CorruptImage(InputError):
    pass


class InputUnreachable(InputError):
    pass


class BudgetExceeded(PermanentJobError):
    """A fal spend limit is reached (ORCH_FAL_OVER_BUDGET=fail)."""


class BackendUnavailable(PermanentJobError):
    pass


class CredentialsRefused(BackendUnavailable):
    pass


class BackendRejected(PermanentJobError):
    pass


class FetchFailed(TransientJobError):
    pass


class BackendBusy(TransientJobError):
    pass


class RemoteRunFailed(TransientJobError):
    pass


class SubmitReplyLost(TransientJobError):
    """A paid submission may have been accepted, but its reply never arrived."""


def error_type(exc: BaseException) -> str:
    """A stable name for an error, stored on attempts and jobs."""
    return type(exc).__name__


class RequestError(OrchestratorError):
    """The caller asked for something that cannot be done as asked (a missing file, an unknown
    backend, a bad cursor); a message for people. ``forbidden``: the caller may not ask it."""

    def __init__(self, message: str, *, forbidden: bool = False) -> None:
        super().__init__(message)
        self.forbidden = forbidden
