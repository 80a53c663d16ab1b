"""Worker health, answered by Celery's remote control (what ``orchestrator workers`` shows)."""

from __future__ import annotations

from typing import Any


def worker_health(timeout: float = 2.0, node: str | None = None) -> dict[str, dict[str, Any]]:
    """Each answering node's health record, by node name; waits ``timeout`` seconds for replies."""
    from orchestrator.queue.celery_app import app
    from orchestrator.queue.health import COMMAND

    replies = app.control.broadcast(COMMAND, reply=True, timeout=timeout,
                                    destination=[node] if node else None) or []
    nodes: dict[str, dict[str, Any]] = {}
    for reply in replies:
        nodes.update(reply)
    return nodes
