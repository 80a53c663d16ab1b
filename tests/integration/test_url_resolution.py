"""Submit-time resolution of image_url hosts (issue 14.10): concurrent, bounded in time, and
never serial over a batch. In process on the real Postgres and Redis; the system resolver is
replaced by a slow one (loopback has no DNS to slow down)."""

from __future__ import annotations

import socket
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.api.app import create_app
from orchestrator.auth.keys import create_key
from orchestrator.db.session import session_scope
from orchestrator.settings import Settings, load_settings

with warnings.catch_warnings():  # starlette would rather have httpx2; httpx works
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

PUBLIC = "93.184.216.34"


class SlowResolver:
    """Each lookup takes ``delay`` s; ``hang.example`` never answers until released."""

    def __init__(self, delay: float, real: Any) -> None:
        self.delay = delay
        self.real = real  # Postgres and Redis on loopback still resolve for real
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.calls: list[str] = []

    def __call__(self, host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if not host.endswith(".example"):
            return list(self.real(host, port, *args, **kwargs))
        with self.lock:
            self.calls.append(host)
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if host == "hang.example":
                self.release.wait(60)
                raise socket.gaierror("timed out")
            time.sleep(self.delay)
            address = "10.0.0.5" if host == "internal.example" else PUBLIC
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                     (address, int(port)))]
        finally:
            with self.lock:
                self.active -= 1


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowResolver]:
    fake = SlowResolver(delay=0.5, real=socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    yield fake
    fake.release.set()


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return load_settings(url_check_timeout_seconds=3, url_check_concurrency=8,
                         fetch_allow_hosts="", webhook_allow_hosts="")


def test_a_batch_resolves_its_hosts_concurrently_within_the_deadline(
    settings: Settings, resolver: SlowResolver
) -> None:
    with session_scope(settings.database.url.get_secret_value()) as session:
        key = create_key(session, "tenant-a")
    urls = [f"https://slow-{i}.example/p.png" for i in range(40)]
    urls += ["https://slow-0.example/again.png",  # the same host: looked up once
             "https://hang.example/p.png", "https://internal.example/p.png"]
    with TestClient(create_app(settings)) as client:
        started = time.monotonic()
        reply = client.post("/v1/batches", headers={"Authorization": f"Key {key}"},
                            json={"items": [{"image_url": url} for url in urls]})
        took = time.monotonic() - started
    assert reply.status_code == 200, reply.text
    items = reply.json()
    # Serially this is 41 x 0.5 s plus a hang; 8 at a time, ~2.5 s, and never past the 3 s deadline.
    assert took < 5, took
    assert 1 < resolver.peak <= 8
    assert resolver.calls.count("slow-0.example") == 1
    assert [item["created"] for item in items[:41]] == [True] * 41
    hung, internal = items[41], items[42]
    for refused in (hung, internal):
        assert refused["state"] == "rejected"
        assert "cannot be reached" in refused["error"] and "10.0.0.5" not in refused["error"]


def test_a_single_submit_is_bounded_by_the_deadline_too(
    settings: Settings, resolver: SlowResolver
) -> None:
    with session_scope(settings.database.url.get_secret_value()) as session:
        key = create_key(session, "tenant-a")
    with TestClient(create_app(settings)) as client:
        started = time.monotonic()
        reply = client.post("/fal-ai/imageutils/rembg", headers={"Authorization": f"Key {key}"},
                            json={"image_url": "https://hang.example/p.png"})
        took = time.monotonic() - started
    assert reply.status_code == 422, reply.text
    assert took < 5, took
