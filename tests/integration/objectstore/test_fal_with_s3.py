"""The fal backend with the object store: fal's file lands in S3 byte-identical, and the
presigned URLs (fal's image.url on our API, webhooks) hand out exactly those bytes."""

from __future__ import annotations

import io
import time
from pathlib import Path

import httpx

from orchestrator.db.session import session_scope
from orchestrator.jobs.states import AttemptOutcome, JobState
from orchestrator.settings import get_settings
from orchestrator.webhooks.delivery import webhook_body
from tests.conftest import emulator_env, run_cli
from tests.fal_emulator import FalEmulator
from tests.support.db import load_jobs
from tests.support.images import subject
from tests.support.seaweed import SeaweedFS

EMULATOR_LATENCY = 0.2


def test_fal_results_are_stored_in_s3_byte_identical(
    s3_env: dict[str, str], seaweed: SeaweedFS, bucket: str, emulator: FalEmulator,
    start_worker, tmp_path: Path,
) -> None:
    env = emulator_env(s3_env, emulator, latency=EMULATOR_LATENCY,
                       ORCH_FAL_POLL_INITIAL_SECONDS="0.1", ORCH_FAL_POLL_MAX_SECONDS="0.5")
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        buf = io.BytesIO()
        subject((70 + i, 50)).save(buf, "PNG")
        (folder / f"f{i}.png").write_bytes(buf.getvalue())
    worker = start_worker("--queues", "fal", "--concurrency", "1", extra_env=env, ready=False)
    deadline = time.monotonic() + 60
    while "fal poller running" not in worker.text() or " ready." not in worker.text():
        assert time.monotonic() < deadline and worker.proc.poll() is None, worker.text()
        time.sleep(0.1)
    out = run_cli(env, "submit", str(folder), "--backend", "fal", "--wait", "-o",
                  str(tmp_path / "out"))
    assert out.returncode == 0, out.stdout + out.stderr

    from sqlalchemy import select

    from orchestrator.db.models import Job

    client = seaweed.client()
    settings = get_settings()
    jobs = load_jobs(env["ORCH_DATABASE_URL"])
    assert len(jobs) == 4
    for job in jobs:
        assert job.state is JobState.SUCCEEDED
        winner = next(a for a in job.attempts if a.outcome is AttemptOutcome.SUCCEEDED)
        assert winner.provider_request_id is not None
        fal_file = emulator.output_bytes(winner.provider_request_id)
        assert job.result is not None and job.result.store == "s3" and job.result.data is None
        stored = client.get_object(Bucket=bucket, Key=job.result.location)["Body"].read()
        assert stored == fal_file
        assert (tmp_path / "out" / f"{job.source_name}.png").read_bytes() == fal_file
        with session_scope(env["ORCH_DATABASE_URL"]) as session:
            fresh = session.scalars(select(Job).where(Job.id == job.id)).one()
            body = webhook_body(fresh, settings)
        url = body["payload"]["image"]["url"]
        assert url.startswith(seaweed.endpoint)
        assert httpx.get(url).content == fal_file
