"""Security review findings (issue 14, items 1-10), each against a real API process on loopback."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import run_cli
from tests.support.api_server import PlainApi
from tests.support.db import load_jobs
from tests.support.images import subject


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
