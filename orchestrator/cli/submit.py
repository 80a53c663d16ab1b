from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import select

from orchestrator.backends import BACKENDS
from orchestrator.cli.common import console_err, print_json
from orchestrator.db.models import Job
from orchestrator.db.session import session_scope
from orchestrator.errors import ConfigError
from orchestrator.jobs.producer import Submitted, expand_sources, wait_for
from orchestrator.jobs.producer import submit as submit_jobs
from orchestrator.jobs.states import JobState
from orchestrator.routing import AUTO, submit_auto
from orchestrator.settings import Settings, get_settings
from orchestrator.storage.results import read_result


def submit(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders or http(s) URLs.")],
    backend: Annotated[
        str | None,
        typer.Option(help=f"Backend: {' | '.join(sorted(BACKENDS))} | auto (chosen per job; "
                     "default from settings)."),
    ] = None,
    deadline: Annotated[
        float | None,
        typer.Option(help="With --backend auto: seconds the jobs should take at most "
                     "(default ORCH_AUTO_DEADLINE_SECONDS).", min=0.001),
    ] = None,
    crop_to_bbox: Annotated[bool, typer.Option("--crop-to-bbox", help="Crop to the subject.")] = False,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Submitting again with the same key returns the same job.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait, show progress, save results.")] = False,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where --wait saves <input name>.png.")
    ] = Path("output"),
    timeout: Annotated[
        float | None, typer.Option(help="With --wait: give up after this many seconds.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per job.")] = False,
) -> None:
    """Enqueue background-removal jobs; with --wait, show progress and save the results."""
    settings = get_settings()
    if backend is not None and backend not in BACKENDS and backend != AUTO:
        raise ConfigError(f"unknown backend {backend!r}; available: "
                          f"{', '.join(sorted(BACKENDS))}, {AUTO}")
    if deadline is not None and (backend or settings.default_backend) != AUTO:
        raise ConfigError("--deadline is for --backend auto")
    try:
        sources = list(expand_sources(inputs))
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    if not sources:
        raise ConfigError("no image files found in the given inputs")
    if (backend or settings.default_backend) == AUTO:
        submitted = submit_auto(sources, settings=settings, crop_to_bbox=crop_to_bbox,
                                idempotency_key=idempotency_key, deadline_seconds=deadline)
    else:
        submitted = submit_jobs(
            sources,
            settings=settings,
            backend=backend,
            crop_to_bbox=crop_to_bbox,
            idempotency_key=idempotency_key,
        )
    if not wait:
        for item in submitted:
            if json_out:
                print_json(_summary(item, item.state))
            else:
                print(f"{item.job_id}\t{item.state.value}\t{item.source.origin}")
        return

    states = _wait_with_progress(submitted, settings, timeout)
    failed = _save_results(submitted, states, settings, output, json_out)
    if failed:
        console_err.print(f"[red]{failed} of {len(submitted)} job(s) did not succeed[/red]")
        raise typer.Exit(1)


def _summary(item: Submitted, state: JobState, **extra: object) -> dict[str, object]:
    return {
        "id": str(item.job_id),
        "input": item.source.origin,
        "state": state.value,
        "created": item.created,
        **extra,
    }


def _wait_with_progress(
    submitted: list[Submitted], settings: Settings, timeout: float | None
) -> dict[uuid.UUID, JobState]:
    ids = [item.job_id for item in submitted]
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console_err,
        transient=False,
    ) as progress:
        bar = progress.add_task("removing backgrounds", total=len(set(ids)))

        def update(states: dict[uuid.UUID, JobState]) -> None:
            done = sum(1 for s in states.values() if s.is_final)
            progress.update(bar, completed=done)

        return wait_for(ids, settings=settings, timeout=timeout, on_progress=update)


def _save_results(
    submitted: list[Submitted],
    states: dict[uuid.UUID, JobState],
    settings: Settings,
    output: Path,
    json_out: bool,
) -> int:
    output.mkdir(parents=True, exist_ok=True)
    failed = 0
    used: set[str] = set()
    for item in submitted:
        state = states.get(item.job_id, JobState.QUEUED)
        with session_scope(settings.database_url) as session:
            job = session.scalars(select(Job).where(Job.id == item.job_id)).one()
            error = job.error_message
            data = read_result(settings, job.result) if job.result is not None else None
        saved: str | None = None
        if state is JobState.SUCCEEDED and data is not None:
            name = item.source.name
            if name in used:
                name = f"{name}-{str(item.job_id)[:8]}"
            used.add(name)
            path = output / f"{name}.png"
            path.write_bytes(data)
            saved = str(path)
        else:
            failed += 1
        if json_out:
            print_json(_summary(item, state, output=saved, error=error))
        elif saved:
            print(f"{item.job_id}\t{state.value}\t{saved}")
        else:
            print(f"{item.job_id}\t{state.value}\t{item.source.origin}\t{error or ''}")
    return failed
