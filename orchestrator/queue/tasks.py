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

from orchestrator.backends import Backend, InlineBackend, backend_class
from orchestrator.backends.inference_gate import InferenceGate
from orchestrator.backends.local import LocalBackend, install_gate
from orchestrator.backends.providers import ProviderFallback
from orchestrator.db.models import Job
from orchestrator.db.session import session_scope
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
_backends: dict[str, Backend] = {}
_poller: Any = None
_reconciler: Any = None


def backend_for(name: str) -> Backend:
    backend = _backends.get(name)
    if backend is None:
        backend = backend_class(name)(get_settings())
        _backends[name] = backend
    return backend


def _publish(job_id: uuid.UUID, queue: str, countdown: float) -> None:
    publish_run(get_settings(), job_id, queue, countdown)


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _start_backends(**_: Any) -> None:
    """Per-process backend state: the warm ONNX session, the fal poller thread."""
    global _poller
    queues = os.environ.get(WORKER_QUEUES_ENV, "local").split(",")
    settings = get_settings()
    facts: dict[str, Any] = {"queues": queues}
    if LocalBackend.name in queues:
        install_gate(InferenceGate.for_worker(os.getppid(), settings.inference_slots()))
        backend = backend_for(LocalBackend.name)
        assert isinstance(backend, LocalBackend)
        started = time.perf_counter()
        try:
            providers = backend.warm()
        except ProviderFallback as exc:
            # Running on the CPU while the operator asked for a GPU is worse than not running:
            # stop the whole worker instead of letting the pool respawn this process forever.
            log.critical("%s", exc)
            health.record_refused(str(exc))
            os.kill(os.getppid(), signal.SIGTERM)
            raise
        facts.update(model=LocalBackend.model_label(settings), providers=providers,
                     warm_seconds=round(time.perf_counter() - started, 3))
        log.info("local backend ready in process %d (providers: %s)", os.getpid(),
                 ", ".join(providers))
    if "fal" in queues:
        from orchestrator.backends.fal.poller import FalPoller

        _poller = FalPoller(settings, _publish, on_beat=health.record_poller_beat)
        _poller.start()
        facts["fal_poller"] = True
        log.info("fal poller running in process %d", os.getpid())
    health.record_ready(**facts)


@task_postrun.connect  # type: ignore[untyped-decorator]
def _count_job(**_: Any) -> None:
    health.record_job_done()


@worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _stop_backends(**_: Any) -> None:
    if _poller is not None:
        _poller.stop()


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
        with session_scope(settings.database.url.get_secret_value()) as session:
            job = session.get(Job, key)
            backend_name = job.backend if job is not None else LocalBackend.name
        backend = backend_for(backend_name)
        with log_context(backend=backend_name):
            if isinstance(backend, InlineBackend):
                report = run_delivery(key, settings=settings, backend=backend, publish=_publish)
            else:
                from orchestrator.backends.fal import FalBackend
                from orchestrator.backends.fal.submitter import submit_delivery

                assert isinstance(backend, FalBackend)
                report = submit_delivery(key, settings=settings, backend=backend,
                                         publish=_publish)
        return report.outcome


@app.task(name=DELIVER_WEBHOOK_TASK, bind=True, acks_late=True)  # type: ignore[untyped-decorator]
def deliver_webhook(self: Any, job_id: str, attempt: int = 1) -> bool:
    from orchestrator.webhooks.delivery import MAX_DELIVERIES, deliver, retry_delay

    settings = get_settings()
    key = uuid.UUID(job_id)
    with log_context(job_id=job_id):
        if deliver(key, settings) or attempt >= MAX_DELIVERIES:
            return True
    queue = self.request.delivery_info.get("routing_key") or LocalBackend.name
    countdown = min(retry_delay(attempt), settings.retry_countdown_cap())
    publish_webhook(settings, key, queue, attempt + 1, countdown)
    return False
