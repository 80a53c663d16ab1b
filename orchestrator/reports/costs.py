"""The cost report, aggregated in SQL: two queries, run at once on two connections.

* **Money and seconds are sums of attempt rows** (``attempts.cost_usd``, ``compute_seconds``,
  ``fal_equivalent_usd`` as each attempt stored them; nothing is re-priced), counted on the UTC
  day the attempt started, under the backend that ran it. That is what a bill covers.
* **Job counts and latency** count jobs on the UTC day they were submitted (``jobs.created_at``).
  Latency is submit to done of the jobs that succeeded (``percentile_cont``).

Grouping by ``model``, ``client`` or ``state`` (or a client filter) joins attempts to their
jobs; grouping by time and backend reads one table per query. The attempt query always groups by
backend as well (the fal/local split of a group is then a plain sum per row, not a FILTERed sum
per backend); the few rows it returns are added up into the asked-for groups and the total here
(sums add up exactly; percentiles do not, so the job query has its totals row from SQL).

Speed (1,000,000 attempts, see ``benchmarks/report_costs.py``): the UTC day of an attempt or job
is an indexed expression (``ix_attempts_report_day``, ``ix_jobs_report_day``, covering the
figures), so a daily report reads one index in group order — no sort, no heap — and the period
is also given as a range of that expression so that the index narrows it. Latency percentiles
are one ``percentile_cont(ARRAY[0.5, 0.95])`` per group over ``date_part`` (float8) seconds.
The two queries run in two transactions, so each is consistent in itself and the two may be a
few milliseconds apart (totals of money always come from one of them, the attempt query).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Executable,
    Select,
    and_,
    func,
    literal_column,
    select,
    tuple_,
)

from orchestrator import backends
from orchestrator.db.models import Attempt, Job
from orchestrator.db.portable import seconds_between, utc_bucket, utc_day_value
from orchestrator.errors import ReportError
from orchestrator.jobs.states import JobState
from orchestrator.reports.period import Period

TIME_GROUPINGS = ("day", "week", "month")
GROUPINGS = (*TIME_GROUPINGS, "backend", "model", "client", "state")
ZERO = Decimal(0)

Record = Mapping[Any, Any]  # one result row by column name

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
    cost_usd: Decimal = ZERO
    fal_cost_usd: Decimal = ZERO
    local_cost_usd: Decimal = ZERO
    local_fal_equivalent_usd: Decimal = ZERO  # what fal would have charged for the local work
    # Local attempts that spent seconds while no local price was set: their cost is unknown,
    # so the local cost, the total and the saving are too (reports say "local price not set").
    local_unpriced_attempts: int = 0
    latency_p50_seconds: float | None = None
    latency_p95_seconds: float | None = None

    @property
    def local_price_set(self) -> bool:
        return self.local_unpriced_attempts == 0

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


# ``date_trunc(unit, timezone('UTC', moment))`` on Postgres: UTC days (weeks, months) whatever
# the session's time zone, with literals, not bound parameters, so that the select list,
# GROUPING SETS and the expression indexes on the day are the same expression. On SQLite (the
# embedded mode) the same construct renders SQLite's date functions.
__all__ = ["utc_bucket"]


def _in_period(moment: Any, period: Period) -> ColumnElement[bool]:
    # The day range is implied by the instant range; said explicitly, it lets the day indexes
    # narrow the scan.
    first_day = period.since.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    last_day = period.until.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    day = utc_bucket("day", moment)
    return and_(moment >= period.since, moment < period.until,
                day >= utc_day_value(first_day), day <= utc_day_value(last_day))


def _keys(group_by: Sequence[str], *, on_attempts: bool) -> list[ColumnElement[Any]]:
    moment = attempts.c.started_at if on_attempts else jobs.c.created_at
    backend = attempts.c.backend if on_attempts else jobs.c.backend
    columns: dict[str, ColumnElement[Any]] = {
        "backend": backend, "model": jobs.c.model, "client": jobs.c.client, "state": jobs.c.state,
    }
    return [(utc_bucket(name, moment) if name in TIME_GROUPINGS else columns[name]).label(name)
            for name in group_by]


def _grouped(stmt: Select[Any], keys: Sequence[ColumnElement[Any]]) -> Select[Any]:
    """GROUP BY GROUPING SETS ((keys), ()): the groups and the total, told apart by
    ``is_total``."""
    if not keys:
        return stmt
    flag = func.grouping(*(k.element for k in keys))
    return stmt.add_columns(flag.label("is_total")).group_by(
        func.grouping_sets(tuple_(*(k.element for k in keys)), tuple_())
    )


def attempt_query(period: Period, group_by: Sequence[str], client: str | None) -> Select[Any]:
    """Sums of attempt rows per group and backend. No totals row: sums add up, so the total is
    the sum of these few rows, and a plain GROUP BY lets Postgres aggregate in parallel."""
    keys = _keys([g for g in group_by if g != "backend"], on_attempts=True)
    backend = attempts.c.backend.label("backend")
    needs_jobs = client is not None or any(g in ("model", "client", "state") for g in group_by)
    source = attempts.join(jobs, attempts.c.job_id == jobs.c.id) if needs_jobs else attempts
    zero: ColumnElement[Decimal] = literal_column("0")
    stmt = (
        select(
            *keys,
            backend,
            func.count().label("attempts"),
            func.count().filter(attempts.c.number > 1).label("retries"),
            func.coalesce(func.sum(attempts.c.compute_seconds), zero).label("compute_seconds"),
            func.coalesce(func.sum(attempts.c.cost_usd), zero).label("cost_usd"),
            func.coalesce(func.sum(attempts.c.fal_equivalent_usd), zero)
            .label("fal_equivalent_usd"),
            func.count().filter(and_(attempts.c.cost_usd.is_(None),
                                     attempts.c.compute_seconds.is_not(None))).label("unpriced"),
        )
        .select_from(source)
        .where(_in_period(attempts.c.started_at, period))
        .group_by(*(k.element for k in keys), backend.element)
    )
    if client is not None:
        stmt = stmt.where(jobs.c.client == client)
    return stmt


def job_query(period: Period, group_by: Sequence[str], client: str | None) -> Select[Any]:
    """Job counts and latency percentiles per group, and in total."""
    keys = _keys(group_by, on_attempts=False)
    succeeded = jobs.c.state == JobState.SUCCEEDED
    seconds = seconds_between(jobs.c.created_at, jobs.c.finished_at)
    fractions: ColumnElement[Any] = literal_column("ARRAY[0.5, 0.95]")
    stmt = (
        select(
            *keys,
            func.count().label("jobs"),
            func.count().filter(succeeded).label("succeeded"),
            func.count().filter(jobs.c.state == JobState.FAILED).label("failed"),
            func.count().filter(jobs.c.state == JobState.CANCELLED).label("cancelled"),
            func.percentile_cont(fractions).within_group(seconds)
            .filter(and_(succeeded, jobs.c.finished_at.is_not(None))).label("latency"),
        )
        .select_from(jobs)
        .where(_in_period(jobs.c.created_at, period))
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
    engine: Engine, period: Period, group_by: Sequence[str] = (), client: str | None = None
) -> CostReport:
    """Run the two aggregate queries — at once, on two connections (each is one CPU-bound scan;
    together they take the time of the slower) — and line their groups up by key."""
    group_by = tuple(group_by)
    if engine.dialect.name == "sqlite":
        # The embedded mode: no GROUPING SETS or percentile_cont, and a small table.
        return _assemble(period, group_by, client, _fetch(engine, attempt_query(period, group_by, client)),
                         sqlite_job_records(engine, period, group_by, client))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cost-report") as pool:
        job_records = pool.submit(_fetch, engine, job_query(period, group_by, client))
        attempt_records = _fetch(engine, attempt_query(period, group_by, client))
        return _assemble(period, group_by, client, attempt_records, job_records.result())


def _fetch(engine: Engine, stmt: Executable) -> list[Record]:
    with engine.connect() as conn:
        return list(conn.execute(stmt).mappings())


def sqlite_job_records(engine: Engine, period: Period, group_by: Sequence[str],
                       client: str | None) -> list[Record]:
    """What ``job_query`` returns, for SQLite: counts per group and in total (two queries in
    place of GROUPING SETS), latency percentiles computed here as ``percentile_cont`` does."""
    keys = _keys(group_by, on_attempts=False)
    succeeded = jobs.c.state == JobState.SUCCEEDED
    counts = select(
        func.count().label("jobs"),
        func.count().filter(succeeded).label("succeeded"),
        func.count().filter(jobs.c.state == JobState.FAILED).label("failed"),
        func.count().filter(jobs.c.state == JobState.CANCELLED).label("cancelled"),
    ).select_from(jobs).where(_in_period(jobs.c.created_at, period))
    latencies = (
        select(*keys, seconds_between(jobs.c.created_at, jobs.c.finished_at).label("seconds"))
        .where(_in_period(jobs.c.created_at, period), succeeded, jobs.c.finished_at.is_not(None))
    )
    if client is not None:
        counts = counts.where(jobs.c.client == client)
        latencies = latencies.where(jobs.c.client == client)
    grouped = _fetch(engine, counts.add_columns(*keys).group_by(*(k.element for k in keys))) \
        if keys else []
    total = _fetch(engine, counts)[0]
    seconds: dict[tuple[Any, ...], list[float]] = {}
    for row in _fetch(engine, latencies):
        seconds.setdefault(tuple(row[name] for name in group_by), []).append(float(row["seconds"]))
    everything = [s for values in seconds.values() for s in values]
    out: list[Record] = []
    for row in grouped:
        group = tuple(row[name] for name in group_by)
        out.append({**row, "is_total": False, "latency": _percentiles(seconds.get(group, []))})
    out.append({**total, "is_total": True, "latency": _percentiles(everything)})
    return out


def _percentiles(values: list[float]) -> tuple[float, float] | None:
    """``percentile_cont(ARRAY[0.5, 0.95])``: linear interpolation between the closest ranks."""
    if not values:
        return None
    ordered = sorted(values)

    def cont(fraction: float) -> float:
        position = fraction * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return cont(0.5), cont(0.95)


def _assemble(
    period: Period, group_by: tuple[str, ...], client: str | None,
    attempt_records: Sequence[Record], job_records: Sequence[Record],
) -> CostReport:
    rows: dict[tuple[Any, ...], ReportRow] = {}
    total = ReportRow()

    def group_row(mapping: Any) -> ReportRow:
        raw = tuple(mapping[name] for name in group_by)
        if raw not in rows:
            rows[raw] = ReportRow(group={n: _key_text(n, v) for n, v in zip(group_by, raw)})
        return rows[raw]

    # Attempt sums come per group and backend: each row is part of its group and of the total.
    for m in attempt_records:
        for row in (total, group_row(m)) if group_by else (total,):
            _add_attempts(row, m)
    for m in job_records:
        row = group_row(m) if group_by and not m["is_total"] else total
        row.jobs, row.succeeded = m["jobs"], m["succeeded"]
        row.failed, row.cancelled = m["failed"], m["cancelled"]
        if m["latency"] is not None:
            p50, p95 = m["latency"]
            row.latency_p50_seconds, row.latency_p95_seconds = round(p50, 3), round(p95, 3)
    ordered = [rows[k] for k in sorted(rows, key=lambda key: tuple(_sort_key(v) for v in key))]
    return CostReport(period, group_by, client, ordered, total)


def _add_attempts(row: ReportRow, m: Any) -> None:
    row.attempts += m["attempts"]
    row.retries += m["retries"]
    row.compute_seconds += m["compute_seconds"]
    row.cost_usd += m["cost_usd"]
    if m["backend"] == backends.FAL:
        row.fal_cost_usd += m["cost_usd"]
    elif m["backend"] == backends.LOCAL:
        row.local_cost_usd += m["cost_usd"]
        row.local_fal_equivalent_usd += m["fal_equivalent_usd"]
        row.local_unpriced_attempts += m["unpriced"]


def _sort_key(value: Any) -> tuple[int, str]:
    if value is None:
        return (1, "")
    if isinstance(value, datetime):
        return (0, value.isoformat())
    return (0, str(getattr(value, "value", value)))


