"""The cost report, aggregated in SQL: two queries, each with its totals row (GROUPING SETS).

* **Money and seconds are sums of attempt rows** (``attempts.cost_usd``, ``compute_seconds``,
  ``fal_equivalent_usd`` as each attempt stored them; nothing is re-priced), counted on the UTC
  day the attempt started, under the backend that ran it. That is what a bill covers.
* **Job counts and latency** count jobs on the UTC day they were submitted (``jobs.created_at``).
  Latency is submit to done of the jobs that succeeded (``percentile_cont``).

Grouping by ``model``, ``client`` or ``state`` (or a client filter) joins attempts to their
jobs; grouping by time and backend reads one table per query.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, literal_column, select, tuple_
from sqlalchemy.orm import Session

from orchestrator.db.models import Attempt, Job
from orchestrator.errors import ReportError
from orchestrator.jobs.states import JobState
from orchestrator.reports.period import Period

TIME_GROUPINGS = ("day", "week", "month")
GROUPINGS = (*TIME_GROUPINGS, "backend", "model", "client", "state")
ZERO = Decimal(0)

attempts = Attempt.__table__
jobs = Job.__table__


@dataclass
class ReportRow:
    """One group (or the total, whose ``group`` is empty)."""

    group: dict[str, str] = field(default_factory=dict)
    jobs: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    attempts: int = 0
    retries: int = 0  # attempts after a job's first
    compute_seconds: Decimal = ZERO
    fal_compute_seconds: Decimal = ZERO
    cost_usd: Decimal = ZERO
    fal_cost_usd: Decimal = ZERO
    local_cost_usd: Decimal = ZERO
    local_fal_equivalent_usd: Decimal = ZERO  # what fal would have charged for the local work
    latency_p50_seconds: float | None = None
    latency_p95_seconds: float | None = None

    @property
    def saving_usd(self) -> Decimal:
        """What running locally saved against fal's price for the same seconds."""
        return self.local_fal_equivalent_usd - self.local_cost_usd

    @property
    def all_on_fal_usd(self) -> Decimal:
        """What the same work would have cost had it all run on fal."""
        return self.fal_cost_usd + self.local_fal_equivalent_usd


@dataclass(frozen=True)
class CostReport:
    period: Period
    group_by: tuple[str, ...]
    client: str | None
    rows: list[ReportRow]
    total: ReportRow


def parse_group_by(values: Iterable[str]) -> tuple[str, ...]:
    """``["day,backend", "client"]`` → ``("day", "backend", "client")``; one time grouping."""
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            if name not in GROUPINGS:
                raise ReportError(
                    f"cannot group by {part.strip()!r}; choose from {', '.join(GROUPINGS)}"
                )
            if name not in out:
                out.append(name)
    if sum(1 for name in out if name in TIME_GROUPINGS) > 1:
        raise ReportError("group by at most one of day, week, month")
    return tuple(out)


def _bucket(unit: str, moment: Any) -> ColumnElement[Any]:
    # The unit is a literal, not a bound parameter, so that the select list and GROUPING SETS
    # hold the same expression; ``timezone('UTC', …)`` makes the buckets UTC days whatever the
    # session's time zone.
    return func.date_trunc(literal_column(f"'{unit}'"), func.timezone("UTC", moment))


def _keys(group_by: Sequence[str], *, on_attempts: bool) -> list[ColumnElement[Any]]:
    moment = attempts.c.started_at if on_attempts else jobs.c.created_at
    backend = attempts.c.backend if on_attempts else jobs.c.backend
    columns: dict[str, ColumnElement[Any]] = {
        "backend": backend, "model": jobs.c.model, "client": jobs.c.client, "state": jobs.c.state,
    }
    return [(_bucket(name, moment) if name in TIME_GROUPINGS else columns[name]).label(name)
            for name in group_by]


def _grouped(stmt: Select[Any], keys: list[ColumnElement[Any]]) -> Select[Any]:
    if not keys:
        return stmt
    flag = func.grouping(*(k.element for k in keys))
    return stmt.add_columns(flag.label("is_total")).group_by(
        func.grouping_sets(tuple_(*(k.element for k in keys)), tuple_())
    )


def attempt_query(period: Period, group_by: Sequence[str], client: str | None) -> Select[Any]:
    keys = _keys(group_by, on_attempts=True)
    needs_jobs = client is not None or any(g in ("model", "client", "state") for g in group_by)
    source = attempts.join(jobs, attempts.c.job_id == jobs.c.id) if needs_jobs else attempts
    fal = attempts.c.backend == "fal"
    local = attempts.c.backend == "local"
    zero: ColumnElement[Decimal] = literal_column("0")
    stmt = (
        select(
            *keys,
            func.count().label("attempts"),
            func.count().filter(attempts.c.number > 1).label("retries"),
            func.coalesce(func.sum(attempts.c.compute_seconds), zero).label("compute_seconds"),
            func.coalesce(func.sum(attempts.c.compute_seconds).filter(fal), zero)
            .label("fal_compute_seconds"),
            func.coalesce(func.sum(attempts.c.cost_usd), zero).label("cost_usd"),
            func.coalesce(func.sum(attempts.c.cost_usd).filter(fal), zero).label("fal_cost_usd"),
            func.coalesce(func.sum(attempts.c.cost_usd).filter(local), zero)
            .label("local_cost_usd"),
            func.coalesce(func.sum(attempts.c.fal_equivalent_usd).filter(local), zero)
            .label("local_fal_equivalent_usd"),
        )
        .select_from(source)
        .where(attempts.c.started_at >= period.since, attempts.c.started_at < period.until)
    )
    if client is not None:
        stmt = stmt.where(jobs.c.client == client)
    return _grouped(stmt, keys)


def job_query(period: Period, group_by: Sequence[str], client: str | None) -> Select[Any]:
    keys = _keys(group_by, on_attempts=False)
    succeeded = jobs.c.state == JobState.SUCCEEDED
    latency = func.extract("epoch", jobs.c.finished_at - jobs.c.created_at)

    def percentile(fraction: float) -> ColumnElement[Any]:
        return func.percentile_cont(literal_column(repr(fraction))).within_group(latency).filter(
            and_(succeeded, jobs.c.finished_at.is_not(None))
        )

    stmt = (
        select(
            *keys,
            func.count().label("jobs"),
            func.count().filter(succeeded).label("succeeded"),
            func.count().filter(jobs.c.state == JobState.FAILED).label("failed"),
            func.count().filter(jobs.c.state == JobState.CANCELLED).label("cancelled"),
            percentile(0.5).label("latency_p50_seconds"),
            percentile(0.95).label("latency_p95_seconds"),
        )
        .select_from(jobs)
        .where(jobs.c.created_at >= period.since, jobs.c.created_at < period.until)
    )
    if client is not None:
        stmt = stmt.where(jobs.c.client == client)
    return _grouped(stmt, keys)


def _key_text(name: str, value: Any) -> str:
    if value is None:
        return ""
    if name == "month" and isinstance(value, datetime):
        return value.strftime("%Y-%m")
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d")
    return str(getattr(value, "value", value))


def cost_report(
    session: Session, period: Period, group_by: Sequence[str] = (), client: str | None = None
) -> CostReport:
    """Run the two aggregate queries and line their groups up by key."""
    group_by = tuple(group_by)
    rows: dict[tuple[Any, ...], ReportRow] = {}
    total = ReportRow()

    def row_for(record: Any) -> ReportRow:
        mapping = record._mapping
        if not group_by or mapping["is_total"]:
            return total
        raw = tuple(mapping[name] for name in group_by)
        if raw not in rows:
            rows[raw] = ReportRow(group={n: _key_text(n, v) for n, v in zip(group_by, raw)})
        return rows[raw]

    for record in session.execute(attempt_query(period, group_by, client)):
        row = row_for(record)
        m = record._mapping
        row.attempts, row.retries = m["attempts"], m["retries"]
        row.compute_seconds, row.fal_compute_seconds = m["compute_seconds"], m["fal_compute_seconds"]
        row.cost_usd, row.fal_cost_usd = m["cost_usd"], m["fal_cost_usd"]
        row.local_cost_usd = m["local_cost_usd"]
        row.local_fal_equivalent_usd = m["local_fal_equivalent_usd"]
    for record in session.execute(job_query(period, group_by, client)):
        row = row_for(record)
        m = record._mapping
        row.jobs, row.succeeded = m["jobs"], m["succeeded"]
        row.failed, row.cancelled = m["failed"], m["cancelled"]
        row.latency_p50_seconds = _float(m["latency_p50_seconds"])
        row.latency_p95_seconds = _float(m["latency_p95_seconds"])
    ordered = [rows[k] for k in sorted(rows, key=lambda key: tuple(_sort_key(v) for v in key))]
    return CostReport(period, group_by, client, ordered, total)


def _sort_key(value: Any) -> tuple[int, str]:
    if value is None:
        return (1, "")
    if isinstance(value, datetime):
        return (0, value.isoformat())
    return (0, str(getattr(value, "value", value)))


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
