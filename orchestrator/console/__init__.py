"""The ops console: server-rendered pages under /console, served by the API itself.

Every page calls the command layer (orchestrator.commands); the console coordinates nothing of
its own. Static assets (htmx 2.0.11, vendored from npm, and the CSS) are package data, so it
works offline and behind a firewall.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError, InterfaceError, OperationalError

from orchestrator.console import auth_routes, jobs_routes, ops_routes
from orchestrator.console.session import PATH
from orchestrator.console.web import HERE, Message, render, sign_in_redirect
from orchestrator.errors import CsrfRefused, SignInRequired

Handler = Callable[[Request, Exception], Any]
_root = APIRouter()


@_root.get("")
@_root.get("/")
async def console_root() -> Response:
    return RedirectResponse(f"{PATH}/overview", status_code=303)


_fallback = APIRouter()


@_fallback.api_route("/{rest:path}", methods=["GET", "POST"])
async def console_not_found(request: Request, rest: str) -> Response:
    return render(request, "not_found.html",
                  {"title": "Not found", "what": f"the page {PATH}/{rest[:100]}"}, status=404)


async def _csrf_refused(request: Request, exc: Exception) -> Response:
    return render(request, "not_found.html", {"title": "Refused", "what": None}, status=403,
                  messages=[Message("This form was not sent from this console session (its "
                                    "security token is missing or stale). Reload the page and "
                                    "try again.", "error")])


async def _sign_in(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    return sign_in_redirect(request, exc)


def _for_console(api_handler: Handler, message: str, status: int) -> Handler:
    """The API's handler for its paths, a page with ``message`` for the console's."""

    async def handle(request: Request, exc: Exception) -> Response:
        if not request.url.path.startswith(PATH + "/"):
            answer = api_handler(request, exc)
            done = await answer if isinstance(answer, Awaitable) else answer
            assert isinstance(done, Response)
            return done
        return render(request, "not_found.html", {"title": "Unavailable", "what": None},
                      status=status, messages=[Message(message, "error")])

    return handle


def mount(app: FastAPI) -> None:
    """Add the console to the API app, at /console."""
    app.mount(f"{PATH}/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.include_router(_root, prefix=PATH, include_in_schema=False)
    app.include_router(auth_routes.router, prefix=PATH, include_in_schema=False)
    app.include_router(jobs_routes.router, prefix=PATH, include_in_schema=False)
    app.include_router(ops_routes.router, prefix=PATH, include_in_schema=False)
    app.include_router(_fallback, prefix=PATH, include_in_schema=False)
    app.add_exception_handler(SignInRequired, _sign_in)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    for error, message, status in (
            (OperationalError, "The database is unavailable; try again in a moment.", 503),
            (InterfaceError, "The database is unavailable; try again in a moment.", 503),
            (DataError, "A value in the request cannot be stored (such as a NUL character).",
             422)):
        api_handler = app.exception_handlers.get(error)
        if api_handler is not None:
            app.add_exception_handler(error, _for_console(api_handler, message, status))
