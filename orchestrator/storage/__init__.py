"""Where image bytes live (inputs and results): the database, a directory, or an S3 store.

``store_for_new(settings)`` is where new bytes go: S3 when ``ORCH_OBJECT_STORE_URL`` is set,
else ``ORCH_RESULT_STORE`` (database or directory). ``store_named(settings, name)`` reads bytes
from whichever store a row names, so rows written before a change of store stay readable.
"""

from __future__ import annotations

from orchestrator.settings import Settings
from orchestrator.storage.base import BlobStore, Listed, StoredBytes
from orchestrator.storage.database import DatabaseStore
from orchestrator.storage.directory import DirectoryStore


def store_named(settings: Settings, name: str) -> BlobStore:
    if name == "s3":
        from orchestrator.storage.s3 import S3Store

        return S3Store(settings)
    if name == "directory":
        return DirectoryStore(settings.results.dir)
    return DatabaseStore()


def store_for_new(settings: Settings) -> BlobStore:
    return store_named(settings, "s3" if settings.storage.object_store_url else settings.results.store)


__all__ = ["BlobStore", "Listed", "StoredBytes", "store_for_new", "store_named"]
