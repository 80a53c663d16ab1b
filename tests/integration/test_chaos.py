"""Chaos: inject a fault into a running system, then check what must hold afterwards.

Real worker processes (local backend with the tiny model, fal backend against the emulator),
real Postgres and Redis. Faults that take a server down use a private server of the test's own
(tests/support/servers.py). Each test prints one ``CHAOS {...}`` line with its figures
(run with ``-s`` to see them; README.md reports them).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import create_engine, text

from orchestrator.db.migrate import upgrade
from orchestrator.jobs.producer import Source, Submitted, submit
from orchestrator.jobs.states import AttemptOutcome, JobState
from orchestrator.settings import load_settings
from tests.conftest import EMULATOR_FAL_KEY, emulator_env, run_cli
from tests.fal_emulator import FalEmulator
from tests.support.api_server import PlainApi
from tests.support.db import Job, load_jobs, wait_all_final
from tests.support.images import png
from tests.support.servers import PrivatePostgres, PrivateRedis, free_port
from tests.support.wait import wait_for_log, wait_until

FAL_KEY = EMULATOR_FAL_KEY


EMULATOR_LATENCY = 1.0  # the module's emulator (tests/conftest.py)


@pytest.fixture
def chaos_env(env: dict[str, str], emulator: FalEmulator) -> dict[str, str]:
    return emulator_env(
        env, emulator, latency=EMULATOR_LATENCY,
        ORCH_FAL_POLL_INITIAL_SECONDS="0.2",
        ORCH_FAL_POLL_MAX_SECONDS="1",
        ORCH_FAL_SUBMIT_TIMEOUT_SECONDS="5",
        ORCH_FAL_RESUBMIT_AFTER_SECONDS="0.5",
        ORCH_RECONCILE_INTERVAL_SECONDS="1",
        ORCH_RECONCILE_STALE_AFTER_SECONDS="2",
        # Not a poison input: a job may be caught by several kills and must still finish.
        ORCH_MAX_DELIVERIES="10",
    )


def _png(i: int, scale: int = 1) -> bytes:
    return png((scale * 64 + i % 150, scale * 48 + i // 150))


def _submit(env: dict[str, str], backend: str, numbers: range) -> list[Submitted]:
    settings = load_settings(database_url=env["ORCH_DATABASE_URL"], broker_url=env["ORCH_BROKER_URL"],
                             fal_key=FAL_KEY)
    # Local inputs are big enough (~1.2k x 0.9k) that a local job takes a while to run.
    scale = 20 if backend == "local" else 1
    return submit([Source(name=f"{backend}-{i}", data=_png(i, scale)) for i in numbers],
                  settings=settings, backend=backend)


def _start_local(start_worker: Any, env: dict[str, str], ready: bool = True) -> Any:
    return start_worker("--queues", "local", "--concurrency", "1", extra_env=env, ready=ready)


def _start_fal(start_worker: Any, env: dict[str, str], ready: bool = True) -> Any:
    worker = start_worker("--queues", "fal", "--concurrency", "2", extra_env=env, ready=False)
    if ready:
        wait_for_log(worker, "fal poller running", times=2)
    return worker


def _wait_final(database_url: str, expected: int, timeout: float) -> tuple[list[Job], float]:
    """The ``expected`` jobs, all final, and when that was seen."""
    jobs = wait_all_final(database_url, timeout, expected=expected)
    return jobs, time.monotonic()


def _in_flight(database_url: str, emulator: FalEmulator) -> bool:
    """fal holds an unfinished request and a local job is running (mid-inference)."""
    at_fal = any(r.status != "COMPLETED" for r in list(emulator.requests.values()))
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM jobs WHERE state = 'running' AND backend = 'local' "
                           "LIMIT 1").fetchone()
    return at_fal and row is not None


def _paid_per_input(emulator: FalEmulator) -> dict[str, list[str]]:
    """The emulator's ledger: request ids per input (sha256 of the image sent as a data URI)."""
    paid: dict[str, list[str]] = {}
    for entry in emulator.ledger:
        data = base64.b64decode(entry["input"]["image_url"].split(",", 1)[1])
        paid.setdefault(hashlib.sha256(data).hexdigest(), []).append(entry["request_id"])
    return paid


def _check_nothing_lost_nothing_paid_twice(
    jobs: list[Job], emulator: FalEmulator
) -> dict[str, int]:
    """Every job succeeded with exactly one result; every paid fal request has exactly one
    attempt row with its cost; payments beyond one per job happened only where a submit's
    reply was lost (a LOST attempt) and are flagged on the job. Returns the figures."""
    lost = [j for j in jobs if j.state is not JobState.SUCCEEDED]
    assert not lost, [(j.source_name, j.state.value, j.error_message) for j in lost]
    for job in jobs:
        winners = [a for a in job.attempts if a.outcome is AttemptOutcome.SUCCEEDED]
        assert len(winners) == 1 and job.result is not None, (
            job.source_name, job.crashes, job.deliveries, job.redrives,
            [(a.number, a.outcome.value, a.submit_state, a.provider_request_id, a.error_message)
             for a in job.attempts], job.result and job.result.attempt_id)
        assert job.result.attempt_id == winners[0].id
    paid = _paid_per_input(emulator)
    attempts_by_request = {}
    for job in jobs:
        for a in job.attempts:
            if a.provider_request_id is not None:
                assert a.provider_request_id not in attempts_by_request, "one request, two attempts"
                attempts_by_request[a.provider_request_id] = a
    duplicates = 0
    for job in (j for j in jobs if j.backend == "fal"):
        bought = paid.get(job.input_sha256 or "", [])
        lost_submits = sum(1 for a in job.attempts if a.outcome is AttemptOutcome.LOST)
        # RETRY: fal ran it and it failed; SUPERSEDED: a lost submit found again (its cost)
        extra_runs = sum(1 for a in job.attempts
                         if a.outcome in (AttemptOutcome.RETRY, AttemptOutcome.SUPERSEDED))
        assert bought, f"{job.source_name} succeeded on fal without a paid request"
        unrecorded = [r for r in bought if r not in attempts_by_request]
        # A request fal accepted whose id never reached Postgres: only after a lost submit.
        assert len(unrecorded) <= lost_submits, (job.source_name, unrecorded, lost_submits)
        if unrecorded:
            assert job.possible_duplicate, job.source_name
        duplicates += len(unrecorded)
        assert len(bought) <= 1 + lost_submits + extra_runs, job.source_name
    for request_id, attempt in attempts_by_request.items():
        assert any(request_id in ids for ids in paid.values()), "an attempt names an unpaid request"
        assert attempt.cost_usd is not None, f"paid request {request_id} has no cost row"
    return {"paid_requests": len(emulator.ledger), "duplicates": duplicates,
            "possible_duplicate_jobs": sum(1 for j in jobs if j.possible_duplicate)}


def _detection_delays(jobs: list[Job], kill_times: list[float], wall_offset: float) -> list[float]:
    """Seconds from the kill that ended an attempt to the delivery that noticed it."""
    delays = []
    for job in jobs:
        for a in job.attempts:
            if a.outcome not in (AttemptOutcome.CRASHED, AttemptOutcome.LOST) or a.finished_at is None:
                continue
            noticed = a.finished_at.timestamp() - wall_offset
            before = [t for t in kill_times if t <= noticed + 0.5]
            if before:
                delays.append(max(0.0, noticed - before[-1]))
    return delays


def _report(name: str, figures: dict[str, Any]) -> None:
    print(f"\nCHAOS {name} " + json.dumps(figures, sort_keys=True))


def _busy_pid(database_url: str, backend: str, timeout: float) -> int | None:
    """The pid of a worker process holding a lease on a job of ``backend`` (a local job
    mid-inference, a fal job mid-submit), watched for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT lease_owner FROM jobs WHERE state = 'running' AND "
                               "backend = %s AND lease_owner IS NOT NULL LIMIT 1",
                               (backend,)).fetchone()
            if row is not None:
                return int(row[0].rsplit(":", 2)[1])
            time.sleep(0.003)
    return None


@pytest.mark.slow
def test_sigkill_storm_loses_nothing_and_pays_once(
    webhook_env: dict[str, str], start_worker: Any, emulator: FalEmulator
) -> None:
    """200 jobs (100 fal, 100 local), submitted in waves while worker pool processes and whole
    workers (main process and pool) are SIGKILLed and restarted. Each kill picks a backend and
    a kind at random, then lands while a job of that backend is held (mid-inference,
    mid-submit), or at a random moment when none is. fal's webhooks reach the API, so a
    request whose id a kill lost is adopted: not one second payment."""
    chaos_env = {**webhook_env, "ORCH_FAL_ADOPT_WAIT_SECONDS": "8"}
    seed = int(os.environ.get("CHAOS_SEED", str(random.randrange(1 << 30))))
    print(f"CHAOS_SEED={seed}  (set it to replay this run's kills)")  # shown when it fails
    rng = random.Random(seed)
    database_url = chaos_env["ORCH_DATABASE_URL"]
    wall_offset = time.time() - time.monotonic()
    workers = {"local": _start_local(start_worker, chaos_env),
               "fal": _start_fal(start_worker, chaos_env)}
    kills: list[tuple[float, str, str]] = []
    started = time.monotonic()
    for wave in range(10):
        _submit(chaos_env, "local", range(wave * 10, wave * 10 + 10))
        _submit(chaos_env, "fal", range(wave * 10, wave * 10 + 10))
        if wave % 2 == 0 and wave < 10 or wave == 9:  # 6 kills spread over the run
            kind = rng.choice(["local", "fal"])
            worker = workers[kind]
            pid = _busy_pid(database_url, kind, timeout=rng.uniform(0.5, 2.0))
            if rng.random() < 0.5 and pid in worker.children():
                os.kill(pid, signal.SIGKILL)
                kills.append((time.monotonic(), kind, "pool process"))
            else:
                worker.kill()
                kills.append((time.monotonic(), kind, "whole worker"))
                starter = _start_local if kind == "local" else _start_fal
                workers[kind] = starter(start_worker, chaos_env, ready=False)
        time.sleep(1.0)  # the pace of the storm: the next wave a second later
    jobs, done_at = _wait_final(database_url, 200, timeout=150)
    figures = _check_nothing_lost_nothing_paid_twice(jobs, emulator)
    assert figures["paid_requests"] == 100 and figures["duplicates"] == 0  # 0 second payments
    delays = _detection_delays(jobs, [t for t, _, _ in kills], wall_offset)
    assert len(kills) >= 5
    assert delays, "no kill landed on a job in flight"
    assert max(delays) < 90, delays
    _report("sigkill_storm", {
        "seed": seed, "jobs": len(jobs), "kills": len(kills),
        "whole_worker_kills": sum(1 for k in kills if k[2] == "whole worker"),
        "lost": 0, **figures,
        "fal_jobs_hit_by_a_kill": sum(1 for j in jobs if j.backend == "fal" and j.crashes),
        "attempts_ended_by_a_kill": len(delays),
        "max_seconds_to_notice_a_dead_attempt": round(max(delays), 1),
        "median_seconds_to_notice": round(statistics.median(delays), 1),
        "seconds_after_last_kill_until_all_final": round(done_at - kills[-1][0], 1),
        "total_seconds": round(done_at - started, 1),
    })


@pytest.mark.slow
def test_redis_killed_and_restarted_empty_mid_run(
    webhook_env: dict[str, str], start_worker: Any, emulator: FalEmulator
) -> None:
    """Redis dies with everything it holds and comes back empty. Workers cancel the tasks they
    were running when the connection went (Celery's connection-loss cancel), so a fal submit
    can be cut between fal's accept and the commit: fal's webhook hands that request back."""
    broker = PrivateRedis().start()
    try:
        env = {**webhook_env, "ORCH_BROKER_URL": broker.url, "ORCH_FAL_ADOPT_WAIT_SECONDS": "8"}
        _start_local(start_worker, env)
        _start_fal(start_worker, env)
        emulator.latency = 3.0  # fal requests are in flight when Redis dies
        _submit(env, "local", range(40))
        _submit(env, "fal", range(40))
        wait_until(lambda: _in_flight(env["ORCH_DATABASE_URL"], emulator), timeout=30,
                   what="fal requests in flight and a local job running")
        broker.kill()  # every queued message, every unacked entry, every countdown: gone
        time.sleep(3.0)  # the outage IS the test: Redis stays down 3 s
        broker.start()  # same port, empty
        back = time.monotonic()
        _submit(env, "local", range(40, 50))  # and new work is accepted again
        jobs, done_at = _wait_final(env["ORCH_DATABASE_URL"], 90, timeout=90)
        figures = _check_nothing_lost_nothing_paid_twice(jobs, emulator)
        assert figures["paid_requests"] == 40 and figures["duplicates"] == 0
        recovery = done_at - back
        assert recovery <= 60, recovery
        _report("redis_flushed", {"jobs": len(jobs), "lost": 0, **figures,
                                  "republished_by_reconciler": sum(1 for j in jobs if j.redrives),
                                  "seconds_from_redis_return_to_all_final": round(recovery, 1)})
    finally:
        broker.close()


@pytest.mark.slow
def test_postgres_stopped_for_30_s_during_completions(
    chaos_env: dict[str, str], start_worker: Any, emulator: FalEmulator
) -> None:
    pg = PrivatePostgres().start()
    try:
        pg.create_database()
        upgrade(pg.url)
        env = {**chaos_env, "ORCH_DATABASE_URL": pg.url}
        _start_local(start_worker, env)
        _start_fal(start_worker, env)
        emulator.latency = 2.0
        _submit(env, "fal", range(30))
        _submit(env, "local", range(30))
        # submits accepted by fal, local jobs running: then the database dies
        wait_until(lambda: _in_flight(pg.url, emulator), timeout=30,
                   what="fal requests in flight and a local job running")
        pg.stop()
        time.sleep(30)  # the outage IS the test: Postgres stays down 30 s
        pg.start()
        back = time.monotonic()
        jobs, done_at = _wait_final(pg.url, 60, timeout=120)
        figures = _check_nothing_lost_nothing_paid_twice(jobs, emulator)
        engine = create_engine(pg.url)
        with engine.connect() as conn:
            without_result = conn.execute(text(
                "SELECT count(*) FROM jobs LEFT JOIN results ON results.job_id = jobs.id "
                "WHERE jobs.state = 'succeeded' AND results.job_id IS NULL")).scalar()
        engine.dispose()
        assert without_result == 0
        _report("postgres_stopped_30s", {
            "jobs": len(jobs), "lost": 0, "succeeded_without_result": without_result, **figures,
            "seconds_from_postgres_return_to_all_final": round(done_at - back, 1)})
    finally:
        pg.close()


def test_a_crash_between_fals_accept_and_the_commit_is_counted_as_a_duplicate(
    chaos_env: dict[str, str], start_worker: Any, emulator: FalEmulator, tmp_path: Any
) -> None:
    """The worker dies after fal accepted (and will bill) the submit, before the request id
    reached Postgres. Without a way to find that request again, the job is submitted once
    more: the second payment is recorded on the job (a LOST attempt, possible_duplicate),
    never silent."""
    marker = tmp_path / "die-after-accept"
    marker.touch()
    env = {**chaos_env, "ORCH_TEST_DIE_AFTER_ACCEPT": str(marker)}
    worker = start_worker("--queues", "fal", "--concurrency", "1", extra_env=env, ready=False,
                          entry=[sys.executable, "-m", "tests.support.failpoint_worker"])
    _submit(env, "fal", range(1))
    [job], _ = _wait_final(env["ORCH_DATABASE_URL"], 1, timeout=60)
    assert not marker.exists(), worker.text()  # the failpoint fired
    assert job.state is JobState.SUCCEEDED, job.error_message
    lost, won = job.attempts
    assert lost.outcome is AttemptOutcome.LOST and lost.provider_request_id is None
    assert won.outcome is AttemptOutcome.SUCCEEDED
    assert job.possible_duplicate and job.crashes == 1
    figures = _check_nothing_lost_nothing_paid_twice([job], emulator)
    assert figures["paid_requests"] == 2 and figures["duplicates"] == 1


@pytest.fixture
def webhook_env(chaos_env: dict[str, str], emulator: FalEmulator,
                tmp_path: Any) -> Iterator[dict[str, str]]:
    # The API mounts /v1/fal/webhook only with ORCH_FAL_WEBHOOK_URL set (issue 14.3).
    port = free_port()
    env = {**chaos_env, "ORCH_FAL_JWKS_URL": f"{emulator.base_url}/.well-known/jwks.json",
           "ORCH_FAL_WEBHOOK_URL": f"http://127.0.0.1:{port}/v1/fal/webhook"}
    api = PlainApi(env, tmp_path / "api.log", port=port)
    yield env
    api.stop()


def _die_after_accept(start_worker: Any, env: dict[str, str], tmp_path: Any,
                      processes: int = 1) -> Any:
    marker = tmp_path / "die-after-accept"
    marker.touch()
    env["ORCH_TEST_DIE_AFTER_ACCEPT"] = str(marker)
    worker = start_worker("--queues", "fal", "--concurrency", str(processes), extra_env=env,
                          ready=False, entry=[sys.executable, "-m", "tests.support.failpoint_worker"])
    wait_until(lambda: worker.text().count("fal poller running") >= processes, timeout=60,
               what=f"{processes} fal poller(s) running")
    return worker


def test_a_crash_between_fals_accept_and_the_commit_is_adopted_from_fals_webhook(
    webhook_env: dict[str, str], start_worker: Any, emulator: FalEmulator, tmp_path: Any
) -> None:
    """With ORCH_FAL_WEBHOOK_URL, every submit names the attempt in its fal_webhook; the
    worker dies after fal accepted, the job waits for the webhook instead of buying again,
    and fal's signed webhook hands the request id back: paid once, the original request."""
    env = {**webhook_env, "ORCH_FAL_ADOPT_WAIT_SECONDS": "30"}
    _die_after_accept(start_worker, env, tmp_path)
    _submit(env, "fal", range(1))
    [job], _ = _wait_final(env["ORCH_DATABASE_URL"], 1, timeout=60)
    assert not (tmp_path / "die-after-accept").exists()  # the failpoint fired
    assert job.state is JobState.SUCCEEDED, job.error_message
    [attempt] = job.attempts
    assert attempt.outcome is AttemptOutcome.SUCCEEDED
    [paid] = emulator.ledger
    assert attempt.provider_request_id == paid["request_id"]  # adopted, not bought again
    # crashes is 0 when the webhook came before any delivery noticed the dead worker
    assert job.crashes <= 1 and not job.possible_duplicate
    assert job.result is not None and job.result.data == emulator.output_bytes(paid["request_id"])
    _check_nothing_lost_nothing_paid_twice([job], emulator)


def test_a_lost_request_found_after_the_job_was_bought_again_is_a_recorded_cost(
    chaos_env: dict[str, str], start_worker: Any, emulator: FalEmulator, tmp_path: Any
) -> None:
    """The webhook comes only after the adoption wait (the receiver is down until then): the
    job was already submitted again. The first request is then attributed to its lost
    attempt with its cost (a known duplicate); fal retries the webhook until it lands."""
    port = free_port()
    env = {**chaos_env, "ORCH_FAL_JWKS_URL": f"{emulator.base_url}/.well-known/jwks.json",
           "ORCH_FAL_WEBHOOK_URL": f"http://127.0.0.1:{port}/v1/fal/webhook",
           "ORCH_FAL_ADOPT_WAIT_SECONDS": "0.5"}
    _die_after_accept(start_worker, env, tmp_path)
    _submit(env, "fal", range(1))
    def only_job() -> Job:
        [job] = load_jobs(env["ORCH_DATABASE_URL"])
        return job

    def bought_again() -> bool:
        job = only_job()
        return len(job.attempts) == 2 and bool(job.attempts[1].provider_request_id)

    def final_and_costed() -> Job | None:
        job = only_job()
        done = job.state.is_final and all(a.cost_usd is not None for a in job.attempts)
        return job if done else None

    wait_until(bought_again, timeout=60,
               what="the job bought again while nobody receives the webhook")
    api = PlainApi(env, tmp_path / "api.log", port=port)
    try:
        job = wait_until(final_and_costed, timeout=60, interval=0.2,
                         what="the job final with every attempt costed")
    finally:
        api.stop()
    assert job.state is JobState.SUCCEEDED, job.error_message
    first, second = job.attempts
    assert first.outcome is AttemptOutcome.SUPERSEDED and second.outcome is AttemptOutcome.SUCCEEDED
    assert [e["request_id"] for e in emulator.ledger] == [first.provider_request_id,
                                                          second.provider_request_id]
    assert first.cost_usd is not None and first.cost_usd > 0
    assert job.possible_duplicate
    figures = _check_nothing_lost_nothing_paid_twice([job], emulator)
    assert figures["duplicates"] == 0  # every paid request is on record, with its cost


def test_the_webhook_receiver_accepts_only_what_fal_signed(
    webhook_env: dict[str, str], emulator: FalEmulator
) -> None:
    url = webhook_env["ORCH_FAL_WEBHOOK_URL"]
    body = json.dumps({"request_id": "req-1", "status": "OK", "payload": {}}).encode()
    signed = emulator.signer.headers("req-1", body)
    assert httpx.post(f"{url}?attempt=999", content=body, headers=signed).status_code == 404
    tampered = body.replace(b'"OK"', b'"ERROR"')
    assert httpx.post(f"{url}?attempt=1", content=tampered, headers=signed).status_code == 401
    stale = emulator.signer.headers("req-1", body, timestamp=int(time.time()) - 301)
    assert httpx.post(f"{url}?attempt=1", content=body, headers=stale).status_code == 401
    other = emulator.signer.headers("req-2", body)  # signed for another request than the body's
    assert httpx.post(f"{url}?attempt=1", content=body, headers=other).status_code == 401
    unsigned = {"Content-Type": "application/json"}
    assert httpx.post(f"{url}?attempt=1", content=body, headers=unsigned).status_code == 401


def test_a_broken_poll_chain_is_polled_by_the_reconciler(
    chaos_env: dict[str, str], start_worker: Any, emulator: FalEmulator
) -> None:
    """fal accepted the request and its id is stored, then the only fal worker dies: nobody
    polls. The reconciler (`orchestrator reconcile`, in a process with FAL_KEY) polls it by
    request id and the job completes on that request, paid once."""
    emulator.latency = 1.5
    worker = _start_fal(start_worker, chaos_env)
    _submit(chaos_env, "fal", range(1))
    def only_job() -> Job:
        [job] = load_jobs(chaos_env["ORCH_DATABASE_URL"])
        return job

    def submitted() -> Job | None:
        job = only_job()
        return job if job.attempts and job.attempts[0].provider_request_id else None

    job = wait_until(submitted, timeout=30, interval=0.02, what="fal's request id stored")
    worker.kill()
    assert job.state is JobState.RUNNING, job.state
    polled = 0

    def reconciled() -> Job | None:
        nonlocal polled
        out = run_cli({**chaos_env, "ORCH_RECONCILE_STALE_AFTER_SECONDS": "0"}, "reconcile", "--json")
        assert out.returncode == 0, out.stderr
        polled += json.loads(out.stdout)["polled"]
        job = only_job()
        return job if job.state.is_final else None

    job = wait_until(reconciled, timeout=30, interval=0.5,
                     what="the job final after reconcile passes")
    assert job.state is JobState.SUCCEEDED, job.error_message
    assert polled >= 1
    [paid] = emulator.ledger
    assert [a.provider_request_id for a in job.attempts] == [paid["request_id"]]
    assert job.result is not None and job.result.data == emulator.output_bytes(paid["request_id"])
