"""The orchestrator's exceptions.

OrchestratorError
├── ConfigError            a setting is missing or invalid; start-up stops
├── JobNotFound            no job with that id
├── JobStateError          the action does not fit the job's current state
├── ReportError            a report was asked for with options that do not fit
├── ResultExpired          the result's bytes were deleted by retention (the API's 410)
└── JobError               raised while running a job; its type decides retry or not
    ├── PermanentJobError  retrying cannot help: the job fails at once
    │   ├── InputError             the input is not a usable image (message is for people)
    │   │   ├── InputTooLarge
    │   │   ├── UnsupportedFormat
    │   │   ├── CorruptImage
    │   │   ├── InputUnreachable   a URL that cannot be fetched, for a reason that will not change
    │   │   └── InputExpired       the stored input was deleted by retention
    │   ├── BudgetExceeded         a fal budget is used up and the job may not wait for it
    │   ├── BackendUnavailable     the backend cannot run here (no model, no credentials)
    │   │   └── CredentialsRefused fal answered 401/403 to FAL_KEY
    │   └── BackendRejected        the backend refused the input (fal's 422 and its types)
    └── TransientJobError  may succeed later: retried with exponential backoff and jitter
        ├── FetchFailed            a URL fetch that timed out or got a 5xx
        ├── BackendBusy            the backend refused for now (429, 5xx before accepting)
        ├── RemoteRunFailed        the backend accepted and ran it, then failed (runner error)
        └── StoreError             the object store failed a call (orchestrator/storage)
            ├── StoreUnavailable       unreachable, timed out or 5xx: try again later
            ├── StoreCredentialsRefused the store refused the AWS credentials
            └── StoreBucketMissing     the bucket of ORCH_OBJECT_STORE_URL does not exist

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


class InputExpired(InputError):
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


class ResultExpired(OrchestratorError):
    """The result's bytes were deleted by retention; the job and its costs remain."""


class StoreError(TransientJobError):
    """An object store call failed. Transient for jobs: they retry with backoff, so a store
    that comes back (or whose credentials are fixed) lets them finish."""


class StoreUnavailable(StoreError):
    pass


class StoreCredentialsRefused(StoreError):
    pass


class StoreBucketMissing(StoreError):
    pass


class ObjectMissing(OrchestratorError):
    """A stored object is not where its row says (deleted outside the orchestrator)."""
