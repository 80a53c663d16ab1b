"""The Celery application: Redis broker (or the embedded SQLite one of ``orchestrator dev``), one
queue per backend, settings for reliability.

Messages carry only a job id: the database holds the job, the broker only rings the bell.
``celery -A orchestrator.queue.celery_app inspect ping`` and Flower work with this module.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from celery import Celery
from celery.signals import setup_logging
from kombu import Queue  # type: ignore[attr-defined]
from kombu.utils.uuid import uuid

from orchestrator import backends
from orchestrator.queue.broker import transport_options
from orchestrator.queue.prepare import prepare_broker
from orchestrator.settings import Settings, get_settings

log = logging.getLogger("orchestrator.queue")

RUN_JOB_TASK = "orchestrator.run_job"
DELIVER_WEBHOOK_TASK = "orchestrator.deliver_webhook"
QUEUE_NAMES = backends.NAMES


def celery_config(settings: Settings) -> dict[str, Any]:
    transport = transport_options(settings)
    return {
        "broker_url": settings.broker.url.get_secret_value(),
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "visibility_timeout": settings.broker.visibility_timeout_seconds,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        # Results and states live in Postgres, not in a Celery result backend.
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # A pool process loads and warms its ONNX session before it reports up; Celery's default
        # of 4 s would kill and respawn it in a loop on a big model or a slow disk.
        "worker_proc_alive_timeout": settings.worker.start_timeout_seconds,
        # On, although it kills a task in flight when Redis blips (mid-submit to fal that is a
        # possible second payment: adopted from fal's webhook, else flagged on the job): with
        # it off, kombu 5.7 acks the finished task through the dead channel and the worker
        # exits ("'NoneType' object has no attribute 'client'", seen in test_chaos.py).
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_queues": [Queue(name, routing_key=name) for name in QUEUE_NAMES],  # type: ignore[no-untyped-call]
        "task_default_queue": backends.DEFAULT,
        "task_create_missing_queues": False,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "enable_utc": True,
        # Recycling: a pool process above the memory limit (KiB) after a job, or past its job
        # count, is replaced by a fresh one.
        "worker_max_memory_per_child": settings.worker.max_memory_mb * 1024 or None,
        "worker_max_tasks_per_child": settings.worker.max_tasks_per_child or None,
    }


app = Celery("orchestrator", include=["orchestrator.queue.tasks"])
app.add_defaults(lambda: celery_config(get_settings()))


@app.on_after_configure.connect  # type: ignore[untyped-decorator]
def _prepare_broker(**_: Any) -> None:
    # The app reads its configuration before its first connection (a worker, `celery inspect`):
    # the kombu fix and the embedded broker's transport go in then, not on import.
    prepare_broker()


@setup_logging.connect  # type: ignore[untyped-decorator]
def _configure_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Celery's own lines (and ours) in ORCH_LOG_FORMAT, through the orchestrator's handler."""
    from orchestrator.observability.logs import configure_logging

    configure_logging(get_settings(), level=loglevel or None)


# The `orchestrator_health` inspect command, for `celery inspect` and `orchestrator workers`.
from orchestrator.queue import health as _health  # noqa: E402,F401


@lru_cache(maxsize=4)
def _publisher(broker_url: str, transport_json: str) -> Celery:
    prepare_broker()
    publisher = Celery("orchestrator-producer")
    publisher.conf.update(
        broker_url=broker_url,
        broker_transport_options=json.loads(transport_json),
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
    )
    return publisher


def publisher_for(settings: Settings) -> Celery:
    """A Celery app that only publishes, configured from ``settings`` (not the process's)."""
    return _publisher(settings.broker.url.get_secret_value(), json.dumps(transport_options(settings), sort_keys=True))


def publish_run(settings: Settings, job_id: object, queue: str, countdown: float | None = None,
                connection: Any = None) -> None:
    """Ring the job's bell. ``connection``: a kombu connection to use instead of the pool."""
    publisher_for(settings).send_task(
        RUN_JOB_TASK,
        args=[str(job_id)],
        queue=queue,
        routing_key=queue,
        countdown=countdown,
        retry=True,
        connection=connection,
    )


def publish_many(settings: Settings, jobs: Sequence[tuple[object, str]]) -> None:
    """Publish run messages for (job id, queue) pairs on one pooled broker connection.

    The messages are the ones ``send_task`` would publish, built and sent by the same Celery
    calls it makes (``amqp.create_task_message``, ``amqp.send_task_message``), with what
    ``send_task`` works out for every message done once per batch (the route of each queue,
    the parent task) and the ``argsrepr`` Celery would otherwise make with ``saferepr`` given.
    That halves the CPU a message costs the API. On Redis the batch goes out in one pipeline
    (kombu's ``Producer.batch``): one round trip instead of one per message. Should it fail,
    every message is sent again one by one through ``send_task`` with retries: a bell rung
    twice is harmless (the delivery that does not win the claim is skipped), a bell never
    rung waits for the reconciler.
    """
    if not jobs:
        return
    publisher = publisher_for(settings)
    with publisher.producer_or_acquire() as producer:
        try:
            with producer.batch():
                _send_batch(publisher, producer, jobs)
            return
        except Exception:
            log.warning("batched publish of %d message(s) failed; publishing one by one",
                        len(jobs), exc_info=True)
    with publisher.producer_or_acquire() as producer:
        for job_id, queue in jobs:
            publisher.send_task(RUN_JOB_TASK, args=[str(job_id)], queue=queue, routing_key=queue,
                                producer=producer, retry=True)


def _send_batch(publisher: Celery, producer: Any, jobs: Sequence[tuple[object, str]]) -> None:
    """``send_task(RUN_JOB_TASK, args=[job_id], queue=q, routing_key=q, retry=True)`` for each
    job, on ``producer``."""
    amqp = publisher.amqp
    parent = publisher.current_worker_task
    root_id = parent_id = None
    if parent is not None:  # published from inside a task: the message records its lineage
        root_id, parent_id = parent.request.root_id or parent.request.id, parent.request.id
    routes: dict[str, dict[str, Any]] = {}
    for job_id, queue in jobs:
        args = [str(job_id)]
        options = routes.get(queue)
        if options is None:
            options = amqp.router.route({"queue": queue, "routing_key": queue, "retry": True},
                                        RUN_JOB_TASK, args, {}, None)
        task_id = uuid()
        message = amqp.create_task_message(
            task_id, RUN_JOB_TASK, args, {}, reply_to=publisher.thread_oid,
            root_id=root_id, parent_id=parent_id, ignore_result=None,
            argsrepr=repr(args), kwargsrepr="{}", **options)
        amqp.send_task_message(producer, RUN_JOB_TASK, message, **options)
        if parent is not None:
            parent.add_trail(publisher.AsyncResult(task_id))
        if queue not in routes:
            # The queue is declared with its first message; declaring it again per message (a
            # copy and bind of the entity each time) changes nothing.
            routes[queue] = {**options, "declare": []}


def publish_webhook(settings: Settings, job_id: object, queue: str, attempt: int = 1,
                    countdown: float | None = None) -> None:
    publisher_for(settings).send_task(
        DELIVER_WEBHOOK_TASK, args=[str(job_id), attempt], queue=queue, routing_key=queue,
        countdown=countdown, retry=True,
    )
