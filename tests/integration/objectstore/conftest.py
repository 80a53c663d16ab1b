"""A SeaweedFS server for the session, a fresh bucket per test, and the test's environment
pointing the orchestrator at it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.seaweed import SeaweedFS


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    root = tmp_path_factory.mktemp("seaweedfs")
    server = SeaweedFS(root / "data", root / "weed.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bucket(seaweed: SeaweedFS) -> str:
    name = f"orch-{uuid.uuid4().hex[:12]}"
    seaweed.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_env(env: dict[str, str], seaweed: SeaweedFS, bucket: str) -> Iterator[dict[str, str]]:
    """``env`` with the object store on (also applied to this process)."""
    from orchestrator.settings import get_settings

    extra = {
        "ORCH_OBJECT_STORE_URL": f"s3://{bucket}/orch",
        "ORCH_S3_ENDPOINT_URL": seaweed.endpoint,
        "AWS_ACCESS_KEY_ID": seaweed.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweed.secret_key,
        "AWS_EC2_METADATA_DISABLED": "true",
        "ORCH_S3_CONNECT_TIMEOUT_SECONDS": "2",
        "ORCH_S3_READ_TIMEOUT_SECONDS": "10",
    }
    os.environ.update(extra)
    get_settings.cache_clear()
    yield {**env, **extra}
    for name in extra:
        os.environ.pop(name, None)
    get_settings.cache_clear()


def objects(seaweed: SeaweedFS, bucket: str, prefix: str = "orch/") -> int:
    return seaweed.count(bucket, prefix)


__all__ = ["objects", "Path"]
