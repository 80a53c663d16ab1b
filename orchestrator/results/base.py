"""Where result bytes live. The results row records hash, size and dimensions either way."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class StoredBytes:
    store: str
    location: str | None  # a path or key for external stores
    data: bytes | None  # set for stores that keep bytes in the row itself


class ResultStore:
    name: str

    def put(self, job_id: uuid.UUID, attempt_id: int, data: bytes) -> StoredBytes:
        raise NotImplementedError

    def get(self, stored: StoredBytes) -> bytes:
        raise NotImplementedError

    def discard(self, stored: StoredBytes) -> None:
        """Remove bytes written for a result that was not committed."""
