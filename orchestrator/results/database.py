from __future__ import annotations

import uuid

from orchestrator.results.base import ResultStore, StoredBytes


class DatabaseResultStore(ResultStore):
    """Bytes in the results row: every worker and API host that reaches Postgres can read them."""

    name = "database"

    def put(self, job_id: uuid.UUID, attempt_id: int, data: bytes) -> StoredBytes:
        return StoredBytes(store=self.name, location=None, data=data)

    def get(self, stored: StoredBytes) -> bytes:
        if stored.data is None:
            raise ValueError("database result without data")
        return stored.data
