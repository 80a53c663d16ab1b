"""The Celery application: Redis broker, one queue per backend, settings for reliability.

Messages carry only a job id: Postgres holds the job, Redis only rings the bell.
``celery -A orchestrator.queue.celery_app inspect ping`` and Flower work with this module.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery
from kombu import Queue  # type: ignore[attr-defined]

from orchestrator.queue import kombu_fixes
from orchestrator.settings import Settings, get_settings

kombu_fixes.apply()

RUN_JOB_TASK = "orchestrator.run_job"
DELIVER_WEBHOOK_TASK = "orchestrator.deliver_webhook"
QUEUE_NAMES = ("local", "fal")


def celery_config(settings: Settings) -> dict[str, Any]:
    transport = {
        "visibility_timeout": settings.visibility_timeout_seconds,
        # Sweep for messages of dead workers every interval (kombu's default is ~100 s).
        "unacked_restore_interval": settings.unacked_restore_interval_seconds,
        "unacked_restore_throttle": 1,
    }
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "visibility_timeout": settings.visibility_timeout_seconds,
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
        "worker_proc_alive_timeout": settings.worker_start_timeout_seconds,
        # On, although it kills a task in flight when Redis blips (mid-submit to fal that is a
        # possible second payment: adopted from fal's webhook, else flagged on the job): with
        # it off, kombu 5.7 acks the finished task through the dead channel and the worker
        # exits ("'NoneType' object has no attribute 'client'", seen in test_chaos.py).
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_queues": [Queue(name, routing_key=name) for name in QUEUE_NAMES],  # type: ignore[no-untyped-call]
        "task_default_queue": "local",
        "task_create_missing_queues": False,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "enable_utc": True,
    }


app = Celery("orchestrator", include=["orchestrator.queue.tasks"])
app.add_defaults(lambda: celery_config(get_settings()))


@lru_cache(maxsize=4)
def _publisher(broker_url: str, visibility_timeout: int) -> Celery:
    publisher = Celery("orchestrator-producer")
    publisher.conf.update(
        broker_url=broker_url,
        broker_transport_options={"visibility_timeout": visibility_timeout},
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
    )
    return publisher


def publisher_for(settings: Settings) -> Celery:
    """A Celery app that only publishes, configured from ``settings`` (not the process's)."""
    return _publisher(settings.broker_url, settings.visibility_timeout_seconds)


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


def publish_webhook(settings: Settings, job_id: object, queue: str, attempt: int = 1,
                    countdown: float | None = None) -> None:
    publisher_for(settings).send_task(
        DELIVER_WEBHOOK_TASK, args=[str(job_id), attempt], queue=queue, routing_key=queue,
        countdown=countdown, retry=True,
    )
