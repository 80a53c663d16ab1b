"""Fetch an input image over http(s) with limits on redirects, bytes and time.

Every hop's host is resolved and refused if any address is not public, unless the host is on
the ``fetch_allow_hosts`` list (trusted internal hosts).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urljoin, urlsplit

import httpx

from orchestrator.errors import FetchFailed, InputTooLarge, InputUnreachable

_PERMANENT_STATUSES = {400, 401, 403, 404, 405, 406, 410, 414, 415, 451}


def _check_host(url: str, allow_hosts: frozenset[str]) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InputUnreachable(f"only http and https URLs can be fetched, not {parts.scheme!r}")
    host = parts.hostname
    if not host:
        raise InputUnreachable(f"the URL has no host: {url}")
    if host.lower() in allow_hosts:
        return
    try:
        infos = socket.getaddrinfo(host, parts.port or 80, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        raise InputUnreachable(f"the host {host!r} does not resolve") from None
    for info in infos:
        addr = ipaddress.ip_address(info[4][0])
        mapped = getattr(addr, "ipv4_mapped", None)
        if not addr.is_global or (mapped is not None and not mapped.is_global):
            raise InputUnreachable(
                f"the URL's host {host!r} points inside the network ({addr}); refused"
            )


def fetch_url(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    max_redirects: int,
    allow_hosts: frozenset[str] = frozenset(),
) -> bytes:
    current = url
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for _ in range(max_redirects + 1):
            _check_host(current, allow_hosts)
            try:
                with client.stream("GET", current) as response:
                    if response.is_redirect:
                        location = response.headers.get("location")
                        if not location:
                            raise InputUnreachable(f"{current} redirects without a Location")
                        current = urljoin(current, location)
                        continue
                    if response.status_code in _PERMANENT_STATUSES:
                        raise InputUnreachable(
                            f"fetching {current} failed with HTTP {response.status_code}"
                        )
                    if response.status_code >= 400:
                        raise FetchFailed(
                            f"fetching {current} failed with HTTP {response.status_code}"
                        )
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise InputTooLarge(
                            f"the URL's content is {int(declared)} bytes, over the limit of "
                            f"{max_bytes}"
                        )
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body.extend(chunk)
                        if len(body) > max_bytes:
                            raise InputTooLarge(
                                f"the URL's content is over the limit of {max_bytes} bytes"
                            )
                    return bytes(body)
            except httpx.TimeoutException:
                raise FetchFailed(f"fetching {current} timed out after {timeout:g} s") from None
            except httpx.TransportError as exc:
                raise FetchFailed(f"fetching {current} failed: {exc}") from None
    raise InputUnreachable(f"{url} redirects more than {max_redirects} times")
