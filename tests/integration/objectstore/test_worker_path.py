"""Jobs with the object store on: a real worker, the real API and SeaweedFS."""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path

import httpx
import psycopg
from PIL import Image

from orchestrator.backends.base import BackendInput
from orchestrator.db.models import JobInput, Result
from orchestrator.jobs.states import JobState
from tests.conftest import run_cli
from tests.support.api_server import PlainApi
from tests.support.db import count, load_jobs, wait_all_final, wait_for_state
from tests.support.images import subject
from tests.support.seaweed import SeaweedFS


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    subject((80 + 4 * i, 64)).save(buf, "PNG")
    return buf.getvalue()


def _folder(path: Path, numbers: range) -> Path:
    path.mkdir()
    for i in numbers:
        (path / f"img{i:02}.png").write_bytes(_png(i))
    return path


def _backend_output(data: bytes) -> bytes:
    """What the local backend produces for this input, computed here in-process."""
    from orchestrator.backends.local import LocalBackend
    from orchestrator.settings import get_settings

    return LocalBackend(get_settings()).run(BackendInput(data=data, options={})).data


def _key(env: dict[str, str]) -> str:
    out = run_cli(env, "keys", "create", "tenant-s3")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _rows(database_url: str, model: type) -> list[object]:
    from sqlalchemy import select

    from orchestrator.db.session import session_scope

    with session_scope(database_url) as session:
        return list(session.scalars(select(model)))


def test_inputs_and_results_live_in_s3_and_download_by_presigned_url(
    s3_env: dict[str, str], seaweed: SeaweedFS, bucket: str, start_worker, tmp_path: Path
) -> None:
    db = s3_env["ORCH_DATABASE_URL"]
    key = _key(s3_env)
    start_worker(extra_env=s3_env)
    api = PlainApi(s3_env, tmp_path / "api.log")
    try:
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Key {key}"}) as c:
            files = [("files", (f"pic{i}.png", _png(i), "image/png")) for i in range(3)]
            uploaded = c.post("/v1/uploads", files=files)
            assert uploaded.status_code == 200, uploaded.text
            ids = [j["id"] for j in uploaded.json()]
            for job_id in ids:
                wait_for_state(db, job_id, {JobState.SUCCEEDED}, 90)

            inputs = _rows(db, JobInput)
            assert len(inputs) == 3
            assert all(r.store == "s3" and r.data is None and r.location for r in inputs)
            results = _rows(db, Result)
            assert all(r.store == "s3" and r.data is None and r.location for r in results)
            assert seaweed.count(bucket, "orch/inputs/") == 3
            assert seaweed.count(bucket, "orch/results/") == 3

            for i, job_id in enumerate(ids):
                expected = _backend_output(_png(i))
                detail = c.get(f"/v1/jobs/{job_id}").json()
                assert detail["result"]["sha256"] == hashlib.sha256(expected).hexdigest()
                # /v1: the URL in the job, and the result route redirects to the store.
                presigned = detail["result"]["url"]
                assert presigned.startswith(seaweed.endpoint)
                assert httpx.get(presigned).content == expected
                redirect = c.get(f"/v1/jobs/{job_id}/result")
                assert redirect.status_code == 307
                assert redirect.headers["location"].startswith(seaweed.endpoint)
                assert httpx.get(redirect.headers["location"]).content == expected
                # fal's surface: image.url is presigned too.
                fal = c.get(f"/fal-ai/imageutils/requests/{job_id}").json()
                assert fal["image"]["url"].startswith(seaweed.endpoint)
                downloaded = httpx.get(fal["image"]["url"])
                assert downloaded.content == expected
                assert downloaded.headers["content-type"] == "image/png"
                assert Image.open(io.BytesIO(downloaded.content)).size == (fal["image"]["width"],
                                                                           fal["image"]["height"])
    finally:
        api.stop()


def test_submit_refused_with_503_when_the_store_is_down(
    s3_env: dict[str, str], tmp_path: Path
) -> None:
    from tests.support.seaweed import free_ports

    (port,) = free_ports(1)
    down = {**s3_env, "ORCH_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "ORCH_S3_MAX_ATTEMPTS": "1", "ORCH_S3_CONNECT_TIMEOUT_SECONDS": "1"}
    key = _key(down)
    api = PlainApi(down, tmp_path / "api.log")
    try:
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Key {key}"}) as c:
            reply = c.post("/v1/uploads", files=[("files", ("a.png", _png(0), "image/png"))])
            assert reply.status_code == 503, reply.text
            assert reply.headers["retry-after"] == "5"
            assert "object store" in reply.json()["detail"]
            assert s3_env["AWS_SECRET_ACCESS_KEY"] not in reply.text
            import base64

            uri = "data:image/png;base64," + base64.b64encode(_png(1)).decode()
            fal = c.post("/fal-ai/imageutils/rembg", json={"image_url": uri})
            assert fal.status_code == 503, fal.text
    finally:
        api.stop()
    # Nothing accepted that is not stored.
    assert count(s3_env["ORCH_DATABASE_URL"], JobInput) == 0
    assert load_jobs(s3_env["ORCH_DATABASE_URL"]) == []


def test_store_killed_mid_run_jobs_retry_and_finish_nothing_lost(
    s3_env: dict[str, str], seaweed: SeaweedFS, bucket: str, start_worker, tmp_path: Path
) -> None:
    db = s3_env["ORCH_DATABASE_URL"]
    env = {**s3_env, "ORCH_MAX_ATTEMPTS": "30", "ORCH_S3_MAX_ATTEMPTS": "1",
           "ORCH_S3_CONNECT_TIMEOUT_SECONDS": "1"}
    start_worker("--queues", "local", "--concurrency", "2", extra_env=env)
    # A few finish with the store up...
    first = _folder(tmp_path / "first", range(6))
    submitted = run_cli(env, "submit", str(first), "--backend", "local")
    assert submitted.returncode == 0, submitted.stderr
    assert {j.state for j in wait_all_final(db, timeout=90)} == {JobState.SUCCEEDED}
    # ...then the store is SIGKILLed the moment the next batch is queued, so most of it runs
    # while the store is away, however fast the worker is (distinct images: none is merged).
    second = _folder(tmp_path / "second", range(6, 36))
    submitted = run_cli(env, "submit", str(second), "--backend", "local")
    assert submitted.returncode == 0, submitted.stderr
    seaweed.kill()
    time.sleep(4)
    seaweed.start()
    jobs = wait_all_final(db, timeout=240)
    assert len(jobs) == 36
    assert {j.state for j in jobs} == {JobState.SUCCEEDED}, [(j.state, j.error_message) for j in jobs]
    with psycopg.connect(db.replace("+psycopg", "")) as conn:
        retried = conn.execute("SELECT count(*) FROM attempts WHERE outcome = 'retry' "
                               "AND error_code LIKE 'store%'").fetchone()
    assert retried is not None and retried[0] >= 1  # the outage was felt, and retried through
    # No row points at a missing object: every location is readable, bytes match their hash.
    client = seaweed.client()
    for r in _rows(db, Result):
        body = client.get_object(Bucket=bucket, Key=r.location)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == r.sha256
    for r in _rows(db, JobInput):
        assert client.head_object(Bucket=bucket, Key=r.location)["ContentLength"] == r.size_bytes
