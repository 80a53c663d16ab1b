"""Overview, costs, budgets and keys."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from orchestrator import commands
from orchestrator.commands import budgets as budget_commands
from orchestrator.commands import keys as key_commands
from orchestrator.commands.overview import overview
from orchestrator.commands.workers import worker_health
from orchestrator.console import chart
from orchestrator.console.filters import cost_query
from orchestrator.console.session import PATH, Viewer
from orchestrator.console.web import (
    Message,
    checked_form,
    redirect,
    render,
    secure,
    settings_of,
    viewer,
)
from orchestrator.costs.budgets import ALL_CLIENTS, THRESHOLDS
from orchestrator.errors import OrchestratorError
from orchestrator.reports.render import report_csv

router = APIRouter()
ViewerDep = Annotated[Viewer, Depends(viewer)]
WORKER_REPLY_SECONDS = 1.0
_workers_cache: list[tuple[float, dict[str, dict[str, Any]]]] = []


def _workers() -> dict[str, dict[str, Any]]:
    """Worker health, asked at most every 5 s per process (each ask waits for replies)."""
    if _workers_cache and time.monotonic() - _workers_cache[0][0] < 5:
        return _workers_cache[0][1]
    nodes = worker_health(WORKER_REPLY_SECONDS)
    _workers_cache[:] = [(time.monotonic(), nodes)]
    return nodes


def _overview_context(request: Request, who: Viewer) -> dict[str, Any]:
    figures = overview(settings_of(request), who.caller)
    workers = _workers() if who.admin else None
    return {"title": "Overview", "o": figures, "workers": workers, "thresholds": THRESHOLDS,
            "all_clients": ALL_CLIENTS}


@router.get("/overview")
def overview_page(request: Request, who: ViewerDep) -> Response:
    return render(request, "overview.html", _overview_context(request, who), viewer=who)


@router.get("/overview/figures")
def overview_figures(request: Request, who: ViewerDep) -> Response:
    """The cards alone, for the page's own refresh."""
    return render(request, "overview_figures.html", _overview_context(request, who), viewer=who)


def _costs(request: Request, who: Viewer) -> tuple[dict[str, Any], list[Message]]:
    settings = settings_of(request)
    params = dict(request.query_params.items())
    query, parsed = cost_query(params, request.query_params.getlist("group"), who.caller)
    messages = [Message(text, "error") for text in parsed.errors]
    context: dict[str, Any] = {"title": "Costs", "form": parsed.values, "report": None,
                               "query": parsed.query(), "groupings": ("day", "week", "month",
                                                                      "backend", "model",
                                                                      "client", "state")}
    try:
        context["report"] = commands.costs(settings, who.caller, since=query.since,
                                           until=query.until, group_by=query.group_by,
                                           client=query.client)
        daily = context["report"] if query.group_by == ("day", "backend") else commands.costs(
            settings, who.caller, since=query.since, until=query.until,
            group_by=("day", "backend"), client=query.client)
    except OrchestratorError as exc:
        messages.append(Message(f"{exc}.", "error"))
        return context, messages
    context["wide"] = chart.columns(daily)
    context["narrow"] = chart.stacked_rows(daily)
    return context, messages


@router.get("/costs")
def costs_page(request: Request, who: ViewerDep) -> Response:
    context, messages = _costs(request, who)
    return render(request, "costs.html", context, viewer=who, messages=messages)


@router.get("/costs.csv")
def costs_csv(request: Request, who: ViewerDep) -> Response:
    context, messages = _costs(request, who)
    if context["report"] is None or any(m.kind == "error" for m in messages):
        return render(request, "costs.html", context, viewer=who, messages=messages, status=400)
    report = context["report"]
    name = f"costs-{report.period.since:%Y%m%d}-{report.period.until:%Y%m%d}.csv"
    return secure(Response(report_csv(report), media_type="text/csv",
                           headers={"Content-Disposition": f'attachment; filename="{name}"'}))


def _admin_only(request: Request, who: Viewer, title: str) -> Response | None:
    if who.admin:
        return None
    return render(request, "not_found.html",
                  {"title": title, "what": f"the {title.lower()} page (it needs an admin key)"},
                  viewer=who, status=403)


@router.get("/budgets")
def budgets_page(request: Request, who: ViewerDep) -> Response:
    refused = _admin_only(request, who, "Budgets")
    if refused is not None:
        return refused
    spends = budget_commands.status(settings_of(request), who.caller)
    return render(request, "budgets.html", {"title": "Budgets", "spends": spends,
                                            "all_clients": ALL_CLIENTS,
                                            "thresholds": THRESHOLDS}, viewer=who)


@router.post("/budgets")
async def budgets_set(request: Request, who: ViewerDep) -> Response:
    form = await checked_form(request, who)
    here = f"{PATH}/budgets"
    client = str(form.get("client") or "")
    try:
        daily = budget_commands.parse_usd(str(form.get("daily") or ""), "the daily limit")
        monthly = budget_commands.parse_usd(str(form.get("monthly") or ""), "the monthly limit")
        if form.get("clear"):
            removed = await run_in_threadpool(budget_commands.clear_budget, settings_of(request),
                                              who.caller, client=client)
            return redirect(request, here, Message(
                "Limits removed." if removed else "There were no limits for that scope."))
        scope = await run_in_threadpool(
            lambda: budget_commands.set_budget(settings_of(request), who.caller, client=client,
                                               daily=daily, monthly=monthly))
    except OrchestratorError as exc:
        return redirect(request, here, Message(f"{exc}.", "error"))
    who_ = "all clients" if scope == ALL_CLIENTS else f"client {scope}"
    return redirect(request, here, Message(
        f"Limits for {who_}: daily {daily if daily is not None else 'none'}, "
        f"monthly {monthly if monthly is not None else 'none'} (USD)."))


@router.get("/keys")
def keys_page(request: Request, who: ViewerDep) -> Response:
    refused = _admin_only(request, who, "Keys")
    if refused is not None:
        return refused
    return render(request, "keys.html", {"title": "Keys", "keys": key_commands.list_keys(
        settings_of(request), who.caller), "new_key": None}, viewer=who)


@router.post("/keys")
async def keys_create(request: Request, who: ViewerDep) -> Response:
    form = await checked_form(request, who)
    settings = settings_of(request)
    name = str(form.get("name") or "")
    try:
        key = await run_in_threadpool(
            lambda: key_commands.create_key(settings, who.caller, name,
                                            admin=form.get("admin") == "on"))
    except OrchestratorError as exc:
        return redirect(request, f"{PATH}/keys", Message(f"{exc}.", "error"))
    keys = await run_in_threadpool(key_commands.list_keys, settings, who.caller)
    # Rendered, not redirected: the key is shown once and never stored anywhere to show again.
    return render(request, "keys.html", {"title": "Keys", "keys": keys, "new_key": key,
                                         "new_name": name.strip()}, viewer=who)


@router.post("/keys/revoke")
async def keys_revoke(request: Request, who: ViewerDep) -> Response:
    form = await checked_form(request, who)
    target = str(form.get("prefix") or "")
    try:
        n = await run_in_threadpool(key_commands.revoke_key, settings_of(request), who.caller,
                                    target)
    except OrchestratorError as exc:
        return redirect(request, f"{PATH}/keys", Message(f"{exc}.", "error"))
    return redirect(request, f"{PATH}/keys", Message(f"Revoked {n} key(s)."))
