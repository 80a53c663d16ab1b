"""Kept for imports that predate orchestrator/storage."""

from orchestrator.storage.base import StoredBytes

__all__ = ["StoredBytes"]
