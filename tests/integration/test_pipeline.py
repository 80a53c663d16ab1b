"""End to end on real Postgres, Redis and a real worker process, with the tiny ONNX model."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.db.models import Result
from orchestrator.jobs.states import AttemptOutcome, ComputeBasis, JobState
from tests.conftest import run_cli
from tests.support.db import count, job_by_id, load_jobs, wait_all_final, wait_for_state
from tests.support.images import bad_inputs, good_inputs, png_of, subject


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _reference_cutout(data: bytes, model: Path, *, crop: bool = False) -> np.ndarray:
    """rembg.remove on the same decoded image with a session on the same model file."""
    from orchestrator.backends.local import create_session, remove_background
    from orchestrator.images.decode import open_image
    from orchestrator.settings import load_settings

    settings = load_settings(local_model_path=model, local_onnx_threads=1)
    image = open_image(data, max_bytes=10**8, max_pixels=10**8)
    return np.asarray(remove_background(image, create_session(settings), crop_to_bbox=crop))


def test_submit_folder_wait_saves_results_and_records_costs(
    env: dict[str, str], start_worker, tmp_path: Path, tiny_model: Path
) -> None:
    inputs = tmp_path / "in"
    (inputs / "nested").mkdir(parents=True)
    good = good_inputs()
    for i, (name, data) in enumerate(sorted(good.items())):
        (inputs / ("nested" if i % 2 else "") / name).write_bytes(data)
    (inputs / "notes.txt").write_text("not an image, and not picked up: wrong suffix")
    start_worker("--queues", "local", "--concurrency", "2",
                 extra_env={"ORCH_LOCAL_PRICE_PER_SECOND": "0.01"})

    out = tmp_path / "out"
    result = run_cli(env, "submit", str(inputs), "--wait", "--output", str(out), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = _json_lines(result.stdout)
    assert len(lines) == len(good)
    assert {line["state"] for line in lines} == {"succeeded"}

    for line in lines:
        saved = Path(str(line["output"]))
        assert saved.parent == out and saved.suffix == ".png"
        origin = Path(str(line["input"]))
        got = Image.open(saved)
        assert got.mode == "RGBA"
        assert np.array_equal(np.asarray(got), _reference_cutout(origin.read_bytes(), tiny_model))

    jobs = load_jobs(env["ORCH_DATABASE_URL"])
    assert len(jobs) == len(good)
    for job in jobs:
        assert job.state is JobState.SUCCEEDED
        assert job.model == "dis_custom:tiny-dis.onnx"
        [attempt] = job.attempts
        assert attempt.outcome is AttemptOutcome.SUCCEEDED
        assert attempt.compute_basis is ComputeBasis.LOCAL_MEASURED
        assert attempt.compute_seconds is not None and attempt.compute_seconds > 0
        assert attempt.cost_usd == (attempt.compute_seconds * Decimal("0.01")).quantize(Decimal("1e-9"))
        assert attempt.fal_equivalent_usd == (
            attempt.compute_seconds * Decimal("0.00111")
        ).quantize(Decimal("1e-9"))
        assert job.result is not None
        assert job.result.width > 0 and job.result.height > 0
    # Each saved file is the stored result, byte for byte.
    by_id = {str(j.id): j for j in jobs}
    for line in lines:
        data = Path(str(line["output"])).read_bytes()
        stored = by_id[str(line["id"])].result
        assert stored is not None
        assert hashlib.sha256(data).hexdigest() == stored.sha256
        assert len(data) == stored.size_bytes


def test_jobs_show_list_and_result(env: dict[str, str], start_worker, tmp_path: Path) -> None:
    src = tmp_path / "cup.png"
    src.write_bytes(png_of(subject()))
    start_worker()
    submitted = run_cli(env, "submit", str(src), "--json")
    assert submitted.returncode == 0, submitted.stderr
    [line] = _json_lines(submitted.stdout)
    job_id = str(line["id"])
    assert line["state"] == "queued"
    wait_for_state(env["ORCH_DATABASE_URL"], job_id, {JobState.SUCCEEDED})

    shown = run_cli(env, "jobs", "show", job_id, "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["state"] == "succeeded"
    assert data["result"]["width"] == 96 and data["result"]["height"] == 64
    assert data["attempt_log"][0]["compute_basis"] == "local_measured"

    listed = run_cli(env, "jobs", "list", "--state", "succeeded", "--json")
    assert [row["id"] for row in _json_lines(listed.stdout)] == [job_id]
    assert _json_lines(run_cli(env, "jobs", "list", "--state", "failed", "--json").stdout) == []
    assert "succeeded" in run_cli(env, "jobs", "list").stdout

    target = tmp_path / "result.png"
    fetched = run_cli(env, "jobs", "result", job_id, "-o", str(target))
    assert fetched.returncode == 0, fetched.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == data["result"]["sha256"]

    missing = run_cli(env, "jobs", "show", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1
    assert "no job with id" in missing.stderr


def test_idempotency_key_returns_the_same_job(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "a.png"
    src.write_bytes(png_of(subject()))
    first = _json_lines(run_cli(env, "submit", str(src), "--idempotency-key", "order-42", "--json").stdout)
    second = _json_lines(run_cli(env, "submit", str(src), "--idempotency-key", "order-42", "--json").stdout)
    assert first[0]["id"] == second[0]["id"]
    assert first[0]["created"] is True and second[0]["created"] is False
    assert len(load_jobs(env["ORCH_DATABASE_URL"])) == 1

    other = tmp_path / "b.png"
    other.write_bytes(png_of(subject((50, 50))))
    clash = run_cli(env, "submit", str(other), "--idempotency-key", "order-42")
    assert clash.returncode == 1
    assert "already used for a different request" in clash.stderr


def test_bad_inputs_fail_once_and_the_worker_survives(
    env: dict[str, str], start_worker, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    bad = bad_inputs()
    for name, (data, _) in bad.items():
        (folder / name).write_bytes(data)
    (folder / "fine.png").write_bytes(png_of(subject()))
    worker = start_worker()
    pool_before = worker.children()

    result = run_cli(env, "submit", str(folder), "--wait", "-o", str(tmp_path / "out"), "--json")
    assert result.returncode == 1  # some jobs failed
    lines = {Path(str(line["input"])).name: line for line in _json_lines(result.stdout)}
    assert lines["fine.png"]["state"] == "succeeded"

    jobs = {j.source_name: j for j in load_jobs(env["ORCH_DATABASE_URL"])}
    for name, (_, expected_type) in bad.items():
        job = jobs[Path(name).stem]
        assert job.state is JobState.FAILED, name
        assert job.error_code == expected_type, (name, job.error_message)
        assert job.attempt_count == 1, name  # never retried
        assert [a.outcome for a in job.attempts] == [AttemptOutcome.FAILED]
        assert lines[name]["error"] == job.error_message
        assert "Traceback" not in (job.error_message or "")
    assert worker.proc.poll() is None
    assert worker.children() == pool_before  # no pool process died


def test_input_over_the_byte_limit_fails_at_submit(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "big.png"
    src.write_bytes(png_of(subject((400, 400))))
    result = run_cli({**env, "ORCH_MAX_INPUT_BYTES": "1000"}, "submit", str(src), "--json")
    [line] = _json_lines(result.stdout)
    assert line["state"] == "failed"
    job = job_by_id(env["ORCH_DATABASE_URL"], str(line["id"]))
    assert job.error_code == "input_too_large" and "limit" in (job.error_message or "")


def test_crop_to_bbox(env: dict[str, str], start_worker, tmp_path: Path, tiny_model: Path) -> None:
    src = tmp_path / "disc.png"
    data = png_of(subject((160, 120)))
    src.write_bytes(data)
    start_worker()
    result = run_cli(env, "submit", str(src), "--crop-to-bbox", "--wait", "-o", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    got = np.asarray(Image.open(tmp_path / "o" / "disc.png"))
    assert np.array_equal(got, _reference_cutout(data, tiny_model, crop=True))
    full = _reference_cutout(data, tiny_model)
    box = Image.fromarray(full).getchannel("A").getbbox()
    assert box is not None
    assert got.shape[:2] == (box[3] - box[1], box[2] - box[0])
    [job] = load_jobs(env["ORCH_DATABASE_URL"])
    assert job.options == {"crop_to_bbox": True}
    assert job.result is not None and job.result.cropped


class _Images(BaseHTTPRequestHandler):
    body = b""
    hits: dict[str, int] = {}

    def do_GET(self) -> None:  # noqa: N802
        _Images.hits[self.path] = _Images.hits.get(self.path, 0) + 1
        if self.path == "/photo.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body)
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/photo.png")
            self.end_headers()
        elif self.path == "/busy.png":
            self.send_response(503)
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def image_server() -> Iterator[str]:
    _Images.body = png_of(subject())
    _Images.hits = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_inputs_permanent_and_transient_failures(
    env: dict[str, str], start_worker, image_server: str
) -> None:
    env = {**env, "ORCH_MAX_ATTEMPTS": "3"}  # recorded on each job when it is submitted
    start_worker()
    urls = {
        "ok": f"{image_server}/photo.png",
        "redirected": f"{image_server}/moved",
        "missing": f"{image_server}/missing.png",
        "busy": f"{image_server}/busy.png",
        "private": "http://10.255.255.1/photo.png",
    }
    ids = {}
    for name, url in urls.items():
        out = run_cli(env, "submit", url, "--json")
        assert out.returncode == 0, out.stderr
        ids[name] = str(_json_lines(out.stdout)[0]["id"])
    wait_all_final(env["ORCH_DATABASE_URL"])
    db = env["ORCH_DATABASE_URL"]

    for name in ("ok", "redirected"):
        job = job_by_id(db, ids[name])
        assert job.state is JobState.SUCCEEDED, job.error_message
        assert job.input_sha256 == hashlib.sha256(_Images.body).hexdigest()

    missing = job_by_id(db, ids["missing"])
    assert missing.state is JobState.FAILED
    assert missing.error_code == "input_unreachable" and "404" in (missing.error_message or "")
    assert missing.attempt_count == 1

    private = job_by_id(db, ids["private"])
    assert private.error_code == "input_unreachable"
    # A tenant sees a generic refusal, not what the host resolves to (issue 14.5).
    assert "cannot be reached from this service" in (private.error_message or "")
    assert "private address" not in (private.error_message or "")

    busy = job_by_id(db, ids["busy"])
    assert busy.state is JobState.FAILED
    assert busy.error_code == "fetch_failed" and "503" in (busy.error_message or "")
    assert [a.outcome for a in busy.attempts] == [
        AttemptOutcome.RETRY, AttemptOutcome.RETRY, AttemptOutcome.FAILED
    ]
    assert all(a.error_code == "fetch_failed" for a in busy.attempts)
    assert _Images.hits["/busy.png"] == 3
    gaps = [
        (b.started_at - a.finished_at).total_seconds()
        for a, b in zip(busy.attempts, busy.attempts[1:])
        if a.finished_at is not None
    ]
    assert all(g >= 0.1 for g in gaps)  # each retry waited its backoff


def test_directory_result_store(env: dict[str, str], start_worker, tmp_path: Path) -> None:
    store = tmp_path / "results"
    extra = {"ORCH_RESULT_STORE": "directory", "ORCH_RESULT_DIR": str(store)}
    src = tmp_path / "x.png"
    src.write_bytes(png_of(subject()))
    start_worker(extra_env=extra)
    result = run_cli({**env, **extra}, "submit", str(src), "--wait", "-o", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    [job] = load_jobs(env["ORCH_DATABASE_URL"])
    assert job.result is not None
    assert job.result.store == "directory" and job.result.data is None
    on_disk = store / str(job.result.location)
    assert on_disk.read_bytes() == (tmp_path / "o" / "x.png").read_bytes()
    assert count(env["ORCH_DATABASE_URL"], Result) == 1


def test_cancel_then_retry(env: dict[str, str], start_worker, tmp_path: Path) -> None:
    src = tmp_path / "x.png"
    src.write_bytes(png_of(subject()))
    [line] = _json_lines(run_cli(env, "submit", str(src), "--json").stdout)
    job_id = str(line["id"])
    cancelled = run_cli(env, "jobs", "cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert job_by_id(env["ORCH_DATABASE_URL"], job_id).state is JobState.CANCELLED
    again = run_cli(env, "jobs", "cancel", job_id)
    assert again.returncode == 1 and "already cancelled" in again.stderr

    start_worker()  # the queued message is delivered, and skipped: the job is cancelled
    retried = run_cli(env, "jobs", "retry", job_id)
    assert retried.returncode == 0, retried.stderr
    job = wait_for_state(env["ORCH_DATABASE_URL"], job_id, {JobState.SUCCEEDED})
    assert job.deliveries == 2
    assert len(job.attempts) == 1
