"""``GET /v1/reports/costs``: the cost report of ``orchestrator report costs``, as JSON or CSV."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from orchestrator import commands
from orchestrator.api.deps import PrincipalDep, SettingsDep, caller_of
from orchestrator.api.responses import AUTH, errors
from orchestrator.reports import GROUPINGS
from orchestrator.reports.render import report_csv, report_dict

router = APIRouter(prefix="/v1/reports", tags=["reports"])


class CostRow(BaseModel):
    """One group (its grouping columns are set) or the total. Money and seconds are exact
    decimal strings: sums of attempt rows."""

    day: str | None = None
    week: str | None = None
    month: str | None = None
    backend: str | None = None
    model: str | None = None
    client: str | None = None
    state: str | None = None
    jobs: int
    succeeded: int
    failed: int
    cancelled: int
    attempts: int
    retries: int
    compute_seconds: str
    cost_usd: str | None = Field(description="null: local price not set (see local_price)")
    fal_cost_usd: str
    local_cost_usd: str | None = Field(description="null: local price not set")
    local_fal_equivalent_usd: str
    saving_usd: str | None = Field(description="null: local price not set")
    all_on_fal_usd: str
    latency_p50_seconds: float | None
    latency_p95_seconds: float | None
    local_unpriced_attempts: int
    local_price: Literal["set", "not set"]


class CostReportBody(BaseModel):
    since: str
    until: str
    timezone: str
    currency: str
    group_by: list[str]
    client: str | None
    rows: list[CostRow]
    total: CostRow


@router.get(
    "/costs",
    responses={
        200: {"model": CostReportBody, "description": "the report (JSON, or CSV with format=csv "
              "or `Accept: text/csv`)", "content": {"text/csv": {"schema": {"type": "string"}}}},
        **errors(*AUTH, 400, 403, 422),
    },
)
def costs(
    principal: PrincipalDep,
    settings: SettingsDep,
    since: Annotated[str | None, Query(description="first day YYYY-MM-DD or ISO instant, UTC")] = None,
    until: Annotated[
        str | None, Query(description="last day YYYY-MM-DD (whole) or ISO instant (excluded), UTC")
    ] = None,
    group_by: Annotated[
        list[str] | None,
        Query(description=f"{'|'.join(GROUPINGS)}; comma-separated or repeated"),
    ] = None,
    client: Annotated[
        str | None, Query(description="admin: one client's costs; other keys: their own only")
    ] = None,
    format: Annotated[Literal["json", "csv"] | None, Query()] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Jobs, outcomes, compute seconds, cost, fal-equivalent of local work and the saving,
    latency p50/p95 and retries, per group and in total (dates in UTC). An admin key sees every
    client's costs (or one client's); any other key sees only its own client's."""
    report = commands.costs(settings, caller_of(principal), since=since, until=until,
                            group_by=group_by or [], client=client)
    wants_csv = format == "csv" or (format is None and "text/csv" in (accept or ""))
    if wants_csv:
        return Response(report_csv(report), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'inline; filename="costs.csv"'})
    return JSONResponse(report_dict(report))
