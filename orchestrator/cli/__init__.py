"""The ``orchestrator`` command line (Typer). Data goes to stdout, messages to stderr."""

from __future__ import annotations

import logging
import sys

import typer

from orchestrator.cli import (
    api,
    budget,
    dev,
    jobs,
    keys,
    reconcile,
    report,
    storage,
    submit,
    worker,
    workers,
)
from orchestrator.cli.common import console_err
from orchestrator.errors import ConfigError, OrchestratorError

app = typer.Typer(
    name="orchestrator",
    help="Background-removal job orchestrator: submit jobs, run workers, inspect results.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command()
def migrate() -> None:
    """Bring the database schema to the newest Alembic revision."""
    from orchestrator.db.migrate import upgrade
    from orchestrator.settings import get_settings

    upgrade(get_settings().database.url.get_secret_value())
    console_err.print("[green]database schema is at the newest revision[/green]")
    storage.ensure_bucket(get_settings())  # the object store's bucket, when one is configured


app.command(name="worker")(worker.worker)
app.command(name="workers")(workers.workers)
app.command(name="submit")(submit.submit)
app.command(name="api")(api.api)
app.command(name="dev")(dev.dev)
app.command(name="reconcile")(reconcile.reconcile)
app.command(name="gc")(storage.gc)
app.add_typer(storage.results_app, name="results")
app.add_typer(jobs.app, name="jobs")
app.add_typer(keys.app, name="keys")
app.add_typer(report.app, name="report")
app.add_typer(budget.app, name="budget")

EXIT_ERROR = 1
EXIT_CONFIG = 2


def main() -> None:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app()
    except ConfigError as exc:
        console_err.print(f"[red]configuration error:[/red] {exc}")
        sys.exit(EXIT_CONFIG)
    except OrchestratorError as exc:
        console_err.print(f"[red]error:[/red] {exc}")
        sys.exit(EXIT_ERROR)
