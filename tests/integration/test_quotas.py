"""Quotas (issue 14, item 10): per-tenant caps on jobs in flight and stored input bytes, a
per-tenant rate limit and a bound on header size, each against a real API process on loopback."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from PIL import Image

from orchestrator import commands
from orchestrator.errors import QuotaExceeded
from orchestrator.jobs.producer import Source
from orchestrator.jobs.transitions import utcnow
from orchestrator.settings import get_settings
from orchestrator.storage.retention import collect
from tests.conftest import run_cli
from tests.support.api_server import PlainApi
from tests.support.db import load_jobs


def _key(env: dict[str, str], name: str) -> str:
    out = run_cli(env, "keys", "create", name)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _png(shade: int, size: int = 64) -> bytes:
    """A distinct image per shade (identical inputs would be deduplicated into one job)."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (shade, 255 - shade, 90)).save(buf, format="PNG")
    return buf.getvalue()


def _uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _client(api: PlainApi, key: str) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"Authorization": f"Key {key}"}, timeout=30)


@pytest.fixture
def capped(env: dict[str, str], tmp_path: Path) -> Iterator[PlainApi]:
    # No worker runs: every accepted job stays queued, i.e. in flight, and keeps its input.
    server = PlainApi({**env, "ORCH_TENANT_MAX_JOBS_IN_FLIGHT": "3"}, tmp_path / "api.log")
    yield server
    server.stop()


def _count(env: dict[str, str], client: str) -> int:
    return sum(1 for job in load_jobs(env["ORCH_DATABASE_URL"]) if job.client == client)


def test_jobs_in_flight_are_capped_per_tenant(env: dict[str, str], capped: PlainApi) -> None:
    a, b = _key(env, "tenant-a"), _key(env, "tenant-b")
    with _client(capped, a) as c:
        ok = c.post("/v1/batches", json={"items": [{"image_url": _uri(_png(i))} for i in (1, 2)]})
        assert ok.status_code == 200, ok.text
        over = c.post("/v1/batches", json={"items": [{"image_url": _uri(_png(i))} for i in (3, 4)]})
        assert over.status_code == 409, over.text
        assert "ORCH_TENANT_MAX_JOBS_IN_FLIGHT" in over.json()["detail"]
        assert "Traceback" not in over.text
        assert _count(env, "tenant-a") == 2  # nothing of the refused batch was recorded
        one = c.post("/fal-ai/imageutils/rembg", json={"image_url": _uri(_png(5))})
        assert one.status_code == 200, one.text
        refused = c.post("/fal-ai/imageutils/rembg", json={"image_url": _uri(_png(6))})
        assert refused.status_code == 409 and "jobs in flight" in refused.json()["detail"]
    with _client(capped, b) as c:  # another tenant has its own cap
        assert c.post("/fal-ai/imageutils/rembg",
                      json={"image_url": _uri(_png(7))}).status_code == 200
    assert _count(env, "tenant-a") == 3


def test_the_cli_gets_the_same_cap(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.png").write_bytes(_png(10 + i))
    capped_env = {**env, "ORCH_TENANT_MAX_JOBS_IN_FLIGHT": "2"}
    out = run_cli(capped_env, "submit", str(folder), "--backend", "local")
    assert out.returncode != 0
    assert "ORCH_TENANT_MAX_JOBS_IN_FLIGHT" in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert load_jobs(env["ORCH_DATABASE_URL"]) == []


def test_stored_input_bytes_are_capped_per_tenant(env: dict[str, str], tmp_path: Path) -> None:
    first, second = _png(20, 128), _png(21, 128)
    cap = len(first) + len(second) // 2
    server = PlainApi({**env, "ORCH_TENANT_MAX_STORED_INPUT_BYTES": str(cap)}, tmp_path / "api.log")
    try:
        with _client(server, _key(env, "tenant-a")) as c:
            assert c.post("/fal-ai/imageutils/rembg",
                          json={"image_url": _uri(first)}).status_code == 200
            over = c.post("/fal-ai/imageutils/rembg", json={"image_url": _uri(second)})
            assert over.status_code == 409, over.text
            assert "ORCH_TENANT_MAX_STORED_INPUT_BYTES" in over.json()["detail"]
            files = {"files": ("x.png", second, "image/png")}
            assert c.post("/v1/uploads", files=files).status_code == 409
        assert _count(env, "tenant-a") == 1
        with _client(server, _key(env, "tenant-b")) as c:
            assert c.post("/fal-ai/imageutils/rembg",
                          json={"image_url": _uri(second)}).status_code == 200
    finally:
        server.stop()


def test_rate_limit_per_tenant_across_its_keys(env: dict[str, str], tmp_path: Path) -> None:
    server = PlainApi({**env, "ORCH_API_REQUESTS_PER_SECOND": "100",
                       "ORCH_API_TENANT_REQUESTS_PER_SECOND": "4"}, tmp_path / "api.log")
    try:
        keys = [_key(env, "tenant-a") for _ in range(4)]  # four keys, one tenant
        other = _key(env, "tenant-b")
        clients = [_client(server, key) for key in keys]
        try:
            # 12 requests over 4 keys (3 each, far below the per-key 100/s) within ~1-2 windows
            # of one second: at most 8 can pass the tenant's 4/s.
            replies = [clients[i % 4].get("/v1/jobs") for i in range(12)]
        finally:
            for c in clients:
                c.close()
        codes = [reply.status_code for reply in replies]
        assert codes.count(200) <= 8 and 429 in codes, codes
        assert set(codes) <= {200, 429}
        assert all("ORCH_API_TENANT_REQUESTS_PER_SECOND" in reply.json()["detail"]
                   for reply in replies if reply.status_code == 429)
        with _client(server, other) as c:  # another tenant is not held back
            assert c.get("/v1/jobs").status_code == 200
    finally:
        server.stop()


def test_oversized_headers_are_refused_before_any_work(env: dict[str, str],
                                                       tmp_path: Path) -> None:
    server = PlainApi({**env, "ORCH_API_MAX_HEADER_BYTES": "4096"}, tmp_path / "api.log")
    try:
        key = _key(env, "tenant-a")
        with _client(server, key) as c:
            assert c.get("/v1/jobs", headers={"X-Small": "y" * 1000}).status_code == 200
            big = c.get("/v1/jobs", headers={"X-Pad": "y" * 6000})
            assert big.status_code == 431, big.text
            assert "ORCH_API_MAX_HEADER_BYTES" in big.json()["detail"]
            many = c.get("/v1/jobs", headers={f"X-H{i}": "z" * 100 for i in range(60)})
            assert many.status_code == 431
            assert c.get("/v1/jobs", params={"q": "x" * 6000}).status_code == 431
        # Without a key too, and a body-carrying request is refused before the gate reads it.
        with httpx.Client(base_url=server.url, timeout=30) as anonymous:
            reply = anonymous.post("/v1/batches", json={"items": []},
                                   headers={"X-Pad": "y" * 6000})
            assert reply.status_code == 431
    finally:
        server.stop()


def test_concurrent_submits_cannot_overshoot_the_cap(env: dict[str, str], capped: PlainApi) -> None:
    from concurrent.futures import ThreadPoolExecutor

    key = _key(env, "tenant-a")

    def submit(shade: int) -> int:
        with _client(capped, key) as c:
            return c.post("/fal-ai/imageutils/rembg",
                          json={"image_url": _uri(_png(100 + shade))}).status_code

    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(submit, range(10)))
    assert sorted(codes) == [200] * 3 + [409] * 7, codes
    assert _count(env, "tenant-a") == 3


def _stored(db: str) -> tuple[dict[str, int], dict[str, int]]:
    """(the running totals, the sums they stand for) per tenant."""
    with psycopg.connect(db.replace("+psycopg", "")) as conn:
        totals = dict(conn.execute("SELECT client, stored_input_bytes FROM tenant_usage"
                                   " WHERE stored_input_bytes <> 0").fetchall())
        sums = dict(conn.execute(
            "SELECT jobs.client, SUM(size_bytes) FROM job_inputs JOIN jobs ON jobs.id = job_id"
            " WHERE expired_at IS NULL GROUP BY jobs.client").fetchall())
    return totals, sums


def test_the_stored_input_total_follows_submits_refusals_and_retention(
        env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    images = [_png(40 + i, 96) for i in range(4)]
    cap = sum(len(data) for data in images[:3])
    for name, value in {"ORCH_TENANT_MAX_STORED_INPUT_BYTES": str(cap),
                        "ORCH_INPUT_RETENTION_SECONDS": "60"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    settings, db = get_settings(), env["ORCH_DATABASE_URL"]
    options = commands.SubmitOptions(backend="local")

    def submit(client: str, *data: bytes) -> None:
        commands.submit(settings, commands.Caller(client),
                        [Source(name=f"i{i}", data=d) for i, d in enumerate(data)], options)

    submit("tenant-a", images[0], images[1])
    submit("tenant-b", images[3])
    with pytest.raises(QuotaExceeded, match="stores"):
        submit("tenant-a", images[2], images[3])  # refused whole: nothing added
    totals, sums = _stored(db)
    assert totals == sums == {"tenant-a": len(images[0]) + len(images[1]),
                              "tenant-b": len(images[3])}

    # Two submits at once that fit only one at a time: exactly one passes.
    results: list[str] = []
    start = threading.Barrier(2)

    def racer(data: bytes) -> None:
        start.wait()
        try:
            submit("tenant-a", data)
            results.append("ok")
        except QuotaExceeded:
            results.append("refused")

    threads = [threading.Thread(target=racer, args=(d,)) for d in (images[2], _png(99, 96))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["ok", "refused"]
    totals, sums = _stored(db)
    assert totals == sums and totals["tenant-a"] <= cap

    # Retention subtracts what it expires.
    with psycopg.connect(db.replace("+psycopg", "")) as conn:
        conn.execute("UPDATE jobs SET state = 'cancelled', finished_at = now() "
                     "WHERE client = 'tenant-a'")
    report = collect(settings, now=utcnow() + timedelta(hours=1))
    assert report.inputs == 3
    totals, sums = _stored(db)
    assert totals == sums == {"tenant-b": len(images[3])}
    submit("tenant-a", images[2], images[0])  # room again
