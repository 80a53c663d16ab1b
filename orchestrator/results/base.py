"""Where result bytes live. The results row records hash, size and dimensions either way."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class StoredBytes:
    store: str
    location: str | None  # a path or key for external stores
    data: bytes | None  # set for stores that keep bytes in the row itself


class ResultStore(ABC):
    name: str

    @abstractmethod
    def put(self, job_id: uuid.UUID, attempt_id: int, data: bytes) -> StoredBytes:
        """Write the bytes; what to record on the results row."""

    @abstractmethod
    def get(self, stored: StoredBytes) -> bytes:
        """Read back the bytes of a stored result."""

    def discard(self, stored: StoredBytes) -> None:
        """Remove bytes written for a result that was not committed."""
