"""Prometheus metrics read from the source of truth at scrape time: every API host reports
the same numbers, and nothing is lost when a process restarts.

A scrape's cost does not grow with the tables (issue 14.7). Every query reads a bounded slice
through an index: jobs in flight (queued, running, retrying) through ``ix_jobs_state_backend``
— their number is bounded by the per-tenant in-flight cap, not by history; finished jobs,
latencies, cost and compute seconds only for the last ``WINDOW`` (24 h), through
``ix_jobs_created_at`` and ``ix_attempts_started_at``. Why a window and not counters kept in a
table: counters would add a write to every state change and every attempt (the hot path, in
orchestrator/jobs/transitions.py) and a migration, and they drift whenever a row is changed
outside that path (retention, repairs); Prometheus keeps the history of windowed gauges
anyway (``sum_over_time``), and ``orchestrator report costs`` answers for any period. So the
cost and compute-seconds figures are gauges over the window (``…_24h``), not all-time counters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from orchestrator.db.models import Attempt, Job
from orchestrator.db.session import session_scope
from orchestrator.jobs.states import JobState
from orchestrator.jobs.transitions import utcnow
from orchestrator.queue.broker import queue_depth
from orchestrator.queue.celery_app import QUEUE_NAMES
from orchestrator.settings import Settings

LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)
WINDOW = timedelta(days=1)
IN_FLIGHT = (JobState.QUEUED, JobState.RUNNING, JobState.RETRYING)


class OrchestratorCollector(Collector):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "orchestrator_jobs", "Jobs in flight by state and backend; finished jobs (other "
            "states) created in the last 24 h", labels=["state", "backend"])
        cost = GaugeMetricFamily("orchestrator_cost_usd_24h",
                                 "Cost of the attempts started in the last 24 h, USD",
                                 labels=["backend"])
        seconds = GaugeMetricFamily("orchestrator_compute_seconds_24h",
                                    "Compute seconds of the attempts started in the last 24 h",
                                    labels=["backend", "basis"])
        latency = HistogramMetricFamily("orchestrator_job_latency_seconds",
                                        "Submit to done, succeeded jobs of the last 24 h",
                                        labels=["backend"])
        cutoff = utcnow() - WINDOW
        with session_scope(self.settings.database.url.get_secret_value()) as session:
            for state, backend, n in session.execute(
                select(Job.state, Job.backend, func.count())
                .where(Job.state.in_(IN_FLIGHT)).group_by(Job.state, Job.backend)
            ):
                jobs.add_metric([state.value, backend], n)
            for state, backend, n in session.execute(
                select(Job.state, Job.backend, func.count())
                .where(Job.created_at >= cutoff, Job.state.not_in(IN_FLIGHT))
                .group_by(Job.state, Job.backend)
            ):
                jobs.add_metric([state.value, backend], n)
            recent = Attempt.started_at >= cutoff
            for backend, usd in session.execute(
                select(Attempt.backend, func.coalesce(func.sum(Attempt.cost_usd), 0))
                .where(recent).group_by(Attempt.backend)
            ):
                cost.add_metric([backend], float(usd or 0))
            for backend, basis, secs in session.execute(
                select(Attempt.backend, Attempt.compute_basis, func.sum(Attempt.compute_seconds))
                .where(recent, Attempt.compute_seconds.is_not(None))
                .group_by(Attempt.backend, Attempt.compute_basis)
            ):
                seconds.add_metric([backend, basis.value if basis else "none"], float(secs) if secs else 0.0)
            # Durations are computed here, not in SQL, so the query runs on Postgres and SQLite.
            # A job finished in the window was created in it or before: created_at bounds the
            # read through its index (a job older than the window is left out).
            by_backend: dict[str, list[float]] = {}
            for backend, created, finished in session.execute(
                select(Job.backend, Job.created_at, Job.finished_at)
                .where(Job.created_at >= cutoff, Job.state == JobState.SUCCEEDED,
                       Job.finished_at >= cutoff)
            ):
                if finished is not None:
                    by_backend.setdefault(backend, []).append((finished - created).total_seconds())
        for backend, values in by_backend.items():
            buckets = [(str(b), sum(1 for v in values if v <= b)) for b in LATENCY_BUCKETS]
            buckets.append(("+Inf", len(values)))
            latency.add_metric([backend], buckets, sum(values))
        depth = GaugeMetricFamily("orchestrator_queue_depth", "Messages waiting in each queue",
                                  labels=["queue"])
        try:
            for queue in QUEUE_NAMES:
                depth.add_metric([queue], queue_depth(self.settings, queue))
        except Exception:
            pass
        yield from (jobs, cost, seconds, latency, depth)


_registries: dict[tuple[str, str], CollectorRegistry] = {}
_scrape_lock = threading.Lock()
_scrapes: dict[tuple[str, str], tuple[float, bytes]] = {}


def scrape(settings: Settings) -> bytes:
    """The exposition text, computed at most once per ``metrics_cache_seconds`` per process
    (concurrent scrapes wait for the one computation rather than each running the queries)."""
    key = (settings.database.url.get_secret_value(), settings.broker.url.get_secret_value())
    with _scrape_lock:
        cached = _scrapes.get(key)
        if cached is not None and time.monotonic() - cached[0] < settings.api.metrics_cache_seconds:
            return cached[1]
        text = generate_latest(registry_for(settings))
        _scrapes[key] = (time.monotonic(), text)
        return text


def registry_for(settings: Settings) -> CollectorRegistry:
    key = (settings.database.url.get_secret_value(), settings.broker.url.get_secret_value())
    registry = _registries.get(key)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(OrchestratorCollector(settings))
        _registries[key] = registry
    return registry
