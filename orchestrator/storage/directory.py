from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from orchestrator.errors import ObjectMissing
from orchestrator.storage.base import BlobStore, Listed, StoredBytes


class DirectoryStore(BlobStore):
    """Bytes as files in a directory shared by all hosts (a volume or network mount)."""

    name = "directory"

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, key: str, data: bytes, content_type: str) -> StoredBytes:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return StoredBytes(store=self.name, location=key, data=None)

    def get(self, stored: StoredBytes) -> bytes:
        if stored.location is None:
            raise ObjectMissing("the row names no file")
        try:
            return (self.root / stored.location).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(f"no file {stored.location} in {self.root}") from None

    def delete(self, locations: Iterable[str]) -> None:
        for location in locations:
            (self.root / location).unlink(missing_ok=True)

    def list(self, prefix: str) -> Iterator[Listed]:
        base = self.root / prefix
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file():
                stat = path.stat()
                yield Listed(location=path.relative_to(self.root).as_posix(), size=stat.st_size,
                             modified=datetime.fromtimestamp(stat.st_mtime, UTC))
