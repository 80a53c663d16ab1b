"""``orchestrator dev``: the whole system from one command, with no Postgres or Redis variables —
SQLite database and broker in a data folder — driven through /v1 and the real fal_client over
its TLS, stopped with Ctrl-C and started again with its jobs still there. Also: with the two
variables set, it uses those servers instead."""

from __future__ import annotations

import io
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import pytest
from PIL import Image

from orchestrator.jobs.states import JobState
from tests.support.db import job_by_id
from tests.support.images import data_uri, png
from tests.support.servers import free_port
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow


def _bare_env(tiny_model: Path, **extra: str) -> dict[str, str]:
    """What a fresh machine has: no ORCH_* database or broker, no FAL_KEY."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ORCH_", "FAL_", "TEST_")) and k != "SSL_CERT_FILE"}
    env.update(ORCH_LOCAL_MODEL_PATH=str(tiny_model), ORCH_LOCAL_ONNX_THREADS="1", **extra)
    return env


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo.extend(kids - found)
            found |= kids
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Dev:
    """``orchestrator dev --json`` in a subprocess; ``details`` is what it printed when ready."""

    def __init__(self, cwd: Path, env: dict[str, str], log: Path, *args: str) -> None:
        self.port = free_port()
        self.log_path = log
        self.log: IO[str] = open(log, "a")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "dev", "--port", str(self.port), "--workers",
             "1", "--json", *args],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True,
        )
        assert self.proc.stdout is not None
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        line = self.lines.get(timeout=180)  # printed once the API answers /readyz
        assert line, f"orchestrator dev exited with {self.proc.wait()}:\n{log.read_text()}"
        self.details: dict[str, Any] = json.loads(line)
        self.url = self.details["api_url"]
        self.ca = self.details["ca_cert"]
        self.key = self.details["api_key"]

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            self.lines.put(line)
        self.lines.put("")  # dev exited

    def worker_ready(self, timeout: float = 180) -> dict[str, Any]:
        """The line dev prints once a worker process has its model loaded and can take jobs."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"dev never said its worker was ready:\n"
                                 f"{self.log_path.read_text()}") from None
        ready: dict[str, Any] = json.loads(line)
        return ready

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.ca, timeout=30,
                            headers={"Authorization": f"Key {self.key}"})

    def wait_job(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
            return job if job["state"] in ("succeeded", "failed", "cancelled") else None

        with self.client() as http:
            try:
                return wait_until(finished, timeout=timeout, interval=0.2,
                                  what=f"job {job_id} to finish")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{self.log_path.read_text()}") from None

    def interrupt(self) -> int:
        """Ctrl-C; the exit code. Every process it started must be gone afterwards."""
        started = _descendants(self.proc.pid)
        assert len(started) >= 3, started  # API, worker, its pool process
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=90)
        self.log.close()
        left = {pid for pid in started if _alive(pid)}
        assert not left, f"processes left running after Ctrl-C: {left}"
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.log.close()


def _fal_subscribe(dev: Dev, image: bytes) -> dict[str, Any]:
    """The real fal_client in a fresh process, configured only by fal's own variables."""
    uri = data_uri(image)
    code = textwrap.dedent(f"""
        import json, fal_client
        result = fal_client.subscribe("fal-ai/imageutils/rembg", {{"image_url": {uri!r}}})
        print(json.dumps(result))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin", "FAL_QUEUE_RUN_HOST": dev.url.removeprefix("https://"),
             "SSL_CERT_FILE": dev.ca, "FAL_KEY": dev.key},
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _reference(data: bytes, model: Path) -> np.ndarray:
    from orchestrator.backends.local import create_session, remove_background
    from orchestrator.images.decode import open_image
    from orchestrator.settings import load_settings

    settings = load_settings(local_model_path=model, local_onnx_threads=1)
    image = open_image(data, max_bytes=10**8, max_pixels=10**8)
    return np.asarray(remove_background(image, create_session(settings), crop_to_bbox=False))


def _submit_with_lost_message(tmp_path: Path, env: dict[str, str], data: Path) -> str:
    """`orchestrator submit` into the dev database, its message into another broker file: a
    bell that never rings, as when a publish fails after the row committed."""
    image = tmp_path / "lost.png"
    image.write_bytes(png((72, 40)))
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "submit", str(image), "--json"],
        env={**env, "ORCH_DATABASE_URL": f"sqlite:///{data / 'orchestrator.db'}",
             "ORCH_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'elsewhere.db'}"},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    job_id: str = json.loads(out.stdout)["id"]
    return job_id


def _check_cost_report(dev: Dev, job_ids: list[str]) -> None:
    """The cost report runs on SQLite too, and its sums are the attempt rows' sums."""
    with dev.client() as http:
        attempts = [a for job_id in job_ids for a in http.get(f"/v1/jobs/{job_id}").json()["attempt_log"]]
        reply = http.get("/v1/reports/costs", params={"group_by": "day,backend"})
    assert reply.status_code == 200, reply.text
    report = reply.json()
    total = report["total"]
    assert total["jobs"] == total["succeeded"] == len(job_ids)
    assert total["attempts"] == len(attempts)
    assert Decimal(total["compute_seconds"]) == sum(Decimal(a["compute_seconds"]) for a in attempts)
    assert Decimal(total["local_fal_equivalent_usd"]) == sum(Decimal(a["fal_equivalent_usd"]) for a in attempts)
    assert total["latency_p50_seconds"] is not None
    [row] = report["rows"]
    assert row["backend"] == "local" and row["day"] == time.strftime("%Y-%m-%d", time.gmtime())


def test_dev_runs_everything_without_servers_and_keeps_jobs_across_restarts(
    tmp_path: Path, tiny_model: Path
) -> None:
    # A quick reconciler, so that a lost message is noticed within seconds.
    env = _bare_env(tiny_model, ORCH_RECONCILE_INTERVAL_SECONDS="1",
                    ORCH_RECONCILE_STALE_AFTER_SECONDS="2")
    log = tmp_path / "dev.log"
    data = tmp_path / "orchestrator-data"
    upload, via_fal = png((90, 60)), png((64, 80))

    dev = Dev(tmp_path, env, log)
    try:
        assert dev.details["database_url"] == f"sqlite:///{data / 'orchestrator.db'}"
        assert dev.details["broker_url"] == f"sqla+sqlite:///{data / 'broker.db'}"
        assert dev.details["fal_backend"] is False  # no Redis: said, not silently broken
        assert dev.details["reconciler"] == "in the worker"
        assert (data / "api-key").stat().st_mode & 0o777 == 0o600
        with dev.client() as http:
            ready = http.get("/readyz").json()
            assert ready["checks"]["broker"] == "ok" and ready["checks"]["database"] == "ok"
            assert "Redis" in ready["checks"]["backends"]["fal"] or "FAL_KEY" in ready["checks"]["backends"]["fal"]
            reply = http.post("/v1/uploads", files=[("files", ("disc.png", upload, "image/png"))])
            assert reply.status_code == 200, reply.text
            upload_id = reply.json()[0]["id"]

        fal = _fal_subscribe(dev, via_fal)
        assert fal["image"]["content_type"] == "image/png"
        assert (fal["image"]["width"], fal["image"]["height"]) == (64, 80)
        fal_png = httpx.get(fal["image"]["url"], verify=dev.ca).content  # the per-job token URL

        job = dev.wait_job(upload_id)
        assert job["state"] == "succeeded", job
        with dev.client() as http:
            upload_png = http.get(f"/v1/jobs/{upload_id}/result").content
        # The real local pipeline ran: pixel-identical to rembg.remove with the same model.
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(upload_png))),
                              _reference(upload, tiny_model))
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(fal_png))),
                              _reference(via_fal, tiny_model))
        first_key = dev.key
        assert dev.interrupt() == 0
    finally:
        dev.kill()

    again = Dev(tmp_path, env, log)  # same folder, a new port
    try:
        assert again.key == first_key  # the stored key, printed again
        with again.client() as http:
            jobs = {j["id"]: j for j in http.get("/v1/jobs").json()}
            assert len(jobs) == 2 and {j["state"] for j in jobs.values()} == {"succeeded"}
            assert http.get(f"/v1/jobs/{upload_id}/result").content == upload_png
            # And it still processes new work after the restart.
            reply = http.post("/v1/uploads", files=[("files", ("again.png", png((50, 70)), "image/png"))])
            new_id = reply.json()[0]["id"]
        assert again.wait_job(new_id)["state"] == "succeeded"
        lost_id = _submit_with_lost_message(tmp_path, env, data)
        assert again.wait_job(lost_id, timeout=60)["state"] == "succeeded"  # the reconciler
        _check_cost_report(again, [upload_id, new_id, lost_id, *(set(jobs) - {upload_id})])
        assert again.interrupt() == 0
    finally:
        again.kill()


def test_dev_uses_the_database_and_broker_it_is_given(
    tmp_path: Path, tiny_model: Path, database_url: str, broker_url: str
) -> None:
    env = _bare_env(tiny_model, ORCH_DATABASE_URL=database_url, ORCH_BROKER_URL=broker_url)
    dev = Dev(tmp_path, env, tmp_path / "dev.log")
    try:
        assert dev.details["database_url"] == database_url
        assert dev.details["broker_url"] == broker_url
        assert dev.details["fal_backend"] is True  # Redis is there: fal needs only FAL_KEY
        assert not (tmp_path / "orchestrator-data" / "orchestrator.db").exists()
        # Issue 14.16: dev says when its worker can take jobs, not only that the API answers;
        # a job sent then is done in about its inference time, not the model's load time.
        ready = dev.worker_ready()
        assert ready["worker_ready"] is True and ready["warm_processes"] >= 1, ready
        sent = time.monotonic()
        with dev.client() as http:
            reply = http.post("/v1/uploads", files=[("files", ("pg.png", png((40, 40)), "image/png"))])
            job_id = reply.json()[0]["id"]
        assert dev.wait_job(job_id)["state"] == "succeeded"
        assert time.monotonic() - sent < 30, "a warm worker took long over one tiny job"
        assert job_by_id(database_url, job_id).state is JobState.SUCCEEDED  # in Postgres
        assert dev.interrupt() == 0
    finally:
        dev.kill()


def test_dev_stops_everything_when_a_child_dies(tmp_path: Path, tiny_model: Path) -> None:
    """A worker that cannot start: dev says which process died and why, and stops the rest."""
    env = _bare_env(tiny_model, ORCH_LOCAL_MODEL="no-such-model")
    del env["ORCH_LOCAL_MODEL_PATH"]
    port = free_port()
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "dev", "--port", str(port), "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 1, out.stderr
    said = " ".join(out.stderr.split())  # rich wraps long lines
    assert "the worker process exited with code 1" in said
    assert "'no-such-model' is not a rembg model" in said  # the end of the worker's log
    with socket.socket() as s:  # the API was stopped too
        assert s.connect_ex(("127.0.0.1", port)) != 0
