from __future__ import annotations

from orchestrator.errors import ObjectMissing
from orchestrator.storage.base import BlobStore, StoredBytes


class DatabaseStore(BlobStore):
    """Bytes in the row itself: every host that reaches Postgres can read them."""

    name = "database"

    def put(self, key: str, data: bytes, content_type: str) -> StoredBytes:
        return StoredBytes(store=self.name, location=None, data=data)

    def get(self, stored: StoredBytes) -> bytes:
        if stored.data is None:
            raise ObjectMissing("the row holds no bytes")
        return stored.data
