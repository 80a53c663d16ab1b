"""Kept for imports that predate orchestrator/storage (one store interface for inputs and
results); new code imports orchestrator.storage."""

from __future__ import annotations

from orchestrator.settings import Settings
from orchestrator.storage import BlobStore, StoredBytes, store_for_new, store_named
from orchestrator.storage.results import read_result


def result_store(settings: Settings, name: str | None = None) -> BlobStore:
    return store_named(settings, name) if name else store_for_new(settings)


__all__ = ["StoredBytes", "read_result", "result_store"]
