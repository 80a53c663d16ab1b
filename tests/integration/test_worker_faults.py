"""Workers killed, poisoned and stopped mid-job: every job ends once, with one result."""

from __future__ import annotations

import fcntl
import io
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import PngImagePlugin

from orchestrator.backends.local.inference_gate import InferenceGate
from orchestrator.db.models import Result
from orchestrator.jobs.states import AttemptOutcome, JobState
from tests.conftest import REAL_MODEL, SAMPLE_IMAGES, run_cli
from tests.support.cli import submit_ids
from tests.support.crashing_worker import POISON_MARK
from tests.support.db import count, job_by_id, load_jobs, wait_all_final, wait_for_state
from tests.support.images import numbered_png, subject
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow

REAL = {"ORCH_LOCAL_MODEL_PATH": str(REAL_MODEL)}


def _submit_one(env: dict[str, str], path: Path) -> str:
    [job_id] = submit_ids(env, str(path))
    return job_id


def _inferring(worker_pid: int) -> bool:
    """Whether a pool process of the worker is inside the model's ``session.run``: it then holds
    one of the worker's inference-gate slots (flock files, orchestrator/backends/local/inference_gate)."""
    gate = InferenceGate.for_worker(worker_pid, 1)
    for path in gate.paths[0].parent.glob("slot-*.lock"):
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a shared lock we may have taken
    return False


def _wait_running(database_url: str, job_id: str, worker: Any) -> None:
    """Wait until the job is running and the real model is inferring on it: a kill lands mid-job."""
    wait_for_state(database_url, job_id, {JobState.RUNNING}, timeout=60)
    wait_until(lambda: _inferring(worker.proc.pid), timeout=60, interval=0.02,
               what=f"the real model's inference on job {job_id}")


def _assert_exactly_once(database_url: str, job_id: str) -> None:
    job = job_by_id(database_url, job_id)
    assert job.state is JobState.SUCCEEDED, job.error_message
    assert [a.outcome for a in job.attempts] == [AttemptOutcome.CRASHED, AttemptOutcome.SUCCEEDED]
    assert job.crashes == 1
    assert count(database_url, Result) == 1
    assert job.result is not None and job.result.attempt_id == job.attempts[1].id


def test_sigkill_of_the_pool_process_mid_job(env: dict[str, str], start_worker) -> None:
    worker = start_worker(extra_env=REAL)
    job_id = _submit_one({**env, **REAL}, SAMPLE_IMAGES / "astronaut.png")
    _wait_running(env["ORCH_DATABASE_URL"], job_id, worker)
    [child] = worker.children()
    os.kill(child, signal.SIGKILL)
    wait_for_state(env["ORCH_DATABASE_URL"], job_id, {JobState.SUCCEEDED, JobState.FAILED}, 120)
    _assert_exactly_once(env["ORCH_DATABASE_URL"], job_id)


def test_sigkill_of_the_whole_worker_then_restart(env: dict[str, str], start_worker) -> None:
    # The killed main process cannot hand its message back: Redis redelivers it after the
    # visibility timeout, which this test shortens.
    fast = {**REAL, "ORCH_VISIBILITY_TIMEOUT_SECONDS": "10", "ORCH_UNACKED_RESTORE_INTERVAL_SECONDS": "2"}
    worker = start_worker(extra_env=fast)
    job_id = _submit_one({**env, **fast}, SAMPLE_IMAGES / "coffee.png")
    _wait_running(env["ORCH_DATABASE_URL"], job_id, worker)
    worker.kill()
    assert job_by_id(env["ORCH_DATABASE_URL"], job_id).state is JobState.RUNNING
    start_worker(extra_env=fast)
    wait_for_state(env["ORCH_DATABASE_URL"], job_id, {JobState.SUCCEEDED, JobState.FAILED}, 120)
    _assert_exactly_once(env["ORCH_DATABASE_URL"], job_id)


def test_poison_input_fails_after_bounded_deliveries(
    env: dict[str, str], start_worker, tmp_path: Path
) -> None:
    entry = [sys.executable, "-m", "tests.support.crashing_worker"]
    worker = start_worker(entry=entry)
    info = PngImagePlugin.PngInfo()
    info.add_text("note", POISON_MARK.decode())
    buf = io.BytesIO()
    subject().save(buf, "PNG", pnginfo=info)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "poison.png").write_bytes(buf.getvalue())
    for i in range(3):
        (folder / f"fine-{i}.png").write_bytes(numbered_png(i, (90, 60)))
    out = run_cli(env, "submit", str(folder))
    assert out.returncode == 0, out.stderr

    jobs = {j.source_name: j for j in wait_all_final(env["ORCH_DATABASE_URL"], timeout=120)}
    poison = jobs["poison"]
    assert poison.state is JobState.FAILED
    assert poison.error_code == "worker_lost"
    assert "died 3 times" in (poison.error_message or "")
    assert [a.outcome for a in poison.attempts] == [AttemptOutcome.CRASHED] * 3
    assert poison.deliveries == 4  # three runs, then the fourth delivery fails it without running
    for i in range(3):
        assert jobs[f"fine-{i}"].state is JobState.SUCCEEDED
    assert worker.proc.poll() is None  # the worker itself is still up


def test_sigterm_finishes_the_running_job(env: dict[str, str], start_worker) -> None:
    worker = start_worker(extra_env=REAL)
    job_id = _submit_one({**env, **REAL}, SAMPLE_IMAGES / "camera.png")
    _wait_running(env["ORCH_DATABASE_URL"], job_id, worker)
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=60) == 0
    job = job_by_id(env["ORCH_DATABASE_URL"], job_id)
    assert job.state is JobState.SUCCEEDED
    assert [a.outcome for a in job.attempts] == [AttemptOutcome.SUCCEEDED]


def test_many_jobs_two_processes_each_exactly_once(
    env: dict[str, str], start_worker, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(30):
        (folder / f"img-{i:02d}.png").write_bytes(numbered_png(i, (90, 60)))
    start_worker("--queues", "local", "--concurrency", "2")
    out = run_cli(env, "submit", str(folder), "--wait", "-o", str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr
    jobs = load_jobs(env["ORCH_DATABASE_URL"])
    assert len(jobs) == 30 and all(j.state is JobState.SUCCEEDED for j in jobs)
    assert all(len(j.attempts) == 1 for j in jobs)
    assert count(env["ORCH_DATABASE_URL"], Result) == 30
    assert len(list((tmp_path / "out").glob("*.png"))) == 30
