"""The reconciler on the real Postgres and Redis: what it re-drives, what it leaves alone."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
import redis
from sqlalchemy import create_engine, text, update
from sqlalchemy.orm import Session

from orchestrator.db.models import Attempt, Job, Result
from orchestrator.jobs.producer import Source, submit
from orchestrator.jobs.reconciler import ADVISORY_LOCK_KEY, Reconciler, job_ids_in_broker
from orchestrator.jobs.states import AttemptOutcome, JobState
from orchestrator.jobs.transitions import utcnow
from orchestrator.queue.celery_app import publish_run
from orchestrator.settings import load_settings
from tests.conftest import run_cli
from tests.support.api_server import PlainApi
from tests.support.db import count, job_by_id, wait_for_state
from tests.support.images import data_uri, numbered_png
from tests.support.servers import free_port
from tests.support.wait import wait_until

FAST = {"ORCH_RECONCILE_STALE_AFTER_SECONDS": "0", "ORCH_RECONCILE_INTERVAL_SECONDS": "0.5"}


def _png(i: int = 0) -> bytes:
    return numbered_png(i, (64, 48))


def _messages(broker_url: str, queue: str = "local") -> int:
    return int(redis.Redis.from_url(broker_url).llen(queue))


def test_a_submit_while_redis_is_down_is_stored_and_published_by_the_reconciler(
    env: dict[str, str], start_worker
) -> None:
    # The producer commits the row, then fails to publish: the job is accepted (it is stored),
    # and the reconciler publishes it once Redis answers; nobody acts by hand.
    down = load_settings(broker_url=f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    [item] = submit([Source(name="a", data=_png())], settings=down)
    took = time.monotonic() - started
    assert took < 10, f"a submit with Redis down took {took:.1f} s"
    assert item.created and item.state is JobState.QUEUED
    assert _messages(env["ORCH_BROKER_URL"]) == 0

    out = run_cli({**env, **FAST}, "reconcile", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["republished"] == [str(item.job_id)]
    assert _messages(env["ORCH_BROKER_URL"]) == 1

    # Its message is in Redis now: a second pass leaves it alone (no duplicate).
    again = json.loads(run_cli({**env, **FAST}, "reconcile", "--json").stdout)
    assert again["republished"] == [] and again["messages_seen"] == 1
    assert _messages(env["ORCH_BROKER_URL"]) == 1

    start_worker()
    job = wait_for_state(env["ORCH_DATABASE_URL"], item.job_id, {JobState.SUCCEEDED}, 60)
    assert job.redrives == 1 and job.redriven_at is not None


def test_republishing_a_job_that_is_fine_runs_it_once(env: dict[str, str], start_worker) -> None:
    settings = load_settings()
    items = submit([Source(name=f"img-{i}", data=_png(i)) for i in range(3)], settings=settings)
    for item in items:  # a duplicate bell for every job, as a racing reconciler could ring
        publish_run(settings, item.job_id, "local")
    start_worker()
    for item in items:
        wait_for_state(env["ORCH_DATABASE_URL"], item.job_id, {JobState.SUCCEEDED}, 60)
    broker = redis.Redis.from_url(env["ORCH_BROKER_URL"])
    # Both bells of every job delivered, and no message left queued or held unacknowledged.
    wait_until(lambda: all(job_by_id(env["ORCH_DATABASE_URL"], i.job_id).deliveries >= 2 for i in items)
               and not _messages(env["ORCH_BROKER_URL"]) and not broker.hlen("unacked"),
               timeout=30, interval=0.2, what="every duplicate message to be delivered and acked")
    for item in items:
        job = job_by_id(env["ORCH_DATABASE_URL"], item.job_id)
        assert [a.outcome for a in job.attempts] == [AttemptOutcome.SUCCEEDED]
        assert job.deliveries == 2
    assert count(env["ORCH_DATABASE_URL"], Result) == 3


def _orphan_running_job(database_url: str, job_id: uuid.UUID, owner: str) -> None:
    """Make the job look taken by a worker on another host that died: running, lease expired."""
    engine = create_engine(database_url)
    with Session(engine) as session, session.begin():
        job = session.get(Job, job_id)
        assert job is not None
        now = utcnow()
        job.state = JobState.RUNNING
        job.attempt_count = 1
        job.lease_owner = owner
        job.lease_expires_at = now - timedelta(seconds=5)
        session.add(Attempt(job_id=job_id, number=1, backend="local", worker=owner.rsplit(":", 1)[0],
                            outcome=AttemptOutcome.RUNNING, started_at=now - timedelta(seconds=40)))
    engine.dispose()


def test_a_running_job_whose_lease_expired_is_redriven_and_runs_once_more(
    env: dict[str, str], start_worker
) -> None:
    settings = load_settings()
    [item] = submit([Source(name="a", data=_png())], settings=settings)
    redis.Redis.from_url(env["ORCH_BROKER_URL"]).delete("local")  # its message died with its worker
    _orphan_running_job(env["ORCH_DATABASE_URL"], item.job_id, "gone-host:4242:deadbeef")

    reconciler = Reconciler(load_settings(reconcile_stale_after_seconds=0))
    try:
        first = reconciler.run_pass()  # seen stuck once: only a suspect
        assert first.suspects == 1 and first.redriven == []
        second = reconciler.run_pass()
        assert second.redriven == [item.job_id]
        third = reconciler.run_pass()  # re-driven: a suspect again, not re-driven at once
        assert third.redriven == [] and third.suspects == 1
    finally:
        reconciler.close()

    start_worker()
    job = wait_for_state(env["ORCH_DATABASE_URL"], item.job_id, {JobState.SUCCEEDED}, 60)
    assert [a.outcome for a in job.attempts] == [AttemptOutcome.CRASHED, AttemptOutcome.SUCCEEDED]
    assert job.crashes == 1
    assert count(env["ORCH_DATABASE_URL"], Result) == 1


def test_a_job_whose_heartbeat_resumes_between_passes_is_left_alone(env: dict[str, str]) -> None:
    settings = load_settings()
    [item] = submit([Source(name="a", data=_png())], settings=settings)
    _orphan_running_job(env["ORCH_DATABASE_URL"], item.job_id, "slow-host:77:cafe")
    reconciler = Reconciler(load_settings(reconcile_stale_after_seconds=0))
    engine = create_engine(env["ORCH_DATABASE_URL"])
    try:
        assert reconciler.run_pass().suspects == 1
        with Session(engine) as session, session.begin():  # the holder renewed its lease
            session.execute(update(Job).where(Job.id == item.job_id).values(
                lease_expires_at=utcnow() + timedelta(seconds=30)))
        report = reconciler.run_pass()
        assert report.redriven == [] and report.suspects == 0
    finally:
        reconciler.close()
        engine.dispose()


def test_only_one_reconciler_acts_at_a_time(env: dict[str, str]) -> None:
    url = env["ORCH_DATABASE_URL"].replace("+psycopg", "")
    with psycopg.connect(url) as other:  # another reconciler in the middle of its pass
        other.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
        reconciler = Reconciler(load_settings())
        try:
            assert reconciler.run_pass().ran is False
        finally:
            reconciler.close()
        other.rollback()
    reconciler = Reconciler(load_settings())
    try:
        assert reconciler.run_pass().ran is True
    finally:
        reconciler.close()
    engine = create_engine(env["ORCH_DATABASE_URL"])
    with engine.connect() as conn:  # the lock went with the pass's transaction
        assert conn.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                 )).scalar() == 0
    engine.dispose()


def test_the_broker_scan_finds_queued_and_held_messages(env: dict[str, str]) -> None:
    settings = load_settings()
    queued, held = uuid.uuid4(), uuid.uuid4()
    publish_run(settings, queued, "local")
    publish_run(settings, held, "fal")
    stale = uuid.uuid4()
    publish_run(settings, stale, "fal")
    client = redis.Redis.from_url(env["ORCH_BROKER_URL"])
    for tag, taken_at in (("tag-1", time.time()), ("tag-2", time.time() - 600)):
        raw = client.rpop("fal")  # as a worker takes it: off the list, into the unacked hash
        assert raw is not None
        client.hset("unacked", tag, b"[" + raw + b', "fal", "fal"]')
        client.zadd("unacked_index", {tag: taken_at})
    view = job_ids_in_broker(env["ORCH_BROKER_URL"], held_within=60)
    assert str(queued) in view.queued
    # publish order: held was taken first (tag-1, just now), stale second (tag-2, 10 min ago)
    assert str(held) in view.held and str(stale) not in view.held | view.queued
    assert view.messages == 2


def test_the_api_accepts_a_submit_while_redis_is_down_and_it_runs_later(
    env: dict[str, str], start_worker, tmp_path
) -> None:
    """The API's answer to a submit while Redis is down is explicit: 200 with a request id,
    because the job IS stored (Postgres is the source of truth) and the reconciler publishes
    it once Redis answers. It is never accepted and lost."""
    key = run_cli(env, "keys", "create", "svc").stdout.strip()
    down = {**env, "ORCH_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    api = PlainApi(down, tmp_path / "api.log")
    try:
        image = data_uri(_png())
        started = time.monotonic()
        reply = httpx.post(f"{api.url}/fal-ai/imageutils/rembg", json={"image_url": image},
                           headers={"Authorization": f"Key {key}"}, timeout=30)
        took = time.monotonic() - started
    finally:
        api.stop()
    assert reply.status_code == 200, reply.text
    assert took < 10, f"a submit with Redis down took {took:.1f} s"
    job_id = reply.json()["request_id"]
    assert job_by_id(env["ORCH_DATABASE_URL"], job_id).state is JobState.QUEUED
    assert _messages(env["ORCH_BROKER_URL"]) == 0
    worker = start_worker(extra_env=FAST)  # its reconciler publishes the stored job: nobody acts
    wait_for_state(env["ORCH_DATABASE_URL"], job_id, {JobState.SUCCEEDED}, 60)
    assert "reconciler running in the worker's main process" in worker.text()


def test_reconcile_loop_runs_passes_until_sigterm(env: dict[str, str], tmp_path: Path) -> None:
    """`orchestrator reconcile --loop` (the compose service): a pass per interval, clean exit."""
    stdout = tmp_path / "reconcile.out"
    with open(stdout, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "reconcile", "--loop", "--interval", "0.3",
             "--json"], env=env, stdout=sink, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: stdout.read_text().count("\n") >= 2 or proc.poll() is not None,
                   timeout=60, what="two reconcile passes on stdout")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    out = stdout.read_text()
    assert proc.returncode == 0, err
    passes = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(passes) >= 2 and all(p["ran"] for p in passes), (out, err)
