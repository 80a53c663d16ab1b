from __future__ import annotations

import os
import uuid
from pathlib import Path

from orchestrator.results.base import ResultStore, StoredBytes


class DirectoryResultStore(ResultStore):
    """Bytes as files in a directory shared by all hosts (a volume or network mount)."""

    name = "directory"

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, job_id: uuid.UUID, attempt_id: int, data: bytes) -> StoredBytes:
        # Named by attempt so that two deliveries racing never overwrite each other's file.
        relative = Path(job_id.hex[:2]) / f"{job_id}-{attempt_id}.png"
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return StoredBytes(store=self.name, location=str(relative), data=None)

    def get(self, stored: StoredBytes) -> bytes:
        if stored.location is None:
            raise ValueError("directory result without a location")
        return (self.root / stored.location).read_bytes()

    def discard(self, stored: StoredBytes) -> None:
        if stored.location is not None:
            (self.root / stored.location).unlink(missing_ok=True)
