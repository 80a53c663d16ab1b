"""Refuse requests with oversized headers (issue 14.10) before any other work: no key lookup,
no routing, no body read. The size counted is every header's name and value plus the request
target (path and query string), which is what a client controls."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


def header_bytes(scope: Scope) -> int:
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    for name, value in scope.get("headers") or []:
        size += len(name) + len(value)
    return size


class HeaderLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and header_bytes(scope) > self.max_bytes:
            body = (b'{"detail":"the request headers are over the limit of %d bytes '
                    b'(ORCH_API_MAX_HEADER_BYTES)"}' % self.max_bytes)
            await send({"type": "http.response.start", "status": 431,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
