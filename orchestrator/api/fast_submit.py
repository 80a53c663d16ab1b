"""The submit endpoint's common case without FastAPI's request cycle.

``POST /fal-ai/imageutils/rembg`` is the API's hot path, and FastAPI's routing, dependency
solving and body validation cost about as much CPU as the submit itself (profiled under a
closed loop). A request of the shape fal's clients send — a JSON object with a string
``image_url`` and boolean options (or none), a declared length, no query string, no
``Idempotency-Key`` or ``X-Orchestrator-Backend`` header — is answered here, by the same code
the route runs (``principal_for``, ``queue_rembg``) and the app's own exception handlers, so
its reply is the route's byte for byte. Any other request goes on to the route with its body
replayed, and gets FastAPI's validation and errors exactly as before.

It sits inside the other middlewares: the header limit, the auth gate, the body limit and the
request log have run or run around it as for any request.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any

from annotated_types import MaxLen, MinLen
from fastapi import HTTPException, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.api.deps import principal_for
from orchestrator.api.routes.fal_queue import RembgInput, queue_rembg

PATH = "/fal-ai/imageutils/rembg"
# The route's own limits on image_url (RembgInput's), checked here as pydantic would.
_MIN_URL = next(m.min_length for m in RembgInput.model_fields["image_url"].metadata
                if isinstance(m, MinLen))
_MAX_URL = next(m.max_length for m in RembgInput.model_fields["image_url"].metadata
                if isinstance(m, MaxLen))
# Headers that take the request to the route: options it validates and we do not.
_ROUTE_HEADERS = frozenset({b"idempotency-key", b"x-orchestrator-backend", b"transfer-encoding"})
_OPTIONS = ("sync_mode", "crop_to_bbox")

Handler = Callable[[Request, Exception], Response | Awaitable[Response]]


def _common_case(scope: Scope) -> bool:
    """Method, path and headers of a request this path answers (its body is checked later)."""
    if (scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") != PATH
            or scope.get("query_string") or scope.get("root_path")):
        return False
    content_type = length = None
    for name, value in scope.get("headers") or []:
        name = name.lower()
        if name in _ROUTE_HEADERS:
            return False
        if name == b"content-type" and content_type is None:
            content_type = value
        elif name == b"content-length":
            length = value
    return content_type is not None and content_type.lower() == b"application/json" \
        and length is not None and length.isdigit()


def parse_body(body: bytes) -> dict[str, Any] | None:
    """The fields of a body pydantic would accept unchanged, or None (the route decides)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    url = data.get("image_url")
    if type(url) is not str or not _MIN_URL <= len(url) <= _MAX_URL:
        return None
    fields: dict[str, Any] = {"image_url": url}
    for option in _OPTIONS:
        value = data.get(option, False)
        if type(value) is not bool:
            return None
        fields[option] = value
    return fields


class FastSubmit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _common_case(scope):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            # As FastAPI reads a body: a failed read (a disconnect) is its 400.
            body = await _read_body(receive)
        except Exception as exc:
            if isinstance(exc, HTTPException):
                raise
            response = await self._handled(request, HTTPException(
                status_code=400, detail="There was an error parsing the body"))
            await response(scope, receive, send)
            return
        fields = parse_body(body)
        if fields is None:
            await self.app(scope, _replay(body, receive), send)
            return
        try:
            principal = await principal_for(request, request.headers.get("authorization"))
            response = await queue_rembg(
                request, principal, fields["image_url"], sync_mode=fields["sync_mode"],
                crop_to_bbox=fields["crop_to_bbox"], backend=None, idempotency_key=None,
                fal_webhook=None)
        except Exception as exc:
            response = await self._handled(request, exc)
        await response(scope, receive, send)

    @staticmethod
    async def _handled(request: Request, exc: Exception) -> Response:
        """The app's handler for ``exc``, as Starlette's ExceptionMiddleware picks it; an
        exception without one goes on up (to the server error middleware: a 500)."""
        handlers: dict[Any, Handler] = request.app.exception_handlers
        handler = handlers.get(exc.status_code) if isinstance(exc, HTTPException) else None
        if handler is None:
            handler = next((handlers[cls] for cls in type(exc).__mro__
                            if cls in handlers and cls is not Exception), None)
        if handler is None:
            raise exc
        response = handler(request, exc)
        if inspect.isawaitable(response):
            response = await response
        assert isinstance(response, Response)
        return response


async def _read_body(receive: Receive) -> bytes:
    """What ``Request.body()`` returns, without its async generator."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the route the body already read, then the connection's events."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
