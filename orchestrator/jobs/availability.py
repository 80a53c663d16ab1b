"""Whether a backend can take jobs here and now, and why not (for people)."""

from __future__ import annotations

from orchestrator import backends
from orchestrator.backends.base import RemoteBackend
from orchestrator.settings import Settings


def unavailable_reason(name: str, settings: Settings) -> str | None:
    """The adapter's own reason (no credentials, no model), or — for a remote backend — the
    provider's refusal of the current credentials, remembered in Redis by the job engine."""
    cls = backends.backend_class(name)
    reason = cls.unavailable_reason(settings)
    if reason is not None or not issubclass(cls, RemoteBackend):
        return reason
    from orchestrator.jobs.remote.limits import key_refusal

    backend = backends.get_remote(name, settings)
    refusal = key_refusal(settings.broker.url.get_secret_value(), name, backend.credentials_fingerprint())
    if refusal:
        return (f"{name} refused the current {cls.credentials_setting} ({refusal}); "
                "set a valid key")
    return None
