"""A real API process, a real fake-inline worker and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from tests.conftest import ROOT, Worker, run_cli
from tests.support.api_server import PlainApi
from tests.support.images import subject

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = ROOT / "docs" / "assets" / "console"


def png(size: tuple[int, int] = (96, 64)) -> bytes:
    buf = io.BytesIO()
    subject(size).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Console:
    env: dict[str, str]
    api: PlainApi
    admin_key: str
    tenant_key: str  # tenant "acme"
    other_key: str  # tenant "globex"
    tmp: Path
    workers: list[Worker] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.api.url}/console"

    def upload(self, key: str, name: str, data: bytes) -> str:
        response = httpx.post(f"{self.api.url}/v1/uploads", headers={"Authorization": f"Key {key}"},
                              files=[("files", (name, data, "image/png"))],
                              data={"backend": "fake-inline"}, timeout=30)
        assert response.status_code == 200, response.text
        return str(response.json()[0]["id"])

    def job(self, key: str, job_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.api.url}/v1/jobs/{job_id}",
                             headers={"Authorization": f"Key {key}"}, timeout=30)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def start_worker(self, **extra: str) -> Worker:
        worker = Worker({**self.env, **extra}, self.tmp / f"worker-{len(self.workers)}.log",
                        ["--queues", "fake-inline", "--concurrency", "1"],
                        [sys.executable, "-m", "orchestrator"])
        self.workers.append(worker)
        return worker


def _truncate(database_url: str, broker_url: str) -> None:
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("TRUNCATE jobs, job_inputs, attempts, results, api_keys, tenant_usage, fal_budgets, "
                     "fal_budget_alerts RESTART IDENTITY CASCADE")
    client = redis.Redis.from_url(broker_url)
    for key in client.keys("*"):
        if key != b"orchestrator-test-run":
            client.delete(key)


def _key(env: dict[str, str], name: str, *extra: str) -> str:
    out = run_cli(env, "keys", "create", name, *extra)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def console(base_env: dict[str, str], database_url: str, broker_url: str,
            tmp_path: Path) -> Iterator[Console]:
    _truncate(database_url, broker_url)
    env = {**os.environ, **base_env, "ORCH_FAKE_BACKENDS": "1",
           "ORCH_API_REQUESTS_PER_SECOND": "1000", "ORCH_FETCH_ALLOW_HOSTS": "",
           "ORCH_CONSOLE_SESSION_SECRET": "console-test-secret"}
    keys = _key(env, "ops", "--admin"), _key(env, "acme"), _key(env, "globex")
    api = PlainApi(env, tmp_path / "api.log")
    console = Console(env, api, *keys, tmp=tmp_path)
    try:
        yield console
    finally:
        for worker in console.workers:
            worker.stop(timeout=20)
        api.stop()


# Package scope: Playwright's sync API runs an event loop in this thread while it is open,
# which would break asyncio.run() in every test after the browser tests.
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/install.sh installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def sign_in(page: Any, console: Console, key: str) -> None:
    page.goto(f"{console.url}/sign-in")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/overview")


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
