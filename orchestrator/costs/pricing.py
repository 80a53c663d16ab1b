"""Compute seconds × price per second, rounded once, the same way everywhere."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

USD_QUANTUM = Decimal("0.000000001")  # matches the Numeric(18, 9) money columns


def cost_usd(compute_seconds: Decimal, price_per_second: Decimal) -> Decimal:
    return (compute_seconds * price_per_second).quantize(USD_QUANTUM, rounding=ROUND_HALF_EVEN)
