"""Security review findings (issue 14, items 1-10), each against a real API process on loopback."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.jobs.states import JobState
from orchestrator.results.links import link_token
from tests.conftest import run_cli
from tests.support.api_server import PlainApi
from tests.support.db import job_by_id, load_jobs, wait_for_state
from tests.support.images import subject
from tests.support.servers import free_port


def _key(env: dict[str, str], name: str, *extra: str) -> str:
    out = run_cli(env, "keys", "create", name, *extra)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _png_uri() -> str:
    buf = io.BytesIO()
    subject().save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _client(api: PlainApi, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Key {key}"} if key else {}
    return httpx.Client(base_url=api.url, headers=headers, timeout=30)


@pytest.fixture
def api(env: dict[str, str], tmp_path: Path) -> Iterator[PlainApi]:
    server = PlainApi({**env, "ORCH_FETCH_ALLOW_HOSTS": ""}, tmp_path / "api.log")
    yield server
    server.stop()


# --- 4: a malformed URL is a 422 for that item, never a 500 -------------------------------------

MALFORMED = ["http://[::1/x", "http://[::1", "https://example.com:99999/a.png", "http://[zz]/a"]


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_image_url_is_a_422(env: dict[str, str], api: PlainApi, url: str) -> None:
    with _client(api, _key(env, "tenant-a")) as c:
        reply = c.post("/fal-ai/imageutils/rembg", json={"image_url": url})
        assert reply.status_code == 422, reply.text
        assert "Traceback" not in reply.text
        batch = c.post("/v1/batches", json={"items": [{"image_url": url},
                                                       {"image_url": _png_uri()}]})
    assert batch.status_code == 200, batch.text
    bad, good = batch.json()
    assert bad["state"] == "rejected" and "not a valid URL" in bad["error"]
    assert good["created"] is True


def test_malformed_webhook_url_is_a_422(env: dict[str, str], tmp_path: Path) -> None:
    signing = run_cli(env, "keys", "signing-key").stdout.strip()
    server = PlainApi({**env, "ORCH_WEBHOOK_SIGNING_KEY": signing, "ORCH_FETCH_ALLOW_HOSTS": ""},
                      tmp_path / "api.log")
    try:
        with _client(server, _key(env, "tenant-a")) as c:
            reply = c.post("/fal-ai/imageutils/rembg", params={"fal_webhook": "http://[::1/x"},
                           json={"image_url": _png_uri()})
        assert reply.status_code == 422, reply.text
        assert "fal_webhook is not a valid URL" in reply.json()["detail"]
        assert load_jobs(env["ORCH_DATABASE_URL"]) == []
    finally:
        server.stop()


# --- 5: a refusal does not reveal internal DNS; the detail goes to the log ----------------------


def test_refusals_do_not_reveal_internal_dns(env: dict[str, str], tmp_path: Path) -> None:
    signing = run_cli(env, "keys", "signing-key").stdout.strip()
    log = tmp_path / "api.log"
    server = PlainApi({**env, "ORCH_WEBHOOK_SIGNING_KEY": signing, "ORCH_FETCH_ALLOW_HOSTS": ""},
                      log)
    try:
        with _client(server, _key(env, "tenant-a")) as c:
            internal = c.post("/fal-ai/imageutils/rembg", json={"image_url": "http://localhost/x"})
            missing = c.post("/fal-ai/imageutils/rembg",
                             json={"image_url": "http://no-such-host.invalid/x"})
            hook = c.post("/fal-ai/imageutils/rembg", params={"fal_webhook": "http://localhost/h"},
                          json={"image_url": _png_uri()})
    finally:
        server.stop()
    for reply in (internal, missing, hook):
        assert reply.status_code == 422, reply.text
        detail = reply.json()["detail"]
        assert "127.0.0.1" not in detail and "loopback" not in detail and "resolve" not in detail
        assert "refused" in detail
    # A name that exists inside and one that does not exist look the same to the caller.
    assert internal.json() == missing.json()
    assert "fal_webhook" in hook.json()["detail"] and "image_url" not in hook.json()["detail"]
    logged = log.read_text()
    assert "'localhost' resolves to 127.0.0.1, a loopback address" in logged
    assert "'no-such-host.invalid' does not resolve" in logged


# --- 1: no secret in the API's log; result links expire -----------------------------------------


def test_no_token_or_webhook_url_in_the_log_under_plain_uvicorn(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`uvicorn --factory orchestrator.api.app:app_factory` (uvicorn's access log on by default)."""
    signing = run_cli(env, "keys", "signing-key").stdout.strip()
    port = free_port()
    log_path = tmp_path / "uvicorn.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "orchestrator.api.app:app_factory",
             "--host", "127.0.0.1", "--port", str(port)],
            env={**env, "ORCH_WEBHOOK_SIGNING_KEY": signing, "ORCH_LOG_FORMAT": "text"},
            stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base)
        key = _key(env, "tenant-a")
        with httpx.Client(base_url=base, timeout=30) as c:
            c.get(f"/v1/jobs/{uuid.uuid4()}/result", params={"token": "CANARYTOKEN1"})
            c.get("/healthz", params={"other": "CANARYQUERY3"})
            c.post("/fal-ai/imageutils/rembg", headers={"Authorization": f"Key {key}"},
                   params={"fal_webhook": "https://hooks.example/h?secret=CANARYHOOK2"},
                   json={"image_url": _png_uri()})
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    text = log_path.read_text()
    assert "/healthz" in text  # the API's own access line is there, without its query
    for canary in ("CANARYTOKEN1", "CANARYHOOK2", "CANARYQUERY3"):
        assert canary not in text, text


def test_result_links_expire_and_never_carry_the_jobs_secret(
    env: dict[str, str], api: PlainApi, start_worker: Any
) -> None:
    start_worker()
    with _client(api, _key(env, "tenant-a")) as c:
        submitted = c.post("/fal-ai/imageutils/rembg", json={"image_url": _png_uri()}).json()
        job_id = submitted["request_id"]
        wait_for_state(env["ORCH_DATABASE_URL"], job_id, {JobState.SUCCEEDED}, 60)
        link = c.get(submitted["response_url"]).json()["image"]["url"]
    secret = job_by_id(env["ORCH_DATABASE_URL"], job_id).result_token
    assert secret and secret not in link
    with httpx.Client(timeout=30) as anonymous:
        assert anonymous.get(link).status_code == 200
        result = f"{api.url}/v1/jobs/{job_id}/result"
        # The job's stored secret itself (what links carried before) opens nothing.
        assert anonymous.get(result, params={"token": secret}).status_code == 404
        expired = link_token(secret, job_id, 86400, now=time.time() - 2 * 86400)
        assert anonymous.get(result, params={"token": expired}).status_code == 404


def _wait_healthy(base: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("the API did not start")


# --- 6: no forged log lines in the text format --------------------------------------------------


def test_a_path_with_a_newline_cannot_forge_a_text_log_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "api.log"
    server = PlainApi({**env, "ORCH_LOG_FORMAT": "text"}, log)
    try:
        forged = "2026-01-01%2000:00:00,000%20INFO%20orchestrator.api.access:%20GET%20/forged%20200"
        with httpx.Client(timeout=30) as c:
            assert c.get(f"{server.url}/x%0a{forged}%0d%0a").status_code == 404
    finally:
        server.stop()
    lines = log.read_text().splitlines()
    assert not [line for line in lines if line.startswith("2026-01-01")], lines
    assert any("GET /x\\x0a2026-01-01 00:00:00,000 INFO" in line for line in lines), lines
