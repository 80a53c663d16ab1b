"""The S3 store against a real SeaweedFS: round trips, presigned URLs, and its faults."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import httpx
import pytest

from orchestrator.errors import (
    ObjectMissing,
    StoreBucketMissing,
    StoreCredentialsRefused,
    StoreUnavailable,
)
from orchestrator.settings import load_settings
from orchestrator.storage import StoredBytes
from orchestrator.storage.s3 import S3Store
from tests.conftest import run_cli
from tests.support.images import subject
from tests.support.seaweed import SeaweedFS, free_ports


def _store(seaweed: SeaweedFS, bucket: str, **overrides: object) -> S3Store:
    return S3Store(load_settings(object_store_url=f"s3://{bucket}/p",
                                 s3_endpoint_url=seaweed.endpoint, **overrides))


def _png() -> bytes:
    import io

    buf = io.BytesIO()
    subject().save(buf, "PNG")
    return buf.getvalue()


def test_put_get_presign_round_trip(s3_env: dict[str, str], seaweed: SeaweedFS, bucket: str) -> None:
    store = _store(seaweed, bucket)
    data = _png()
    stored = store.put("results/j1/7.png", data, "image/png")
    assert stored == StoredBytes(store="s3", location="p/results/j1/7.png", data=None)
    assert store.get(stored) == data
    # Listed under its prefix with its size, as the sweep sees it.
    listed = list(store.list("results/"))
    assert [(item.location, item.size) for item in listed] == [("p/results/j1/7.png", len(data))]

    url = store.presign(stored, ttl_seconds=60, file_name="cat.png", content_type="image/png")
    assert url is not None and url.startswith(seaweed.endpoint)
    assert seaweed.secret_key not in url
    reply = httpx.get(url)
    assert reply.status_code == 200
    assert hashlib.sha256(reply.content).digest() == hashlib.sha256(data).digest()
    assert reply.headers["content-type"] == "image/png"
    assert 'filename="cat.png"' in reply.headers["content-disposition"]
    # A tampered signature and an expired URL are refused by the store.
    assert httpx.get(url[:-4] + ("0000" if not url.endswith("0000") else "1111")).status_code == 403
    short = store.presign(stored, ttl_seconds=1, file_name="cat.png", content_type="image/png")
    assert short is not None
    time.sleep(2.2)
    assert httpx.get(short).status_code == 403

    store.delete([stored.location or ""])
    with pytest.raises(ObjectMissing):
        store.get(stored)
    store.delete(["p/results/never-there"])  # missing objects are not an error


def test_refused_credentials_name_the_setting(s3_env: dict[str, str], seaweed: SeaweedFS,
                                              bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.storage import s3

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    s3._clients.clear()
    try:
        with pytest.raises(StoreCredentialsRefused) as caught:
            _store(seaweed, bucket).put("inputs/x", b"bytes", "application/octet-stream")
    finally:
        s3._clients.clear()
    assert "AWS_SECRET_ACCESS_KEY" in str(caught.value)
    assert "not-the-secret" not in str(caught.value)


def test_unreachable_store_is_a_transient_error(s3_env: dict[str, str], bucket: str) -> None:
    (port,) = free_ports(1)  # nothing listens there
    store = S3Store(load_settings(object_store_url=f"s3://{bucket}",
                                  s3_endpoint_url=f"http://127.0.0.1:{port}",
                                  s3_max_attempts=1, s3_connect_timeout_seconds=1))
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        store.put("inputs/x", b"bytes", "application/octet-stream")
    assert caught.value.retryable
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert time.monotonic() - started < 10


def test_missing_bucket_is_named_and_migrate_creates_it(
    s3_env: dict[str, str], seaweed: SeaweedFS, tmp_path: Path
) -> None:
    name = f"orch-missing-{int(time.time() * 1000) % 10**9}"
    store = _store(seaweed, name)
    with pytest.raises((StoreBucketMissing, ObjectMissing)):
        store.get(StoredBytes("s3", "p/inputs/x", None))
    env = {**s3_env, "ORCH_OBJECT_STORE_URL": f"s3://{name}/p"}
    result = run_cli(env, "migrate")
    assert result.returncode == 0, result.stderr
    assert f"created bucket '{name}'" in result.stderr
    store.put("inputs/x", b"now it works", "application/octet-stream")
    assert store.get(StoredBytes("s3", "p/inputs/x", None)) == b"now it works"
    again = run_cli(env, "migrate")  # idempotent: the bucket is there now
    assert again.returncode == 0 and "created bucket" not in again.stderr
