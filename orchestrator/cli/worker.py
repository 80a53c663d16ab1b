from __future__ import annotations

import logging
import os
from typing import Annotated

import typer

from orchestrator import backends
from orchestrator.cli.common import console_err
from orchestrator.errors import BackendUnavailable, ConfigError
from orchestrator.jobs.availability import unavailable_reason
from orchestrator.settings import get_settings

log = logging.getLogger("orchestrator.worker")


def worker(
    queues: Annotated[
        str, typer.Option("--queues", "-Q", help="Comma-separated backends to serve.")
    ] = backends.DEFAULT,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            "-c",
            help="Worker processes (default: ORCH_WORKER_CONCURRENCY, else one per inference slot).",
            min=1,
        ),
    ] = None,
    max_memory_mb: Annotated[
        int | None,
        typer.Option(
            "--max-memory-mb",
            help="Replace a pool process whose resident memory is above this after a job "
            "(default: ORCH_WORKER_MAX_MEMORY_MB; 0 = no limit).",
            min=0,
        ),
    ] = None,
    max_tasks_per_child: Annotated[
        int | None,
        typer.Option(
            "--max-tasks-per-child",
            help="Replace a pool process after this many jobs (default: "
            "ORCH_WORKER_MAX_TASKS_PER_CHILD; 0 = never).",
            min=0,
        ),
    ] = None,
    loglevel: Annotated[
        str | None, typer.Option(help="Log level (default: ORCH_LOG_LEVEL).")
    ] = None,
    hostname: Annotated[str | None, typer.Option(help="Celery node name.")] = None,
) -> None:
    """Run a Celery worker for the given backends' queues."""
    from orchestrator.observability.logs import configure_logging

    settings = get_settings()
    configure_logging(settings, level=loglevel)
    names = [q.strip() for q in queues.split(",") if q.strip()]
    if not names:
        raise ConfigError("--queues needs at least one backend")
    for name in names:
        reason = unavailable_reason(name, settings)
        if reason:
            raise BackendUnavailable(f"the {name} backend cannot start: {reason}")
        backends.backend_class(name).preflight(settings)
    procs = concurrency or settings.concurrency()
    os.environ["ORCH_WORKER_QUEUES"] = ",".join(names)
    message = (
        f"worker for {', '.join(names)}: {procs} process(es), at most "
        f"{settings.inference_slots()} inference(s) at once × {settings.onnx_threads()} ONNX "
        f"thread(s); backends known: {', '.join(sorted(backends.offered(settings)))}"
    )
    if settings.logs.format == "json":
        log.info("%s", message)
    else:
        console_err.print(message)
    from orchestrator.queue.celery_app import app
    from orchestrator.queue.prepare import prepare_broker

    prepare_broker()  # before the worker's first broker connection
    memory_mb = settings.worker.max_memory_mb if max_memory_mb is None else max_memory_mb
    tasks_per_child = (settings.worker.max_tasks_per_child if max_tasks_per_child is None
                       else max_tasks_per_child)
    argv = [
        "worker",
        f"--queues={','.join(names)}",
        f"--concurrency={procs}",
        f"--loglevel={(loglevel or settings.logs.level).upper()}",
        "--pool=prefork",
        "--without-mingle",
        "--without-gossip",
    ]
    if memory_mb:
        argv.append(f"--max-memory-per-child={memory_mb * 1024}")  # Celery counts KiB
    if tasks_per_child:
        argv.append(f"--max-tasks-per-child={tasks_per_child}")
    if hostname:
        argv.append(f"--hostname={hostname}")
    if settings.logs.format == "json":
        argv.insert(0, "--quiet")  # Celery's banner is not a log line
    app.worker_main(argv)
