"""``orchestrator gc`` (retention and the orphan sweep), ``orchestrator results migrate``, and the
bucket check of ``orchestrator migrate``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from orchestrator.cli.common import console, console_err, print_json
from orchestrator.errors import ConfigError
from orchestrator.settings import Settings, get_settings

results_app = typer.Typer(help="Where result and input bytes live.", no_args_is_help=True)


def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Delete expired inputs and results (rows stay) and objects no row names."""
    from orchestrator.storage.retention import collect

    settings = get_settings()
    report = collect(settings, dry_run=dry_run)
    if json_out:
        print_json({**report.as_dict(), "bytes_freed": report.bytes_freed})
        return
    verb = "would delete" if dry_run else "deleted"
    console.print(f"{verb}: {report.inputs} input(s) ({report.input_bytes} bytes), "
                  f"{report.results} result(s) ({report.result_bytes} bytes), "
                  f"{report.orphans} orphaned object(s) ({report.orphan_bytes} bytes); "
                  f"{report.bytes_freed} bytes {'would be ' if dry_run else ''}freed")


@results_app.command("migrate")
def migrate_results(
    to: Annotated[str, typer.Option("--to", help="The store to move bytes to (s3).")],
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=10000,
                                            help="Rows per transaction.")] = 100,
) -> None:
    """Move inputs and results kept in the database to the object store, in batches, while
    the system runs. Interrupted, run it again: it resumes where it stopped."""
    from orchestrator.storage.migrate import migrate_to_s3, pending

    if to != "s3":
        raise ConfigError(f"--to {to!r}: the only target is s3 (ORCH_OBJECT_STORE_URL)")
    settings = get_settings()
    ensure_bucket(settings)
    inputs, results, size = pending(settings)
    console_err.print(f"{inputs} input(s) and {results} result(s) ({size} bytes) in the database")
    with Progress(TextColumn("moving"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=console_err) as progress:
        task = progress.add_task("moving", total=size or 1)
        report = migrate_to_s3(settings, batch_size=batch_size,
                               on_batch=lambda rows, moved: progress.advance(task, moved))
    console_err.print(f"moved {report.inputs} input(s) and {report.results} result(s) "
                      f"({report.bytes} bytes) to {settings.storage.object_store_url}")
    for line in report.failed:
        console_err.print(f"[red]not moved[/red] {line}")
    if report.inputs or report.results:
        console_err.print("the database keeps the freed space until it is rewritten: run "
                          "VACUUM FULL job_inputs, results (locks them) or pg_repack (online)")
    if report.failed:
        raise typer.Exit(1)


def ensure_bucket(settings: Settings) -> None:
    """With an object store configured, create its bucket if missing (``orchestrator migrate``)."""
    if not settings.storage.object_store_url:
        return
    from orchestrator.storage.s3 import S3Store

    store = S3Store(settings)
    if store.ensure_bucket():
        console_err.print(f"created bucket {store.bucket!r} at {store.endpoint}")
