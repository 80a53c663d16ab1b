"""Sign-in and sign-out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from orchestrator.api.gate import FailedAuthLimiter, client_address
from orchestrator.console import session as sessions
from orchestrator.console.session import Viewer
from orchestrator.console.web import (
    Message,
    checked_form,
    render,
    safe_next,
    same_origin,
    secure,
    settings_of,
    viewer,
)

router = APIRouter()


@router.get("/sign-in")
async def sign_in_page(request: Request, reason: str | None = None,
                       next: str | None = None) -> Response:  # noqa: A002 - the query name
    messages = [Message(sessions.REASONS[reason], "error" if reason in ("expired", "revoked")
                        else "info")] if reason in sessions.REASONS else []
    return render(request, "sign_in.html", {"next": safe_next(next), "title": "Sign in"},
                  messages=messages)


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    form = await request.form()
    key, target = form.get("key"), form.get("next")
    if not same_origin(request):
        return render(request, "sign_in.html", {"next": safe_next(None), "title": "Sign in"},
                      status=403, messages=[Message("Sign in from the console's own page.",
                                                    "error")])
    # Failed sign-ins count against the API's per-address limit of failed authentications.
    failures: FailedAuthLimiter | None = getattr(request.app.state, "auth_failures", None)
    address = client_address(request.scope)
    if failures is not None and failures.blocked(address):
        return render(request, "sign_in.html", {"next": safe_next(None), "title": "Sign in"},
                      status=429, messages=[Message(
                          "Too many failed sign-ins from this address; try again shortly.",
                          "error")])
    signed = None
    if isinstance(key, str) and key.strip() and len(key) < 500:
        signed = await run_in_threadpool(sessions.sign_in, settings_of(request), key)
    if signed is None:
        if failures is not None:
            failures.failed(address)
        return render(request, "sign_in.html",
                      {"next": safe_next(target if isinstance(target, str) else None),
                       "title": "Sign in"},
                      status=401, messages=[Message("That key is not valid or was revoked.",
                                                    "error")])
    value, _ = signed
    response = RedirectResponse(safe_next(target if isinstance(target, str) else None),
                                status_code=303)
    settings = settings_of(request)
    response.set_cookie(sessions.COOKIE, value, max_age=sessions.max_age(settings),
                        path=sessions.PATH, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return secure(response)


@router.post("/sign-out")
async def sign_out(request: Request, who: Annotated[Viewer, Depends(viewer)]) -> Response:
    await checked_form(request, who)  # CsrfRefused: a 403 page
    response = RedirectResponse(f"{sessions.PATH}/sign-in?reason=signed-out", status_code=303)
    response.delete_cookie(sessions.COOKIE, path=sessions.PATH)
    return secure(response)
