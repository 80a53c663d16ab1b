"""HTTPS plumbing: a threading HTTP/1.1 server whose connections are TLS-wrapped per thread.

The listening socket is plain; each accepted connection does its TLS handshake in its own
handler thread, so a slow or failed handshake never blocks ``accept()``. Connections are
kept alive (HTTP/1.1) and tracked, so ``close_all()`` can end idle keep-alive connections
when the emulator stops.
"""

from __future__ import annotations

import socket
import ssl
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fal_emulator.app import App, Reply, Request

HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 300.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT
    server: EmulatorHTTPServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def _read_body(self) -> bytes | None:
        """The whole body, or None when the client went away before sending all of it.

        A real HTTP server never hands a request with a short body to its application: it
        waits for the rest, then drops the connection. Reading to EOF and going on would turn
        a client killed mid-upload into a request with an empty or cut body (fal would never
        see it; the emulator must not either)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                line = self.rfile.readline()
                if not line.endswith(b"\n"):
                    return None
                try:
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    return None
                if size == 0:
                    while (trailer := self.rfile.readline()) not in (b"\r\n", b"\n"):
                        if not trailer.endswith(b"\n"):
                            return None
                    return b"".join(chunks)
                chunk = self.rfile.read(size)
                if len(chunk) < size or not self.rfile.readline().endswith(b"\n"):
                    return None
                chunks.append(chunk)
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0:
            return b""
        body = self.rfile.read(length)
        return body if len(body) == length else None

    def _serve(self) -> None:
        body = self._read_body()
        if body is None:  # cut off mid-body: no request happened
            self.close_connection = True
            self._abort()
            return
        request = Request(self.command, self.path, self.headers, body)  # type: ignore[arg-type]
        try:
            reply = self.server.app.handle(request)
        except Exception as exc:  # an emulator bug: report it loudly, to the client and the test
            self.server.app.emu.errors.append(traceback.format_exc())
            reply = Reply.json(500, {"detail": f"fal emulator bug: {exc!r}"})
        if reply.drop:
            self.close_connection = True
            self._abort()
            return
        self._write(reply)

    def _abort(self) -> None:
        """Close the TCP connection at once, without a reply and without TLS close_notify."""
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _write(self, reply: Reply) -> None:
        try:
            phrase = HTTPStatus(reply.status).phrase
        except ValueError:
            phrase = "Client Closed Request" if reply.status == 499 else "Unknown"
        lines = [f"HTTP/1.1 {reply.status} {phrase}", f"Date: {self.date_time_string()}"]
        lines += [f"{k}: {v}" for k, v in reply.headers.items()]
        if reply.stream is not None:
            self.close_connection = True
            lines.append("Connection: close")
            self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            for chunk in reply.stream:
                self.wfile.write(chunk)
            return
        lines.append(f"Content-Length: {len(reply.body)}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + (b"" if self.command == "HEAD" else reply.body))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet: thousands of polls per second


class EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 4096

    def __init__(self, address: tuple[str, int], app: App, context: ssl.SSLContext) -> None:
        self.app = app
        self.context = context
        self._conns: set[ssl.SSLSocket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT)
        # No Nagle: small replies and TLS handshake flights must not wait for delayed ACKs.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ValueError):
            return  # failed handshake; wrap_socket closed the socket
        with self._conns_lock:
            self._conns.add(tls)
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except (OSError, ValueError):
            pass  # client went away, reset, or TLS error mid-stream
        finally:
            with self._conns_lock:
                self._conns.discard(tls)
            try:
                tls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            tls.close()

    def shutdown_request(self, request: Any) -> None:
        try:
            request.close()  # already detached by wrap_socket, or never wrapped
        except OSError:
            pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # errors on a connection are the client's business

    def open_connections(self) -> int:
        with self._conns_lock:
            return len(self._conns)

    def close_all(self) -> None:
        """Wake every handler thread blocked on an idle keep-alive connection."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
