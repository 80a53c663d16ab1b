"""Compute seconds × price per second, rounded once, the same way everywhere."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

USD_QUANTUM = Decimal("0.000000001")  # matches the Numeric(18, 9) money columns


def cost_usd(compute_seconds: Decimal, price_per_second: Decimal) -> Decimal:
    return (compute_seconds * price_per_second).quantize(USD_QUANTUM, rounding=ROUND_HALF_EVEN)


def cost_or_unknown(compute_seconds: Decimal, price_per_second: Decimal | None) -> Decimal | None:
    """The cost, or None when seconds were spent at a price nobody has set (never a made-up $0)."""
    if price_per_second is None:
        return Decimal(0) if compute_seconds == 0 else None
    return cost_usd(compute_seconds, price_per_second)
