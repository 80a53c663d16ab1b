"""``orchestrator results migrate --to s3``: 1,000 results out of Postgres, interrupted half-way
and resumed, while readers keep reading them."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

import psycopg

from orchestrator.db.models import Result
from orchestrator.db.session import session_scope
from orchestrator.settings import get_settings
from orchestrator.storage.results import read_result
from tests.conftest import ROOT, run_cli
from tests.support.seaweed import SeaweedFS
from tests.support.stored_jobs import insert_succeeded_jobs


def _moved(database_url: str) -> int:
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        row = conn.execute("SELECT count(*) FROM results WHERE store = 's3'").fetchone()
    assert row is not None
    return int(row[0])


def test_migrate_interrupted_and_resumed_moves_everything_byte_identical(
    s3_env: dict[str, str], seaweed: SeaweedFS, bucket: str
) -> None:
    db = s3_env["ORCH_DATABASE_URL"]
    originals = insert_succeeded_jobs(db, 1000)
    ids = list(originals)

    # Readers run all along: every read, before, during and after the move, is byte-identical.
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def reader() -> None:
        settings = get_settings()
        rng = random.Random(7)
        while not stop.is_set():
            job_id = rng.choice(ids)
            with session_scope(db) as session:
                result = session.get(Result, job_id)
                assert result is not None
                data = read_result(settings, result)
            if data != originals[job_id]:
                problems.append(f"{job_id}: {len(data)} bytes differ")
            reads[0] += 1

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "results", "migrate", "--to",
                             "s3", "--batch-size", "25"], env=s3_env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while _moved(db) < 500 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # interrupted half-way, as a crash would
    proc.wait(timeout=30)
    half = _moved(db)
    assert 0 < half < 1000, f"moved {half} before the interruption"

    resumed = run_cli(s3_env, "results", "migrate", "--to", "s3", "--batch-size", "100",
                      timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{1000 - half} result(s)" in resumed.stderr
    assert "VACUUM FULL" in resumed.stderr  # how to give the space back
    stop.set()
    thread.join(timeout=30)
    assert not problems, problems[:5]
    assert reads[0] > 0

    with psycopg.connect(db.replace("+psycopg", "")) as conn:
        left = conn.execute("SELECT count(*) FROM results WHERE data IS NOT NULL OR store <> 's3'"
                            ).fetchone()
        inputs_left = conn.execute("SELECT count(*) FROM job_inputs WHERE data IS NOT NULL"
                                   ).fetchone()
        rows = conn.execute("SELECT job_id, location, sha256 FROM results").fetchall()
    assert left == (0,) and inputs_left == (0,)
    client = seaweed.client()
    for job_id, location, sha256 in rows:
        body = client.get_object(Bucket=bucket, Key=location)["Body"].read()
        assert body == originals[uuid.UUID(str(job_id))]
        assert hashlib.sha256(body).hexdigest() == sha256
    # Exactly one object per input and per result: the re-PUTs of the interrupted batch
    # overwrote their keys instead of leaving copies.
    assert seaweed.count(bucket, "orch/results/") == 1000
    assert seaweed.count(bucket, "orch/inputs/") == 1000
    again = run_cli(s3_env, "results", "migrate", "--to", "s3")
    assert again.returncode == 0 and "moved 0 input(s) and 0 result(s)" in again.stderr
