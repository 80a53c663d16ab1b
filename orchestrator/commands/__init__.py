"""The command layer: what the CLI, the HTTP API and the web console do to jobs.

Every command takes the settings and a ``Caller`` (tenant isolation lives here), returns typed
values and raises only exceptions from ``orchestrator.errors``: ``JobNotFound`` (also for
another tenant's job), ``JobStateError``, ``RequestError`` (a caller's mistake), ``InputError``,
``ReportError``, ``IdempotencyConflict``. Front ends parse, call one command, render.
"""

from orchestrator.commands.caller import Caller
from orchestrator.commands.cancel import (
    CancelOutcome,
    CancelResult,
    ProviderAnswer,
    cancel,
    cancel_at_provider,
)
from orchestrator.commands.jobs import JobFilter, list_jobs, result, result_by_token, retry, show
from orchestrator.commands.report import costs
from orchestrator.commands.submit import (
    BatchEntry,
    BatchOutcome,
    SubmitOptions,
    backend_choices,
    publish,
    read_inputs,
    record,
    record_unpublished,
    requests_for,
    resolve_backend,
    submit,
    submit_batch,
    submit_paths,
    submit_sources,
)
from orchestrator.commands.views import AttemptView, JobPage, JobView, ResultFile, ResultMeta
from orchestrator.commands.wait import wait

__all__ = [
    "AttemptView", "BatchEntry", "BatchOutcome", "Caller", "CancelOutcome", "CancelResult",
    "JobFilter", "JobPage", "JobView", "ProviderAnswer", "ResultFile", "ResultMeta",
    "SubmitOptions", "backend_choices", "cancel", "cancel_at_provider", "costs", "list_jobs",
    "publish", "read_inputs", "record", "record_unpublished", "requests_for", "resolve_backend",
    "result", "result_by_token", "retry", "show", "submit", "submit_batch", "submit_paths",
    "submit_sources", "wait",
]
