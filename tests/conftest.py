"""Fixtures on the machine's real Postgres and Redis.

Each test run gets its own database (created, migrated, dropped) and its own Redis DB (claimed
with a lock key), so runs on one machine never collide. Nothing is skipped when a service is
down: the run fails and says which one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from tests.fal_emulator import FalEmulator
from tests.support.cli import run_cli as run_cli  # re-exported: tests import it from here
from tests.support.models import write_tiny_dis_model
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
REAL_MODEL = SHARED / "models" / "isnet-general.onnx"
SAMPLE_IMAGES = SHARED / "images"

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")

# Settings from the developer's shell must not leak into tests.
for _name in list(os.environ):
    if _name.startswith("ORCH_") or _name == "FAL_KEY":
        del os.environ[_name]


def _sqlalchemy_url(dbname: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{dbname}"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dis_model(tmp_path_factory.mktemp("models") / "tiny-dis.onnx")


def create_database() -> tuple[str, str]:
    dbname = f"orch_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    return dbname, _sqlalchemy_url(dbname)


def drop_database(dbname: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A migrated database of this run's own."""
    from orchestrator.db.migrate import upgrade

    dbname, url = create_database()
    upgrade(url)
    yield url
    drop_database(dbname)


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    """A Redis DB of this run's own, claimed with a lock key and flushed."""
    token = uuid.uuid4().hex
    for db in range(1, 16):
        client = redis.Redis.from_url(f"{REDIS_BASE_URL}/{db}")
        try:
            claimed = client.set("orchestrator-test-run", token, nx=True, ex=3600)
        except redis.ConnectionError as exc:
            pytest.fail(f"Redis is not reachable at {REDIS_BASE_URL}: {exc}")
        if claimed:
            client.flushdb()
            client.set("orchestrator-test-run", token, ex=3600)
            yield f"{REDIS_BASE_URL}/{db}"
            client.flushdb()
            return
    pytest.fail("no free Redis DB (1-15) for this test run")


@pytest.fixture(scope="session")
def base_env(database_url: str, broker_url: str, tiny_model: Path) -> dict[str, str]:
    return {
        "ORCH_DATABASE_URL": database_url,
        "ORCH_BROKER_URL": broker_url,
        "ORCH_LOCAL_MODEL_PATH": str(tiny_model),
        "ORCH_LOCAL_ONNX_THREADS": "1",
        "ORCH_RETRY_BACKOFF_BASE_SECONDS": "0.2",
        "ORCH_RETRY_BACKOFF_MAX_SECONDS": "1",
        "ORCH_LEASE_SECONDS": "6",
        # Test servers listen on loopback at random ports (issue 14.9: a port must be named).
        "ORCH_FETCH_ALLOW_HOSTS": "127.0.0.1:*,localhost:*",
        "ORCH_WEBHOOK_ALLOW_HOSTS": "127.0.0.1:*,localhost:*",
    }


@pytest.fixture
def env(base_env: dict[str, str], database_url: str, broker_url: str) -> Iterator[dict[str, str]]:
    """The test's environment, also applied to this process; tables and queues start empty."""
    from orchestrator.settings import get_settings

    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(
            "TRUNCATE jobs, job_inputs, attempts, results, api_keys, tenant_usage, fal_budgets, fal_budget_alerts "
            "RESTART IDENTITY CASCADE"
        )
    redis_client = redis.Redis.from_url(broker_url)
    for key in redis_client.keys("*"):
        if key != b"orchestrator-test-run":
            redis_client.delete(key)
    saved = dict(os.environ)
    os.environ.update(base_env)
    get_settings.cache_clear()
    yield dict(os.environ)
    os.environ.clear()
    os.environ.update(saved)
    get_settings.cache_clear()


class Worker:
    """``orchestrator worker`` in a subprocess, with its log captured to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, args: list[str], entry: list[str]) -> None:
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [*entry, "worker", *args],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = 90) -> None:
        def ready() -> bool:
            text = self.text()
            m = re.search(r"worker for \S+: (\d+) process", text)
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{text}")
            return bool(m and text.count("local backend ready") >= int(m.group(1)) and " ready." in text)

        try:
            wait_until(ready, timeout=timeout, what="the local worker's ready banner")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.text()}") from None

    def children(self) -> list[int]:
        try:
            raw = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in raw.split()]

    def kill(self) -> None:
        """SIGKILL the whole worker: main process and pool children."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # any orphaned pool child
        except ProcessLookupError:
            pass
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def start_worker(env: dict[str, str], tmp_path: Path) -> Iterator[object]:
    workers: list[Worker] = []

    def start(
        *args: str,
        extra_env: dict[str, str] | None = None,
        entry: list[str] | None = None,
        ready: bool = True,
    ) -> Worker:
        worker_env = {**env, **(extra_env or {})}
        worker = Worker(
            worker_env,
            tmp_path / f"worker-{len(workers)}.log",
            list(args) or ["--queues", "local", "--concurrency", "1"],
            entry or [sys.executable, "-m", "orchestrator"],
        )
        workers.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop(timeout=20)


# The key fal_client sends to the emulator (it checks the shape, bills nothing real).
EMULATOR_FAL_KEY = "emulator-key-id:emulator-key-secret"


@pytest.fixture(scope="module")
def emulator(request: pytest.FixtureRequest) -> Iterator[FalEmulator]:
    """fal's queue API on HTTPS loopback for a test module; the module's ``EMULATOR_LATENCY``
    (seconds a request takes, default 0.3) sets its pace. Tests reset it per test."""
    emu = FalEmulator(latency=getattr(request.module, "EMULATOR_LATENCY", 0.3))
    emu.start()
    yield emu
    emu.stop()


def emulator_env(env: dict[str, str], emulator: FalEmulator, *, latency: float,
                 **settings: str) -> dict[str, str]:
    """Reset the emulator to ``latency`` and return ``env`` pointing fal_client (workers, CLI)
    at it with the emulator's key, plus ``settings``."""
    emulator.reset()
    emulator.latency = latency
    return {**env, **emulator.env(), "FAL_KEY": EMULATOR_FAL_KEY, **settings}
