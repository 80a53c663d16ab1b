"""The S3 store (AWS S3, SeaweedFS, MinIO, R2) on boto3's low-level client.

Errors become the orchestrator's: unreachable, timed out or 5xx → ``StoreUnavailable``
(transient, jobs retry with backoff); credentials refused → ``StoreCredentialsRefused`` naming
the variables; no bucket → ``StoreBucketMissing``; no key → ``ObjectMissing``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from orchestrator.errors import (
    ObjectMissing,
    StoreBucketMissing,
    StoreCredentialsRefused,
    StoreError,
    StoreUnavailable,
)
from orchestrator.settings import Settings
from orchestrator.storage.base import BlobStore, Listed, StoredBytes

T = TypeVar("T")

CREDENTIAL_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                              "InvalidToken", "ExpiredToken", "InvalidSecurity",
                              "AuthorizationHeaderMalformed"})
MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
CREDENTIALS_HINT = "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or "some/prefix/"

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parts = urlsplit(url)
        prefix = parts.path.strip("/")
        return cls(bucket=parts.netloc, prefix=f"{prefix}/" if prefix else "")


def _region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def make_client(settings: Settings, endpoint_url: str | None) -> Any:
    """A boto3 S3 client. Clients are thread-safe once made; one per process (after fork)."""
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=_region(),
        signature_version="s3v4",
        connect_timeout=settings.storage.s3_connect_timeout_seconds,
        read_timeout=settings.storage.s3_read_timeout_seconds,
        retries={"max_attempts": settings.storage.s3_max_attempts, "mode": "standard"},
        # Path-style for S3-compatible servers (no wildcard DNS needed on loopback or in compose).
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        # Checksums only where S3 requires them: many S3-compatible servers refuse the CRC
        # trailers boto3 >= 1.36 adds by default.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=32,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


_clients: dict[tuple[int, str | None, float, float, int], Any] = {}
_clients_lock = threading.Lock()


def cached_client(settings: Settings, endpoint_url: str | None) -> Any:
    # Keyed by pid: a client made before Celery's fork must not be shared with the children.
    key = (os.getpid(), endpoint_url, settings.storage.s3_connect_timeout_seconds,
           settings.storage.s3_read_timeout_seconds, settings.storage.s3_max_attempts)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = make_client(settings, endpoint_url)
        return client


class S3Store(BlobStore):
    name = "s3"

    def __init__(self, settings: Settings, *, client: Any = None, presign_client: Any = None) -> None:
        if not settings.storage.object_store_url:
            raise StoreError("the S3 store needs ORCH_OBJECT_STORE_URL (s3://bucket/prefix)")
        self.where = S3Location.parse(settings.storage.object_store_url)
        self.endpoint = settings.storage.s3_endpoint_url or "AWS S3"
        self.client = client or cached_client(settings, settings.storage.s3_endpoint_url)
        public = settings.storage.s3_public_endpoint_url or settings.storage.s3_endpoint_url
        self.presign_client = presign_client or (
            self.client if public == settings.storage.s3_endpoint_url else cached_client(settings, public))

    @property
    def bucket(self) -> str:
        return self.where.bucket

    def _call(self, what: str, fn: Callable[..., T], **kwargs: Any) -> T:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            raise self._translate(what, exc) from None
        except NoCredentialsError:
            raise StoreCredentialsRefused(
                f"no credentials for the object store: set {CREDENTIALS_HINT}") from None
        except BotoCoreError as exc:
            # Connection refused or reset, timeouts, a dropped response: try again later.
            raise StoreUnavailable(
                f"the object store ({self.endpoint}) is unreachable while {what}: "
                f"{type(exc).__name__}") from None

    def _translate(self, what: str, exc: Any) -> Exception:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "NoSuchBucket":
            return StoreBucketMissing(
                f"the bucket {self.bucket!r} of ORCH_OBJECT_STORE_URL does not exist at "
                f"{self.endpoint}; `orchestrator migrate` creates it")
        if code in MISSING_KEY_CODES:
            return ObjectMissing(f"no object {kwargs_key(exc)} in bucket {self.bucket!r}")
        if code in CREDENTIAL_CODES or status in (401, 403):
            return StoreCredentialsRefused(
                f"the object store ({self.endpoint}) refused the credentials in "
                f"{CREDENTIALS_HINT} while {what} ({code or status})")
        if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError"):
            return StoreUnavailable(
                f"the object store ({self.endpoint}) failed while {what}: {code or status}")
        return StoreError(f"the object store ({self.endpoint}) refused {what}: {code or status}")

    def _key(self, key: str) -> str:
        return self.where.prefix + key

    def put(self, key: str, data: bytes, content_type: str) -> StoredBytes:
        full = self._key(key)
        # Content-MD5: the store checks the bytes it received against it.
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        self._call("storing an object", self.client.put_object, Bucket=self.bucket, Key=full,
                   Body=data, ContentType=content_type, ContentMD5=md5)
        return StoredBytes(store=self.name, location=full, data=None)

    def get(self, stored: StoredBytes) -> bytes:
        if stored.location is None:
            raise ObjectMissing("the row names no object")
        reply = self._call("reading an object", self.client.get_object, Bucket=self.bucket,
                           Key=stored.location)
        body = reply["Body"]
        try:
            return cast(bytes, self._call("reading an object", body.read))
        finally:
            body.close()

    def presign(self, stored: StoredBytes, *, ttl_seconds: int, file_name: str,
                content_type: str) -> str | None:
        if stored.location is None:
            return None
        # Signing is offline: no request, so no store fault can fail it.
        safe_name = file_name.replace('"', "").replace("\\", "")
        return cast(str, self.presign_client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": stored.location,
                    "ResponseContentType": content_type,
                    "ResponseContentDisposition": f'inline; filename="{safe_name}"'},
            ExpiresIn=ttl_seconds,
        ))

    def delete(self, locations: Iterable[str]) -> None:
        batch: list[str] = []
        for location in locations:
            batch.append(location)
            if len(batch) == 1000:  # DeleteObjects takes at most 1,000 keys
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, keys: list[str]) -> None:
        reply = self._call("deleting objects", self.client.delete_objects, Bucket=self.bucket,
                           Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
        errors = reply.get("Errors") or []
        if errors:
            first = errors[0]
            raise StoreError(f"the object store did not delete {len(errors)} object(s), e.g. "
                             f"{first.get('Key')}: {first.get('Code')}")

    def list(self, prefix: str) -> Iterator[Listed]:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._key(prefix),
                                      "MaxKeys": 1000}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("listing objects", self.client.list_objects_v2, **kwargs)
            for item in page.get("Contents", []):
                yield Listed(location=item["Key"], size=int(item["Size"]),
                             modified=item["LastModified"])
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    def ensure_bucket(self) -> bool:
        """Create the bucket if it is missing; True if it was created."""
        try:
            self._call("checking the bucket", self.client.head_bucket, Bucket=self.bucket)
            return False
        except (StoreBucketMissing, ObjectMissing):
            pass
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        region = _region()
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        self._call("creating the bucket", self.client.create_bucket, **kwargs)
        return True


def kwargs_key(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Key") or "")
