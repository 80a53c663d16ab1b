"""Check recorded fal compute seconds against the total fal bills (its usage page or API)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import ColumnElement, Engine, func, literal_column, select

from orchestrator import backends
from orchestrator.costs.pricing import cost_usd
from orchestrator.db.models import Attempt
from orchestrator.jobs.states import ComputeBasis
from orchestrator.reports.period import Period


@dataclass(frozen=True)
class FalReconciliation:
    period: Period
    billed_seconds: Decimal
    recorded_seconds: Decimal
    recorded_cost_usd: Decimal
    attempts: int
    seconds_by_basis: dict[str, Decimal]  # fal_inference_time / measured: how each was obtained

    @property
    def difference_seconds(self) -> Decimal:
        """Billed minus recorded: positive when fal billed more than we recorded."""
        return self.billed_seconds - self.recorded_seconds

    @property
    def difference_percent(self) -> float | None:
        if self.billed_seconds == 0:
            return None
        return float(self.difference_seconds / self.billed_seconds * 100)

    def difference_usd(self, price_per_second: Decimal) -> Decimal:
        return cost_usd(self.difference_seconds, price_per_second)


def reconcile_fal(engine: Engine, period: Period, billed_seconds: Decimal) -> FalReconciliation:
    """Sum the fal attempts that started in the period (one aggregate query by basis)."""
    attempts = Attempt.__table__
    zero: ColumnElement[Decimal] = literal_column("0")
    stmt = (
        select(
            attempts.c.compute_basis,
            func.count(),
            func.coalesce(func.sum(attempts.c.compute_seconds), zero),
            func.coalesce(func.sum(attempts.c.cost_usd), zero),
        )
        .where(
            attempts.c.backend == backends.FAL,
            attempts.c.started_at >= period.since,
            attempts.c.started_at < period.until,
        )
        .group_by(attempts.c.compute_basis)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    by_basis: dict[str, Decimal] = {}
    for basis, _, seconds, _ in rows:
        name = basis.value if isinstance(basis, ComputeBasis) else "not recorded yet"
        by_basis[name] = by_basis.get(name, Decimal(0)) + seconds
    return FalReconciliation(
        period=period,
        billed_seconds=billed_seconds,
        recorded_seconds=sum((r[2] for r in rows), Decimal(0)),
        recorded_cost_usd=sum((r[3] for r in rows), Decimal(0)),
        attempts=sum(r[1] for r in rows),
        seconds_by_basis=by_basis,
    )
