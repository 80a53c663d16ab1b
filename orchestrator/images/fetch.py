"""Fetch a user-supplied image URL without letting it reach into our own network (SSRF).

What is checked, and where:

* Each hop, before any network activity (``_check_url``): the scheme is http or https; the URL
  has no userinfo (``user:pass@host`` is refused: an image URL never needs it, it is the classic
  way to confuse URL parsers, and httpx would send it as credentials); the port is 80 or 443; the
  host is not a local-only name (``localhost``, ``*.localhost``, ``*.local``, ``*.internal``,
  ``*.home.arpa``) nor an IPv4 address in a notation resolvers accept but people do not
  recognise (``2130706433``, ``0x7f.0.0.1``, ``127.1``).
* At connect time, in the HTTP client's network backend (``_GuardedBackend.connect_tcp``): the
  host is resolved there, every address must pass ``is_forbidden_address``, the socket connects
  to one of those checked addresses (no second lookup), and ``getpeername()`` must equal it.
  This is the check that matters. Every connection of every hop goes through it, so DNS
  rebinding (public when someone checked, private when we connect) and redirects into the
  network are refused. TLS is still verified against the URL's host name (SNI and certificate),
  because only the TCP connect is replaced.
* Hosts in ``allow_hosts`` (trusted internal hosts, ``orchestrator.images.allow``) skip the
  name and address checks on the port their entry names (bare: 80 and 443), not the limits.
* Limits: at most ``max_redirects`` redirects; ``max_bytes`` (Content-Length first, then the
  streamed body); ``timeout`` is one deadline for the whole fetch, applied to every connect,
  read and write, so a server that trickles bytes is cut off.
* The body must start with a PNG, JPEG, WebP, GIF, BMP or TIFF signature.

Proxy settings from the environment are ignored (``trust_env=False``), because a proxy would do
the connecting and the address check would then see only the proxy.
The lookup itself (``getaddrinfo``) has no timeout and is not bounded by the deadline; the system
resolver's own timeouts apply.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Iterable

import httpcore
import httpx

from orchestrator.errors import CorruptImage, FetchFailed, InputTooLarge, InputUnreachable
from orchestrator.images.allow import AllowList

log = logging.getLogger("orchestrator.images.fetch")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# 408, 425 and 429 may pass, as may 5xx; every other non-2xx answer is taken as final.
_TRANSIENT_STATUSES = frozenset({408, 425, 429})
_PUBLIC_PORTS = frozenset({80, 443})
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain"})
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")
_HEADERS = {"Accept": "image/*", "Accept-Encoding": "identity"}
_NAME_NOT_FOUND = frozenset({socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)})

_SNIFF_BYTES = 12
_IMAGE_SIGNATURES = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"GIF87a",
    b"GIF89a",
    b"BM",  # BMP
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
)


def _nets(*pairs: tuple[str, str]) -> tuple[tuple[_Network, str], ...]:
    return tuple((ipaddress.ip_network(net), reason) for net, reason in pairs)


_PRIVATE = "a private address"
_DOCUMENTATION = "a documentation address"
_MULTICAST = "a multicast address"

# An explicit list next to ``is_global``: ipaddress misses some of these (100.64/10, multicast,
# 3fff::/20, and on Python 3.11 the NAT64 and 6to4 encodings of private addresses).
_IPV4_DENIED = _nets(
    ("0.0.0.0/8", "an unspecified ('this network') address"),
    ("10.0.0.0/8", _PRIVATE),
    ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address (cloud metadata services live here)"),
    ("172.16.0.0/12", _PRIVATE),
    ("192.0.0.0/24", "an IETF protocol-assignment address"),
    ("192.0.2.0/24", _DOCUMENTATION),
    ("192.88.99.0/24", "a 6to4 relay anycast address"),
    ("192.168.0.0/16", _PRIVATE),
    ("198.18.0.0/15", "a benchmarking address"),
    ("198.51.100.0/24", _DOCUMENTATION),
    ("203.0.113.0/24", _DOCUMENTATION),
    ("224.0.0.0/4", _MULTICAST),
    ("255.255.255.255/32", "the broadcast address"),
    ("240.0.0.0/4", "a reserved address"),
)
_IPV6_UNSPECIFIED_OR_LOOPBACK = _nets(
    ("::/128", "the unspecified address"),
    ("::1/128", "a loopback address"),
)
_IPV6_DENIED = _nets(
    ("::/96", "a deprecated IPv4-compatible address"),
    ("::ffff:0:0:0/96", "an IPv4-translated address"),
    ("64:ff9b:1::/48", "a local-use NAT64 address"),
    ("100::/64", "a discard-only address"),
    ("2001::/23", "an IETF protocol-assignment address (Teredo, benchmarking, ...)"),
    ("2001:db8::/32", _DOCUMENTATION),
    ("3fff::/20", _DOCUMENTATION),
    ("5f00::/16", "an SRv6 segment identifier"),
    ("fc00::/7", "a private (unique local) address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a deprecated site-local address"),
    ("ff00::/8", _MULTICAST),
)
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address carries, with the name of the encoding."""
    if addr.ipv4_mapped is not None:
        return "an IPv4-mapped", addr.ipv4_mapped
    low32 = ipaddress.IPv4Address(int(addr) & 0xFFFF_FFFF)
    if addr in _IPV4_COMPATIBLE:
        return "an IPv4-compatible", low32
    if addr in _NAT64 or addr in _NAT64_LOCAL:
        return "a NAT64", low32
    if addr.sixtofour is not None:
        return "a 6to4", addr.sixtofour
    if addr.teredo is not None:
        return "a Teredo", addr.teredo[1]  # the client address, de-obfuscated
    return None


def is_forbidden_address(addr: IPAddress) -> str | None:
    """Why ``addr`` must not be connected to ("a loopback address"), or None if it is public."""
    if isinstance(addr, ipaddress.IPv4Address):
        for net, reason in _IPV4_DENIED:
            if addr in net:
                return reason
        return None if addr.is_global else "not a publicly routable address"

    for net, reason in _IPV6_UNSPECIFIED_OR_LOOPBACK:
        if addr in net:
            return reason
    embedded = _embedded_ipv4(addr)
    if embedded is not None:
        encoding, ipv4 = embedded
        inner = is_forbidden_address(ipv4)
        if inner is not None:
            return f"{encoding} encoding of {ipv4}, {inner}"
        if addr.ipv4_mapped is not None or addr in _NAT64:
            return None  # the packets go to that public IPv4 address
    for net, reason in _IPV6_DENIED:
        if addr in net:
            return reason
    if addr not in _GLOBAL_UNICAST:
        return "outside the global unicast range 2000::/3"
    return None if addr.is_global else "not a publicly routable address"


def _ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")


def _normalise_host(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


def _time_left(deadline: float, timeout: float | None, expired: type[Exception]) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the fetch's deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """Caps every socket wait at the time left before the fetch's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        left = _time_left(self._deadline, timeout, httpcore.ReadTimeout)
        return self._inner.read(max_bytes, left)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _time_left(self._deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        try:
            left = _time_left(self._deadline, timeout, httpcore.ConnectTimeout)
        except httpcore.ConnectTimeout:
            self._inner.close()  # httpcore does not close the plain stream when this fails
            raise
        return _DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, left), self._deadline
        )

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


def _refused(host: str, detail: str) -> InputUnreachable:
    """One message for "no such name" and "an internal address": the caller (a tenant) must not
    learn which internal names exist or where they point. The detail goes to the log."""
    log.warning("fetch refused: %s", detail)
    return InputUnreachable(
        f"the URL's host {host!r} cannot be reached from this service "
        "(only public addresses are fetched); refused"
    )


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in _NAME_NOT_FOUND:
            raise _refused(host, f"the URL's host {host!r} does not resolve") from None
        raise FetchFailed(f"looking up the URL's host {host!r} failed ({exc})") from None
    return list(dict.fromkeys(_ip(str(info[4][0])) for info in infos))


def _refuse_if_forbidden(host: str, addr: IPAddress) -> None:
    reason = is_forbidden_address(addr)
    if reason is not None:
        raise _refused(host, f"the URL's host {host!r} resolves to {addr}, {reason}")


class _GuardedBackend(httpcore.NetworkBackend):
    """Resolves the host itself, so the address it checks is the address it connects to."""

    def __init__(self, allow_hosts: AllowList, deadline: float) -> None:
        self._allow_hosts = allow_hosts
        self._deadline = deadline
        self._plain = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        trusted = self._allow_hosts.trusts(host, port)
        addresses = _resolve(host, port)
        if not trusted:
            for addr in addresses:  # one bad address is enough: the OS may pick any of them
                _refuse_if_forbidden(host, addr)
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for addr in addresses:
            left = _time_left(self._deadline, timeout, httpcore.ConnectTimeout)
            try:
                # An IP literal: the plain backend's own getaddrinfo cannot resolve it elsewhere.
                stream = self._plain.connect_tcp(
                    str(addr), port, left, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            peer = _ip(str(stream.get_extra_info("server_addr")[0]))
            if peer != addr:
                stream.close()
                raise _refused(host, f"the connection to {host!r} reached {peer}, not the checked {addr}")
            return _DeadlineStream(stream, self._deadline)
        if failure is None:
            raise httpcore.ConnectError(f"{host!r} resolves to no address")
        raise failure


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def _client(
    allow_hosts: AllowList, deadline: float, timeout: float, ssl_context: ssl.SSLContext
) -> httpx.Client:
    transport = httpx.HTTPTransport(verify=ssl_context, trust_env=False)
    # httpx 0.28 has no network_backend option, so the pool it built (idle, nothing to close)
    # is swapped for one that connects through the guard. HTTP/1.1 only, no connect retries.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=ssl_context,
        retries=0,
        network_backend=_GuardedBackend(allow_hosts, deadline),
    )
    return httpx.Client(
        transport=transport, trust_env=False, follow_redirects=False, timeout=timeout
    )


def _parse(text: str, base: httpx.URL | None = None) -> httpx.URL:
    try:
        return base.join(text) if base is not None else httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise InputUnreachable(f"the URL is not valid: {exc}") from None


def _shown(url: httpx.URL) -> str:
    """The URL for messages, without query and fragment (signed URLs carry secrets there)."""
    return f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}"


def _nonstandard_ipv4(host: str) -> ipaddress.IPv4Address | None:
    try:
        packed = socket.inet_aton(host)
    except OSError:
        return None
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return ipaddress.IPv4Address(packed)
    return None


def _check_url(url: httpx.URL, allow_hosts: AllowList) -> None:
    if url.scheme not in ("http", "https"):
        raise InputUnreachable(f"only http and https URLs can be fetched, not {url.scheme!r}")
    if url.userinfo:
        raise InputUnreachable("URLs with a user name or password (user@host) are refused")
    host = _normalise_host(url.raw_host.decode("ascii"))
    if not host:
        raise InputUnreachable("the URL has no host")
    if allow_hosts.trusts(host, url.port or (443 if url.scheme == "https" else 80)):
        return
    if url.port is not None and url.port not in _PUBLIC_PORTS:
        raise InputUnreachable(f"the URL's port {url.port} is not 80 or 443; refused")
    if host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES):
        raise InputUnreachable(f"the URL's host {host!r} is a local-only name; refused")
    odd = _nonstandard_ipv4(host)
    if odd is not None:
        raise InputUnreachable(
            f"the URL's host {host!r} is the IPv4 address {odd} in a non-standard notation; refused"
        )


def _check_status(response: httpx.Response, shown: str) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    message = f"fetching {shown} failed with HTTP {status} {response.reason_phrase}".rstrip()
    if status in _TRANSIENT_STATUSES or status >= 500:
        raise FetchFailed(message)
    raise InputUnreachable(message)


def _check_signature(body: bytearray, shown: str) -> None:
    head = bytes(body[:_SNIFF_BYTES])
    if head.startswith(_IMAGE_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return
    if not body:
        raise CorruptImage(f"the URL {shown} returned an empty body, not an image")
    start = bytes(body[:16]).decode("latin-1")
    raise CorruptImage(f"the URL {shown} did not return an image (it starts with {start!r}…)")


def _read_image(response: httpx.Response, max_bytes: int, shown: str) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise InputTooLarge(
            f"the URL's content is {int(declared)} bytes, over the limit of {max_bytes}"
        )
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise InputTooLarge(f"the URL's content is over the limit of {max_bytes} bytes")
        if len(body) >= _SNIFF_BYTES:
            _check_signature(body, shown)  # refuse an HTML page without reading all of it
    _check_signature(body, shown)
    return bytes(body)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def fetch_url(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    max_redirects: int,
    allow_hosts: frozenset[str] = frozenset(),
    ssl_context: ssl.SSLContext | None = None,
) -> bytes:
    """Fetch the image at ``url``, with the checks and limits above; return its bytes.

    ``allow_hosts`` holds ``host``, ``host:port`` or ``host:*`` entries (host names in their
    xn-- form for IDNs, or IP literals); see orchestrator.images.allow.
    ``ssl_context`` replaces the default CA trust (certifi), e.g. for an internal CA.
    Raises InputUnreachable (refused, invalid, or an HTTP status that will not change),
    FetchFailed (network errors, the deadline, HTTP 408/425/429/5xx), InputTooLarge, or
    CorruptImage (the body is not an image).
    """
    trusted = AllowList(allow_hosts)
    deadline = time.monotonic() + timeout
    first = current = _parse(url)
    context = ssl_context if ssl_context is not None else _default_ssl_context()
    with _client(trusted, deadline, timeout, context) as client:
        for _ in range(max_redirects + 1):
            _check_url(current, trusted)
            shown = _shown(current)
            try:
                with client.stream("GET", current, headers=_HEADERS) as response:
                    if response.is_redirect:
                        current = _parse(response.headers["location"], base=current)
                        continue
                    _check_status(response, shown)
                    return _read_image(response, max_bytes, shown)
            except httpx.TimeoutException:
                raise FetchFailed(f"fetching {shown} took longer than {timeout:g} s") from None
            except httpx.RequestError as exc:
                if _caused_by(exc, ssl.SSLCertVerificationError):
                    raise InputUnreachable(
                        f"the TLS certificate of {shown} was not accepted: {exc}"
                    ) from None
                raise FetchFailed(f"fetching {shown} failed: {exc}") from None
    raise InputUnreachable(f"{_shown(first)} redirects more than {max_redirects} times")


def post_json(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    allow_hosts: frozenset[str] = frozenset(),
) -> int:
    """POST ``body`` to ``url`` under the same address checks (webhooks are user URLs too);
    redirects are not followed. Returns the status code; raises InputUnreachable or FetchFailed."""
    trusted = AllowList(allow_hosts)
    target = _parse(url)
    _check_url(target, trusted)
    with _client(trusted, time.monotonic() + timeout, timeout, _default_ssl_context()) as client:
        try:
            return client.post(target, content=body, headers=headers).status_code
        except httpx.TimeoutException:
            raise FetchFailed(f"posting to {_shown(target)} took longer than {timeout:g} s") from None
        except httpx.RequestError as exc:
            raise FetchFailed(f"posting to {_shown(target)} failed: {exc}") from None
