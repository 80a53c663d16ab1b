"""Result stores by name (setting ``result_store``)."""

from __future__ import annotations

from orchestrator.db.models import Result
from orchestrator.results.base import ResultStore, StoredBytes
from orchestrator.results.database import DatabaseResultStore
from orchestrator.results.directory import DirectoryResultStore
from orchestrator.settings import Settings


def result_store(settings: Settings, name: str | None = None) -> ResultStore:
    name = name or settings.results.store
    if name == "directory":
        return DirectoryResultStore(settings.results.dir)
    return DatabaseResultStore()


def read_result(settings: Settings, result: Result) -> bytes:
    """The bytes of a stored result, from whichever store holds them."""
    store = result_store(settings, result.store)
    return store.get(StoredBytes(store=result.store, location=result.location, data=result.data))


__all__ = ["ResultStore", "StoredBytes", "read_result", "result_store"]
