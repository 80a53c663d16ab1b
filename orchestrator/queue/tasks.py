"""Celery tasks: thin wrappers that decode arguments and call the job runner."""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

from celery.signals import worker_process_init

from orchestrator.backends import Backend, backend_class
from orchestrator.backends.inference_gate import InferenceGate
from orchestrator.backends.local import LocalBackend, install_gate
from orchestrator.jobs.runner import run_delivery
from orchestrator.queue.celery_app import RUN_JOB_TASK, app, publish_run
from orchestrator.settings import get_settings

log = logging.getLogger("orchestrator.worker")

WORKER_QUEUES_ENV = "ORCH_WORKER_QUEUES"
_backends: dict[str, Backend] = {}


def backend_for(name: str) -> Backend:
    backend = _backends.get(name)
    if backend is None:
        backend = backend_class(name)(get_settings())
        _backends[name] = backend
    return backend


@worker_process_init.connect
def _warm_backends(**_: Any) -> None:
    """Create each backend's per-process state (the ONNX session) before the first job."""
    queues = os.environ.get(WORKER_QUEUES_ENV, "local").split(",")
    if LocalBackend.name in queues:
        settings = get_settings()
        install_gate(InferenceGate.for_worker(os.getppid(), settings.inference_slots()))
        backend = backend_for(LocalBackend.name)
        assert isinstance(backend, LocalBackend)
        backend.warm()
        log.info("local backend ready in process %d", os.getpid())


@app.task(name=RUN_JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def run_job(self: Any, job_id: str) -> str:
    settings = get_settings()

    def publish(job: uuid.UUID, queue: str, countdown: float) -> None:
        publish_run(settings, job, queue, countdown)

    report = run_delivery(
        uuid.UUID(job_id), settings=settings, backend_for=backend_for, publish=publish
    )
    return report.outcome
