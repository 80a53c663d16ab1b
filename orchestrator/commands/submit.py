"""Submit: files, URLs, uploads and batches, with ``auto`` routing.

Routing decides (orchestrator.routing), this module orchestrates, the producer records rows and
publishes. Every request of one call — ``auto`` included — is recorded by one
``record_requests`` call (``submit_requests`` records, then publishes): unkeyed jobs in one
transaction, keyed ones each in their own (a reused key is a unique violation that would roll
back everyone else's rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator import backends
from orchestrator.commands import quotas
from orchestrator.commands.caller import Caller
from orchestrator.db.session import session_scope
from orchestrator.errors import InputError, RequestError
from orchestrator.jobs.producer import (
    JobRequest,
    Source,
    Submitted,
    expand_sources,
    publish_submitted,
    record_requests,
    submit_requests,
)
from orchestrator.routing import AUTO, gather, plan
from orchestrator.settings import Settings


@dataclass(frozen=True)
class SubmitOptions:
    backend: str | None = None  # a backend's name, "auto", or None for the settings' default
    crop_to_bbox: bool = False
    sync_mode: bool = False
    idempotency_key: str | None = None
    webhook_url: str | None = None
    deadline_seconds: float | None = None  # auto only


@dataclass(frozen=True)
class BatchEntry:
    """One item of a batch: its input, or why its input was refused while parsing."""

    source: Source | InputError
    origin: str
    crop_to_bbox: bool = False
    sync_mode: bool = False


@dataclass(frozen=True)
class BatchOutcome:
    origin: str
    submitted: Submitted | None  # None: refused, see ``error``
    error: str | None = None


def backend_choices(settings: Settings | None = None) -> list[str]:
    """The backends a caller may ask for (the fakes only where they are offered), and auto."""
    names = backends.offered(settings) if settings is not None else list(backends.REAL)
    return [*sorted(names), AUTO]


def resolve_backend(settings: Settings, options: SubmitOptions) -> str:
    """The backend asked for (or the default), refused if unknown; may be ``auto``."""
    name = options.backend or settings.routing.default_backend
    if name != AUTO and name not in backends.offered(settings):
        raise RequestError(
            f"unknown backend {name!r}; available: {', '.join(backend_choices(settings))}")
    if options.deadline_seconds is not None and name != AUTO:
        raise RequestError("a deadline is for backend auto")
    if options.deadline_seconds is not None and options.deadline_seconds <= 0:
        raise RequestError("the deadline must be a positive number of seconds")
    return name


def read_inputs(inputs: Iterable[str | Path]) -> list[Source]:
    """Files, folders (their images, recursively) and http(s) URLs as sources."""
    try:
        sources = list(expand_sources(inputs))
    except FileNotFoundError as exc:
        raise RequestError(str(exc)) from None
    except OSError as exc:
        raise RequestError(f"cannot read {exc.filename}: {exc.strerror}") from None
    if not sources:
        raise RequestError("no image files found in the given inputs")
    return sources


@dataclass(frozen=True)
class _Item:
    source: Source
    crop_to_bbox: bool
    sync_mode: bool
    idempotency_key: str | None


def plan_requests(settings: Settings, caller: Caller, items: Sequence[_Item],
                  options: SubmitOptions) -> list[JobRequest]:
    """One job request per item, its backend decided (by the routing policy for ``auto``)."""
    backend = resolve_backend(settings, options)
    client = caller.submits_as
    if backend != AUTO:
        return [JobRequest(item.source, backend, item.crop_to_bbox, item.sync_mode, client,
                           item.idempotency_key, options.webhook_url) for item in items]
    deadline = options.deadline_seconds or settings.routing.auto_deadline_seconds
    with session_scope(settings.database.url.get_secret_value()) as session:
        signals = gather(session, settings, client)
    decisions = plan(signals, len(items), deadline=deadline,
                     max_error_rate=settings.routing.auto_fal_max_error_rate)
    return [JobRequest(item.source, decision.backend, item.crop_to_bbox, item.sync_mode, client,
                       item.idempotency_key, options.webhook_url, requested_backend=AUTO,
                       routing=decision.as_dict(signals))
            for item, decision in zip(items, decisions, strict=True)]


def requests_for(settings: Settings, caller: Caller, sources: Sequence[Source],
                 options: SubmitOptions) -> list[JobRequest]:
    """The job requests for sources sharing one set of options. With several sources, an
    idempotency key K becomes K:<source name> for each."""
    key = options.idempotency_key
    items = [_Item(source, options.crop_to_bbox, options.sync_mode,
                   f"{key}:{source.name}" if key is not None and len(sources) > 1 else key)
             for source in sources]
    return plan_requests(settings, caller, items, options)


def record(settings: Settings, requests: list[JobRequest]) -> list[Submitted]:
    """Record planned requests (possibly of several callers) and publish them."""
    return submit_requests(requests, settings=settings, admit=quotas.admit)


def record_unpublished(settings: Settings, requests: list[JobRequest]) -> list[Submitted]:
    """``record`` without the publishing: the caller hands the result to ``publish``."""
    return record_requests(requests, settings=settings, admit=quotas.admit)


def publish(settings: Settings, submitted: list[Submitted]) -> None:
    """Publish what ``record_unpublished`` queued (a failure is logged; the reconciler re-drives
    queued jobs whose message never came)."""
    publish_submitted(settings, submitted)


def submit(settings: Settings, caller: Caller, sources: Sequence[Source],
           options: SubmitOptions) -> list[Submitted]:
    """Record and enqueue one job per source; oversized inputs become failed jobs at once."""
    return record(settings, requests_for(settings, caller, sources, options))


def submit_paths(settings: Settings, caller: Caller, inputs: Iterable[str | Path],
                 options: SubmitOptions) -> list[Submitted]:
    """``orchestrator submit``: files, folders and URLs."""
    resolve_backend(settings, options)  # a bad option is refused before files are read
    return submit(settings, caller, read_inputs(inputs), options)


def submit_batch(settings: Settings, caller: Caller, entries: Sequence[BatchEntry],
                 options: SubmitOptions) -> list[BatchOutcome]:
    """A batch: every accepted item in one transaction (``auto`` too); an item whose input was
    refused is reported, not queued, and does not affect the others."""
    resolve_backend(settings, options)
    accepted = [e for e in entries if not isinstance(e.source, InputError)]
    items = [_Item(e.source, e.crop_to_bbox, e.sync_mode, None)
             for e in accepted if isinstance(e.source, Source)]
    submitted = iter(record(settings, plan_requests(settings, caller, items, options))
                     if items else [])
    return [BatchOutcome(e.origin, None, str(e.source)) if isinstance(e.source, InputError)
            else BatchOutcome(e.origin, next(submitted)) for e in entries]


def submit_sources(
    sources: Iterable[Source],
    *,
    settings: Settings,
    backend: str | None = None,
    crop_to_bbox: bool = False,
    idempotency_key: str | None = None,
    client: str = "default",
    sync_mode: bool = False,
    webhook_url: str | None = None,
    deadline_seconds: float | None = None,
) -> list[Submitted]:
    """``orchestrator.submit``, the Python producer API: ``backend="auto"`` included."""
    return submit(settings, Caller(client), list(sources), SubmitOptions(
        backend=backend, crop_to_bbox=crop_to_bbox, sync_mode=sync_mode,
        idempotency_key=idempotency_key, webhook_url=webhook_url,
        deadline_seconds=deadline_seconds))
