"""Operations against real workers: JSON logs with job context, Celery's own tools (inspect,
Flower), the orchestrator_health command, memory recycling, and refusing a silent CPU fallback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.jobs.states import JobState
from tests.conftest import ROOT, run_cli
from tests.support.cli import submit_ids
from tests.support.db import load_jobs, wait_all_final, wait_for_state
from tests.support.images import write_pngs
from tests.support.servers import free_port
from tests.support.wait import wait_until

CELERY = [sys.executable, "-m", "celery", "-A", "orchestrator.queue.celery_app"]


@pytest.mark.slow
def test_worker_logs_health_inspect_and_flower(env: dict[str, str], start_worker,
                                                tmp_path: Path) -> None:
    worker = start_worker()
    [job_id] = submit_ids(env, *map(str, write_pngs(tmp_path, 1, base=(60, 40))))
    wait_for_state(env["ORCH_DATABASE_URL"], job_id, {JobState.SUCCEEDED}, 60)

    # Celery's own tools answer for the app.
    ping = subprocess.run([*CELERY, "inspect", "ping", "--timeout", "5"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert ping.returncode == 0 and "pong" in ping.stdout, ping.stdout + ping.stderr
    inspected = subprocess.run([*CELERY, "inspect", "orchestrator_health", "--json",
                                "--timeout", "5"], env=env, cwd=ROOT, capture_output=True,
                               text=True, timeout=60, check=False)
    assert inspected.returncode == 0, inspected.stderr
    [(node, health)] = json.loads(inspected.stdout).items()
    assert health["ok"] and health["queues"] == ["local"]

    # orchestrator workers: each pool process warm, on the CPU provider, its jobs counted.
    out = run_cli(env, "workers", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    [report] = [json.loads(line) for line in out.stdout.splitlines()]
    assert report["node"] == node and report["ok"] is True
    [proc] = report["processes"]
    assert proc["pid"] in worker.children()
    assert proc["warm"] and proc["providers"] == ["CPUExecutionProvider"]
    assert proc["model"].startswith("dis_custom:") and proc["jobs"] == 1
    assert proc["rss_mb"] > 10

    # Flower, on the same app and broker, sees the worker.
    port = free_port()
    flower = subprocess.Popen([*CELERY, "flower", f"--port={port}", "--address=127.0.0.1"],
                              env={**env, "FLOWER_UNAUTHENTICATED_API": "true"}, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def flower_workers() -> dict[str, object]:
            try:
                reply = httpx.get(f"http://127.0.0.1:{port}/api/workers?refresh=1", timeout=10)
            except httpx.HTTPError:
                return {}  # Flower not listening yet
            return reply.json() if reply.status_code == 200 else {}

        wait_until(lambda: node in flower_workers(), timeout=40, interval=0.5,
                   what=f"Flower to list {node}")
    finally:
        flower.terminate()
        flower.wait(timeout=20)

    # Every line the worker wrote so far is one JSON object; the job's lines carry its context.
    lines = [json.loads(line) for line in worker.text().splitlines() if line.strip()]
    mine = [line for line in lines if line["job_id"] == job_id]
    loggers = {line["logger"] for line in mine}
    assert {"celery.worker.strategy", "orchestrator.runner", "celery.app.trace"} <= loggers
    done = next(line for line in mine if line["logger"] == "orchestrator.runner")
    assert done["attempt"] == 1 and done["backend"] == "local" and done["task_id"]
    assert "succeeded" in str(done["message"])


def test_a_process_above_the_memory_limit_is_replaced(env: dict[str, str], start_worker,
                                                      tmp_path: Path) -> None:
    # Every pool process is above 1 MiB, so each one is replaced after its job.
    worker = start_worker("--queues", "local", "--concurrency", "1", "--max-memory-mb", "1")
    first = worker.children()
    ids = submit_ids(env, *map(str, write_pngs(tmp_path, 3, base=(60, 40))))
    jobs = wait_all_final(env["ORCH_DATABASE_URL"], 90)
    assert {str(j.id) for j in jobs} == set(ids)
    assert all(j.state is JobState.SUCCEEDED for j in jobs), [j.error_message for j in jobs]
    pids = {j.attempts[0].worker.rsplit(":", 1)[1] for j in load_jobs(env["ORCH_DATABASE_URL"])}
    assert len(pids) == 3  # three jobs, three processes: jobs kept flowing across the recycling
    # The last job's process is replaced too, and its successor is warm.
    def replaced() -> dict[str, Any] | None:
        out = run_cli(env, "workers", "--json")
        report: dict[str, Any] = json.loads(out.stdout.splitlines()[0]) if out.stdout.strip() else {}
        current = [str(p["pid"]) for p in report.get("processes", [])]
        return report if out.returncode == 0 and current and not set(current) & pids else None

    report = wait_until(replaced, timeout=30, interval=0.5,
                        what="the last job's process replaced by a warm one")
    assert report.get("ok") is True and report["max_memory_mb"] == 1, report
    [proc] = report["processes"]
    assert proc["warm"] and str(proc["pid"]) not in pids and proc["pid"] not in first


def test_gpu_asked_for_on_a_cpu_machine_refuses_to_start(env: dict[str, str]) -> None:
    out = run_cli({**env, "ORCH_LOCAL_PROVIDERS": "CUDAExecutionProvider,CPUExecutionProvider"},
                  "worker", "--queues", "local", "--concurrency", "1", timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "ORCH_LOCAL_PROVIDERS asks for CUDAExecutionProvider" in out.stderr
    assert "silent CPU fallback" in out.stderr
    assert " ready." not in out.stdout + out.stderr  # Celery never started


def test_each_pool_process_checks_its_providers_too(env: dict[str, str]) -> None:
    # Celery's own command skips the CLI's check: the pool process finds the CPU fallback in its
    # own session and stops the whole worker with exit code 3 instead of being respawned.
    out = subprocess.run(
        [*CELERY, "worker", "-Q", "local", "-c", "1", "--without-mingle", "--without-gossip",
         "-l", "INFO"],
        env={**env, "ORCH_LOCAL_PROVIDERS": "CUDAExecutionProvider,CPUExecutionProvider"},
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 3, out.stdout + out.stderr
    critical = [json.loads(line) for line in out.stderr.splitlines()
                if line.startswith("{") and '"CRITICAL"' in line]
    assert critical and "ORCH_LOCAL_PROVIDERS asks for CUDAExecutionProvider" in str(
        critical[0]["message"])
