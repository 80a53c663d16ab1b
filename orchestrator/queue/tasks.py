"""Celery tasks: thin wrappers that decode arguments and call the job runner."""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from typing import Any

from celery.signals import (
    task_postrun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from orchestrator import backends
from orchestrator.backends.base import InlineBackend, RemoteBackend
from orchestrator.db.models import Job
from orchestrator.db.session import get_engine, session_scope
from orchestrator.errors import ProviderFallback
from orchestrator.jobs.runner import run_delivery
from orchestrator.observability.logs import log_context
from orchestrator.queue import health
from orchestrator.queue.celery_app import (
    DELIVER_WEBHOOK_TASK,
    RUN_JOB_TASK,
    app,
    publish_run,
    publish_webhook,
)
from orchestrator.settings import get_settings

log = logging.getLogger("orchestrator.worker")

WORKER_QUEUES_ENV = "ORCH_WORKER_QUEUES"
_pollers: list[Any] = []
_reconciler: Any = None


def _publish(job_id: uuid.UUID, queue: str, countdown: float) -> None:
    publish_run(get_settings(), job_id, queue, countdown)


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _start_backends(**_: Any) -> None:
    """Per-process backend state: warm inline backends (the ONNX session), a poller thread per
    remote backend."""
    queues = os.environ.get(WORKER_QUEUES_ENV, backends.DEFAULT).split(",")
    settings = get_settings()
    facts: dict[str, Any] = {"queues": queues}
    for name in queues:
        backend = backends.get(name, settings)
        if isinstance(backend, InlineBackend):
            started = time.perf_counter()
            try:
                providers = backend.warm(worker_pid=os.getppid())
            except ProviderFallback as exc:
                # Running on the CPU while the operator asked for a GPU is worse than not
                # running: stop the whole worker instead of letting the pool respawn this
                # process forever.
                log.critical("%s", exc)
                health.record_refused(str(exc))
                os.kill(os.getppid(), signal.SIGTERM)
                raise
            facts.update(model=backend.model_label(settings), providers=providers,
                         warm_seconds=round(time.perf_counter() - started, 3))
            log.info("%s backend ready in process %d (providers: %s)", name, os.getpid(),
                     ", ".join(providers))
        elif isinstance(backend, RemoteBackend):
            from orchestrator.jobs.remote.poller import RemotePoller

            poller = RemotePoller(settings, backend, _publish, on_beat=health.record_poller_beat)
            poller.start()
            _pollers.append(poller)
            facts.setdefault("pollers", []).append(name)
            log.info("%s poller running in process %d", name, os.getpid())
    _warm_database(settings)
    health.record_ready(**facts)


def _warm_database(settings: Any) -> None:
    """Open this process's connection pool now, as the model is warmed now: creating the engine
    imports the database driver and connects, which a py-spy profile of a worker showed inside
    its first job."""
    from sqlalchemy import text

    try:
        with get_engine(settings.database.url.get_secret_value()).connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # the first job retries the database as it always has
        log.warning("could not connect to the database at process start: %s", exc)


@task_postrun.connect  # type: ignore[untyped-decorator]
def _count_job(**_: Any) -> None:
    health.record_job_done()


@worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _stop_backends(**_: Any) -> None:
    for poller in _pollers:
        poller.stop()
    health.flush()


# The reconciler runs as a thread in every worker's main process rather than under Celery
# beat: it needs no extra process to deploy and keep alive (beat is a single point of failure
# and would still need a lock against a second copy), it lives wherever work is done, and it
# survives the death of any one worker. A Postgres advisory lock per pass lets one act at a time.
@worker_ready.connect  # type: ignore[untyped-decorator]
def _start_reconciler(**_: Any) -> None:
    global _reconciler
    settings = get_settings()
    if not settings.reconciler.in_worker:
        return
    from orchestrator.jobs.reconciler import ReconcilerLoop

    _reconciler = ReconcilerLoop(settings)
    _reconciler.start()
    log.info("reconciler running in the worker's main process %d, every %g s",
             os.getpid(), _reconciler.interval)


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _stop_reconciler(**_: Any) -> None:
    if _reconciler is not None:
        _reconciler.stop()


@app.task(name=RUN_JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
def run_job(self: Any, job_id: str) -> str:
    settings = get_settings()
    key = uuid.UUID(job_id)
    with log_context(job_id=job_id):
        remote = _served_remote(self.request.delivery_info, settings)
        if remote is not None:
            # A remote backend's queue: its claim reads the job under the row lock anyway, and
            # sends a job of another backend on to that backend's queue (one transaction less
            # per submit than looking the backend up first).
            from orchestrator.jobs.remote.submit import submit_delivery

            with log_context(backend=remote.name):
                return submit_delivery(key, settings=settings, backend=remote,
                                       publish=_publish).outcome
        with session_scope(settings.database.url.get_secret_value()) as session:
            job = session.get(Job, key)
            backend_name = job.backend if job is not None else backends.DEFAULT
        backend = backends.get(backend_name, settings)
        with log_context(backend=backend_name):
            match backend:
                case InlineBackend():
                    report = run_delivery(key, settings=settings, backend=backend,
                                          publish=_publish)
                case RemoteBackend():
                    from orchestrator.jobs.remote.submit import submit_delivery

                    report = submit_delivery(key, settings=settings, backend=backend,
                                             publish=_publish)
                case _:
                    raise TypeError(f"{backend_name} is neither an inline nor a remote backend")
        return report.outcome


def _served_remote(delivery_info: dict[str, Any] | None, settings: Any) -> RemoteBackend | None:
    """The remote backend whose queue this message came from, when this worker serves it."""
    queue = (delivery_info or {}).get("routing_key")
    if not queue or queue not in os.environ.get(WORKER_QUEUES_ENV, "").split(","):
        return None
    backend = backends.get(queue, settings)
    return backend if isinstance(backend, RemoteBackend) else None


@app.task(name=DELIVER_WEBHOOK_TASK, bind=True, acks_late=True)  # type: ignore[untyped-decorator]
def deliver_webhook(self: Any, job_id: str, attempt: int = 1) -> bool:
    from orchestrator.webhooks.delivery import MAX_DELIVERIES, deliver, retry_delay

    settings = get_settings()
    key = uuid.UUID(job_id)
    with log_context(job_id=job_id):
        if deliver(key, settings) or attempt >= MAX_DELIVERIES:
            return True
    queue = self.request.delivery_info.get("routing_key") or backends.DEFAULT
    countdown = min(retry_delay(attempt), settings.retry_countdown_cap())
    publish_webhook(settings, key, queue, attempt + 1, countdown)
    return False
