"""``orchestrator reconcile``: re-drive stuck jobs from Postgres, once or in a loop."""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Any

import typer

from orchestrator.cli.common import console, console_err, print_json
from orchestrator.jobs.reconciler import PassReport, ReconcilerLoop, reconcile_once
from orchestrator.settings import get_settings


def _show(report: PassReport, json_out: bool) -> None:
    if json_out:
        print_json(report.as_dict())
        return
    if not report.ran:
        console.print("another reconciler is running a pass right now; nothing done")
        return
    console.print(
        f"re-published {len(report.republished)} waiting job(s) that had no message in Redis, "
        f"re-drove {len(report.redriven)} running job(s) whose lease expired, polled "
        f"{report.polled} of {report.overdue_polls} overdue fal request(s)"
        f" ({report.messages_seen} message(s) in Redis)"
    )
    for job_id in report.republished:
        console.print(f"  re-published {job_id}")
    for job_id in report.redriven:
        console.print(f"  re-drove {job_id}")
    if report.broker_error:
        console_err.print(f"[yellow]{report.broker_error}[/yellow]")


def reconcile(
    loop: Annotated[bool, typer.Option("--loop", help="Run a pass every --interval seconds "
                                       "until stopped.")] = False,
    interval: Annotated[float | None, typer.Option(
        help="Seconds between passes (default ORCH_RECONCILE_INTERVAL_SECONDS).", min=0.1)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per pass.")] = False,
) -> None:
    """Re-publish jobs that have no live delivery and poll fal requests nobody polls."""
    settings = get_settings()
    if not loop:
        _show(reconcile_once(settings), json_out)
        return
    from orchestrator.observability.logs import configure_logging

    # A service of its own: JSON lines with masked secrets, as the worker and the API write.
    configure_logging(settings)
    done = threading.Event()

    def on_pass(report: PassReport) -> None:
        if report.acted() or report.broker_error or json_out:
            _show(report, json_out)

    runner = ReconcilerLoop(settings, interval=interval, on_pass=on_pass)

    def stop(*_: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    console_err.print(f"reconciler: a pass every {runner.interval:g} s (Ctrl-C stops)")
    runner.start()
    done.wait()
    runner.stop()
