"""Worker health, answered by Celery's own remote control.

Each pool process writes a small record when its backends are ready (model loaded, warmed, the
ONNX providers it really uses, the fal poller running) and counts the jobs it ran (the
count reaches the file within half a second, not after every job); the worker's
main process answers the ``orchestrator_health`` inspect command from those records and the
pool's live process list, adding each process's resident memory. So
``celery -A orchestrator.queue.celery_app inspect orchestrator_health`` (and
``orchestrator workers``) shows, per node, whether every process is warm and on its providers.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from celery.signals import worker_shutdown
from celery.worker.control import inspect_command

from orchestrator.settings import get_settings

COMMAND = "orchestrator_health"
# A fal poller that has not beaten for this long is reported (it beats every 5 s).
POLLER_SILENT_SECONDS = 30.0
FLUSH_SECONDS = 0.5
_lock = threading.Lock()  # the task thread and the poller thread update one record
_record: dict[str, Any] = {}  # this pool process's record (empty in the worker's main process)
_flush_timer: threading.Timer | None = None


def health_dir(worker_pid: int) -> Path:
    return Path(tempfile.gettempdir()) / f"orchestrator-health-{worker_pid}"


def _path(worker_pid: int, pid: int) -> Path:
    return health_dir(worker_pid) / f"{pid}.json"


def warm_processes(worker_pid: int) -> int:
    """How many pool processes of the worker whose main process is ``worker_pid`` are ready
    (model loaded and warmed): from outside the worker, e.g. ``orchestrator dev``."""
    count = 0
    for path in health_dir(worker_pid).glob("*.json"):
        try:
            count += "ready_at" in json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return count


def _write(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)


def record_ready(**facts: Any) -> None:
    """In a pool process: its backends are ready (called once, at process start)."""
    with _lock:
        _record.clear()
        _record.update({"pid": os.getpid(), "ready_at": time.time(), "jobs": 0, **facts})
        _write(_path(os.getppid(), os.getpid()), _record)


def _update(**changes: Any) -> None:
    """Change this process's record in memory; it reaches its file within FLUSH_SECONDS.
    Rewriting the file after every task took ~7 % of a fal submit task's samples in a profile."""
    global _flush_timer
    with _lock:
        if not _record:  # not ready yet: the record is written first by record_ready
            return
        if "jobs" in changes:
            changes["jobs"] = int(_record.get("jobs", 0)) + changes["jobs"]
        _record.update(changes)
        if _flush_timer is None:
            _flush_timer = threading.Timer(FLUSH_SECONDS, flush)
            _flush_timer.daemon = True
            _flush_timer.start()


def flush() -> None:
    """Write this process's record now (the flush timer; process shutdown)."""
    global _flush_timer
    with _lock:
        if _flush_timer is not None:
            _flush_timer.cancel()  # a no-op when called by the timer itself
            _flush_timer = None
        if _record:
            _write(_path(os.getppid(), os.getpid()), _record)


def record_job_done() -> None:
    """In a pool process: one more task finished."""
    _update(jobs=1, last_job_at=time.time())


def record_poller_beat() -> None:
    """In a fal worker's pool process: its poller loop is alive."""
    _update(poller_beat_at=time.time())


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def node_health(pool_pids: list[int], queues: list[str], worker_pid: int,
                limits: dict[str, Any] | None = None) -> dict[str, Any]:
    """The health of one worker node from its pool's processes and their records."""
    settings = get_settings()
    processes = []
    for pid in pool_pids:
        try:
            record = json.loads(_path(worker_pid, pid).read_text())
        except (OSError, ValueError):
            record = {"pid": pid}
        record["warm"] = "ready_at" in record
        record["rss_mb"] = _rss_mb(pid)
        processes.append(record)
    problems = [f"process {p['pid']} is not ready (loading its model?)"
                for p in processes if not p["warm"]]
    now = time.time()
    for p in processes:
        if p.get("pollers"):
            silent = now - float(p.get("poller_beat_at") or p["ready_at"])
            p["poller_silent_seconds"] = round(silent, 1)
            if silent > POLLER_SILENT_SECONDS:
                names = ", ".join(p["pollers"])
                problems.append(f"the {names} poller of process {p['pid']} has been silent for "
                                f"{silent:.0f} s")
    if not processes:
        problems.append("no pool processes")
    return {
        "ok": not problems,
        "problems": problems,
        "pid": worker_pid,
        "queues": queues,
        "rss_mb": _rss_mb(worker_pid),
        "requested_providers": settings.local.providers,
        **(limits or {}),
        "processes": processes,
    }


@inspect_command(name=COMMAND, help="orchestrator: model warm, providers, memory per process")  # type: ignore[untyped-decorator]
def orchestrator_health(state: Any, **_: Any) -> dict[str, Any]:
    consumer = state.consumer
    info = consumer.pool.info if consumer.pool is not None else {}
    pids = [int(p) for p in info.get("processes", [])]
    queues = sorted(q.name for q in consumer.task_consumer.queues) if consumer.task_consumer else []
    controller = consumer.controller
    max_kib = getattr(controller, "max_memory_per_child", None)
    limits = {
        "max_memory_mb": round(max_kib / 1024) if max_kib else None,
        "max_tasks_per_child": getattr(controller, "max_tasks_per_child", None) or None,
    }
    return node_health(pids, queues, os.getpid(), limits)


EXIT_REFUSED = 3
_REFUSED = "refused.txt"


def record_refused(reason: str) -> None:
    """In a pool process that must not run (e.g. a GPU asked for, the CPU in use): tell the
    worker's main process, which then stops with EXIT_REFUSED instead of respawning it."""
    _write(health_dir(os.getppid()) / _REFUSED, {"reason": reason})


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    folder = health_dir(os.getpid())
    if (folder / _REFUSED).exists() and sender is not None:
        sender.exitcode = EXIT_REFUSED  # Celery exits with the WorkController's exitcode
    shutil.rmtree(folder, ignore_errors=True)
