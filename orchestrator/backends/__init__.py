"""The backend registry: every backend by name. The name is also the Celery queue its jobs go to.

Adding a backend is one folder under ``orchestrator/backends/`` (an adapter implementing
:class:`InlineBackend` or :class:`RemoteBackend`) and one line in ``_REGISTRY``. Entries are
import paths, so naming a backend imports nothing heavy (rembg, fal_client) until it is used.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Final

from orchestrator.backends.base import (
    Backend,
    BackendInput,
    BackendOutput,
    InlineBackend,
    RemoteBackend,
)
from orchestrator.errors import ConfigError
from orchestrator.settings import Settings

LOCAL: Final = "local"
FAL: Final = "fal"
FAKE_INLINE: Final = "fake-inline"
FAKE_REMOTE: Final = "fake-remote"

_REGISTRY: Final[dict[str, str]] = {
    LOCAL: "orchestrator.backends.local:LocalBackend",
    FAL: "orchestrator.backends.fal:FalBackend",
    FAKE_INLINE: "orchestrator.backends.fake_inline:FakeInlineBackend",
    FAKE_REMOTE: "orchestrator.backends.fake_remote:FakeRemoteBackend",
}

# Roles: `auto` routing chooses between these two; fal budgets (`orchestrator budget`) limit the
# spend of BUDGETED.
AUTO_INLINE: Final = LOCAL
AUTO_REMOTE: Final = FAL
BUDGETED: Final = FAL
# The backend of a job whose row could not be read (a message for a job that does not exist).
DEFAULT: Final = LOCAL

NAMES: Final[tuple[str, ...]] = tuple(_REGISTRY)
# In-memory fakes, offered only where ORCH_FAKE_BACKENDS is on (tests, demos).
FAKES: Final = frozenset({FAKE_INLINE, FAKE_REMOTE})
REAL: Final[tuple[str, ...]] = tuple(name for name in NAMES if name not in FAKES)


@cache
def backend_class(name: str) -> type[Backend]:
    try:
        module, _, attr = _REGISTRY[name].partition(":")
    except KeyError:
        raise ConfigError(
            f"unknown backend {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None
    cls: type[Backend] = getattr(importlib.import_module(module), attr)
    return cls


def offered(settings: Settings) -> list[str]:
    """The backends users may choose here: every real one, and the fakes where
    ORCH_FAKE_BACKENDS is on (tests, demos)."""
    return list(NAMES) if settings.routing.fake_backends else list(REAL)


def check_offered(name: str, settings: Settings) -> None:
    """Refuse a backend that does not exist, or a fake where fakes are off (as unknown)."""
    if name not in offered(settings):
        raise ConfigError(
            f"unknown backend {name!r}; available: {', '.join(sorted(offered(settings)))}")


def is_remote(name: str) -> bool:
    return issubclass(backend_class(name), RemoteBackend)


def remote_names() -> list[str]:
    return [name for name in NAMES if is_remote(name)]


_instances: dict[tuple[str, int], Backend] = {}


def get(name: str, settings: Settings) -> Backend:
    """The backend, one instance per process and settings object (it may hold a warm session
    or open connections)."""
    key = (name, id(settings))
    backend = _instances.get(key)
    if backend is None:
        backend = backend_class(name)(settings)
        _instances[key] = backend
    return backend


def get_remote(name: str, settings: Settings) -> RemoteBackend:
    backend = get(name, settings)
    if not isinstance(backend, RemoteBackend):
        raise ConfigError(f"the {name} backend is not a remote backend")
    return backend


def get_inline(name: str, settings: Settings) -> InlineBackend:
    backend = get(name, settings)
    if not isinstance(backend, InlineBackend):
        raise ConfigError(f"the {name} backend is not an inline backend")
    return backend


__all__ = [
    "AUTO_INLINE",
    "AUTO_REMOTE",
    "BUDGETED",
    "DEFAULT",
    "FAKE_INLINE",
    "FAKE_REMOTE",
    "FAKES",
    "FAL",
    "LOCAL",
    "NAMES",
    "REAL",
    "Backend",
    "BackendInput",
    "BackendOutput",
    "InlineBackend",
    "RemoteBackend",
    "backend_class",
    "check_offered",
    "get",
    "get_inline",
    "get_remote",
    "is_remote",
    "offered",
    "remote_names",
]
