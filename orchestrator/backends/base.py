"""The two interfaces a backend implements, and the values that cross them.

A backend is an adapter: it talks to one engine and nothing else. Everything around a job —
claiming, leases, retries, storing, cost rows, budgets, limits shared by all workers — belongs
to ``orchestrator.jobs``, so accounting cannot differ per backend.

- :class:`InlineBackend` runs a job inside the worker slot: image bytes in, cut-out and the
  measured compute seconds out (local rembg).
- :class:`RemoteBackend` hands a job to a provider's queue: submit once (a paid call: never
  retried by the adapter), then status, result and cancel by request id (fal).

Adapters raise only exceptions from :mod:`orchestrator.errors`; which one decides what the job
engine does (fail now, try again later, poll again).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar

from orchestrator.jobs.states import ComputeBasis
from orchestrator.settings import Settings


@dataclass(frozen=True)
class BackendInput:
    data: bytes
    options: dict[str, Any]


@dataclass(frozen=True)
class BackendOutput:
    data: bytes
    content_type: str
    width: int
    height: int
    compute_seconds: Decimal
    compute_basis: ComputeBasis
    cropped: bool = False


class Backend(ABC):
    """A backend by ``name`` (also the Celery queue its jobs go to)."""

    name: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @classmethod
    @abstractmethod
    def model_label(cls, settings: Settings) -> str:
        """The model recorded on each job, for reports."""

    @classmethod
    @abstractmethod
    def unavailable_reason(cls, settings: Settings) -> str | None:
        """None when the backend can run with these settings, else why not (for people)."""

    @abstractmethod
    def price_per_second(self) -> Decimal | None:
        """USD per compute second, for the attempt's cost; None when not known (not set)."""

    @classmethod
    def preflight(cls, settings: Settings) -> None:
        """Checks in a worker's main process before it starts serving this backend; raise a
        BackendUnavailable to refuse to start."""


class InlineBackend(Backend):
    """Processes the job inside the worker slot."""

    def warm(self, *, worker_pid: int | None = None) -> list[str]:
        """Load what the first job would otherwise wait for, in a worker's pool process
        (``worker_pid`` is the worker's main process, shared by its pool); returns what it runs
        on (e.g. the ONNX execution providers) for the worker's health record."""
        return []

    @abstractmethod
    def run(self, job_input: BackendInput) -> BackendOutput:
        """Process one input; raise a JobError subclass to say whether a retry can help."""


# --- remote values ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteInput:
    """What a remote job submits: a URL the provider fetches itself, or the file's bytes."""

    url: str | None
    data: bytes | None
    options: dict[str, Any]


@dataclass(frozen=True)
class Queued:
    position: int | None = None


@dataclass(frozen=True)
class Running:
    pass


@dataclass(frozen=True)
class Finished:
    """The provider is done with the request. ``compute_seconds`` is what it reports it billed
    (None when it reports nothing: the engine measures); ``failure`` is set when the run failed
    (a PermanentJobError for the input, a TransientJobError for the run)."""

    compute_seconds: Decimal | None = None
    failure: Exception | None = None


RemoteStatus = Queued | Running | Finished


@dataclass(frozen=True)
class Accepted:
    """The provider accepted a submission: it will run (and bill) it."""

    request_id: str
    status: Queued | Running


@dataclass(frozen=True)
class RemoteOutput:
    data: bytes
    content_type: str


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"
    ALREADY_COMPLETED = "already_completed"
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class RemotePolicy:
    """How the job engine treats one remote backend: limits shared by all workers, the poll
    schedule, deadlines, and where the provider calls back when a request ends."""

    max_in_flight: int
    max_submits_per_second: float
    submit_timeout_seconds: float
    poll_initial_seconds: float
    poll_max_seconds: float
    poll_batch: int
    request_timeout_seconds: float
    resubmit_after_seconds: float
    adopt_wait_seconds: float
    max_result_bytes: int
    callback_url: str | None = None
    # A submit that finds max_in_flight reached waits this long for a slot before its message
    # is handed back to the queue for later.
    slot_wait_seconds: float = 0.0


class RemoteBackend(Backend):
    """Hands jobs to a provider's queue and asks after them by request id."""

    credentials_setting: ClassVar[str] = "credentials"  # named in messages (e.g. FAL_KEY)

    @abstractmethod
    def policy(self) -> RemotePolicy:
        """Limits, poll schedule and deadlines for this backend."""

    @abstractmethod
    def credentials_fingerprint(self) -> str:
        """A short, non-reversible name of the credentials in use (safe for logs and Redis)."""

    @abstractmethod
    def prepare(self, job_input: RemoteInput) -> Any:
        """The submission's body, checked before paying (raise an InputError for bad input)."""

    @abstractmethod
    def submit(self, payload: Any, *, callback_url: str | None) -> Accepted:
        """Send the submission exactly once. Raises BackendBusy (not accepted: safe to try
        again), BackendRejected / CredentialsRefused (not accepted, never will be) or
        SubmitReplyLost (it may have been accepted: the engine must not simply re-send)."""

    @abstractmethod
    async def status(self, request_id: str) -> RemoteStatus:
        """Where the request stands. Raises CredentialsRefused, RemoteRunFailed (the provider
        no longer knows it) or ProviderCallFailed (ask again later)."""

    @abstractmethod
    async def result(self, request_id: str) -> RemoteOutput:
        """The finished request's output file, byte for byte. Raises BackendRejected,
        RemoteRunFailed or ProviderCallFailed."""

    @abstractmethod
    async def cancel_async(self, request_id: str) -> CancelOutcome:
        """Ask the provider to cancel (ProviderCallFailed when it could not be asked)."""

    @abstractmethod
    def cancel(self, request_id: str) -> CancelOutcome:
        """The same, from synchronous code (the command layer)."""

    async def aclose(self) -> None:
        """Close what the asynchronous calls opened on the running event loop (the poller
        calls it before its loop ends)."""

    def verify_callback(self, headers: Mapping[str, str], body: bytes) -> str:
        """The request id of a provider's callback whose signature verifies (raise
        WebhookRejected otherwise). Backends without callbacks refuse them all."""
        from orchestrator.errors import WebhookRejected

        raise WebhookRejected(f"the {self.name} backend takes no callbacks")
