"""Security review findings (issue 14, items 1-10), each against a real API process on loopback."""

from __future__ import annotations

import base64
import io
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
    server = PlainApi({**env, "ORCH_FETCH_ALLOW_HOSTS": "", "ORCH_WEBHOOK_ALLOW_HOSTS": ""},
                      tmp_path / "api.log")
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
    server = PlainApi({**env, "ORCH_WEBHOOK_SIGNING_KEY": signing, "ORCH_FETCH_ALLOW_HOSTS": "",
                       "ORCH_WEBHOOK_ALLOW_HOSTS": ""}, log)
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


# --- 2: unauthenticated callers cannot stall the API --------------------------------------------


# The attackers run at the lowest CPU priority: on a real network their CPU is not the API's.
ATTACKER = """
import os, sys, threading, time, httpx
os.nice(19)
url, seconds = sys.argv[1], float(sys.argv[2])
body = b'{"image_url": "data:image/png;base64,' + b"A" * (30 * 1024 * 1024) + b'"}'
codes = []
def attack(n):
    headers = {"Content-Type": "application/json"}
    if n % 2:  # half send no key, half a wrong one
        headers["Authorization"] = "Key orch_not-a-real-key-but-shaped-like-one-xxxxxx"
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with httpx.Client(timeout=30) as c:
                codes.append(c.post(url, content=body, headers=headers).status_code)
        except httpx.HTTPError:
            codes.append(0)  # the server hung up mid-upload: fine
threads = [threading.Thread(target=attack, args=(n,)) for n in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print(sorted(set(codes)), len(codes))
"""


def _healthz_latencies(url: str, seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=10) as probe:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            assert probe.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.05)
    return sorted(latencies)


def test_healthz_stays_fast_while_8_clients_post_30_mb_without_a_key(
    env: dict[str, str], api: PlainApi
) -> None:
    """8 clients (in their own process) upload 30 MB JSON bodies without a valid key, for
    10 s; /healthz, probed meanwhile, answers within 50 ms (90th percentile) of its time on
    the same machine without them (the tests share a small machine, whose own noise is not
    the API's)."""
    quiet = _healthz_latencies(api.url, 3)
    attackers = subprocess.Popen(
        [sys.executable, "-c", ATTACKER, f"{api.url}/fal-ai/imageutils/rembg", "10"],
        stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # let the uploads get going
        latencies = _healthz_latencies(api.url, 8)
        out, _ = attackers.communicate(timeout=60)
    finally:
        attackers.kill()
        attackers.wait()
    codes = out.split("]")[0]
    assert all(code in (0, 401, 429) for code in eval(codes + "]")), out  # noqa: S307
    assert len(latencies) >= 20, [round(x * 1000) for x in latencies]
    # The median, and the 90th percentile with room: a shared 2-core CI box deschedules
    # single probes now and then (before the fix: p90 ~450 ms, max ~1 s; after: p90 ~45 ms).
    def pct(values: list[float], q: float) -> float:
        return values[int(len(values) * q)]

    shown = (f"/healthz p50/p90/max {pct(latencies, 0.5) * 1000:.0f}/{pct(latencies, 0.9) * 1000:.0f}"
             f"/{latencies[-1] * 1000:.0f} ms under attack, p50/p90 {pct(quiet, 0.5) * 1000:.0f}"
             f"/{pct(quiet, 0.9) * 1000:.0f} ms without")
    print(shown)
    assert pct(latencies, 0.5) < 0.050 + pct(quiet, 0.5), shown
    assert pct(latencies, 0.9) < 0.150 + pct(quiet, 0.9), shown


def test_failed_authentication_is_rate_limited_per_address(
    env: dict[str, str], tmp_path: Path
) -> None:
    server = PlainApi({**env, "ORCH_API_AUTH_FAILURE_BURST": "5",
                       "ORCH_API_AUTH_FAILURES_PER_MINUTE": "6"}, tmp_path / "api.log")
    try:
        key = _key(env, "tenant-a")
        with httpx.Client(base_url=server.url, timeout=30) as c:
            wrong = {"Authorization": "Key orch_wrongwrongwrongwrongwrongwrong"}
            codes = [c.get("/v1/jobs", headers=wrong).status_code for _ in range(5)]
            codes += [c.post("/v1/batches", json={"items": []}, headers=wrong).status_code]
            codes += [c.get("/v1/jobs", headers=wrong).status_code]
            assert codes == [401] * 5 + [429, 429], codes
            # Even a valid key waits out the address's penalty (it could be a guessed one).
            assert c.get("/v1/jobs", headers={"Authorization": f"Key {key}"}).status_code == 429
    finally:
        server.stop()


def test_small_body_limit_where_no_image_travels(env: dict[str, str], api: PlainApi) -> None:
    key = _key(env, "tenant-a")
    with _client(api, key) as c:
        job = c.post("/fal-ai/imageutils/rembg", json={"image_url": _png_uri()}).json()
        padded = b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        reply = c.post(f"/v1/jobs/{job['request_id']}/cancel", content=padded,
                       headers={"Content-Type": "application/json"})
        assert reply.status_code == 413, reply.text
        # The image endpoints keep the large limit.
        big = "data:image/png;base64," + "A" * (3 * 1024 * 1024)
        assert c.post("/fal-ai/imageutils/rembg", json={"image_url": big}).status_code == 422


# --- 3: fal's webhook endpoint: mounted only when configured; a hanging JWKS host is harmless ---


def _webhook_headers() -> dict[str, str]:
    return {"X-Fal-Webhook-Request-Id": str(uuid.uuid4()), "X-Fal-Webhook-User-Id": "u",
            "X-Fal-Webhook-Timestamp": str(int(time.time())),
            "X-Fal-Webhook-Signature": "ab" * 64, "Content-Type": "application/json"}


def test_fal_webhook_is_not_mounted_without_its_setting(env: dict[str, str], api: PlainApi) -> None:
    reply = httpx.post(f"{api.url}/v1/fal/webhook?attempt=1", content=b"{}",
                       headers=_webhook_headers(), timeout=30)
    assert reply.status_code == 404, reply.text


def test_a_hanging_jwks_host_costs_one_fetch_and_answers_503(
    env: dict[str, str], tmp_path: Path
) -> None:
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(100)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # accepts and never answers
        hang.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(hang.accept()[0])
            except OSError:
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    jwks = f"http://127.0.0.1:{hang.getsockname()[1]}/.well-known/jwks.json"
    server = PlainApi({**env, "ORCH_FAL_JWKS_URL": jwks,
                       "ORCH_FAL_WEBHOOK_URL": "http://127.0.0.1:1/v1/fal/webhook"},
                      tmp_path / "api.log")
    # One client for all (a client per request would spend the test's own CPU on SSL contexts).
    client = httpx.Client(base_url=server.url, timeout=30,
                          limits=httpx.Limits(max_connections=60))
    try:
        def post(_: int) -> httpx.Response:
            return client.post("/v1/fal/webhook?attempt=1", content=b"{}",
                               headers=_webhook_headers())

        with ThreadPoolExecutor(45) as pool:
            replies = pool.map(post, range(45))
            time.sleep(0.5)
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            healthz = time.perf_counter() - started
            codes = [reply.status_code for reply in replies]
        assert codes == [503] * 45, codes
        assert healthz < 1.0, healthz
        assert len(accepted) == 1  # one fetch, and the failure is remembered:
        assert post(0).status_code == 503 and len(accepted) == 1
        assert int(post(0).headers["Retry-After"]) >= 1
    finally:
        client.close()
        stop.set()
        acceptor.join(5)
        server.stop()
        for conn in accepted:
            conn.close()
        hang.close()


# --- 7: /metrics needs the metrics key or an admin key; scrapes are served from a short cache ----


def test_metrics_need_the_metrics_key_or_an_admin_key(env: dict[str, str], tmp_path: Path) -> None:
    server = PlainApi({**env, "ORCH_METRICS_KEY": "metrics-secret-0123456789",
                       "ORCH_METRICS_CACHE_SECONDS": "60"}, tmp_path / "api.log")
    try:
        tenant, admin = _key(env, "tenant-a"), _key(env, "ops", "--admin")
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.get("/metrics").status_code == 401
            assert c.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
            tenant_reply = c.get("/metrics", headers={"Authorization": f"Key {tenant}"})
            assert tenant_reply.status_code == 403
            first = c.get("/metrics", headers={"Authorization": "Bearer metrics-secret-0123456789"})
            assert first.status_code == 200 and "orchestrator_cost_usd" in first.text
            with _client(server, tenant) as submitter:
                assert submitter.post("/fal-ai/imageutils/rembg",
                                      json={"image_url": _png_uri()}).status_code == 200
            again = c.get("/metrics", headers={"Authorization": f"Key {admin}"})
            # Within the cache interval a scrape costs no queries: the same figures.
            assert again.status_code == 200 and again.text == first.text
    finally:
        server.stop()
    assert "metrics-secret-0123456789" not in (tmp_path / "api.log").read_text()


# --- 9: allow lists name ports; webhooks have their own list ------------------------------------


def test_allow_lists_name_ports_and_webhooks_have_their_own(
    env: dict[str, str], tmp_path: Path
) -> None:
    signing = run_cli(env, "keys", "signing-key").stdout.strip()
    server = PlainApi({**env, "ORCH_WEBHOOK_SIGNING_KEY": signing,
                       "ORCH_FETCH_ALLOW_HOSTS": "localhost:8080",
                       "ORCH_WEBHOOK_ALLOW_HOSTS": "localhost:9090"}, tmp_path / "api.log")
    try:
        with _client(server, _key(env, "tenant-a")) as c:
            def submit(image_url: str, hook: str | None = None) -> int:
                params = {"fal_webhook": hook} if hook else {}
                return c.post("/fal-ai/imageutils/rembg", params=params,
                              json={"image_url": image_url}).status_code

            assert submit("http://localhost:8080/a.png") == 200  # the named port
            assert submit("http://localhost:6379/a.png") == 422  # another port of that host
            assert submit("http://localhost/a.png") == 422
            data = _png_uri()
            assert submit(data, "http://localhost:9090/hook") == 200
            assert submit(data, "http://localhost:8080/hook") == 422  # trusted for images only
            assert submit(data, "http://localhost:5432/hook") == 422
    finally:
        server.stop()
