from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import select

from orchestrator.cli.common import console, console_err, print_json
from orchestrator.db.models import Job
from orchestrator.db.session import session_scope
from orchestrator.errors import ConfigError, JobStateError
from orchestrator.jobs import service
from orchestrator.jobs.serialize import job_dict
from orchestrator.jobs.states import AttemptOutcome, JobState
from orchestrator.queue.celery_app import publish_run
from orchestrator.settings import get_settings
from orchestrator.storage.results import read_result

app = typer.Typer(help="Inspect and act on jobs.", no_args_is_help=True)


@app.command()
def show(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show a job, its attempts, costs and result."""
    with session_scope(get_settings().database_url) as session:
        data = job_dict(service.get_job(session, job_id))
    if json_out:
        print_json(data)
        return
    for key, value in data.items():
        if key not in ("attempt_log", "result"):
            console.print(f"[bold]{key}[/bold]: {value}")
    if "result" in data:
        console.print(f"[bold]result[/bold]: {data['result']}")
    table = Table("#", "outcome", "worker", "seconds", "basis", "cost USD", "error")
    for a in data["attempt_log"]:
        table.add_row(
            str(a["number"]), a["outcome"], a["worker"], str(a["compute_seconds"] or ""),
            a["compute_basis"] or "", str(a["cost_usd"] or ""), a["error"] or "",
        )
    console.print(table)


@app.command(name="list")
def list_jobs(
    state: Annotated[
        JobState | None, typer.Option(help="Only jobs in this state.", case_sensitive=False)
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 50,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List jobs, newest first."""
    with session_scope(get_settings().database_url) as session:
        stmt = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
        if state is not None:
            stmt = stmt.where(Job.state == state)
        rows = [job_dict(job, with_attempts=False) for job in session.scalars(stmt)]
    if json_out:
        for row in rows:
            print_json(row)
        return
    table = Table("id", "state", "backend", "input", "attempts", "created", "error")
    for row in rows:
        table.add_row(
            row["id"], row["state"], row["backend"], str(row["input"]), str(row["attempts"]),
            row["created_at"].strftime("%Y-%m-%d %H:%M:%S"), row["error"] or "",
        )
    console.print(table)


@app.command()
def result(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the PNG.")],
) -> None:
    """Write a succeeded job's result to a file."""
    settings = get_settings()
    with session_scope(settings.database_url) as session:
        job = service.get_job(session, job_id)
        if job.result is None:
            raise JobStateError(f"job {job.id} has no result (it is {job.state.value})")
        data = read_result(settings, job.result)
    output.write_bytes(data)
    console_err.print(f"wrote {len(data)} bytes to {output}")


@app.command()
def cancel(job_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """Cancel a job that has not finished (at fal too, if it was submitted there)."""
    settings = get_settings()
    with session_scope(settings.database_url) as session:
        job = service.get_job(session, job_id)
        if job.state.is_final:
            raise JobStateError(f"job {job.id} is already {job.state.value}; nothing to cancel")
        request_id = next(
            (a.provider_request_id for a in job.attempts
             if a.outcome is AttemptOutcome.RUNNING and a.provider_request_id),
            None,
        )
    if request_id is not None:
        from orchestrator.backends.fal import FalBackend
        from orchestrator.backends.fal.client import cancel_once

        answer = cancel_once(FalBackend(settings).key(), settings.fal_endpoint, request_id)
        if answer == "already_completed":
            console_err.print(
                f"fal had already completed job {job.id} (request {request_id}); "
                "its result is being collected and kept"
            )
            return
    with session_scope(settings.database_url) as session:
        job = service.cancel(session, job_id)
    console_err.print(f"job {job.id} cancelled" + (f" (fal request {request_id})" if request_id else ""))


@app.command()
def retry(job_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """Send a failed or cancelled job round again."""
    settings = get_settings()
    with session_scope(settings.database_url) as session:
        job = service.requeue(session, job_id, settings)
        backend = job.backend
    if backend is None:
        raise ConfigError("job has no backend")
    publish_run(settings, job.id, backend)
    console_err.print(f"job {job.id} queued again")
