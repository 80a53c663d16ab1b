"""Backends by name. The name is also the Celery queue its jobs go to."""

from __future__ import annotations

from orchestrator.backends.base import Backend, BackendInput, BackendOutput, InlineBackend
from orchestrator.backends.fal import FalBackend
from orchestrator.backends.local import LocalBackend
from orchestrator.errors import ConfigError

BACKENDS: dict[str, type[Backend]] = {
    LocalBackend.name: LocalBackend,
    FalBackend.name: FalBackend,
}


def backend_class(name: str) -> type[Backend]:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ConfigError(
            f"unknown backend {name!r}; available: {', '.join(sorted(BACKENDS))}"
        ) from None


__all__ = ["BACKENDS", "Backend", "BackendInput", "BackendOutput", "InlineBackend", "backend_class"]
