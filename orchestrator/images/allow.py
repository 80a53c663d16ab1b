"""Trusted internal hosts for outgoing requests (issue 14.9): ``host``, ``host:port`` or
``host:*`` entries, as in ORCH_FETCH_ALLOW_HOSTS (image URLs) and ORCH_WEBHOOK_ALLOW_HOSTS
(webhook targets, a separate list).

A trusted host skips the address checks (it may resolve to a private address), but only on
the port its entry names: a bare ``host`` on the usual ports 80 and 443, ``host:8080`` on 8080,
``host:*`` on any port (an explicit choice, e.g. for test servers on loopback).
"""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.errors import ConfigError

ANY_PORT = "*"
DEFAULT_PORTS = frozenset({80, 443})


def _normalise_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def parse_entry(entry: str) -> tuple[str, str | None]:
    """``host`` → (host, None); ``host:443`` → (host, "443"); ``[::1]:*`` → ("::1", "*")."""
    text = entry.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
        if rest and port is None:
            raise ConfigError(f"allow-list entry {entry!r} is not host, host:port or host:*")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:  # a bare name, IPv4 address or unbracketed IPv6 address
        host, port = text, None
    if not host or (port is not None and port != ANY_PORT
                    and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ConfigError(f"allow-list entry {entry!r} is not host, host:port or host:*")
    return _normalise_host(host), port


class AllowList:
    def __init__(self, entries: Iterable[str] = ()) -> None:
        self._ports: dict[str, set[str]] = {}
        for entry in entries:
            host, port = parse_entry(entry)
            self._ports.setdefault(host, set()).add(port or "")

    def __bool__(self) -> bool:
        return bool(self._ports)

    def trusts(self, host: str, port: int) -> bool:
        allowed = self._ports.get(_normalise_host(host))
        if allowed is None:
            return False
        return (ANY_PORT in allowed or str(port) in allowed
                or ("" in allowed and port in DEFAULT_PORTS))
