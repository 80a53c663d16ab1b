from __future__ import annotations

import os
from typing import Annotated

import typer

from orchestrator.backends import BACKENDS, backend_class
from orchestrator.cli.common import console_err
from orchestrator.errors import BackendUnavailable, ConfigError
from orchestrator.settings import get_settings


def worker(
    queues: Annotated[
        str, typer.Option("--queues", "-Q", help="Comma-separated backends to serve.")
    ] = "local",
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            "-c",
            help="Worker processes (default: ORCH_WORKER_CONCURRENCY, else inference slots + 1).",
            min=1,
        ),
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    hostname: Annotated[str | None, typer.Option(help="Celery node name.")] = None,
) -> None:
    """Run a Celery worker for the given backends' queues."""
    settings = get_settings()
    names = [q.strip() for q in queues.split(",") if q.strip()]
    if not names:
        raise ConfigError("--queues needs at least one backend")
    for name in names:
        reason = backend_class(name).unavailable_reason(settings)
        if reason:
            raise BackendUnavailable(f"the {name} backend cannot start: {reason}")
    procs = concurrency or settings.concurrency()
    os.environ["ORCH_WORKER_QUEUES"] = ",".join(names)
    console_err.print(
        f"worker for {', '.join(names)}: {procs} process(es), at most "
        f"{settings.inference_slots()} inference(s) at once × {settings.onnx_threads()} ONNX "
        f"thread(s); backends known: {', '.join(sorted(BACKENDS))}"
    )
    from orchestrator.queue.celery_app import app

    argv = [
        "worker",
        f"--queues={','.join(names)}",
        f"--concurrency={procs}",
        f"--loglevel={loglevel}",
        "--pool=prefork",
        "--without-mingle",
        "--without-gossip",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    app.worker_main(argv)
