"""The fal backend against an emulator of fal's queue API, with real workers and the real
fal_client over HTTPS on loopback. The emulator's ledger counts every billable submission."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from orchestrator.db.models import Result
from orchestrator.jobs.states import AttemptOutcome, ComputeBasis, JobState, SubmitState
from tests.conftest import EMULATOR_FAL_KEY, emulator_env, run_cli
from tests.fal_emulator import FalEmulator, Fault
from tests.support.cli import submit_ids
from tests.support.db import count, job_by_id, load_jobs, wait_all_final, wait_for_state
from tests.support.images import png, png_folder
from tests.support.wait import wait_for_log, wait_until

FAL_KEY = EMULATOR_FAL_KEY
PRICE = Decimal("0.00111")


EMULATOR_LATENCY = 0.3  # the module's emulator (tests/conftest.py)


@pytest.fixture
def fal_env(env: dict[str, str], emulator: FalEmulator) -> dict[str, str]:
    return emulator_env(
        env, emulator, latency=EMULATOR_LATENCY,
        ORCH_FAL_POLL_INITIAL_SECONDS="0.1",
        ORCH_FAL_POLL_MAX_SECONDS="0.5",
        ORCH_FAL_RESUBMIT_AFTER_SECONDS="0.2",
        ORCH_FAL_SUBMIT_TIMEOUT_SECONDS="5",
    )


BASE = (80, 60)  # the size of the first test image; each next one a pixel larger


def _folder(tmp_path: Path, n: int) -> Path:
    return png_folder(tmp_path / "in", n, base=BASE)


def _fal_worker(start_worker, fal_env: dict[str, str], concurrency: int = 1, **extra: str):
    return start_worker("--queues", "fal", "--concurrency", str(concurrency),
                        extra_env={**fal_env, **extra}, ready=False)


def _submit(fal_env: dict[str, str], *inputs: str) -> list[str]:
    return submit_ids(fal_env, *inputs, "--backend", "fal")


def _first_attempt(database_url: str, job_id: str, field: str) -> Any:
    """A field of the job's first attempt, or None while it has none."""
    job = job_by_id(database_url, job_id)
    return getattr(job.attempts[0], field) if job.attempts else None


def _ledger_by_input(emulator: FalEmulator) -> dict[str, int]:
    """Billable submissions per input (sha256 of the image bytes sent as a data URI)."""
    counts: dict[str, int] = {}
    for entry in emulator.ledger:
        data = base64.b64decode(entry["input"]["image_url"].split(",", 1)[1])
        digest = hashlib.sha256(data).hexdigest()
        counts[digest] = counts.get(digest, 0) + 1
    return counts


def _assert_paid_once_and_exact(emulator: FalEmulator, database_url: str) -> None:
    """Every job succeeded with one result whose bytes are fal's file, and each cost is
    inference_time × price. A job was bought once, or (flagged possible_duplicate, after a
    submit whose reply was lost) at most once per lost submit more."""
    jobs = load_jobs(database_url)
    paid = _ledger_by_input(emulator)
    assert sum(paid.values()) == len(emulator.ledger)
    assert count(database_url, Result) == len(jobs)
    for job in jobs:
        lost = sum(1 for a in job.attempts if a.outcome is AttemptOutcome.LOST)
        bought = paid.get(job.input_sha256 or "", 0)
        if job.possible_duplicate:
            assert 1 <= bought <= 1 + lost, (job.source_name, bought, lost)
        else:
            assert lost == 0 and bought == 1, (job.source_name, bought, lost)
        assert job.state is JobState.SUCCEEDED, (job.error_code, job.error_message)
        winner = next(a for a in job.attempts if a.outcome is AttemptOutcome.SUCCEEDED)
        assert job.result is not None and job.result.attempt_id == winner.id
        assert winner.provider_request_id is not None
        assert job.result.data == emulator.output_bytes(winner.provider_request_id)
        assert job.result.sha256 == hashlib.sha256(job.result.data).hexdigest()
        assert winner.compute_basis is ComputeBasis.FAL_INFERENCE_TIME
        fal_seconds = emulator.requests[winner.provider_request_id].inference_time
        assert winner.compute_seconds == Decimal(f"{fal_seconds:.6f}")
        assert winner.cost_usd == (winner.compute_seconds * PRICE).quantize(Decimal("1e-9"))


def test_fal_jobs_are_paid_once_and_stored_byte_identical(
    fal_env: dict[str, str], start_worker, emulator: FalEmulator, tmp_path: Path
) -> None:
    worker = _fal_worker(start_worker, fal_env)
    wait_for_log(worker, "fal poller running")
    out = run_cli(fal_env, "submit", str(_folder(tmp_path, 6)), "--backend", "fal", "--wait",
                  "-o", str(tmp_path / "out"), "--crop-to-bbox")
    assert out.returncode == 0, out.stdout + out.stderr
    _assert_paid_once_and_exact(emulator, fal_env["ORCH_DATABASE_URL"])
    for entry in emulator.ledger:
        assert entry["input"]["image_url"].startswith("data:image/png;base64,")
        assert entry["input"]["crop_to_bbox"] is True
        assert entry["auth"] == f"Key {FAL_KEY}"
    for job in load_jobs(fal_env["ORCH_DATABASE_URL"]):
        assert job.model == "fal-ai/imageutils/rembg"
        saved = (tmp_path / "out" / f"{job.source_name}.png").read_bytes()
        assert job.result is not None and saved == job.result.data
    shown = json.loads(run_cli(fal_env, "jobs", "show", str(job.id), "--json").stdout)
    assert shown["attempt_log"][0]["submit_state"] == "accepted"
    assert FAL_KEY not in worker.text()


def test_without_fal_key_the_backend_is_unavailable(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "a.png"
    src.write_bytes(png(BASE))
    out = run_cli(env, "submit", str(src), "--backend", "fal", "--json")
    [line] = [json.loads(x) for x in out.stdout.splitlines()]
    assert line["state"] == "failed"
    job = job_by_id(env["ORCH_DATABASE_URL"], line["id"])
    assert job.error_code == "backend_unavailable"
    assert "FAL_KEY is not set" in (job.error_message or "")
    refused = run_cli(env, "worker", "--queues", "fal", timeout=60)
    assert refused.returncode == 1
    assert "FAL_KEY is not set" in refused.stderr


SUBMIT_FAULTS = [
    ("http_429", [AttemptOutcome.RETRY, AttemptOutcome.SUCCEEDED]),
    ("http_500", [AttemptOutcome.RETRY, AttemptOutcome.SUCCEEDED]),
    ("ingress_502", [AttemptOutcome.RETRY, AttemptOutcome.SUCCEEDED]),
    ("drop", [AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED]),
    ("drop_after_accept", [AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED]),
]


@pytest.mark.parametrize(("kind", "outcomes"), SUBMIT_FAULTS)
def test_submit_faults(
    kind: str, outcomes: list[AttemptOutcome], fal_env: dict[str, str], start_worker,
    emulator: FalEmulator, tmp_path: Path,
) -> None:
    emulator.faults.add("submit", Fault(kind), times=1)
    worker = _fal_worker(start_worker, fal_env)
    wait_for_log(worker, "fal poller running")
    src = tmp_path / "a.png"
    src.write_bytes(png(BASE))
    [job_id] = _submit(fal_env, str(src))
    job = wait_for_state(fal_env["ORCH_DATABASE_URL"], job_id, {JobState.SUCCEEDED, JobState.FAILED}, 60)
    assert [a.outcome for a in job.attempts] == outcomes
    # A dropped connection is "maybe sent": resubmitted once, and flagged.
    assert job.possible_duplicate is (AttemptOutcome.LOST in outcomes)
    _assert_paid_once_and_exact(emulator, fal_env["ORCH_DATABASE_URL"])


@pytest.mark.parametrize(("op", "kind", "times"), [
    ("status", "http_500", 3),
    ("status", "ingress_503", 2),
    ("status", "drop", 2),
    ("status", "slow", 1),
    ("result", "http_500", 2),
    ("result", "not_found", 1),
    ("media", "not_found", 2),
])
def test_poll_and_fetch_faults_are_retried_without_paying_again(
    op: str, kind: str, times: int, fal_env: dict[str, str], start_worker,
    emulator: FalEmulator, tmp_path: Path,
) -> None:
    emulator.faults.add(op, Fault(kind, delay=1.0) if kind == "slow" else Fault(kind), times=times)
    worker = _fal_worker(start_worker, fal_env)
    wait_for_log(worker, "fal poller running")
    _submit(fal_env, str(_folder(tmp_path, 2)))
    wait_all_final(fal_env["ORCH_DATABASE_URL"], timeout=90)
    _assert_paid_once_and_exact(emulator, fal_env["ORCH_DATABASE_URL"])
    for job in load_jobs(fal_env["ORCH_DATABASE_URL"]):
        assert [a.outcome for a in job.attempts] == [AttemptOutcome.SUCCEEDED]


def test_completed_with_runner_error_is_a_new_paid_attempt(
    fal_env: dict[str, str], start_worker, emulator: FalEmulator, tmp_path: Path
) -> None:
    emulator.outcomes.append("runner_error")
    worker = _fal_worker(start_worker, fal_env)
    wait_for_log(worker, "fal poller running")
    src = tmp_path / "a.png"
    src.write_bytes(png(BASE))
    [job_id] = _submit(fal_env, str(src))
    job = wait_for_state(fal_env["ORCH_DATABASE_URL"], job_id, {JobState.SUCCEEDED, JobState.FAILED}, 60)
    assert job.state is JobState.SUCCEEDED
    failed, won = job.attempts
    assert failed.outcome is AttemptOutcome.RETRY and failed.error_code == "remote_run_failed"
    assert len(emulator.ledger) == 2  # fal ran it twice: both are costs
    for attempt in job.attempts:
        assert attempt.provider_request_id is not None
        seconds = emulator.requests[attempt.provider_request_id].inference_time
        assert attempt.compute_seconds == Decimal(f"{seconds:.6f}")
        assert attempt.cost_usd == (attempt.compute_seconds * PRICE).quantize(Decimal("1e-9"))


def test_completed_with_validation_error_fails_permanently_with_fals_message(
    fal_env: dict[str, str], start_worker, emulator: FalEmulator, tmp_path: Path
) -> None:
    emulator.outcomes.append("validation_error")
    worker = _fal_worker(start_worker, fal_env)
    wait_for_log(worker, "fal poller running")
    src = tmp_path / "a.png"
    src.write_bytes(png(BASE))
    [job_id] = _submit(fal_env, str(src))
    job = wait_for_state(fal_env["ORCH_DATABASE_URL"], job_id, {JobState.SUCCEEDED, JobState.FAILED}, 60)
    assert job.state is JobState.FAILED
    assert job.error_code == "backend_rejected"
    assert "fal rejected the input" in (job.error_message or "")
    [attempt] = job.attempts
    assert attempt.outcome is AttemptOutcome.FAILED
    assert attempt.cost_usd is not None and attempt.cost_usd > 0  # fal ran it: a cost
    assert len(emulator.ledger) == 1


@pytest.mark.parametrize("mode", ["unknown_key", "locked"])
def test_refused_credentials_fail_the_job_and_mark_the_backend_unavailable(
    mode: str, fal_env: dict[str, str], start_worker, emulator: FalEmulator, tmp_path: Path
) -> None:
    if mode == "locked":
        emulator.locked_keys.add(FAL_KEY)
    else:
        emulator.valid_keys.add("some-other-key:secret")
    worker = _fal_worker(start_worker, fal_env)
    wait_for_log(worker, "fal poller running")
    src = tmp_path / "a.png"
    src.write_bytes(png(BASE))
    [job_id] = _submit(fal_env, str(src))
    job = wait_for_state(fal_env["ORCH_DATABASE_URL"], job_id, {JobState.FAILED}, 60)
    assert job.error_code == "credentials_refused"
    assert "FAL_KEY" in (job.error_message or "") and FAL_KEY not in (job.error_message or "")
    assert len(emulator.ledger) == 0
    # Until the key changes, new fal jobs fail at once, and say why.
    [second] = _submit(fal_env, str(src))
    again = job_by_id(fal_env["ORCH_DATABASE_URL"], second)
    assert again.state is JobState.FAILED and "refused the current FAL_KEY" in (again.error_message or "")
    emulator.locked_keys.clear()
    emulator.valid_keys.clear()
    out = run_cli({**fal_env, "FAL_KEY": "a-new-key:secret"}, "submit", str(src), "--backend", "fal",
                  "--json")
    assert json.loads(out.stdout)["state"] == "queued"  # a changed key is tried again


def test_a_restarted_worker_resumes_polling_instead_of_paying_again(
    fal_env: dict[str, str], start_worker, emulator: FalEmulator, tmp_path: Path
) -> None:
    emulator.latency = 3.0
    worker = _fal_worker(start_worker, fal_env)
    wait_for_log(worker, "fal poller running")
    [job_id] = _submit(fal_env, str(_folder(tmp_path, 1)))
    wait_until(lambda: _first_attempt(fal_env["ORCH_DATABASE_URL"], job_id, "submit_state")
               is SubmitState.ACCEPTED, timeout=30, interval=0.05,
               what="fal to accept the submission")
    worker.kill()
    second = _fal_worker(start_worker, fal_env)
    wait_for_log(second, "fal poller running")
    wait_all_final(fal_env["ORCH_DATABASE_URL"], timeout=60)
    _assert_paid_once_and_exact(emulator, fal_env["ORCH_DATABASE_URL"])
    assert len(emulator.ledger) == 1


@pytest.mark.slow
def test_sigkill_at_random_points_never_pays_twice_unflagged(
    fal_env: dict[str, str], start_worker, emulator: FalEmulator, tmp_path: Path
) -> None:
    rng = random.Random(20261128)
    emulator.latency = 0.5
    # A killed main process cannot hand back the messages it held: Redis redelivers them after
    # the visibility timeout, shortened here (the reconciler of a later issue re-drives them too).
    fal_env = {**fal_env, "ORCH_VISIBILITY_TIMEOUT_SECONDS": "10",
               "ORCH_UNACKED_RESTORE_INTERVAL_SECONDS": "2"}
    _submit(fal_env, str(_folder(tmp_path, 30)))
    kills = 0
    for _ in range(5):
        worker = _fal_worker(start_worker, fal_env, concurrency=2)
        time.sleep(rng.uniform(0.3, 2.5))  # the sleep IS the test: a kill at a random point
        worker.kill()
        kills += 1
    final = _fal_worker(start_worker, fal_env, concurrency=2)
    wait_for_log(final, "fal poller running", times=2)
    wait_all_final(fal_env["ORCH_DATABASE_URL"], timeout=120)
    assert kills == 5
    _assert_paid_once_and_exact(emulator, fal_env["ORCH_DATABASE_URL"])


def test_cancel_sends_fals_cancel_and_keeps_a_completed_result(
    fal_env: dict[str, str], start_worker, emulator: FalEmulator, tmp_path: Path
) -> None:
    db = fal_env["ORCH_DATABASE_URL"]
    emulator.outcomes.append("stuck")
    worker = _fal_worker(start_worker, fal_env)
    wait_for_log(worker, "fal poller running")
    src = tmp_path / "a.png"
    src.write_bytes(png(BASE))
    [stuck] = _submit(fal_env, str(src))
    wait_until(lambda: _first_attempt(db, stuck, "provider_request_id"), timeout=30, interval=0.05,
               what="fal's request id on the attempt")
    out = run_cli(fal_env, "jobs", "cancel", stuck)
    assert out.returncode == 0, out.stderr
    job = job_by_id(db, stuck)
    assert job.state is JobState.CANCELLED
    rid = job.attempts[0].provider_request_id
    assert rid is not None and emulator.requests[rid].cancelled
    outcome = wait_until(lambda: _first_attempt(db, stuck, "outcome") is not AttemptOutcome.RUNNING
                         and _first_attempt(db, stuck, "outcome"), timeout=30,
                         what="the cancelled attempt to be closed")
    assert outcome is AttemptOutcome.CANCELLED


def test_cancel_after_fal_completed_keeps_the_result(
    fal_env: dict[str, str], start_worker, emulator: FalEmulator, tmp_path: Path
) -> None:
    db = fal_env["ORCH_DATABASE_URL"]
    emulator.latency = 0.1
    slow_poll = {"ORCH_FAL_POLL_INITIAL_SECONDS": "4", "ORCH_FAL_POLL_MAX_SECONDS": "4"}
    worker = _fal_worker(start_worker, fal_env, **slow_poll)
    wait_for_log(worker, "fal poller running")
    src = tmp_path / "a.png"
    src.write_bytes(png(BASE))
    [job_id] = _submit(fal_env, str(src))
    rid = wait_until(lambda: _first_attempt(db, job_id, "provider_request_id"), timeout=30,
                     interval=0.05, what="fal's request id on the attempt")
    # fal has finished; the poller (every 4 s) has not looked yet
    wait_until(lambda: emulator.requests[rid].status == "COMPLETED", timeout=10, interval=0.05,
               what=f"fal to complete {rid}")
    assert job_by_id(db, job_id).state is JobState.RUNNING
    out = run_cli(fal_env, "jobs", "cancel", job_id)
    assert out.returncode == 0, out.stderr
    assert "already completed" in out.stderr
    job = wait_for_state(db, job_id, {JobState.SUCCEEDED, JobState.CANCELLED}, 30)
    assert job.state is JobState.SUCCEEDED and job.result is not None


def test_in_flight_limit_is_shared_by_all_worker_processes(
    fal_env: dict[str, str], start_worker, emulator: FalEmulator, tmp_path: Path
) -> None:
    emulator.latency = 0.5
    worker = _fal_worker(start_worker, fal_env, concurrency=2, ORCH_FAL_MAX_IN_FLIGHT="2")
    wait_for_log(worker, "fal poller running", times=2)
    _submit({**fal_env, "ORCH_FAL_MAX_IN_FLIGHT": "2"}, str(_folder(tmp_path, 8)))
    wait_all_final(fal_env["ORCH_DATABASE_URL"], timeout=90)
    _assert_paid_once_and_exact(emulator, fal_env["ORCH_DATABASE_URL"])
    # Never more than 2 requests between fal accepting them and the orchestrator collecting them.
    events = []
    for job in load_jobs(fal_env["ORCH_DATABASE_URL"]):
        for a in job.attempts:
            events.append((a.submitted_at, 1))
            events.append((a.finished_at, -1))
    inside = peak = 0
    for _, delta in sorted(events):
        inside += delta
        peak = max(peak, inside)
    assert peak <= 2


def test_a_request_stuck_in_progress_is_cancelled_at_its_deadline(
    fal_env: dict[str, str], start_worker, emulator: FalEmulator, tmp_path: Path
) -> None:
    emulator.outcomes.append("stuck")  # holds its runner, IN_PROGRESS, until cancelled
    worker = _fal_worker(start_worker, fal_env, ORCH_FAL_REQUEST_TIMEOUT_SECONDS="2")
    wait_for_log(worker, "fal poller running")
    src = tmp_path / "a.png"
    src.write_bytes(png(BASE))
    started = time.monotonic()
    [job_id] = _submit(fal_env, str(src))
    job = wait_for_state(fal_env["ORCH_DATABASE_URL"], job_id, {JobState.SUCCEEDED, JobState.FAILED}, 60)
    assert job.state is JobState.SUCCEEDED, job.error_message
    stuck, won = job.attempts
    assert stuck.outcome is AttemptOutcome.RETRY and stuck.error_code == "remote_run_failed"
    assert "did not complete within 2 s" in (stuck.error_message or "")
    assert stuck.provider_request_id is not None and won.provider_request_id is not None
    assert emulator.requests[stuck.provider_request_id].cancelled  # the PUT reached fal
    assert emulator.requests[stuck.provider_request_id].status == "COMPLETED"
    assert stuck.cost_usd is not None  # it may have been billed: its seconds are recorded
    assert len(emulator.ledger) == 2
    assert time.monotonic() - started < 30
