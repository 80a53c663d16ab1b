"""The interface every backend implements.

A backend turns one job's input into one output image. The job runner owns everything around
it (claiming, leases, retries, storing, cost rows), so accounting cannot differ per backend.
"""

from __future__ import annotations

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


class Backend:
    """Subclasses set ``name`` (also the Celery queue) and implement ``run``."""

    name: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @classmethod
    def model_label(cls, settings: Settings) -> str:
        """The model recorded on each job, for reports."""
        raise NotImplementedError

    @classmethod
    def unavailable_reason(cls, settings: Settings) -> str | None:
        """None when the backend can run with these settings, else why not (for people)."""
        raise NotImplementedError

    def price_per_second(self) -> Decimal:
        raise NotImplementedError

    def run(self, job_input: BackendInput) -> BackendOutput:
        """Process one input; raise a JobError subclass to say whether a retry can help."""
        raise NotImplementedError
