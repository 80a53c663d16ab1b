"""The SSRF-safe fetcher: refused URLs never connect; allowed ones keep their limits.

Everything listens on loopback. A refused case is checked three ways: the error type, a spy on
``socket.socket.connect`` (no connection was even attempted), and canary listeners that never
accept (a connection that reached one waits in its backlog and is counted afterwards).
Host names other than ``localhost`` go through a fake resolver, so no test depends on real DNS.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trustme
from PIL import Image

from orchestrator.errors import (
    CorruptImage,
    FetchFailed,
    InputTooLarge,
    InputUnreachable,
    OrchestratorError,
)
from orchestrator.images import fetch as safe_fetch
from orchestrator.images.fetch import fetch_url, is_forbidden_address
from tests.support.images import png_of

LOCAL = frozenset({"127.0.0.1:*"})  # test servers listen on random ports
LIMITS: dict[str, Any] = {"max_bytes": 1_000_000, "timeout": 3.0, "max_redirects": 3}


PNG = png_of(Image.new("RGB", (7, 5), (200, 30, 90)))


# --- fake DNS, connect spy, canaries -------------------------------------------------------------


class FakeDNS:
    """socket.getaddrinfo for the names in ``answers``; one answer per call, the last repeats."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.answers: dict[str, list[list[str] | socket.gaierror]] = {}
        self.calls: list[str] = []

    def __call__(
        self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> Any:
        name = host.rstrip(".").lower() if isinstance(host, str) else host
        if name not in self.answers:
            return self.real(host, port, family, type, proto, flags)
        self.calls.append(name)
        sequence = self.answers[name]
        answer = sequence[min(self.calls.count(name), len(sequence)) - 1]
        if isinstance(answer, socket.gaierror):
            raise answer
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port, 0, 0))
            if ":" in ip
            else (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port))
            for ip in answer
        ]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    fake = FakeDNS(socket.getaddrinfo)
    fake.answers.update(
        {
            "evil.example": [["127.0.0.1"]],
            "evil6.example": [["::1"]],
            "mixed.example": [["93.184.216.34", "127.0.0.1"]],  # one public record, one not
            "images.example": [["127.0.0.1"]],
        }
    )
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    real = socket.socket.connect

    def spy(self: socket.socket, address: Any) -> None:
        seen.append(address[:2])
        real(self, address)

    monkeypatch.setattr(socket.socket, "connect", spy)
    return seen


class Canary:
    """A loopback listener that never accepts; connections that reached it stay queued."""

    def __init__(self, family: socket.AddressFamily, host: str) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.bind((host, 0))
        except OSError:
            self.sock.close()
            raise
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]

    def connections(self) -> int:
        self.sock.setblocking(False)
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


class Canaries:
    def __init__(self) -> None:
        self.v4 = Canary(socket.AF_INET, "127.0.0.1")
        try:
            self.v6: Canary | None = Canary(socket.AF_INET6, "::1")
        except OSError:  # no IPv6 loopback here; the connect spy still sees any attempt
            self.v6 = None

    def fill(self, url: str) -> str:
        return url.format(p4=self.v4.port, p6=self.v6.port if self.v6 else self.v4.port)

    def connections(self) -> int:
        return self.v4.connections() + (self.v6.connections() if self.v6 else 0)

    def close(self) -> None:
        self.v4.sock.close()
        if self.v6:
            self.v6.sock.close()


@pytest.fixture
def canaries() -> Iterator[Canaries]:
    c = Canaries()
    yield c
    c.close()


def test_a_canary_counts_the_connections_that_reach_it(canaries: Canaries) -> None:
    with socket.create_connection(("127.0.0.1", canaries.v4.port)):
        pass
    assert canaries.connections() == 1
    assert canaries.connections() == 0


def connect_time_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Turn off the name, port and notation pre-checks: only the connect-time guard is left."""
    monkeypatch.setattr(safe_fetch, "_check_url", lambda url, allow_hosts: None)


# --- a small HTTP server -------------------------------------------------------------------------

Route = Callable[["Handler"], None]


class Server(ThreadingHTTPServer):
    routes: dict[str, Route]
    hits: list[str]
    stop: threading.Event

    def url(self, path: str = "/", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.server_address[1]}{path}"

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that give up mid-body are the point of several tests


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5
    server: Server

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        route = self.server.routes.get(self.path.split("?")[0])
        if route is None:
            send(self, 404, b"not found")
        else:
            route(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def send(h: Handler, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
    h.send_response(status)
    headers = headers or {}
    for name, value in headers.items():
        h.send_header(name, value)
    if "Content-Length" not in headers:
        h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def reply(status: int, body: bytes = b"", **headers: str) -> Route:
    return lambda h: send(h, status, body, {k.replace("_", "-"): v for k, v in headers.items()})


def redirect(location: str, status: int = 302) -> Route:
    return lambda h: send(h, status, b"", {"Location": location})


def chunked(pieces: list[bytes]) -> Route:
    def route(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        try:
            for piece in pieces:
                h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            h.wfile.write(b"0\r\n\r\n")
        except OSError:
            h.close_connection = True

    return route


def trickle(h: Handler) -> None:
    """A PNG that arrives one byte every 0.1 s: each read is quick, the whole is not."""
    send(h, 200, PNG[:8], {"Content-Length": "1000"})
    for _ in range(100):
        if h.server.stop.wait(0.1):
            break
        try:
            h.wfile.write(b"\x00")
        except OSError:
            break
    h.close_connection = True


def late_then_silent(h: Handler) -> None:
    """Headers after 0.7 s, then nothing: only a deadline inside the read can stop this early."""
    if not h.server.stop.wait(0.7):
        send(h, 200, PNG[:8], {"Content-Length": "1000"})
        h.server.stop.wait(10)
    h.close_connection = True


def hang(h: Handler) -> None:
    h.server.stop.wait(10)
    h.close_connection = True


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    started: list[tuple[Server, threading.Thread]] = []

    def start(routes: dict[str, Route], tls: ssl.SSLContext | None = None) -> Server:
        server = Server(("127.0.0.1", 0), Handler)
        server.routes, server.hits, server.stop = routes, [], threading.Event()
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- is_forbidden_address ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("10.1.2.3", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "shared"),
        ("100.100.100.200", "shared"),  # Alibaba Cloud metadata
        ("198.18.0.1", "benchmarking"),
        ("192.0.2.10", "documentation"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.9", "documentation"),
        ("192.0.0.9", "protocol-assignment"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "IPv4-mapped encoding of 127.0.0.1, a loopback"),
        ("::ffff:169.254.169.254", "IPv4-mapped encoding of 169.254.169.254, a link-local"),
        ("::127.0.0.1", "IPv4-compatible encoding of 127.0.0.1"),
        ("::8.8.8.8", "deprecated IPv4-compatible"),
        ("::ffff:0:7f00:1", "IPv4-translated"),
        ("64:ff9b::7f00:1", "NAT64 encoding of 127.0.0.1, a loopback"),
        ("64:ff9b::a9fe:a9fe", "NAT64 encoding of 169.254.169.254"),
        ("64:ff9b:1::a00:1", "NAT64 encoding of 10.0.0.1, a private"),
        ("64:ff9b:1::808:808", "local-use NAT64"),
        ("2002:7f00:1::", "6to4 encoding of 127.0.0.1, a loopback"),
        ("2002:a9fe:a9fe::1", "6to4 encoding of 169.254.169.254"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo encoding of 127.0.0.1"),
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "protocol-assignment"),
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fd00:ec2::254", "private"),  # AWS metadata over IPv6
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("100::1", "discard-only"),
        ("4000::1", "outside the global unicast range"),
    ],
)
def test_non_public_addresses_are_forbidden_with_a_reason(address: str, reason: str) -> None:
    found = is_forbidden_address(ipaddress.ip_address(address))
    assert found is not None and reason in found


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "2606:4700:4700::1111",
        "2a00:1450:4001:80b::200e",
        "::ffff:8.8.8.8",  # IPv4-mapped public: the same host as 8.8.8.8
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8, as DNS64 hands out on IPv6-only networks
        "2002:808:808::1",  # 6to4 of 8.8.8.8
    ],
)
def test_public_addresses_pass(address: str) -> None:
    assert is_forbidden_address(ipaddress.ip_address(address)) is None


# --- the SSRF matrix -----------------------------------------------------------------------------

REFUSED = [
    "http://127.0.0.1:{p4}/",
    "http://127.0.0.1/",
    "http://localhost:{p4}/",
    "http://localhost/",
    "http://localhost./",
    "http://images.localhost/",
    "http://0.0.0.0:{p4}/",
    "http://0.0.0.0/",
    "http://0/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://0x7f.0.0.1/",
    "http://0x7f000001/",
    "http://127.1/",
    "http://[::1]:{p6}/",
    "http://[::1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[64:ff9b:1::a00:1]/",
    "http://[2002:7f00:1::]/",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://10.0.0.1/",
    "http://192.168.1.1/",
    "http://172.16.0.1/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://198.18.0.1/",
    "http://[fd00::1]/",
    "http://evil.example/",
    "http://evil.example:{p4}/",
    "http://evil6.example/",
    "http://mixed.example/",
    "http://user:secret@images.example.com/a.png",
    "http://images.example.com@127.0.0.1:{p4}/",
    "http://images.example.com:6379/",
    "http://images.example.com:22/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:{p4}/_",
    "ftp://images.example.com/a.png",
    "dict://127.0.0.1:{p4}/",
]

# The same kind of targets with the URL pre-checks switched off: the connect-time guard alone.
REFUSED_AT_CONNECT = [
    "http://127.0.0.1:{p4}/",
    "http://localhost:{p4}/",
    "http://0.0.0.0:{p4}/",
    "http://0:{p4}/",
    "http://2130706433:{p4}/",
    "http://0x7f.0.0.1:{p4}/",
    "http://127.1:{p4}/",
    "http://[::1]:{p6}/",
    "http://[::]:{p6}/",
    "http://[::ffff:127.0.0.1]:{p4}/",
    "http://[::ffff:7f00:1]:{p4}/",
    "http://[::127.0.0.1]:{p4}/",
    "http://[64:ff9b::7f00:1]:{p4}/",
    "http://[2002:7f00:1::]:{p4}/",
    "http://169.254.169.254:{p4}/",
    "http://10.0.0.1:{p4}/",
    "http://[fe80::1]:{p4}/",
    "http://evil.example:{p4}/",
    "http://evil6.example:{p6}/",
    "http://mixed.example:{p4}/",
]


def _assert_refused_without_connecting(
    url: str, canaries: Canaries, connects: list[Any], **kwargs: Any
) -> InputUnreachable:
    try:
        fetch_url(canaries.fill(url), **(LIMITS | kwargs))
    except OrchestratorError as exc:  # anything else fails the test on its own
        error = exc
    else:
        pytest.fail(f"{url} was fetched")
    assert canaries.connections() == 0, "a connection reached a loopback canary"
    assert connects == []
    assert isinstance(error, InputUnreachable), repr(error)
    return error


@pytest.mark.parametrize("url", REFUSED)
def test_ssrf_matrix_is_refused_before_any_connection(
    url: str, dns: FakeDNS, connects: list[Any], canaries: Canaries
) -> None:
    _assert_refused_without_connecting(url, canaries, connects)


@pytest.mark.parametrize("url", REFUSED_AT_CONNECT)
def test_connect_time_guard_alone_refuses_internal_addresses(
    url: str,
    dns: FakeDNS,
    connects: list[Any],
    canaries: Canaries,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connect_time_only(monkeypatch)
    error = _assert_refused_without_connecting(url, canaries, connects)
    assert "refused" in str(error)


def test_refusal_is_generic_and_the_log_says_what_the_host_resolved_to(
    dns: FakeDNS, caplog: pytest.LogCaptureFixture
) -> None:
    """A tenant must not learn which internal names exist or where they point (issue 14.5)."""
    generic = ("the URL's host {!r} cannot be reached from this service "
               "(only public addresses are fetched); refused")
    dns.answers["gone.example"] = [socket.gaierror(socket.EAI_NONAME, "Name or service not known")]
    with pytest.raises(InputUnreachable) as refused:
        fetch_url("http://evil.example/x.png", **LIMITS)
    assert str(refused.value) == generic.format("evil.example")
    with pytest.raises(InputUnreachable) as missing:
        fetch_url("http://gone.example/x.png", **LIMITS)
    assert str(missing.value) == generic.format("gone.example")
    with pytest.raises(InputUnreachable) as nat64:
        fetch_url("http://[64:ff9b::7f00:1]/", **LIMITS)
    assert "127.0.0.1" not in str(nat64.value) and "loopback" not in str(nat64.value)
    assert "'evil.example' resolves to 127.0.0.1, a loopback address" in caplog.text
    assert "'gone.example' does not resolve" in caplog.text
    assert "NAT64 encoding of 127.0.0.1, a loopback" in caplog.text


@pytest.mark.parametrize("mode", ["all checks", "connect-time only"])
def test_dns_rebinding_is_refused(
    mode: str,
    caplog: pytest.LogCaptureFixture,
    dns: FakeDNS,
    connects: list[Any],
    canaries: Canaries,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The attacker's DNS answers a public address first, then 127.0.0.1 (TTL 0).

    The first lookup is the one a check-then-connect fetcher would validate; it is made here,
    as such a validator would. The fetcher's own lookup, at connect time, gets 127.0.0.1.
    """
    if mode == "connect-time only":
        connect_time_only(monkeypatch)
    dns.answers["rebind.example"] = [["93.184.216.34"], ["127.0.0.1"]]
    first = socket.getaddrinfo("rebind.example", 80, type=socket.SOCK_STREAM)
    assert first[0][4][0] == "93.184.216.34"

    port = ":{p4}" if mode == "connect-time only" else ""
    with caplog.at_level(logging.WARNING, "orchestrator.images.fetch"):
        error = _assert_refused_without_connecting(
            f"http://rebind.example{port}/", canaries, connects
        )
    assert "refused" in str(error)
    assert "resolves to 127.0.0.1" in caplog.text
    assert dns.calls == ["rebind.example", "rebind.example"]


def test_connects_to_the_address_it_checked_without_a_second_lookup(
    dns: FakeDNS, connects: list[Any], serve: Callable[..., Server]
) -> None:
    server = serve({"/a.png": reply(200, PNG)})
    # A second lookup would get an address nobody answers on.
    dns.answers["pinned.example"] = [["127.0.0.1"], ["10.255.255.1"]]
    url = server.url("/a.png", host="pinned.example")
    assert fetch_url(url, **LIMITS, allow_hosts=frozenset({"pinned.example:*"})) == PNG
    assert dns.calls == ["pinned.example"]
    assert connects == [("127.0.0.1", server.port)]


REDIRECT_TARGETS = [
    "http://127.0.0.1:{p4}/",
    "http://127.0.0.1/",
    "http://[::1]:{p6}/",
    "http://localhost/",
    "//127.0.0.1/x.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://evil.example/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:{p4}/_",
]


# Without the URL check a non-http scheme would be httpx's to refuse, so those run once.
@pytest.mark.parametrize(
    ("mode", "target"),
    [("all checks", target) for target in REDIRECT_TARGETS]
    + [("connect-time only", t) for t in REDIRECT_TARGETS if t.startswith(("http:", "//"))],
)
def test_a_redirect_into_the_network_is_refused(
    target: str,
    mode: str,
    dns: FakeDNS,
    connects: list[Any],
    canaries: Canaries,
    serve: Callable[..., Server],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if mode == "connect-time only":
        connect_time_only(monkeypatch)
    server = serve({"/go": redirect(canaries.fill(target))})
    with pytest.raises(InputUnreachable):
        fetch_url(
            server.url("/go", host="images.example"),
            **LIMITS,
            allow_hosts=frozenset({"images.example:*"}),
        )
    assert server.hits == ["/go"]
    assert connects == [("127.0.0.1", server.port)]  # only the allow-listed first hop
    assert canaries.connections() == 0


def test_proxy_settings_in_the_environment_are_ignored(
    monkeypatch: pytest.MonkeyPatch, canaries: Canaries, serve: Callable[..., Server]
) -> None:
    proxy = canaries.fill("http://127.0.0.1:{p4}")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    server = serve({"/a.png": reply(200, PNG)})
    assert fetch_url(server.url("/a.png"), **LIMITS, allow_hosts=LOCAL) == PNG
    with pytest.raises(InputUnreachable):
        fetch_url("http://10.0.0.1/", **LIMITS)
    assert canaries.connections() == 0


# --- allowed fetches and their limits ------------------------------------------------------------


def test_png_is_returned_byte_for_byte(serve: Callable[..., Server]) -> None:
    server = serve({"/a.png": reply(200, PNG, Content_Type="image/png")})
    assert fetch_url(server.url("/a.png"), **LIMITS, allow_hosts=LOCAL) == PNG


@pytest.mark.parametrize(
    "head",
    [
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
        b"RIFF\x24\x00\x00\x00WEBPVP8 ",
        b"GIF89a\x01\x00\x01\x00",
        b"GIF87a\x01\x00\x01\x00",
        b"BM\x3a\x00\x00\x00\x00\x00",
        b"II*\x00\x08\x00\x00\x00",
        b"MM\x00*\x00\x00\x00\x08",
    ],
)
def test_every_accepted_signature_passes(head: bytes, serve: Callable[..., Server]) -> None:
    body = head + b"\x00" * 64
    server = serve({"/i": reply(200, body)})
    assert fetch_url(server.url("/i"), **LIMITS, allow_hosts=LOCAL) == body


def test_allow_hosts_entries_are_matched_case_and_dot_insensitively(
    dns: FakeDNS, serve: Callable[..., Server]
) -> None:
    server = serve({"/a.png": reply(200, PNG)})
    url = server.url("/a.png", host="images.example.")
    assert fetch_url(url, **LIMITS, allow_hosts=frozenset({"Images.Example:*"})) == PNG


def test_a_redirect_chain_within_the_limit_is_followed(serve: Callable[..., Server]) -> None:
    server = serve({})
    server.routes.update(
        {
            "/r3": redirect(server.url("/r2")),  # absolute
            "/r2": redirect("/dir/r1", status=301),  # absolute path
            "/dir/r1": redirect("../a.png", status=307),  # relative
            "/a.png": reply(200, PNG),
        }
    )
    assert fetch_url(server.url("/r3"), **LIMITS, allow_hosts=LOCAL) == PNG
    assert server.hits == ["/r3", "/r2", "/dir/r1", "/a.png"]


def test_a_redirect_chain_over_the_limit_is_refused(serve: Callable[..., Server]) -> None:
    server = serve({"/r3": redirect("/r2"), "/r2": redirect("/r1"), "/r1": redirect("/a.png")})
    server.routes["/a.png"] = reply(200, PNG)
    with pytest.raises(InputUnreachable, match="redirects more than 2 times"):
        fetch_url(server.url("/r3"), **(LIMITS | {"max_redirects": 2}), allow_hosts=LOCAL)
    assert server.hits == ["/r3", "/r2", "/r1"]


def test_a_redirect_loop_is_refused(serve: Callable[..., Server]) -> None:
    server = serve({"/loop": redirect("/loop")})
    with pytest.raises(InputUnreachable, match="redirects more than 3 times"):
        fetch_url(server.url("/loop"), **LIMITS, allow_hosts=LOCAL)
    assert len(server.hits) == 4


def test_content_length_over_the_limit_is_refused_before_the_body(
    serve: Callable[..., Server],
) -> None:
    server = serve({"/big.png": reply(200, PNG + b"\x00" * 20_000)})
    with pytest.raises(InputTooLarge, match=r"is \d+ bytes, over the limit of 10000$"):
        fetch_url(server.url("/big.png"), **(LIMITS | {"max_bytes": 10_000}), allow_hosts=LOCAL)


def test_a_chunked_body_over_the_limit_is_refused(serve: Callable[..., Server]) -> None:
    server = serve({"/big.png": chunked([PNG[:8]] + [b"\x00" * 1024] * 40)})
    with pytest.raises(InputTooLarge, match="over the limit of 10000 bytes"):
        fetch_url(server.url("/big.png"), **(LIMITS | {"max_bytes": 10_000}), allow_hosts=LOCAL)


def test_a_chunked_body_within_the_limit_is_accepted(serve: Callable[..., Server]) -> None:
    server = serve({"/a.png": chunked([PNG[:10], PNG[10:]])})
    assert fetch_url(server.url("/a.png"), **LIMITS, allow_hosts=LOCAL) == PNG


def test_an_html_page_is_not_an_image(serve: Callable[..., Server]) -> None:
    page = b"<!DOCTYPE html><html><body>" + b"x" * 50_000 + b"</body></html>"
    server = serve({"/a.png": reply(200, page, Content_Type="image/png")})
    with pytest.raises(CorruptImage) as refused:
        fetch_url(server.url("/a.png"), **LIMITS, allow_hosts=LOCAL)
    assert "did not return an image (it starts with '<!DOCTYPE html><'…)" in str(refused.value)


def test_an_empty_body_is_not_an_image(serve: Callable[..., Server]) -> None:
    server = serve({"/a.png": reply(200, b"")})
    with pytest.raises(CorruptImage, match="empty body"):
        fetch_url(server.url("/a.png"), **LIMITS, allow_hosts=LOCAL)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 406, 410, 414, 415, 418, 451])
def test_final_4xx_statuses_are_permanent(status: int, serve: Callable[..., Server]) -> None:
    server = serve({"/a.png": reply(status, b"no")})
    with pytest.raises(InputUnreachable, match=f"HTTP {status}"):
        fetch_url(server.url("/a.png"), **LIMITS, allow_hosts=LOCAL)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retryable(status: int, serve: Callable[..., Server]) -> None:
    server = serve({"/a.png": reply(status, b"later")})
    with pytest.raises(FetchFailed, match=f"HTTP {status}"):
        fetch_url(server.url("/a.png"), **LIMITS, allow_hosts=LOCAL)


def test_messages_leave_out_the_query_string(serve: Callable[..., Server]) -> None:
    server = serve({})
    with pytest.raises(InputUnreachable) as refused:
        url = server.url("/a.png?X-Amz-Signature=SECRET#frag")
        fetch_url(url, **LIMITS, allow_hosts=LOCAL)
    assert "SECRET" not in str(refused.value) and "/a.png" in str(refused.value)


@pytest.mark.parametrize(
    "route",
    [trickle, late_then_silent, hang],
    ids=["trickling body", "late then silent", "no response"],
)
def test_the_timeout_is_a_deadline_for_the_whole_fetch(
    route: Route, serve: Callable[..., Server]
) -> None:
    server = serve({"/slow.png": route})
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="took longer than 1 s"):
        fetch_url(server.url("/slow.png"), **(LIMITS | {"timeout": 1.0}), allow_hosts=LOCAL)
    assert time.monotonic() - started < 1.5


def test_a_refused_connection_is_transient(canaries: Canaries) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(FetchFailed):
        fetch_url(f"http://127.0.0.1:{port}/a.png", **LIMITS, allow_hosts=LOCAL)


def test_lookup_failures_are_permanent_or_transient_by_kind(dns: FakeDNS) -> None:
    dns.answers["gone.example"] = [socket.gaierror(socket.EAI_NONAME, "Name or service not known")]
    dns.answers["flaky.example"] = [socket.gaierror(socket.EAI_AGAIN, "Temporary failure")]
    with pytest.raises(InputUnreachable, match="cannot be reached from this service"):
        fetch_url("http://gone.example/a.png", **LIMITS)
    with pytest.raises(FetchFailed, match="Temporary failure"):
        fetch_url("http://flaky.example/a.png", **LIMITS)


# --- HTTPS: the certificate is checked against the URL's host name -------------------------------


@pytest.fixture
def tls_server(serve: Callable[..., Server]) -> Iterator[tuple[Server, ssl.SSLContext, list[str]]]:
    ca = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("images.test").configure_cert(server_context)
    sni: list[str] = []

    def record_sni(sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        sni.append(name or "")

    server_context.sni_callback = record_sni
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    yield serve({"/a.png": reply(200, PNG)}, tls=server_context), client_context, sni


def test_https_verifies_the_host_name_while_connecting_to_the_checked_ip(
    dns: FakeDNS,
    connects: list[Any],
    tls_server: tuple[Server, ssl.SSLContext, list[str]],
) -> None:
    server, trust, sni = tls_server
    dns.answers["images.test"] = [["127.0.0.1"]]
    url = server.url("/a.png", host="images.test", scheme="https")
    got = fetch_url(url, **LIMITS, allow_hosts=frozenset({"images.test:*"}), ssl_context=trust)
    assert got == PNG
    assert sni == ["images.test"]
    assert connects == [("127.0.0.1", server.port)]


@pytest.mark.parametrize("host", ["127.0.0.1", "other.test"])
def test_https_refuses_a_certificate_for_another_name(
    host: str, dns: FakeDNS, tls_server: tuple[Server, ssl.SSLContext, list[str]]
) -> None:
    server, trust, _ = tls_server
    dns.answers["other.test"] = [["127.0.0.1"]]
    url = server.url("/a.png", host=host, scheme="https")
    with pytest.raises(InputUnreachable, match="certificate"):
        fetch_url(url, **LIMITS, allow_hosts=frozenset({f"{host}:*"}), ssl_context=trust)
    assert server.hits == []


def test_https_refuses_an_untrusted_ca_by_default(
    dns: FakeDNS, tls_server: tuple[Server, ssl.SSLContext, list[str]]
) -> None:
    server, _, _ = tls_server
    dns.answers["images.test"] = [["127.0.0.1"]]
    url = server.url("/a.png", host="images.test", scheme="https")
    with pytest.raises(InputUnreachable, match="certificate"):
        fetch_url(url, **LIMITS, allow_hosts=frozenset({"images.test:*"}))


# --- issue 14.9: a trusted host is trusted on the port its entry names ------------------------


def test_an_allow_listed_host_is_trusted_only_on_its_ports(serve: Callable[..., Server]) -> None:
    server = serve({"/a.png": reply(200, PNG)})
    url = server.url("/a.png")
    for entries in ({"127.0.0.1"}, {"127.0.0.1:1"}, {"127.0.0.2:*"}):
        with pytest.raises(InputUnreachable, match="refused"):
            fetch_url(url, **LIMITS, allow_hosts=frozenset(entries))
    assert fetch_url(url, **LIMITS, allow_hosts=frozenset({f"127.0.0.1:{server.port}"})) == PNG
    assert fetch_url(url, **LIMITS, allow_hosts=frozenset({"127.0.0.1:*"})) == PNG
    assert server.hits == ["/a.png", "/a.png"]
