"""Retention and the orphan sweep on every store: what is due goes, nothing else does."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from orchestrator.backends.local import LocalBackend
from orchestrator.db.models import Job, JobInput, Result
from orchestrator.db.session import session_scope
from orchestrator.jobs.producer import Source, submit
from orchestrator.jobs.runner import run_delivery
from orchestrator.jobs.transitions import utcnow
from orchestrator.results.links import link_token
from orchestrator.settings import get_settings
from orchestrator.storage import store_for_new
from orchestrator.storage.retention import collect
from tests.conftest import run_cli
from tests.support.api_server import PlainApi
from tests.support.images import subject
from tests.support.seaweed import SeaweedFS


def _png(i: int) -> bytes:
    import io

    buf = io.BytesIO()
    subject((64 + 4 * i, 48)).save(buf, "PNG")
    return buf.getvalue()


def _run_jobs(n: int) -> list[uuid.UUID]:
    """``n`` jobs submitted and run to success in this process (the real producer and runner)."""
    settings = get_settings()
    submitted = submit([Source(name=f"img{i}", data=_png(i)) for i in range(n)],
                       settings=settings, backend="local")
    backend = LocalBackend(settings)
    for item in submitted:
        report = run_delivery(item.job_id, settings=settings, backend=backend,
                              publish=lambda *args: None)
        assert report.outcome == "succeeded", report
    return [item.job_id for item in submitted]


def _backdate(database_url: str, *, finished: list[uuid.UUID], stored: list[uuid.UUID]) -> None:
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("UPDATE jobs SET finished_at = now() - interval '2 days' WHERE id = ANY(%s)",
                      (finished,))
        conn.execute("UPDATE results SET created_at = now() - interval '40 days' "
                     "WHERE job_id = ANY(%s)", (stored,))


def _expired(database_url: str) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    with session_scope(database_url) as session:
        inputs = {r.job_id for r in session.query(JobInput).filter(JobInput.expired_at.is_not(None))}
        results = {r.job_id for r in session.query(Result).filter(Result.expired_at.is_not(None))}
    return inputs, results


RETENTION = {"ORCH_INPUT_RETENTION_SECONDS": "86400", "ORCH_RESULT_RETENTION_DAYS": "30",
             "ORCH_ORPHAN_GRACE_SECONDS": "3600"}


def _key(env: dict[str, str]) -> str:
    out = run_cli(env, "keys", "create", "default")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_s3_sweep_removes_expired_and_orphans_and_nothing_else(
    s3_env: dict[str, str], seaweed: SeaweedFS, bucket: str, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for name, value in RETENTION.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    db = s3_env["ORCH_DATABASE_URL"]
    ids = _run_jobs(6)
    _backdate(db, finished=ids[:3], stored=ids[:2])
    client = seaweed.client()
    # Orphans (a crash between PUT and commit) and objects that are not ours at all.
    for key in ("orch/inputs/" + str(uuid.uuid4()), "orch/results/" + str(uuid.uuid4()) + "/1.png"):
        client.put_object(Bucket=bucket, Key=key, Body=b"orphan" * 100)
    for key in ("orch/other/keep-me", "elsewhere/inputs/keep-me"):
        client.put_object(Bucket=bucket, Key=key, Body=b"not ours")
    assert (seaweed.count(bucket, "orch/inputs/"), seaweed.count(bucket, "orch/results/")) == (7, 7)
    total = seaweed.count(bucket)

    dry = collect(get_settings(), dry_run=True)
    assert (dry.inputs, dry.results, dry.orphans) == (3, 2, 0)  # the orphans are still young
    assert dry.input_bytes == sum(len(_png(i)) for i in range(3))
    assert seaweed.count(bucket) == total  # a dry run deletes nothing

    report = collect(get_settings())
    assert (report.inputs, report.results, report.orphans) == (3, 2, 0)
    assert seaweed.count(bucket, "orch/inputs/") == 4  # 3 kept + the young orphan
    assert seaweed.count(bucket, "orch/results/") == 5
    later = collect(get_settings(), now=utcnow() + timedelta(hours=2))  # past the grace period
    assert (later.inputs, later.results, later.orphans) == (0, 0, 2)
    assert later.orphan_bytes == 1200
    assert seaweed.count(bucket, "orch/inputs/") == 3
    assert seaweed.count(bucket, "orch/results/") == 4
    assert seaweed.count(bucket) == total - 3 - 2 - 2  # the two foreign objects stay

    inputs, results = _expired(db)
    assert inputs == set(ids[:3]) and results == set(ids[:2])
    with session_scope(db) as session:
        for job_id in ids:  # rows (the cost history) all stay; no row names a missing object
            job = session.get(Job, job_id)
            assert job is not None and job.result is not None
            assert (job.result.location is None) == (job_id in results)
        for row in session.query(Result).filter(Result.location.is_not(None)):
            client.head_object(Bucket=bucket, Key=row.location)
        for row in session.query(JobInput).filter(JobInput.location.is_not(None)):
            client.head_object(Bucket=bucket, Key=row.location)

    # An expired result: 410 with a clear message in the API, a clear line in the CLI.
    expired_id, kept_id = ids[0], ids[5]
    with session_scope(db) as session:
        # Result links carry an expiring HMAC under the job's stored secret (issue 14.1).
        tokens = {j.id: link_token(j.result_token or "", j.id, 3600) for j in session.query(Job)}
    api = PlainApi({**s3_env, **RETENTION}, tmp_path / "api.log")
    try:
        gone = httpx.get(f"{api.url}/v1/jobs/{expired_id}/result",
                         params={"token": tokens[expired_id]})
        assert gone.status_code == 410, gone.text
        detail = gone.json()["detail"]
        assert "expired" in detail and "ORCH_RESULT_RETENTION_DAYS" in detail
        kept = httpx.get(f"{api.url}/v1/jobs/{kept_id}/result", params={"token": tokens[kept_id]})
        assert kept.status_code == 307
        fal = httpx.get(f"{api.url}/fal-ai/imageutils/requests/{expired_id}",
                        headers={"Authorization": f"Key {_key(s3_env)}"})
        assert fal.status_code == 410 and "expired" in fal.text
    finally:
        api.stop()
    cli = run_cli({**s3_env, **RETENTION}, "jobs", "result", str(expired_id), "-o", "/dev/null")
    assert cli.returncode == 1
    assert "has expired" in cli.stderr and "Traceback" not in cli.stderr

    # Nothing is left due.
    again = run_cli({**s3_env, **RETENTION}, "gc", "--dry-run", "--json")
    assert again.returncode == 0 and '"inputs": 0' in again.stdout


@pytest.mark.parametrize("store", ["database", "directory"])
def test_retention_on_the_database_and_directory_stores(
    env: dict[str, str], store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {**RETENTION, "ORCH_RESULT_STORE": store,
                        "ORCH_RESULT_DIR": str(tmp_path / "objects")}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    db = env["ORCH_DATABASE_URL"]
    ids = _run_jobs(4)
    _backdate(db, finished=ids[:2], stored=ids[:1])
    files = sorted(p for p in (tmp_path / "objects").rglob("*") if p.is_file())
    assert len(files) == (8 if store == "directory" else 0)
    if store == "directory":  # an orphan file, as a crash between write and commit leaves
        orphan = store_for_new(get_settings()).put("results/orphan/1.png", b"x" * 10, "image/png")
        assert orphan.location is not None

    report = collect(get_settings(), now=utcnow() + timedelta(hours=2))
    assert (report.inputs, report.results) == (2, 1)
    assert report.orphans == (1 if store == "directory" else 0)
    inputs, results = _expired(db)
    assert inputs == set(ids[:2]) and results == set(ids[:1])
    with psycopg.connect(db.replace("+psycopg", "")) as conn:
        held = conn.execute("SELECT count(*) FROM job_inputs WHERE data IS NOT NULL").fetchone()
        results_held = conn.execute("SELECT count(*) FROM results WHERE data IS NOT NULL"
                                    ).fetchone()
    if store == "database":
        assert held == (2,) and results_held == (3,)  # the bytes left the rows
    else:
        left = sorted(p for p in (tmp_path / "objects").rglob("*") if p.is_file())
        assert len(left) == 8 - 3


def test_the_reconcilers_loop_runs_retention(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.jobs.reconciler import ReconcilerLoop
    from tests.support.stored_jobs import insert_succeeded_jobs

    monkeypatch.setenv("ORCH_INPUT_RETENTION_SECONDS", "3600")
    monkeypatch.setenv("ORCH_GC_INTERVAL_SECONDS", "0.5")
    get_settings.cache_clear()
    db = env["ORCH_DATABASE_URL"]
    ids = list(insert_succeeded_jobs(db, 4, size=256))
    _backdate(db, finished=ids[:2], stored=[])
    loop = ReconcilerLoop(get_settings(), interval=0.2)
    loop.start()
    try:
        deadline = time.monotonic() + 30
        while _expired(db)[0] != set(ids[:2]):
            assert time.monotonic() < deadline, _expired(db)
            time.sleep(0.1)
    finally:
        loop.stop()
    assert _expired(db) == (set(ids[:2]), set())
