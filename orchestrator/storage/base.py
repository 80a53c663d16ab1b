"""One interface for where image bytes live: inputs and results alike.

A store writes bytes under a key chosen by the caller (see ``keys.py``) and returns a
:class:`StoredBytes` to record on the row; the row commits only after ``put`` returned, so a
row never points at bytes that are not there. Bytes whose row never committed are found by
``list`` and removed by the orphan sweep (``retention.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class StoredBytes:
    store: str  # "database" | "directory" | "s3"
    location: str | None  # a path or key for external stores
    data: bytes | None  # set for stores that keep bytes in the row itself


@dataclass(frozen=True)
class Listed:
    """An object found by ``list``: its location (as rows record it), size and age."""

    location: str
    size: int
    modified: datetime


class BlobStore(ABC):
    name: str

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str) -> StoredBytes:
        """Write the bytes under ``key``; what to record on the row."""

    @abstractmethod
    def get(self, stored: StoredBytes) -> bytes:
        """Read back stored bytes (``ObjectMissing`` if they are gone)."""

    def presign(self, stored: StoredBytes, *, ttl_seconds: int, file_name: str,
                content_type: str) -> str | None:
        """A URL that downloads the bytes without the API, or None if the store has none."""
        return None

    def delete(self, locations: Iterable[str]) -> None:
        """Remove these objects; missing ones are not an error."""

    def list(self, prefix: str) -> Iterator[Listed]:
        """Every object under ``prefix`` (for the orphan sweep); none for the database."""
        return iter(())

    def discard(self, stored: StoredBytes) -> None:
        """Remove bytes written for a row that did not commit (best effort: the sweep is the
        backstop)."""
        if stored.location is not None:
            try:
                self.delete([stored.location])
            except Exception:  # noqa: BLE001 - the orphan sweep removes it later
                pass
