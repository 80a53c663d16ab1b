"""The emulated queue API as a function ``Request -> Reply``, independent of the HTTP server.

Routes (spec §1.2, §3-§8, §14):

- ``POST /{owner}/{app}[/{path...}]`` submit (also ``/workflows|comfy/{owner}/{app}/...``)
- ``GET  /{owner}/{app}/requests/{id}/status[/]`` status; ``.../status/stream`` SSE
- ``GET  /{owner}/{app}/requests/{id}[/]`` result
- ``PUT  /{owner}/{app}/requests/{id}/cancel[/]`` cancel
- ``GET  /media/{file}`` output files (public, no auth)
- ``GET  /.well-known/jwks.json`` the webhook-signing key
- ``GET  /_emulator/ledger``, ``POST /_emulator/reset``, ``POST /_emulator/faults``,
  ``POST /_emulator/outcomes``, ``GET /_emulator/requests/{id}``: test control (no auth)
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fal_emulator.faults import HTTP_FAULT_STATUS, Fault
from tests.fal_emulator.state import COMPLETED, IN_QUEUE, RequestState, dumps

if TYPE_CHECKING:
    from tests.fal_emulator.emulator import FalEmulator

NAMESPACES = ("workflows", "comfy")
LOCKED_DETAIL = "User is locked. Reason: Exhausted balance. Add funds to continue."
SSE_POLL_SECONDS = 0.1
SSE_PING_SECONDS = 15.0

_REASONS = {
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}


@dataclass
class Request:
    method: str
    target: str  # path and query, as sent
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection instead of replying
    stream: Iterator[bytes] | None = None  # a streamed body (SSE); the connection then closes

    @classmethod
    def json(cls, status: int, body: Any, request_id: str | None = None, **headers: str) -> Reply:
        h = {"Content-Type": "application/json", "x-fal-request-id": request_id or _rid()}
        h.update({k.replace("_", "-"): v for k, v in headers.items()})
        return cls(status, dumps(body), h)


def _rid() -> str:
    return str(uuid.uuid4())


def _ingress(status: int) -> Reply:
    reason = _REASONS[status]
    html = (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    return Reply(status, html.encode(), {"Content-Type": "text/html", "Server": "nginx"})


@dataclass(frozen=True)
class Route:
    op: str | None  # submit/status/stream/result/cancel/media, or None for an error reply
    base: str = ""  # owner/app
    endpoint: str = ""  # full endpoint id (submit)
    request_id: str = ""
    media: str = ""
    error: int = 0


def parse_route(method: str, path: str) -> Route:
    segs = [s for s in path.split("/") if s]
    if len(segs) == 2 and segs[0] == "media":
        return Route("media", media=segs[1]) if method == "GET" else Route(None, error=405)
    base_len = 3 if segs and segs[0] in NAMESPACES else 2
    if len(segs) < base_len:
        return Route(None, error=404)
    base = "/".join(segs[:base_len])
    if len(segs) >= base_len + 2 and segs[base_len] == "requests":
        rid, rest = segs[base_len + 1], segs[base_len + 2 :]
        wanted = {(): ("GET", "result"), ("status",): ("GET", "status"),
                  ("status", "stream"): ("GET", "stream"), ("cancel",): ("PUT", "cancel")}
        match = wanted.get(tuple(rest))
        if match is None:
            return Route(None, error=404)
        if method != match[0]:
            return Route(None, error=405)
        return Route(match[1], base=base, request_id=rid)
    if method != "POST":
        return Route(None, error=405)
    return Route("submit", base=base, endpoint="/".join(segs))


def _flag(values: list[str] | None) -> bool:
    return bool(values) and values[-1].strip().lower() in ("1", "true", "yes", "on")


class App:
    def __init__(self, emulator: FalEmulator) -> None:
        self.emu = emulator
        self.store = emulator._store

    # -- entry point -------------------------------------------------------------------------

    def handle(self, req: Request) -> Reply:
        url = urlsplit(req.target)
        path = unquote(url.path)
        query = parse_qs(url.query)
        if path.startswith("/_emulator/"):
            return self._control(req, path)
        if path.rstrip("/") == "/.well-known/jwks.json" and req.method == "GET":
            return Reply.json(200, self.emu.signer.jwks())
        route = parse_route(req.method, path)
        if route.op is None:
            detail = "Not Found" if route.error == 404 else "Method Not Allowed"
            return Reply.json(route.error, {"detail": detail})
        fault = self.emu.faults.take("status" if route.op == "stream" else route.op)
        if fault is not None:
            return self._apply_fault(fault, route, req, query)
        return self._dispatch(route, req, query)

    def _apply_fault(
        self, fault: Fault, route: Route, req: Request, query: dict[str, list[str]]
    ) -> Reply:
        kind = fault.kind
        if kind == "drop":
            return Reply(0, drop=True)
        if kind == "slow":
            time.sleep(fault.delay)
            return self._dispatch(route, req, query)
        if kind == "drop_after_accept":
            reply = self._dispatch(route, req, query)
            reply.drop = True
            return reply
        status = HTTP_FAULT_STATUS[kind]
        if kind.startswith("ingress_"):
            return _ingress(status)
        rid = route.request_id or None
        if kind == "not_found":
            return Reply.json(404, {"detail": "Not Found"}, rid)
        if status == 429:
            return Reply.json(429, {"detail": "Too many requests"}, rid)
        error_type = "internal_error" if status == 500 else "runner_scheduling_failure"
        return Reply.json(
            status,
            {"detail": f"Emulated fal error ({status})", "error_type": error_type},
            rid,
            X_Fal_Error_Type=error_type,
        )

    def _dispatch(self, route: Route, req: Request, query: dict[str, list[str]]) -> Reply:
        if route.op == "media":
            return self._media(route.media)
        denied = self._check_auth(req.headers)
        if denied is not None:
            return denied
        if route.op == "submit":
            return self._submit(route, req, query)
        state = self.store.get(route.request_id)
        if state is None or state.base != route.base:
            if route.op == "cancel":
                return Reply.json(404, {"status": "NOT_FOUND", "detail": "Request not found"})
            return Reply.json(404, {"detail": "Request not found"})
        if route.op == "status":
            body = self.store.status_body(state, _flag(query.get("logs")))
            return Reply.json(200 if body["status"] == COMPLETED else 202, body, state.request_id)
        if route.op == "stream":
            return self._stream(state, _flag(query.get("logs")))
        if route.op == "result":
            return self._result(state)
        return self._cancel(state)

    # -- auth --------------------------------------------------------------------------------

    def _check_auth(self, headers: Mapping[str, str]) -> Reply | None:
        value = headers.get("Authorization") or ""
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() not in ("key", "bearer") or not token:
            return Reply.json(401, {"detail": "Unauthorized"})
        if token in self.emu.locked_keys or value in self.emu.locked_keys:
            return Reply.json(403, {"detail": LOCKED_DETAIL})
        valid = self.emu.valid_keys
        if valid and token not in valid and value not in valid:
            return Reply.json(401, {"detail": "Unauthorized"})
        return None

    # -- queue operations --------------------------------------------------------------------

    def _submit(self, route: Route, req: Request, query: dict[str, list[str]]) -> Reply:
        try:
            arguments = json.loads(req.body) if req.body else {}
        except ValueError as exc:
            return Reply.json(
                422, {"detail": [{"loc": ["body"], "msg": f"Invalid JSON: {exc}", "type": "json_invalid"}]}
            )
        webhook = (query.get("fal_webhook") or [None])[-1]
        start_timeout: float | None = None
        raw_timeout = req.headers.get("X-Fal-Request-Timeout")
        if raw_timeout is not None:
            try:
                start_timeout = float(raw_timeout)
            except ValueError:
                start_timeout = -1.0
            if not start_timeout > 0.1:
                return Reply.json(
                    400,
                    {"detail": "Invalid X-Fal-Request-Timeout header", "error_type": "bad_request"},
                    X_Fal_Error_Type="bad_request",
                )
        with self.store.lock:
            max_len = (query.get("fal_max_queue_length") or [None])[-1]
            if max_len is not None:
                try:
                    limit = int(max_len)
                except ValueError:
                    return Reply.json(400, {"detail": "Invalid fal_max_queue_length"})
                if self.store.waiting_count() >= limit:
                    return Reply.json(429, {"detail": "Queue is full (fal_max_queue_length)"})
            state, position = self.store.accept(
                endpoint=route.endpoint,
                base=route.base,
                arguments=arguments,
                auth=req.headers.get("Authorization"),
                webhook_url=webhook,
                start_timeout=start_timeout,
            )
            body: dict[str, Any] = {"status": IN_QUEUE, "request_id": state.request_id}
            body.update(self.store.urls(state))
            body["queue_position"] = position
            body["gateway_request_id"] = state.gateway_request_id
        return Reply.json(200, body, state.request_id)

    def _result(self, state: RequestState) -> Reply:
        result = state.result
        if state.status != COMPLETED or result is None:
            return Reply.json(400, {"detail": "Request is still in progress"}, state.request_id)
        reply = Reply.json(result.status_code, result.body, state.request_id)
        reply.headers.update(result.headers)
        return reply

    def _cancel(self, state: RequestState) -> Reply:
        if self.store.cancel(state):
            return Reply.json(202, {"status": "CANCELLATION_REQUESTED"}, state.request_id)
        return Reply.json(400, {"status": "ALREADY_COMPLETED"}, state.request_id)

    def _stream(self, state: RequestState, logs: bool) -> Reply:
        def events() -> Iterator[bytes]:
            last: bytes | None = None
            last_sent = time.monotonic()
            while not self.emu.stopping:
                body = self.store.status_body(state, logs)
                data = dumps(body)
                if data != last:
                    yield b"data: " + data + b"\n\n"
                    last, last_sent = data, time.monotonic()
                    if body["status"] == COMPLETED:
                        return
                elif time.monotonic() - last_sent >= SSE_PING_SECONDS:
                    yield b": ping\n\n"
                    last_sent = time.monotonic()
                time.sleep(SSE_POLL_SECONDS)

        headers = {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "x-fal-request-id": state.request_id,
        }
        return Reply(200, headers=headers, stream=events())

    def _media(self, name: str) -> Reply:
        state = self.store.by_media(name)
        if state is None or state.output is None:
            return Reply.json(404, {"detail": "Not Found"})
        return Reply(
            200,
            state.output.png,
            {"Content-Type": "image/png", "x-fal-request-id": state.request_id},
        )

    # -- control -----------------------------------------------------------------------------

    def _control(self, req: Request, path: str) -> Reply:
        parts = [p for p in path.split("/") if p][1:]
        try:
            payload = json.loads(req.body) if req.body else {}
        except ValueError:
            return Reply.json(400, {"detail": "invalid JSON"})
        if req.method == "GET" and parts == ["ledger"]:
            return Reply.json(200, self.emu.ledger)
        if req.method == "POST" and parts == ["reset"]:
            self.emu.reset()
            return Reply.json(200, {"ok": True})
        if req.method == "POST" and parts == ["faults"]:
            try:
                params = {k: v for k, v in payload.items() if k not in ("op", "kind", "times")}
                fault = Fault(payload["kind"], **params)
                self.emu.faults.add(payload["op"], fault, int(payload.get("times", 1)))
            except (KeyError, ValueError, TypeError) as exc:
                return Reply.json(400, {"detail": str(exc)})
            return Reply.json(200, {"ok": True})
        if req.method == "POST" and parts == ["outcomes"]:
            outcomes = payload.get("outcomes", [])
            from tests.fal_emulator.state import OUTCOMES

            if not isinstance(outcomes, list) or not set(outcomes) <= OUTCOMES:
                return Reply.json(400, {"detail": f"outcomes must be a list of {sorted(OUTCOMES)}"})
            self.emu.outcomes.extend(outcomes)
            return Reply.json(200, {"ok": True})
        if req.method == "GET" and len(parts) == 2 and parts[0] == "requests":
            state = self.store.get(parts[1])
            if state is None:
                return Reply.json(404, {"detail": "Request not found"})
            return Reply.json(200, self.emu.describe(state))
        return Reply.json(404, {"detail": "Not Found"})
