"""Amounts of money as people read them: cents at least, and every digit the amount has."""

from __future__ import annotations

from decimal import Decimal

MAX_PLACES = 9  # the money columns' scale, Numeric(18, 9)


def usd_text(value: Decimal) -> str:
    """``$0.0022`` rather than ``$0.00``; ``$1,234.50``; never more than the stored nine places."""
    exponent = value.normalize().as_tuple().exponent
    digits = -exponent if isinstance(exponent, int) else 0
    places = min(max(2, digits), MAX_PLACES)
    return f"${value:,.{places}f}"
