"""What every console page shares: templates, the signed-in viewer, CSRF, flash messages."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from orchestrator.console import session as sessions
from orchestrator.console.session import Viewer
from orchestrator.errors import CsrfRefused, SignInRequired
from orchestrator.settings import Settings

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
# The policy every console page is served with: nothing from elsewhere, no inline script.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_FLASH_SALT = "orchestrator.console.flash"


@dataclass(frozen=True)
class Message:
    text: str
    kind: str = "info"  # info | error


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def viewer(request: Request) -> Viewer:
    """The signed-in viewer (a FastAPI dependency); SignInRequired sends to the sign-in page."""
    return await run_in_threadpool(sessions.viewer_of, settings_of(request),
                                   request.cookies.get(sessions.COOKIE))


def _usd(value: Decimal | float | None, places: int = 4) -> str:
    if value is None:
        return "–"
    amount = Decimal(value)
    if 0 < abs(amount) < Decimal(10) ** -places:
        # a fraction of a cent (a local job) would read as zero
        return "$" + f"{amount:.10f}".rstrip("0")
    return f"${amount:,.{places}f}"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "–"


def _seconds(value: Decimal | float | None) -> str:
    return "–" if value is None else f"{float(value):,.2f} s"


templates.env.filters["usd"] = _usd
templates.env.filters["when"] = _when
templates.env.filters["seconds"] = _seconds
templates.env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, default=str,
                                                               sort_keys=True)


def render(request: Request, name: str, context: Mapping[str, Any], *,
           viewer: Viewer | None = None, status: int = 200,
           messages: list[Message] | None = None) -> HTMLResponse:
    """A page (or an htmx fragment), with the flash message of the last action, if any."""
    shown = list(messages or [])
    flash = read_flash(request)
    if flash is not None:
        shown.insert(0, flash)
    response = templates.TemplateResponse(
        request, name, {"viewer": viewer, "messages": shown, **context}, status_code=status)
    if flash is not None:
        response.delete_cookie(sessions.FLASH_COOKIE, path=sessions.PATH)
    secure(response)
    return response


def secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def redirect(request: Request, url: str, flash: Message | None = None) -> Response:
    """Back to a page after a change (303: the browser GETs it), carrying one message."""
    response: Response
    if request.headers.get("hx-request"):
        response = Response(status_code=204, headers={"HX-Redirect": url})
    else:
        response = RedirectResponse(url, status_code=303)
    if flash is not None:
        value = sessions.serializer(settings_of(request), _FLASH_SALT).dumps(
            [flash.text[:1500], flash.kind])
        response.set_cookie(sessions.FLASH_COOKIE, value, max_age=60, path=sessions.PATH,
                            httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
    return response


def read_flash(request: Request) -> Message | None:
    raw = request.cookies.get(sessions.FLASH_COOKIE)
    if not raw:
        return None
    try:
        text, kind = sessions.serializer(settings_of(request), _FLASH_SALT).loads(raw, max_age=60)
    except (BadSignature, ValueError, TypeError):
        return None
    return Message(str(text), "error" if kind == "error" else "info")


def same_origin(request: Request) -> bool:
    """Browsers say where a request comes from; refuse a cross-site one outright."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        return origin == f"{request.url.scheme}://{request.url.netloc}"
    return True


async def checked_form(request: Request, who: Viewer) -> FormData:
    """The posted form, once its CSRF token and origin are checked (else CsrfRefused)."""
    form = await request.form()
    token = form.get("csrf_token") or request.headers.get("x-csrf-token")
    if not same_origin(request) or not sessions.csrf_ok(who, token if isinstance(token, str)
                                                        else None):
        raise CsrfRefused()
    return form


def sign_in_redirect(request: Request, exc: SignInRequired) -> Response:
    url = f"{sessions.PATH}/sign-in?reason={exc.reason}"
    if request.method == "GET" and not request.headers.get("hx-request"):
        url += "&next=" + _quote(request.url.path + (f"?{request.url.query}" if request.url.query
                                                     else ""))
    if request.headers.get("hx-request"):
        # A redirect would swap the sign-in page into the polled fragment.
        response: Response = Response(status_code=204, headers={"HX-Redirect": url})
    else:
        response = RedirectResponse(url, status_code=303)
    response.delete_cookie(sessions.COOKIE, path=sessions.PATH)
    return secure(response)


def _quote(text: str) -> str:
    return quote(text, safe="")


def safe_next(target: str | None) -> str:
    """Only a console path: never a redirect to another site after sign-in."""
    if target and target.startswith(sessions.PATH + "/") and not target.startswith("//") \
            and "\\" not in target and "/sign-in" not in target:
        return target
    return f"{sessions.PATH}/overview"
