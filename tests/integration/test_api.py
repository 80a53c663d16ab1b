"""The HTTP API over TLS on loopback, driven by the real fal_client (sync and async) and by
plain HTTP for /v1, with a real worker behind it."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from orchestrator.jobs.states import JobState
from tests.conftest import ROOT, run_cli
from tests.support.db import job_by_id, load_jobs, wait_for_state
from tests.support.images import data_uri, numbered_png
from tests.support.servers import free_port
from tests.support.wait import wait_until


def _png(i: int = 0) -> bytes:
    return numbered_png(i, (70, 50))


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("api-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    return {"ca": str(folder / "ca.pem"), "cert": str(folder / "cert.pem"), "key": str(folder / "key.pem")}


class Api:
    def __init__(self, env: dict[str, str], tls: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.base = f"https://{self.host}"
        self.ca = tls["ca"]
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "api", "--host", "127.0.0.1", "--port",
             str(self.port), "--ssl-certfile", tls["cert"], "--ssl-keyfile", tls["key"]],
            env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/healthz", verify=self.ca).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
            assert self.proc.poll() is None, log.read_text()
        raise AssertionError(log.read_text())

    def client(self, key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Key {key}"} if key else {}
        return httpx.Client(base_url=self.base, verify=self.ca, headers=headers, timeout=30)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.log.close()


def _key(env: dict[str, str], name: str, *extra: str) -> str:
    out = run_cli(env, "keys", "create", name, *extra)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def api(env: dict[str, str], tls: dict[str, str], tmp_path: Path) -> Iterator[Api]:
    server = Api({**env, "ORCH_FETCH_ALLOW_HOSTS": ""}, tls, tmp_path / "api.log")
    yield server
    server.stop()


def _fal_script(api: Api, key: str, body: str) -> dict[str, object]:
    """Run fal_client in a fresh process configured only by fal's own environment variables."""
    code = "import asyncio, json, sys, httpx, fal_client\n" + textwrap.dedent(body)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "FAL_QUEUE_RUN_HOST": api.host, "SSL_CERT_FILE": api.ca,
             "FAL_KEY": key},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fal_client_sync_flow_through_the_orchestrator(
    env: dict[str, str], api: Api, start_worker, tmp_path: Path
) -> None:
    key = _key(env, "tenant-a")
    start_worker()
    uri = data_uri(_png())
    got = _fal_script(api, key, f"""
        handle = fal_client.submit("fal-ai/imageutils/rembg", {{"image_url": {uri!r}, "crop_to_bbox": True}})
        statuses = [type(s).__name__ for s in handle.iter_events(with_logs=True, interval=0.1)]
        final = handle.status(with_logs=True)
        result = handle.get()
        data = httpx.get(result["image"]["url"]).content
        print(json.dumps({{"id": handle.request_id, "statuses": statuses, "result": result,
                           "logs": final.logs, "metrics": final.metrics, "sha": __import__("hashlib").sha256(data).hexdigest()}}))
    """)
    job = job_by_id(env["ORCH_DATABASE_URL"], str(got["id"]))
    assert job.state is JobState.SUCCEEDED and job.client == "tenant-a"
    assert job.options["crop_to_bbox"] is True
    assert got["statuses"][-1] == "Completed"
    assert job.result is not None and got["sha"] == job.result.sha256
    image = got["result"]["image"]  # type: ignore[index]
    assert image["content_type"] == "image/png"
    assert (image["width"], image["height"]) == (job.result.width, job.result.height)
    assert image["file_size"] == job.result.size_bytes
    assert got["metrics"]["inference_time"] > 0  # type: ignore[index]
    assert any("succeeded" in line["message"] for line in got["logs"])  # type: ignore[union-attr]


def test_fal_client_async_subscribe_and_sync_mode(
    env: dict[str, str], api: Api, start_worker
) -> None:
    key = _key(env, "tenant-a")
    start_worker()
    uri = data_uri(_png(3))
    got = _fal_script(api, key, f"""
        async def main():
            client = fal_client.AsyncClient()
            result = await client.subscribe("fal-ai/imageutils/rembg",
                                            {{"image_url": {uri!r}, "sync_mode": True}}, with_logs=True)
            return result
        result = asyncio.run(main())
        print(json.dumps(result))
    """)
    url = got["image"]["url"]  # type: ignore[index]
    assert url.startswith("data:image/png;base64,")
    [job] = load_jobs(env["ORCH_DATABASE_URL"])
    assert job.result is not None
    assert base64.b64decode(url.split(",", 1)[1]) == job.result.data


def test_cancel_status_and_result_after_cancel(env: dict[str, str], api: Api) -> None:
    key = _key(env, "tenant-a")  # no worker: the job stays queued
    got = _fal_script(api, key, f"""
        handle = fal_client.submit("fal-ai/imageutils/rembg", {{"image_url": {data_uri(_png())!r}}})
        first = handle.status()
        handle.cancel()
        status = handle.status()
        try:
            handle.get()
            error = None
        except fal_client.client.FalClientHTTPError as exc:
            error = [exc.status_code, exc.error_type]
        try:
            handle.cancel()
            again = None
        except fal_client.client.FalClientHTTPError as exc:
            again = exc.status_code
        print(json.dumps({{"first": type(first).__name__, "position": first.position,
                           "status": [type(status).__name__, status.error_type], "error": error, "again": again}}))
    """)
    assert got["first"] == "Queued" and got["position"] == 0
    assert got["status"] == ["Completed", "client_cancelled"]
    assert got["error"] == [499, "client_cancelled"]
    assert got["again"] == 400
    [job] = load_jobs(env["ORCH_DATABASE_URL"])
    assert job.state is JobState.CANCELLED


def test_tenants_see_only_their_own_jobs(env: dict[str, str], api: Api) -> None:
    a, b = _key(env, "tenant-a"), _key(env, "tenant-b")
    admin = _key(env, "ops", "--admin")
    with api.client(a) as ca, api.client(b) as cb, api.client(admin) as cadmin:
        rid = ca.post("/fal-ai/imageutils/rembg", json={"image_url": data_uri(_png())}).json()["request_id"]
        for path in (f"/fal-ai/imageutils/requests/{rid}/status", f"/fal-ai/imageutils/requests/{rid}",
                     f"/v1/jobs/{rid}"):
            assert cb.get(path).status_code == 404, path
            assert ca.get(path).status_code in (200, 202, 400), path
        assert cb.put(f"/fal-ai/imageutils/requests/{rid}/cancel").status_code == 404
        assert [j["id"] for j in ca.get("/v1/jobs").json()] == [rid]
        assert cb.get("/v1/jobs").json() == []
        assert [j["id"] for j in cadmin.get("/v1/jobs").json()] == [rid]
        assert cadmin.get(f"/v1/jobs/{rid}").status_code == 200
    with api.client(None) as anonymous:
        assert anonymous.get("/v1/jobs").status_code == 401
    with api.client("orch_not-a-key") as wrong:
        assert wrong.get("/v1/jobs").status_code == 401
    assert run_cli(env, "keys", "revoke", "tenant-b").returncode == 0
    # API processes cache a key's lookup for up to 5 s; after that a revoked key is refused.
    with api.client(b) as revoked:
        wait_until(lambda: revoked.get("/v1/jobs").status_code == 401, timeout=10, interval=0.5,
                   what="the revoked key to be refused")


def test_idempotency_key(env: dict[str, str], api: Api) -> None:
    key = _key(env, "tenant-a")
    body = {"image_url": data_uri(_png())}
    with api.client(key) as c:
        first = c.post("/fal-ai/imageutils/rembg", json=body, headers={"Idempotency-Key": "k1"})
        second = c.post("/fal-ai/imageutils/rembg", json=body, headers={"Idempotency-Key": "k1"})
        assert first.status_code == second.status_code == 200
        assert first.json()["request_id"] == second.json()["request_id"]
        clash = c.post("/fal-ai/imageutils/rembg", json={"image_url": data_uri(_png(5))},
                       headers={"Idempotency-Key": "k1"})
        assert clash.status_code == 422 and "different request" in clash.json()["detail"]
    assert len(load_jobs(env["ORCH_DATABASE_URL"])) == 1


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x.png", "http://localhost/x.png", "http://0.0.0.0/x.png",
    "http://2130706433/x.png", "http://[::1]/x.png", "http://[::ffff:127.0.0.1]/x.png",
    "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/x.png",
    "http://[64:ff9b::7f00:1]/x.png", "file:///etc/passwd", "gopher://127.0.0.1/",
])
def test_refused_urls_fail_fast_and_cost_nothing(env: dict[str, str], api: Api, url: str) -> None:
    key = _key(env, "tenant-a")
    with api.client(key) as c:
        reply = c.post("/fal-ai/imageutils/rembg", json={"image_url": url})
    assert reply.status_code == 422, reply.text
    assert "refused" in reply.text or "http(s)" in reply.text
    assert load_jobs(env["ORCH_DATABASE_URL"]) == []


def test_bad_input_shapes(env: dict[str, str], api: Api) -> None:
    key = _key(env, "tenant-a")
    with api.client(key) as c:
        assert c.post("/fal-ai/imageutils/rembg", json={}).status_code == 422
        not_image = "data:image/png;base64," + base64.b64encode(b"<html>hello</html>").decode()
        reply = c.post("/fal-ai/imageutils/rembg", json={"image_url": not_image})
        assert reply.status_code == 422 and "image" in reply.json()["detail"]
        huge = "data:image/png;base64," + "A" * (40 * 1024 * 1024)
        assert c.post("/fal-ai/imageutils/rembg", json={"image_url": huge}).status_code == 413


def test_v1_uploads_batches_retry_and_result(
    env: dict[str, str], api: Api, start_worker, tmp_path: Path
) -> None:
    key = _key(env, "tenant-a")
    start_worker()
    with api.client(key) as c:
        files = [("files", (f"pic{i}.png", _png(i), "image/png")) for i in range(2)]
        uploaded = c.post("/v1/uploads", files=files, data={"crop_to_bbox": "true"})
        assert uploaded.status_code == 200, uploaded.text
        ids = [j["id"] for j in uploaded.json()]
        batch = c.post("/v1/batches", json={"items": [{"image_url": data_uri(_png(7))},
                                                      {"image_url": "http://127.0.0.1/nope.png"}]})
        assert batch.status_code == 200
        accepted, rejected = batch.json()
        assert accepted["state"] == "queued" and rejected["state"] == "rejected"
        ids.append(accepted["id"])
        for job_id in ids:
            wait_for_state(env["ORCH_DATABASE_URL"], job_id, {JobState.SUCCEEDED}, 60)
        listed = c.get("/v1/jobs", params={"state": "succeeded"}).json()
        assert sorted(j["id"] for j in listed) == sorted(ids)
        detail = c.get(f"/v1/jobs/{ids[0]}").json()
        result = c.get(f"/v1/jobs/{ids[0]}/result")
        assert result.status_code == 200 and result.headers["content-type"] == "image/png"
        assert hashlib.sha256(result.content).hexdigest() == detail["result"]["sha256"]
        assert c.post(f"/v1/jobs/{ids[0]}/retry").status_code == 409  # succeeded: nothing to retry
    with api.client(None) as anonymous:
        assert anonymous.get(f"/v1/jobs/{ids[0]}/result").status_code == 401
        assert anonymous.get(f"/v1/jobs/{ids[0]}/result", params={"token": "wrong"}).status_code == 404


def test_health_readiness_metrics_and_openapi(env: dict[str, str], api: Api) -> None:
    with api.client(None) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200
        checks = ready.json()["checks"]
        assert checks["database"] == "ok" and checks["broker"] == "ok"
        assert checks["backends"]["fal"].startswith("unavailable: FAL_KEY is not set")
        assert c.get("/metrics").status_code == 401  # every tenant's spend: a key (issue 14.7)
    with api.client(_key(env, "ops", "--admin")) as c:
        text = c.get("/metrics").text
        for name in ("orchestrator_jobs", "orchestrator_queue_depth", "orchestrator_cost_usd"):
            assert name in text
    with api.client(None) as c:
        spec = c.get("/openapi.json").json()
        assert "/fal-ai/imageutils/rembg" in spec["paths"] and "/v1/uploads" in spec["paths"]


def test_rate_limit_per_key(env: dict[str, str], tls: dict[str, str], tmp_path: Path) -> None:
    server = Api({**env, "ORCH_API_REQUESTS_PER_SECOND": "3"}, tls, tmp_path / "api.log")
    try:
        key = _key(env, "tenant-a")
        with server.client(key) as c:
            codes = [c.get("/v1/jobs").status_code for _ in range(10)]
        assert 429 in codes and codes[0] == 200
        with server.client(key) as c:
            time.sleep(1.1)  # the sleep IS the test: a second passes and the key may go again
            reply = c.get("/v1/jobs")
            while reply.status_code == 200:
                reply = c.get("/v1/jobs")
            assert reply.headers["Retry-After"] == "1"
    finally:
        server.stop()


def test_fal_webhook_is_delivered_signed_and_verifiable(
    env: dict[str, str], tls: dict[str, str], start_worker, tmp_path: Path
) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    received: list[tuple[dict[str, str], bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(500 if len(received) == 1 else 200)  # the first try fails
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    signing = run_cli(env, "keys", "signing-key").stdout.strip()
    hooks = {**env, "ORCH_WEBHOOK_SIGNING_KEY": signing, "ORCH_WEBHOOK_ALLOW_HOSTS": "127.0.0.1:*",
             "ORCH_RETRY_BACKOFF_MAX_SECONDS": "1"}
    server = Api(hooks, tls, tmp_path / "api.log")
    try:
        key = _key(env, "tenant-a")
        start_worker(extra_env=hooks)
        hook_url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        with server.client(key) as c:
            rid = c.post("/fal-ai/imageutils/rembg", params={"fal_webhook": hook_url},
                         json={"image_url": data_uri(_png())}).json()["request_id"]
            jwks = c.get("/.well-known/jwks.json").json()
        wait_until(lambda: len(received) >= 2, timeout=60,
                   what="the webhook retried after a 500")
        assert len(received) == 2, received
        headers, body = received[-1]
        payload = json.loads(body)
        assert payload["request_id"] == rid and payload["status"] == "OK"
        job = job_by_id(env["ORCH_DATABASE_URL"], rid)
        assert job.result is not None
        image = base64.b64decode(payload["payload"]["image"]["url"].split(",", 1)[1])
        assert image == job.result.data
        # Verify exactly as a receiver of fal's webhooks does (fal-queue-protocol.md §8).
        message = "\n".join([headers["x-fal-webhook-request-id"], headers["x-fal-webhook-user-id"],
                             headers["x-fal-webhook-timestamp"], hashlib.sha256(body).hexdigest()])
        assert abs(int(headers["x-fal-webhook-timestamp"]) - time.time()) < 300
        [jwk] = jwks["keys"]
        public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(jwk["x"] + "=="))
        public.verify(bytes.fromhex(headers["x-fal-webhook-signature"]), message.encode())
        assert headers["x-fal-webhook-user-id"] == "tenant-a"
    finally:
        server.stop()
        receiver.shutdown()
        receiver.server_close()


def test_webhook_into_the_network_is_refused(env: dict[str, str], tls: dict[str, str], tmp_path: Path) -> None:
    signing = run_cli(env, "keys", "signing-key").stdout.strip()
    server = Api({**env, "ORCH_WEBHOOK_SIGNING_KEY": signing, "ORCH_FETCH_ALLOW_HOSTS": "",
                  "ORCH_WEBHOOK_ALLOW_HOSTS": ""}, tls,
                 tmp_path / "api.log")
    try:
        key = _key(env, "tenant-a")
        with server.client(key) as c:
            reply = c.post("/fal-ai/imageutils/rembg", params={"fal_webhook": "http://169.254.169.254/x"},
                           json={"image_url": data_uri(_png())})
        assert reply.status_code == 422 and "refused" in reply.text
        assert load_jobs(env["ORCH_DATABASE_URL"]) == []
    finally:
        server.stop()


def test_identical_requests_reuse_results_or_attach(
    env: dict[str, str], api: Api, start_worker
) -> None:
    key = _key(env, "tenant-a")
    body = {"image_url": data_uri(_png(11))}
    with api.client(key) as c:
        # In flight: an identical request attaches to the queued job.
        first = c.post("/fal-ai/imageutils/rembg", json=body).json()["request_id"]
        again = c.post("/fal-ai/imageutils/rembg", json=body).json()["request_id"]
        assert again == first
        assert job_by_id(env["ORCH_DATABASE_URL"], first).dedup_attached == 1
        start_worker()
        done = wait_for_state(env["ORCH_DATABASE_URL"], first, {JobState.SUCCEEDED}, 60)
        # Finished: an identical request reuses the stored result, at zero cost.
        reused = c.post("/fal-ai/imageutils/rembg", json=body).json()["request_id"]
        assert reused != first
        copy = job_by_id(env["ORCH_DATABASE_URL"], reused)
        assert copy.state is JobState.SUCCEEDED and copy.deduplicated_from == done.id
        assert copy.attempts == []  # no attempt, no cost
        assert copy.result is not None and done.result is not None
        assert copy.result.sha256 == done.result.sha256
        assert c.get(f"/fal-ai/imageutils/requests/{reused}").json()["image"]["file_size"] == done.result.size_bytes
        # Other options are another request.
        cropped = c.post("/fal-ai/imageutils/rembg", json={**body, "crop_to_bbox": True}).json()
        assert cropped["request_id"] not in (first, reused)
    with api.client(_key(env, "tenant-b")) as other:
        # Another tenant never shares a job or a result.
        assert other.post("/fal-ai/imageutils/rembg", json=body).json()["request_id"] not in (first, reused)
