"""Every exception the orchestrator raises, and the stable error codes jobs store.

OrchestratorError                      code
├── ConfigError                        config_invalid      the server's settings are wrong; start-up stops
├── RequestError                       bad_request         the caller's request is wrong (a missing file, a bad header)
│   ├── IdempotencyConflict            idempotency_conflict  a key reused with a different request
│   └── ReportError                    report_invalid      a report asked for with options that do not fit
├── JobNotFound                        job_not_found       no job with that id (or not the caller's)
├── JobStateError                      job_state_conflict  the action does not fit the job's current state
├── KeyError_                          api_key_invalid     an API key operation that cannot be done
├── BudgetError                        budget_invalid      a budget that cannot be set
├── WebhookRejected                    webhook_rejected    a provider webhook whose signature does not verify
├── CallbackKeysUnavailable            callback_keys_unavailable  the provider's signing keys cannot be fetched now
├── ResultExpired                      result_expired      the result's bytes were deleted by retention (the API's 410)
├── ObjectMissing                      object_missing      a stored object is not where its row says
└── JobError                                               raised while running a job; its type decides retry or not
    ├── PermanentJobError                                  retrying cannot help: the job fails at once
    │   ├── InputError                 input_invalid       the input is not a usable image (message is for people)
    │   │   ├── InputTooLarge          input_too_large
    │   │   ├── UnsupportedFormat      unsupported_format
    │   │   ├── CorruptImage           corrupt_image
    │   │   ├── InputUnreachable       input_unreachable   a URL that cannot be fetched, for a reason that will not change
    │   │   └── InputExpired           input_expired       the stored input was deleted by retention
    │   ├── BudgetExceeded             budget_exceeded     a fal budget is used up and the job may not wait for it
    │   ├── BackendUnavailable         backend_unavailable the backend cannot run here (no model, no credentials)
    │   │   ├── CredentialsRefused     credentials_refused the provider answered 401/403 to its key
    │   │   └── ProviderFallback       provider_fallback   ONNX Runtime fell back from the provider asked for
    │   └── BackendRejected            backend_rejected    the backend refused the input (fal's 422 and its types)
    └── TransientJobError                                  may succeed later: retried with exponential backoff and jitter
        ├── FetchFailed                fetch_failed        a URL fetch that timed out or got a 5xx
        ├── BackendBusy                backend_busy        the backend refused for now (429, 5xx before accepting)
        ├── ProviderCallFailed         provider_call_failed a status/result/cancel call failed in a way asking again can fix
        ├── RemoteRunFailed            remote_run_failed   the backend accepted and ran it, then failed (runner error)
        ├── SubmitReplyLost            submit_reply_lost   a paid submission may have been accepted, its reply never came
        └── StoreError                 store_error         the object store failed a call (orchestrator/storage)
            ├── StoreUnavailable       store_unavailable   unreachable, timed out or 5xx: try again later
            ├── StoreCredentialsRefused store_credentials_refused  the store refused the AWS credentials
            └── StoreBucketMissing     store_bucket_missing  the bucket of ORCH_OBJECT_STORE_URL does not exist

Outcomes that are no exception have codes too (:class:`ErrorCode`): ``worker_lost`` (the worker
died running it), ``attempts_exhausted``, ``cancelled`` and ``internal_error`` (any exception
not derived from JobError: a database hiccup, a bug a redeploy fixes — retried up to the attempt
limit). Jobs and attempts store the code (``error_code``), never a class name, so renaming a
class cannot change what clients and reports see.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class ErrorCode(StrEnum):
    CONFIG_INVALID = "config_invalid"
    BAD_REQUEST = "bad_request"
    QUOTA_EXCEEDED = "quota_exceeded"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    REPORT_INVALID = "report_invalid"
    JOB_NOT_FOUND = "job_not_found"
    JOB_STATE_CONFLICT = "job_state_conflict"
    API_KEY_INVALID = "api_key_invalid"
    BUDGET_INVALID = "budget_invalid"
    WEBHOOK_REJECTED = "webhook_rejected"
    CALLBACK_KEYS_UNAVAILABLE = "callback_keys_unavailable"
    RESULT_EXPIRED = "result_expired"
    OBJECT_MISSING = "object_missing"
    INPUT_EXPIRED = "input_expired"
    STORE_ERROR = "store_error"
    STORE_UNAVAILABLE = "store_unavailable"
    STORE_CREDENTIALS_REFUSED = "store_credentials_refused"
    STORE_BUCKET_MISSING = "store_bucket_missing"
    SIGN_IN_REQUIRED = "sign_in_required"
    CSRF_REFUSED = "csrf_refused"
    PROVIDER_FALLBACK = "provider_fallback"
    INPUT_INVALID = "input_invalid"
    INPUT_TOO_LARGE = "input_too_large"
    UNSUPPORTED_FORMAT = "unsupported_format"
    CORRUPT_IMAGE = "corrupt_image"
    INPUT_UNREACHABLE = "input_unreachable"
    BUDGET_EXCEEDED = "budget_exceeded"
    BACKEND_UNAVAILABLE = "backend_unavailable"
    CREDENTIALS_REFUSED = "credentials_refused"
    BACKEND_REJECTED = "backend_rejected"
    FETCH_FAILED = "fetch_failed"
    BACKEND_BUSY = "backend_busy"
    PROVIDER_CALL_FAILED = "provider_call_failed"
    REMOTE_RUN_FAILED = "remote_run_failed"
    SUBMIT_REPLY_LOST = "submit_reply_lost"
    # outcomes that are not exceptions
    WORKER_LOST = "worker_lost"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    CANCELLED = "cancelled"
    INTERNAL_ERROR = "internal_error"
    RETRY = "retry"  # a transient failure with no more specific code
    PERMANENT_FAILURE = "permanent_failure"  # a permanent failure with no more specific code


# The class names the first releases stored, mapped to today's codes (migration 0007 uses it).
LEGACY_CLASS_NAMES: dict[str, ErrorCode] = {
    "WorkerLost": ErrorCode.WORKER_LOST,
    "AttemptsExhausted": ErrorCode.ATTEMPTS_EXHAUSTED,
    "Cancelled": ErrorCode.CANCELLED,
    "InputError": ErrorCode.INPUT_INVALID,
    "InputTooLarge": ErrorCode.INPUT_TOO_LARGE,
    "UnsupportedFormat": ErrorCode.UNSUPPORTED_FORMAT,
    "CorruptImage": ErrorCode.CORRUPT_IMAGE,
    "InputUnreachable": ErrorCode.INPUT_UNREACHABLE,
    "BudgetExceeded": ErrorCode.BUDGET_EXCEEDED,
    "BackendUnavailable": ErrorCode.BACKEND_UNAVAILABLE,
    "CredentialsRefused": ErrorCode.CREDENTIALS_REFUSED,
    "BackendRejected": ErrorCode.BACKEND_REJECTED,
    "FetchFailed": ErrorCode.FETCH_FAILED,
    "BackendBusy": ErrorCode.BACKEND_BUSY,
    "RemoteRunFailed": ErrorCode.REMOTE_RUN_FAILED,
    "SubmitReplyLost": ErrorCode.SUBMIT_REPLY_LOST,
    "TransientJobError": ErrorCode.RETRY,
    "PermanentJobError": ErrorCode.PERMANENT_FAILURE,
}


class OrchestratorError(Exception):
    """Something went wrong in the orchestrator."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL_ERROR


class ConfigError(OrchestratorError):
    """A setting of the server is missing or invalid (the operator's to fix)."""

    code = ErrorCode.CONFIG_INVALID


class RequestError(OrchestratorError):
    """The caller's request cannot be done as asked (a missing file, an unknown backend, a bad
    cursor: the caller's to fix); a message for people. ``forbidden``: the caller may not ask it."""

    code = ErrorCode.BAD_REQUEST

    def __init__(self, message: str, *, forbidden: bool = False) -> None:
        super().__init__(message)
        self.forbidden = forbidden


class QuotaExceeded(RequestError):
    """A tenant's cap (jobs in flight, stored input bytes) would be exceeded: nothing was
    recorded. The message names the cap and its setting."""

    code = ErrorCode.QUOTA_EXCEEDED


class IdempotencyConflict(RequestError):
    """An idempotency key was reused for a different request."""

    code = ErrorCode.IDEMPOTENCY_CONFLICT


class ReportError(RequestError):
    """A report's options do not fit (a bad date, an unknown grouping); a message for people."""

    code = ErrorCode.REPORT_INVALID


class JobNotFound(OrchestratorError):
    code = ErrorCode.JOB_NOT_FOUND

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id}")
        self.job_id = job_id


class JobStateError(OrchestratorError):
    """The action does not fit the job's state."""

    code = ErrorCode.JOB_STATE_CONFLICT


class KeyError_(OrchestratorError):  # noqa: N801 - not the builtin KeyError
    """An API key operation that cannot be done (unknown key, duplicate name)."""

    code = ErrorCode.API_KEY_INVALID


class BudgetError(OrchestratorError):
    """A budget that cannot be set as asked."""

    code = ErrorCode.BUDGET_INVALID


class SignInRequired(OrchestratorError):
    """The web console has no valid session; ``reason`` (required, expired, revoked,
    signed-out) says why, for the sign-in page."""

    code = ErrorCode.SIGN_IN_REQUIRED

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CsrfRefused(OrchestratorError):
    """A console form without its session's CSRF token, or sent from another site."""

    code = ErrorCode.CSRF_REFUSED


class WebhookRejected(OrchestratorError):
    """Not a webhook the provider signed (or too old to trust)."""

    code = ErrorCode.WEBHOOK_REJECTED


class CallbackKeysUnavailable(OrchestratorError):
    """The provider's signing keys could not be fetched (and none are cached): its callback
    cannot be checked now; the provider retries it."""

    code = ErrorCode.CALLBACK_KEYS_UNAVAILABLE

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class JobError(OrchestratorError):
    """Raised while running a job."""

    retryable = True
    code = ErrorCode.RETRY


class PermanentJobError(JobError):
    retryable = False
    code = ErrorCode.PERMANENT_FAILURE


class TransientJobError(JobError):
    retryable = True
    code = ErrorCode.RETRY


class InputError(PermanentJobError):
    """The input is not an image the orchestrator can process."""

    code = ErrorCode.INPUT_INVALID


class InputTooLarge(InputError):
    code = ErrorCode.INPUT_TOO_LARGE


class UnsupportedFormat(InputError):
    code = ErrorCode.UNSUPPORTED_FORMAT


class CorruptImage(InputError):
    code = ErrorCode.CORRUPT_IMAGE


class InputUnreachable(InputError):
    code = ErrorCode.INPUT_UNREACHABLE


class InputExpired(InputError):
    """The stored input was deleted by retention (ORCH_INPUT_RETENTION_SECONDS)."""

    code = ErrorCode.INPUT_EXPIRED


class BudgetExceeded(PermanentJobError):
    """A fal spend limit is reached (ORCH_FAL_OVER_BUDGET=fail)."""

    code = ErrorCode.BUDGET_EXCEEDED


class BackendUnavailable(PermanentJobError):
    code = ErrorCode.BACKEND_UNAVAILABLE


class CredentialsRefused(BackendUnavailable):
    code = ErrorCode.CREDENTIALS_REFUSED


class ProviderFallback(BackendUnavailable):
    """ONNX Runtime is not running on the execution provider the operator asked for."""

    code = ErrorCode.PROVIDER_FALLBACK


class BackendRejected(PermanentJobError):
    code = ErrorCode.BACKEND_REJECTED


class FetchFailed(TransientJobError):
    code = ErrorCode.FETCH_FAILED


class BackendBusy(TransientJobError):
    code = ErrorCode.BACKEND_BUSY


class ProviderCallFailed(TransientJobError):
    """A status, result, download or cancel call to a remote backend failed in a way that
    asking again can fix (network, 5xx, 429, a result not there yet)."""

    code = ErrorCode.PROVIDER_CALL_FAILED


class RemoteRunFailed(TransientJobError):
    code = ErrorCode.REMOTE_RUN_FAILED


class SubmitReplyLost(TransientJobError):
    """A paid submission may have been accepted, but its reply never arrived."""

    code = ErrorCode.SUBMIT_REPLY_LOST


class StoreError(TransientJobError):
    """An object store call failed. Transient for jobs: they retry with backoff, so a store
    that comes back (or whose credentials are fixed) lets them finish."""

    code = ErrorCode.STORE_ERROR


class StoreUnavailable(StoreError):
    code = ErrorCode.STORE_UNAVAILABLE


class StoreCredentialsRefused(StoreError):
    code = ErrorCode.STORE_CREDENTIALS_REFUSED


class StoreBucketMissing(StoreError):
    code = ErrorCode.STORE_BUCKET_MISSING


class ResultExpired(OrchestratorError):
    """The result's bytes were deleted by retention; the job and its costs remain."""

    code = ErrorCode.RESULT_EXPIRED


class ObjectMissing(OrchestratorError):
    """A stored object is not where its row says (deleted outside the orchestrator)."""

    code = ErrorCode.OBJECT_MISSING


# Input errors: the job's input, not the system, is at fault (the API answers them like fal's 422).
INPUT_ERROR_CODES = frozenset({
    ErrorCode.INPUT_INVALID, ErrorCode.INPUT_TOO_LARGE, ErrorCode.UNSUPPORTED_FORMAT,
    ErrorCode.CORRUPT_IMAGE, ErrorCode.INPUT_UNREACHABLE, ErrorCode.BACKEND_REJECTED,
})


def error_code(exc: BaseException) -> ErrorCode:
    """The stable code stored on attempts and jobs for this error."""
    if isinstance(exc, OrchestratorError):
        return exc.code
    return ErrorCode.INTERNAL_ERROR
