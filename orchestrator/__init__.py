"""Background-removal job orchestrator: Postgres-backed jobs, Celery on Redis, local and fal
backends. The names below are the public Python API; everything else may move."""

from orchestrator.commands.submit import submit_sources as submit
from orchestrator.errors import (
    BackendUnavailable,
    ConfigError,
    IdempotencyConflict,
    InputError,
    JobNotFound,
    OrchestratorError,
)
from orchestrator.jobs.producer import (
    Source,
    Submitted,
    expand_sources,
    wait_for,
)
from orchestrator.jobs.states import JobState
from orchestrator.settings import Settings, get_settings, load_settings

__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "IdempotencyConflict",
    "InputError",
    "JobNotFound",
    "JobState",
    "OrchestratorError",
    "Settings",
    "Source",
    "Submitted",
    "expand_sources",
    "get_settings",
    "load_settings",
    "submit",
    "wait_for",
]
