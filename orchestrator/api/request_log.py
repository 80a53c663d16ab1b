"""Request ids and access lines for the API (a plain ASGI middleware: no per-request task).

Each request gets an id (the caller's ``X-Request-Id`` when it is a sane token, else a new
one), returned in ``X-Request-Id`` and carried by every log line made while serving it. The
access line has method, path (never the query string: result links carry a token), status
and duration.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.observability.logs import log_context

log = logging.getLogger("orchestrator.api.access")
HEADER = b"x-request-id"
_SANE = re.compile(rb"[A-Za-z0-9._\-]{1,128}")


class RequestLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(HEADER)
        request_id = given.decode() if given and _SANE.fullmatch(given) else uuid.uuid4().hex
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", []),
                                                  (HEADER, request_id.encode())]}
            await send(message)

        with log_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                if log.isEnabledFor(logging.INFO):
                    log.info("%s %s %d %.1f ms", scope.get("method"), scope.get("path"), status,
                             (time.perf_counter() - started) * 1000)
