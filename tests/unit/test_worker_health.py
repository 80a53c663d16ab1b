"""The health report built from pool processes' records (the inspect command's answer)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator

import pytest

from orchestrator.queue.health import health_dir, node_health
from tests.support.wait import wait_until

WORKER = 2_000_000_000 + os.getpid()  # no real process has this pid


@pytest.fixture
def records() -> Iterator[dict[int, dict[str, object]]]:
    written: dict[int, dict[str, object]] = {}
    yield written
    shutil.rmtree(health_dir(WORKER), ignore_errors=True)


def _write(records: dict[int, dict[str, object]], pid: int, **record: object) -> None:
    health_dir(WORKER).mkdir(parents=True, exist_ok=True)
    (health_dir(WORKER) / f"{pid}.json").write_text(json.dumps({"pid": pid, **record}))
    records[pid] = record


def test_warm_processes_are_healthy(records: dict[int, dict[str, object]]) -> None:
    now = time.time()
    _write(records, os.getpid(), ready_at=now, jobs=3, providers=["CPUExecutionProvider"])
    _write(records, 11, ready_at=now, jobs=0, pollers=["fal"], poller_beat_at=now)
    report = node_health([os.getpid(), 11], ["fal", "local"], WORKER, {"max_memory_mb": 4096})
    assert report["ok"] and report["problems"] == []
    assert report["max_memory_mb"] == 4096
    mine = report["processes"][0]
    assert mine["warm"] and mine["jobs"] == 3 and mine["rss_mb"] > 1  # this process's RSS


def test_cold_process_and_silent_poller_are_problems(records: dict[int, dict[str, object]]) -> None:
    _write(records, 12, ready_at=time.time() - 120, pollers=["fal"], poller_beat_at=time.time() - 90)
    report = node_health([12, 13], ["fal"], WORKER)  # 13 wrote nothing yet: loading
    assert not report["ok"]
    assert any("process 13 is not ready" in p for p in report["problems"])
    assert any("fal poller of process 12 has been silent" in p for p in report["problems"])


def test_no_processes_is_a_problem() -> None:
    assert node_health([], ["local"], WORKER)["problems"] == ["no pool processes"]


def test_job_counts_reach_the_record_later_not_per_job(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.queue import health

    path = health_dir(os.getppid()) / f"{os.getpid()}.json"
    try:
        monkeypatch.setattr(health, "FLUSH_SECONDS", 60.0)
        health.record_ready(queues=["local"])
        for _ in range(3):
            health.record_job_done()
        assert json.loads(path.read_text())["jobs"] == 0  # not rewritten per job
        health.flush()  # the timer's work, or the process's shutdown
        assert json.loads(path.read_text())["jobs"] == 3

        monkeypatch.setattr(health, "FLUSH_SECONDS", 0.05)
        health.record_job_done()
        wait_until(lambda: json.loads(path.read_text())["jobs"] == 4, timeout=10,
                   what="the fourth job in the record")
    finally:
        health.flush()
        health._record.clear()
        path.unlink(missing_ok=True)
