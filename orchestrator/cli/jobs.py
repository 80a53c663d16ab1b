from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from orchestrator import commands
from orchestrator.cli.common import OPERATOR, console, console_err, print_json
from orchestrator.cli.job_view import render_job
from orchestrator.commands import CancelOutcome, JobFilter
from orchestrator.jobs.states import JobState
from orchestrator.settings import get_settings

app = typer.Typer(help="Inspect and act on jobs.", no_args_is_help=True)


@app.command()
def show(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show a job, its attempts, costs and result."""
    job = commands.show(get_settings(), OPERATOR, job_id)
    if json_out:
        print_json(job.to_dict())
        return
    render_job(console, job)


@app.command(name="list")
def list_jobs(
    state: Annotated[
        JobState | None, typer.Option(help="Only jobs in this state.", case_sensitive=False)
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1,
                                       max=commands.jobs.MAX_PAGE)] = 50,
    after: Annotated[
        str | None, typer.Option(help="Continue a listing: the cursor the last page printed.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List jobs, newest first."""
    page = commands.list_jobs(get_settings(), OPERATOR, JobFilter(state=state), limit=limit,
                              after=after)
    if json_out:
        for job in page.jobs:
            print_json(job.to_dict())
    else:
        table = Table("id", "state", "backend", "input", "attempts", "created", "error")
        for job in page.jobs:
            table.add_row(
                str(job.id), job.state, job.backend, job.input, str(job.attempts),
                job.created_at.strftime("%Y-%m-%d %H:%M:%S"), job.error or "",
            )
        console.print(table)
    if page.next_cursor is not None:
        console_err.print(f"more: --after {page.next_cursor}")


@app.command()
def result(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the PNG.")],
) -> None:
    """Write a succeeded job's result to a file."""
    found = commands.result(get_settings(), OPERATOR, job_id)
    output.write_bytes(found.data)
    console_err.print(f"wrote {len(found.data)} bytes to {output}")


@app.command()
def cancel(job_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """Cancel a job that has not finished (at fal too, if it was submitted there)."""
    done = commands.cancel(get_settings(), OPERATOR, job_id)
    at = f" (fal request {done.provider_request_id})" if done.provider_request_id else ""
    if done.outcome is CancelOutcome.COMPLETED_AT_PROVIDER:
        console_err.print(f"fal had already completed job {done.job_id}"
                          f" (request {done.provider_request_id}); its result is being "
                          "collected and kept")
    elif done.outcome is CancelOutcome.ENDED_MEANWHILE:
        console_err.print(f"job {done.job_id} ended as {done.state.value} before it could be "
                          "cancelled")
    else:
        console_err.print(f"job {done.job_id} cancelled{at}")


@app.command()
def retry(job_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """Send a failed or cancelled job round again."""
    job = commands.retry(get_settings(), OPERATOR, job_id)
    console_err.print(f"job {job.id} queued again")
