"""The interface every backend implements.

A backend turns one job's input into one output image. The job runner owns everything around
it (claiming, leases, retries, storing, cost rows), so accounting cannot differ per backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal
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
    """A backend by ``name`` (also its Celery queue). ``InlineBackend`` subclasses run a job in
    the worker slot; remote ones (fal) submit it and are polled (``remote = True``)."""

    name: ClassVar[str]
    remote: ClassVar[bool] = False

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


class InlineBackend(Backend):
    """A backend that processes the job inside the worker slot (the local rembg pool)."""

    @abstractmethod
    def run(self, job_input: BackendInput) -> BackendOutput:
        """Process one input; raise a JobError subclass to say whether a retry can help."""
