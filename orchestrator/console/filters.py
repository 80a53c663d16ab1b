"""Query strings of the jobs and costs pages -> filters, with a message for every bad value.

A bad value is dropped (the page shows what it can) and reported, never raised."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode

from orchestrator.commands import JobFilter
from orchestrator.commands.caller import Caller
from orchestrator.errors import OrchestratorError
from orchestrator.jobs.states import JobState
from orchestrator.reports.costs import GROUPINGS, TIME_GROUPINGS
from orchestrator.reports.period import parse_moment

JOB_PARAMS = ("state", "backend", "client", "since", "until", "q", "after")
COST_PARAMS = ("since", "until", "group", "client")
MAX_SEARCH = 200


@dataclass
class Parsed:
    values: dict[str, str] = field(default_factory=dict)  # what the form shows again
    errors: list[str] = field(default_factory=list)

    def query(self, **extra: str) -> str:
        params = {k: v for k, v in {**self.values, **extra}.items() if v}
        return urlencode(params)


def _unknown(params: Mapping[str, str], known: tuple[str, ...], errors: list[str]) -> None:
    for name in params:
        if name not in known:
            errors.append(f"Unknown filter {name[:40]!r} ignored; the filters are "
                          f"{', '.join(known)}.")


def job_filter(params: Mapping[str, str], caller: Caller, offered: list[str]
               ) -> tuple[JobFilter, Parsed]:
    parsed = Parsed()
    _unknown(params, JOB_PARAMS, parsed.errors)
    out = JobFilter()
    for name in JOB_PARAMS:
        raw = (params.get(name) or "").strip()
        if raw:
            parsed.values[name] = raw
    state = parsed.values.get("state")
    if state:
        try:
            out = replace(out, state=JobState(state))
        except ValueError:
            parsed.errors.append(f"There is no state {state[:40]!r}; choose one of "
                                 f"{', '.join(s.value for s in JobState)}.")
            del parsed.values["state"]
    backend = parsed.values.get("backend")
    if backend:
        if backend in offered:
            out = replace(out, backend=backend)
        else:
            parsed.errors.append(f"There is no backend {backend[:40]!r}; choose one of "
                                 f"{', '.join(offered)}.")
            del parsed.values["backend"]
    client = parsed.values.get("client")
    if client:
        if caller.is_admin:
            out = replace(out, client=client)
        elif client != caller.client:
            parsed.errors.append("Your key sees only its own jobs; the client filter is ignored.")
            del parsed.values["client"]
    for name, end in (("since", False), ("until", True)):
        raw = parsed.values.get(name, "")
        if raw:
            try:
                moment = parse_moment(raw, end=end, name=name)
            except OrchestratorError as exc:
                parsed.errors.append(f"{str(exc)[:300]}.")
                del parsed.values[name]
                continue
            out = (replace(out, created_since=moment) if name == "since"
                   else replace(out, created_until=moment))
    if out.created_since and out.created_until and out.created_since >= out.created_until:
        parsed.errors.append("The date range is empty: 'since' must be before 'until'.")
    search = parsed.values.get("q", "")
    if search:
        if len(search) > MAX_SEARCH or "\x00" in search:
            parsed.errors.append(f"A search is at most {MAX_SEARCH} characters.")
            del parsed.values["q"]
        else:
            out = replace(out, search=search)
    return out, parsed


@dataclass(frozen=True)
class CostQuery:
    since: str | None
    until: str | None
    group_by: tuple[str, ...]
    client: str | None


def cost_query(params: Mapping[str, str], group_values: list[str], caller: Caller
               ) -> tuple[CostQuery, Parsed]:
    parsed = Parsed()
    _unknown(params, COST_PARAMS, parsed.errors)
    for name in ("since", "until", "client"):
        raw = (params.get(name) or "").strip()
        if raw:
            parsed.values[name] = raw
    groups: list[str] = []
    for value in group_values:
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            if name not in GROUPINGS:
                parsed.errors.append(f"Cannot group by {name[:40]!r}; choose from "
                                     f"{', '.join(GROUPINGS)}.")
            elif name not in groups:
                groups.append(name)
    times = [g for g in groups if g in TIME_GROUPINGS]
    if len(times) > 1:
        parsed.errors.append(f"Group by one of day, week, month at a time; kept {times[0]}.")
        groups = [g for g in groups if g not in times[1:]]
    client = parsed.values.get("client")
    if client and not caller.is_admin and client != caller.client:
        parsed.errors.append("Your key sees only its own costs; the client filter is ignored.")
        del parsed.values["client"]
        client = None
    parsed.values["group"] = ",".join(groups)
    return CostQuery(parsed.values.get("since"), parsed.values.get("until"), tuple(groups),
                     client if caller.is_admin else None), parsed
