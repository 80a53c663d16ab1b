"""Prometheus metrics read from the source of truth at scrape time: every API host reports
the same numbers, and nothing is lost when a process restarts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
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


class OrchestratorCollector(Collector):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("orchestrator_jobs", "Jobs by state and backend",
                                 labels=["state", "backend"])
        cost = CounterMetricFamily("orchestrator_cost_usd", "Cost of all attempts, USD",
                                   labels=["backend"])
        seconds = CounterMetricFamily("orchestrator_compute_seconds",
                                      "Compute seconds of all attempts", labels=["backend", "basis"])
        latency = HistogramMetricFamily("orchestrator_job_latency_seconds",
                                        "Submit to done, succeeded jobs of the last 24 h",
                                        labels=["backend"])
        with session_scope(self.settings.database.url.get_secret_value()) as session:
            for state, backend, n in session.execute(
                select(Job.state, Job.backend, func.count()).group_by(Job.state, Job.backend)
            ):
                jobs.add_metric([state.value, backend], n)
            for backend, usd in session.execute(
                select(Attempt.backend, func.coalesce(func.sum(Attempt.cost_usd), 0)).group_by(Attempt.backend)
            ):
                cost.add_metric([backend], float(usd or 0))
            for backend, basis, secs in session.execute(
                select(Attempt.backend, Attempt.compute_basis, func.sum(Attempt.compute_seconds))
                .where(Attempt.compute_seconds.is_not(None))
                .group_by(Attempt.backend, Attempt.compute_basis)
            ):
                seconds.add_metric([backend, basis.value if basis else "none"], float(secs) if secs else 0.0)
            # Durations are computed here, not in SQL, so the query runs on Postgres and SQLite.
            cutoff = utcnow() - timedelta(days=1)
            by_backend: dict[str, list[float]] = {}
            for backend, created, finished in session.execute(
                select(Job.backend, Job.created_at, Job.finished_at)
                .where(Job.state == JobState.SUCCEEDED, Job.finished_at >= cutoff)
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
